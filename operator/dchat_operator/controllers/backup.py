"""Reconcile one DchatBackup: one Job of the node image, its result into status; deletion
removes the backup's S3 objects first.

Design:
- Runs on the engine like every controller. Triggers: the DchatBackup's own events, events of
  its Jobs (label ``dchat.dev/backup``), the resync. Level-based: every run reads the backup,
  its cluster and its Job and decides from what it sees, so an operator restart in the middle
  of a backup picks the Job up where it is (the Job runs on without the operator).
- Before anything, the backup gets the finalizer ``dchat.dev/backup-objects`` and the label
  ``dchat.dev/cluster`` (one metadata merge patch with the resourceVersion read): the
  schedule controller finds a cluster's backups by that label.
- Pending → Running → Completed | Failed. A backup waits (Pending, requeued) while its
  cluster is not Ready (a rollout or a restore is in progress) or has no pod to run beside
  (SQLite at 0 replicas); it fails at once when the cluster does not exist, has no
  ``backup.s3``, or the method does not fit the engine. Once Running it never looks at the
  cluster's readiness again.
- The result is the backup pod's termination message (``api.backups.BackupResult``); a Job
  that finished without a readable one fails the backup with "the backup pod reported no
  result". A Job that disappeared while the backup was Running fails it too. A Completed backup
  with ``spec.verify`` gets a second Job (``dchat backup verify``); its result is
  ``status.verified``; a new value of the annotation ``dchat.dev/verify-request`` on a
  Completed backup verifies it again (a fresh verify Job).
- Deletion: a backup that may have objects in S3 (Completed, Running, or any with a location)
  runs a delete Job (``dchat backup delete``, a few retries in the Job itself); the finalizer
  goes when that Job completed. When it failed, the finalizer stays and the ``DeleteFailed``
  condition says why and how to abandon the objects. Nothing to delete: the finalizer goes at
  once. When no delete Job can run (the cluster, whose S3 settings it needs, is gone; the
  namespace is being deleted), the objects are kept and the finalizer goes, with a Warning
  event naming the location: a stuck object would block the namespace's deletion, and kept
  objects lose nothing.
- Status is the whole ``status`` (only this controller writes it), sent as a merge patch with
  the resourceVersion it was built from; a conflict is a failure the engine retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.backups import BackupResult, DchatBackup, DchatBackupStatus
from dchat_operator.api.kinds import BACKUP, CLUSTER, JOB, POD
from dchat_operator.api.models import Condition, DatabaseEngine, DchatCluster, S3Target
from dchat_operator.builders.backup import (
    backup_job,
    default_method,
    job_name,
    job_outcome,
    termination_message,
)
from dchat_operator.builders.common import is_true
from dchat_operator.builders.restore import hold_reason
from dchat_operator.builders.rollout import serving_image
from dchat_operator.clients.kube import KubeAPI
from dchat_operator.clients.metrics import (
    BACKUP_LAST_SUCCESS,
    BACKUP_RESULTS,
    BACKUP_SECONDS,
    BACKUP_SIZE,
)
from dchat_operator.controllers.engine import (
    Attempt,
    Engine,
    Key,
    Outcome,
    route_child_event,
    route_own_event,
)

log = logging.getLogger("dchat_operator.backup")
Obj = dict[str, Any]

WAIT_SECONDS = 15.0
"""Requeue of a backup waiting for its cluster."""
POLL_SECONDS = 60.0
"""Requeue of a running Job (its events trigger sooner; this covers a lost event)."""
NO_RESULT = "the backup pod reported no result"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def job_pods_selector(job: str) -> str:
    return f"batch.kubernetes.io/job-name={job}"


@dataclass
class BackupState:
    """Nothing to remember between runs: the DchatBackup's status is the state."""

    uid: str = ""


class _Blocked(Exception):
    """The backup cannot start now: (phase, reason)."""

    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason


def cluster_target(cluster_body: Obj | None, name: str) -> tuple[DchatCluster, S3Target]:
    """The cluster and its S3 target, or ``_Blocked`` (Failed) saying why there is none."""
    if cluster_body is None:
        raise _Blocked("Failed", f"DchatCluster {name} does not exist")
    try:
        cluster = serving_image(DchatCluster.parse(cluster_body), cluster_body.get("status"))
    except ValidationError:
        raise _Blocked("Pending", f"DchatCluster {name} has an invalid spec") from None
    s3 = cluster.spec.backup.s3
    if s3 is None:
        raise _Blocked("Failed", f"DchatCluster {name} has no spec.backup.s3")
    return cluster, s3


def cluster_blocker(
    cluster_body: Obj | None, name: str, method: str | None
) -> tuple[DchatCluster, S3Target]:
    """The cluster and its S3 target, or ``_Blocked`` saying why a backup cannot start."""
    cluster, s3 = cluster_target(cluster_body, name)
    if method is not None and method != default_method(cluster):
        raise _Blocked(
            "Failed",
            f"method {method} does not fit the cluster's {cluster.spec.database.engine} "
            f"database (use {default_method(cluster)})",
        )
    status = (cluster_body or {}).get("status") or {}
    hold = hold_reason(cluster, status)
    if hold is not None:
        raise _Blocked("Pending", f"waiting: DchatCluster {name} runs no pod ({hold})")
    generation = cluster.metadata.generation
    if not is_true(status, "Ready"):
        raise _Blocked("Pending", f"waiting for DchatCluster {name} to be Ready")
    if int(status.get("observedGeneration") or 0) < generation:
        raise _Blocked("Pending", f"waiting for DchatCluster {name} to roll out its spec")
    if cluster.spec.database.engine == DatabaseEngine.sqlite and cluster.spec.replicas == 0:
        raise _Blocked("Pending", f"DchatCluster {name} runs no pod (SQLite backups run beside it)")
    return cluster, s3


class BackupController:
    """Reconciles DchatBackups; one instance serves all of them through an ``Engine``."""

    kind = c.BACKUP_KIND

    def __init__(self, kube: KubeAPI, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.kube = kube
        self._clock = clock

    def new_state(self) -> BackupState:
        return BackupState()

    # --- watch events -----------------------------------------------------------------------

    def backup_event(
        self, engine: Engine[BackupState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        route_own_event(engine, event_type, body)

    def job_event(self, engine: Engine[BackupState], body: Mapping[str, Any]) -> None:
        labels = (body.get("metadata") or {}).get("labels") or {}
        route_child_event(engine, body, labels.get(c.LABEL_BACKUP))

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: Key, state: BackupState, attempt: Attempt) -> Outcome:
        namespace, name = key
        body = await self.kube.get(BACKUP, namespace, name)
        if body is None:
            return Outcome(forget=True, result="gone")
        try:
            backup = DchatBackup.parse(body)
        except ValidationError as exc:
            status = DchatBackupStatus(phase="Failed", error=f"invalid DchatBackup: {exc}"[:1000])
            await self._write(body, status)
            return Outcome(result="Invalid")
        if backup.metadata.deletion_timestamp:
            return await self._finalize(body, backup)
        body = await self._ensure_metadata(body, backup)
        status = backup.status.model_copy()
        status.observed_generation = backup.metadata.generation
        if status.phase == "Completed":
            requested = backup.metadata.annotations.get(c.ANNOTATION_VERIFY_REQUEST)
            if requested and requested != status.verify_request:
                return await self._reverify(body, backup, status, requested)
            return await self._verify(body, backup, status)
        if status.phase == "Failed":
            await self._write(body, status)
            return Outcome(result="Failed")
        return await self._run(body, backup, status)

    async def _ensure_metadata(self, body: Obj, backup: DchatBackup) -> Obj:
        meta = backup.metadata
        patch: Obj = {}
        if c.FINALIZER_BACKUP_OBJECTS not in meta.finalizers:
            patch["finalizers"] = [*meta.finalizers, c.FINALIZER_BACKUP_OBJECTS]
        if meta.labels.get(c.LABEL_CLUSTER) != backup.spec.cluster:
            patch["labels"] = {c.LABEL_CLUSTER: backup.spec.cluster}
        if not patch:
            return body
        return await self.kube.patch(
            BACKUP, meta.namespace, meta.name, {"metadata": patch}, meta.resource_version
        )

    async def _run(self, body: Obj, backup: DchatBackup, status: DchatBackupStatus) -> Outcome:
        namespace = backup.namespace
        job_id = job_name(backup.name, "backup")
        job = await self.kube.get(JOB, namespace, job_id)
        if job is None:
            if status.phase == "Running":
                return await self._fail(
                    body, backup, status, f"the backup Job {job_id} disappeared before it reported"
                )
            return await self._start(body, backup, status, job_id)
        outcome, detail = job_outcome(job)
        if outcome is None:
            status.phase, status.job = "Running", job_id
            status.started_at = status.started_at or rfc3339(self._clock())
            status.error = None
            await self._write(body, status)
            return Outcome(requeue_after=POLL_SECONDS, result="Running")
        result = await self._result(namespace, job_id)
        if outcome == "Complete" and result is not None and result.ok:
            return await self._complete(body, backup, status, result)
        reason = (result.error if result is not None else None) or NO_RESULT
        if outcome == "Failed" and detail and result is None:
            reason = f"{NO_RESULT} (Job: {detail})"
        return await self._fail(body, backup, status, reason)

    async def _start(
        self, body: Obj, backup: DchatBackup, status: DchatBackupStatus, job_id: str
    ) -> Outcome:
        cluster_body = await self.kube.get(CLUSTER, backup.namespace, backup.spec.cluster)
        try:
            cluster, s3 = cluster_blocker(cluster_body, backup.spec.cluster, backup.spec.method)
        except _Blocked as blocked:
            if blocked.phase == "Failed":
                return await self._fail(body, backup, status, blocked.reason)
            status.phase, status.error = "Pending", blocked.reason
            await self._write(body, status)
            return Outcome(requeue_after=WAIT_SECONDS, result="Pending")
        job = backup_job(cluster, s3, backup.name, backup.metadata.uid, "create")
        try:
            await self.kube.create(job, JOB)
        except ApiException as exc:
            if exc.status != 409:  # 409: made by a run that crashed before its status write
                raise
        status.phase, status.job, status.error = "Running", job_id, None
        status.started_at = rfc3339(self._clock())
        await self._write(body, status)
        return Outcome(requeue_after=POLL_SECONDS, result="Running")

    async def _result(self, namespace: str, job_id: str) -> BackupResult | None:
        pods = await self.kube.list_objects(POD, namespace, job_pods_selector(job_id))
        return BackupResult.parse(termination_message(pods))

    async def _complete(
        self, body: Obj, backup: DchatBackup, status: DchatBackupStatus, result: BackupResult
    ) -> Outcome:
        now = self._clock()
        status.phase, status.error = "Completed", None
        status.location, status.size, status.sha256 = result.location, result.size, result.sha256
        status.engine, status.server_version = result.engine, result.server_version
        status.schema_version = result.schema_version
        status.started_at = result.started_at or status.started_at
        status.completed_at = result.completed_at or rfc3339(now)
        await self._write(body, status)
        labels = (backup.namespace, backup.spec.cluster)
        BACKUP_RESULTS.labels(*labels, "Completed").inc()
        started, done = parse_time(status.started_at), parse_time(status.completed_at)
        if started and done:
            BACKUP_SECONDS.labels(*labels).observe(max(0.0, (done - started).total_seconds()))
        if status.size is not None:
            BACKUP_SIZE.labels(*labels).set(status.size)
        BACKUP_LAST_SUCCESS.labels(*labels).set((done or now).timestamp())
        log.info("DchatBackup %s/%s completed: %s", backup.namespace, backup.name, status.location)
        if backup.spec.verify:
            return Outcome(requeue_after=0.0, result="Completed")
        return Outcome(result="Completed")

    async def _fail(
        self, body: Obj, backup: DchatBackup, status: DchatBackupStatus, reason: str
    ) -> Outcome:
        status.phase, status.error = "Failed", reason[:1000]
        status.completed_at = status.completed_at or rfc3339(self._clock())
        await self._write(body, status)
        BACKUP_RESULTS.labels(backup.namespace, backup.spec.cluster, "Failed").inc()
        log.warning("DchatBackup %s/%s failed: %s", backup.namespace, backup.name, reason)
        return Outcome(result="Failed")

    # --- verification -----------------------------------------------------------------------

    async def _reverify(
        self, body: Obj, backup: DchatBackup, status: DchatBackupStatus, requested: str
    ) -> Outcome:
        """A new verify request: forget the last result and its Job, then verify again."""
        await self.kube.delete(JOB, backup.namespace, job_name(backup.name, "verify"))
        status.verify_request, status.verified, status.verify_detail = requested, None, None
        status.conditions = [x for x in status.conditions if x.type != "Verified"]
        await self._write(body, status)
        return Outcome(requeue_after=1.0, result="Verifying")

    async def _verify(self, body: Obj, backup: DchatBackup, status: DchatBackupStatus) -> Outcome:
        wanted = backup.spec.verify or status.verify_request is not None
        if not wanted or status.verified is not None:
            await self._write(body, status)
            return Outcome(result="Completed")
        job_id = job_name(backup.name, "verify")
        job = await self.kube.get(JOB, backup.namespace, job_id)
        if job is None:
            cluster_body = await self.kube.get(CLUSTER, backup.namespace, backup.spec.cluster)
            try:  # verification needs the S3 settings, not the cluster's pods
                cluster, s3 = cluster_target(cluster_body, backup.spec.cluster)
            except _Blocked as blocked:
                if blocked.phase != "Failed":
                    return Outcome(requeue_after=WAIT_SECONDS, result="Verifying")
                return await self._verified(body, status, False, f"not verified: {blocked.reason}")
            job = backup_job(cluster, s3, backup.name, backup.metadata.uid, "verify")
            try:
                await self.kube.create(job, JOB)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            await self._write(body, status)
            return Outcome(requeue_after=POLL_SECONDS, result="Verifying")
        outcome, detail = job_outcome(job)
        if outcome is None:
            await self._write(body, status)
            return Outcome(requeue_after=POLL_SECONDS, result="Verifying")
        result = await self._result(backup.namespace, job_id)
        if result is None:
            return await self._verified(body, status, False, f"{NO_RESULT} ({detail})".strip())
        ok = bool(outcome == "Complete" and result.ok and result.verified is not False)
        text = result.detail or result.error or ("verified" if ok else "verification failed")
        return await self._verified(body, status, ok, text)

    async def _verified(
        self, body: Obj, status: DchatBackupStatus, ok: bool, detail: str
    ) -> Outcome:
        status.verified, status.verify_detail = ok, detail[:1000]
        status.conditions = _set_condition(
            status.conditions,
            "Verified",
            "True" if ok else "False",
            "VerifySucceeded" if ok else "VerifyFailed",
            detail,
            rfc3339(self._clock()),
        )
        await self._write(body, status)
        return Outcome(result="Verified" if ok else "VerifyFailed")

    # --- deletion ---------------------------------------------------------------------------

    async def _finalize(self, body: Obj, backup: DchatBackup) -> Outcome:
        meta = backup.metadata
        if c.FINALIZER_BACKUP_OBJECTS not in meta.finalizers:
            return Outcome(result="Deleting")
        status = backup.status.model_copy()
        if not (status.phase in ("Completed", "Running") or status.location):
            await self._release(backup)
            return Outcome(forget=True, result="Deleted")
        job_id = job_name(backup.name, "delete")
        job = await self.kube.get(JOB, backup.namespace, job_id)
        if job is None:
            return await self._start_delete(body, backup, status)
        outcome, detail = job_outcome(job)
        if outcome is None:
            return Outcome(requeue_after=POLL_SECONDS, result="Deleting")
        if outcome == "Complete":
            await self._release(backup)
            log.info("DchatBackup %s/%s: S3 objects deleted", backup.namespace, backup.name)
            return Outcome(forget=True, result="Deleted")
        result = await self._result(backup.namespace, job_id)
        reason = (result.error if result else None) or detail or NO_RESULT
        await self._delete_failed(body, status, f"the delete Job failed: {reason}")
        return Outcome(result="DeleteFailed")

    async def _start_delete(
        self, body: Obj, backup: DchatBackup, status: DchatBackupStatus
    ) -> Outcome:
        if status.phase == "Running":  # stop the backup before its objects are deleted
            await self.kube.delete(JOB, backup.namespace, job_name(backup.name, "backup"))
        cluster_body = await self.kube.get(CLUSTER, backup.namespace, backup.spec.cluster)
        s3 = None
        cluster = None
        if cluster_body is not None:
            try:
                cluster = DchatCluster.parse(cluster_body)
                s3 = cluster.spec.backup.s3
            except ValidationError:
                cluster = None
        if cluster is None or s3 is None:
            return await self._abandon(
                body,
                backup,
                f"DchatCluster {backup.spec.cluster} is gone or has no spec.backup.s3",
            )
        job = backup_job(cluster, s3, backup.name, backup.metadata.uid, "delete")
        try:
            await self.kube.create(job, JOB)
        except ApiException as exc:
            if exc.status == 403:  # e.g. the namespace is being deleted: no Job can start
                return await self._abandon(body, backup, f"no delete Job can start: {exc.reason}")
            if exc.status != 409:
                raise
        return Outcome(requeue_after=POLL_SECONDS, result="Deleting")

    async def _abandon(self, body: Obj, backup: DchatBackup, why: str) -> Outcome:
        """Let the DchatBackup go and keep its S3 objects: losing track of a backup's objects
        costs storage, holding the object forever would block the namespace's deletion, and
        deleting data without the settings to do it right is not an option."""
        where = backup.status.location or "its prefix"
        message = f"{why}: the backup's S3 objects are kept ({where})"
        log.warning("DchatBackup %s/%s: %s", backup.namespace, backup.name, message)
        await self._event(body, "ObjectsKept", message)
        await self._release(backup)
        return Outcome(forget=True, result="Abandoned")

    async def _event(self, body: Obj, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(
                body, type_="Warning", reason=reason, message=message, now=self._clock()
            )
        except ApiException as exc:  # events are best effort
            log.warning("could not post event %s: %s", reason, exc.reason)

    async def _delete_failed(self, body: Obj, status: DchatBackupStatus, reason: str) -> None:
        message = (
            f"{reason}; the DchatBackup stays until its objects are deleted (remove the "
            f"finalizer {c.FINALIZER_BACKUP_OBJECTS} to abandon them)"
        )
        status.conditions = _set_condition(
            status.conditions,
            "DeleteFailed",
            "True",
            "DeleteFailed",
            message,
            rfc3339(self._clock()),
        )
        await self._write(body, status)

    async def _release(self, backup: DchatBackup) -> None:
        meta = backup.metadata
        rest = [f for f in meta.finalizers if f != c.FINALIZER_BACKUP_OBJECTS]
        await self.kube.patch(
            BACKUP,
            meta.namespace,
            meta.name,
            {"metadata": {"finalizers": rest}},
            meta.resource_version,
        )

    # --- status -----------------------------------------------------------------------------

    async def _write(self, body: Obj, status: DchatBackupStatus) -> None:
        """Send the whole status when it differs from the live one (null removes a field)."""
        new = status.model_dump(by_alias=True, mode="json")
        old = body.get("status") or {}
        if all(old.get(k) == v for k, v in new.items() if v is not None) and not any(
            k in old for k, v in new.items() if v is None
        ):
            return
        meta = body.get("metadata") or {}
        await self.kube.patch_status(
            BACKUP,
            str(meta.get("namespace")),
            str(meta.get("name")),
            new,
            str(meta.get("resourceVersion") or ""),
        )


def _set_condition(
    conditions: list[Condition],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: str,
) -> list[Condition]:
    """``conditions`` with the one of ``type_`` set (transition time kept when unchanged)."""
    out = []
    since = now
    for cond in conditions:
        if cond.type == type_:
            since = cond.last_transition_time if cond.status == status else now
        else:
            out.append(cond)
    out.append(
        Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message[:1000],
            last_transition_time=since,
        )
    )
    return out
