"""Restores: a DchatRestore into an existing cluster, and spec.bootstrap.fromBackup of a new one.

Design:
- Both run a restore Job of the node image (``builders.backup.restore_job``: ``dchat backup
  restore --name B``) while the target cluster runs no pod. The hold is a status field on the
  cluster that this module owns (``restoreInProgress`` for a DchatRestore, ``bootstrap`` for
  spec.bootstrap); the cluster controller builds from ``builders.restore.held`` (0 replicas
  while a hold is on), and is woken (``wake``) after each change of a hold, since status
  writes do not trigger it. Backups of a held cluster wait (its Ready condition and the
  backup controller's check of the hold).
- DchatRestore: Pending → ScalingDown (hold set; waits until the Deployment has no pod) →
  Restoring (the Job) → ScalingUp (hold released; waits until the pods are Ready) →
  Completed, or Failed with the reason (the hold is released on failure too: the node
  checks the download before it writes and replaces atomically, ``dchat backup restore
  --replace``: PostgreSQL in one transaction, SQLite by renaming the checked file over the
  old one, so a failed restore left the data as it was). One restore holds a cluster at a
  time; another waits.
- Bootstrap: the cluster is held from its creation (``bootstrap`` not Completed), so no pod
  ever runs on the empty database before the restore; Completed releases it, Failed keeps it
  at 0 replicas and says why. SQLite the same way: with no pod running, the restore Job
  mounts the new ReadWriteOnce volume itself and the node restores into the empty file (a
  restore init container in the node pod would run again on every start, where the node
  refuses an existing file).
- The result comes from the Job pod's termination message, as for backups.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.backups import BackupResult, DchatRestore, DchatRestoreStatus
from dchat_operator.api.kinds import BACKUP, CLUSTER, DEPLOYMENT, JOB, POD, RESTORE
from dchat_operator.api.models import DatabaseEngine, DchatCluster, S3Target
from dchat_operator.builders.backup import (
    job_name,
    job_outcome,
    owner_reference,
    restore_job,
    termination_message,
)
from dchat_operator.builders.common import names
from dchat_operator.builders.common import owner_reference as cluster_owner
from dchat_operator.builders.restore import (
    deployment_scaled_down,
    newest_completed_backup,
    restore_labels,
)
from dchat_operator.builders.rollout import serving_image
from dchat_operator.clients.kube import KubeAPI
from dchat_operator.controllers.backup import (
    NO_RESULT,
    POLL_SECONDS,
    WAIT_SECONDS,
    job_pods_selector,
    rfc3339,
)
from dchat_operator.controllers.engine import (
    Attempt,
    Engine,
    Key,
    Outcome,
    route_child_event,
    route_own_event,
)

log = logging.getLogger("dchat_operator.restore")
Obj = dict[str, Any]
STEP_SECONDS = 5.0
"""Requeue while waiting for the Deployment to scale (its events do not reach this engine)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class RestoreState:
    uid: str = ""


class _Stop(Exception):
    """End the run with this outcome after the status was written."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.result)
        self.outcome = outcome


class _Jobs:
    """What both restore controllers share: their construction, per-key state and Jobs.

    ``wake`` triggers the cluster controller for a cluster (a hold set or cleared)."""

    def __init__(
        self,
        kube: KubeAPI,
        *,
        wake: Callable[[Key], None] = lambda key: None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.kube = kube
        self._wake = wake
        self._clock = clock

    def new_state(self) -> RestoreState:
        return RestoreState()

    async def run_job(self, namespace: str, job_id: str, build: Callable[[], Obj]) -> Obj | None:
        """The Job ``job_id``, created from ``build()`` when missing (None: just created)."""
        job = await self.kube.get(JOB, namespace, job_id)
        if job is not None:
            return job
        try:
            await self.kube.create(build(), JOB)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return None

    async def result(self, namespace: str, job_id: str) -> BackupResult | None:
        pods = await self.kube.list_objects(POD, namespace, job_pods_selector(job_id))
        return BackupResult.parse(termination_message(pods))

    async def hold(self, cluster_body: Obj, value: Obj | None) -> None:
        """Set (or with None clear) ``status.restoreInProgress`` of the cluster."""
        meta = cluster_body.get("metadata") or {}
        await self.kube.patch_status(
            CLUSTER,
            str(meta.get("namespace")),
            str(meta.get("name")),
            {"restoreInProgress": value},
            str(meta.get("resourceVersion") or ""),
        )


class RestoreController(_Jobs):
    """Reconciles DchatRestores."""

    kind = c.RESTORE_KIND

    def restore_event(
        self, engine: Engine[RestoreState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        route_own_event(engine, event_type, body)

    def job_event(self, engine: Engine[RestoreState], body: Mapping[str, Any]) -> None:
        labels = (body.get("metadata") or {}).get("labels") or {}
        route_child_event(engine, body, labels.get(c.LABEL_RESTORE))

    async def reconcile(self, key: Key, state: RestoreState, attempt: Attempt) -> Outcome:
        namespace, name = key
        body = await self.kube.get(RESTORE, namespace, name)
        if body is None:
            return Outcome(forget=True, result="gone")
        try:
            restore = DchatRestore.parse(body)
        except ValidationError as exc:
            await self._write(body, DchatRestoreStatus(phase="Failed", error=str(exc)[:1000]))
            return Outcome(result="Invalid")
        status = restore.status.model_copy()
        status.observed_generation = restore.metadata.generation
        if status.phase in ("Completed", "Failed"):
            return Outcome(result=status.phase)
        try:
            return await self._step(body, restore, status)
        except _Stop as stop:
            return stop.outcome

    async def _fail(self, body: Obj, status: DchatRestoreStatus, reason: str) -> _Stop:
        status.phase, status.error, status.progress = "Failed", reason[:1000], None
        status.completed_at = rfc3339(self._clock())
        await self._write(body, status)
        log.warning("DchatRestore %s failed: %s", body["metadata"].get("name"), reason)
        return _Stop(Outcome(result="Failed"))

    async def _target(
        self, body: Obj, restore: DchatRestore, status: DchatRestoreStatus
    ) -> tuple[Obj, DchatCluster, S3Target]:
        target = restore.spec.target
        cluster_body = await self.kube.get(CLUSTER, restore.namespace, target)
        if cluster_body is None:
            raise await self._fail(body, status, f"DchatCluster {target} does not exist")
        try:
            cluster = serving_image(DchatCluster.parse(cluster_body), cluster_body.get("status"))
        except ValidationError:
            raise await self._fail(
                body, status, f"DchatCluster {target} has an invalid spec"
            ) from None
        if cluster.spec.backup.s3 is None:
            raise await self._fail(body, status, f"DchatCluster {target} has no spec.backup.s3")
        return cluster_body, cluster, cluster.spec.backup.s3

    async def _backup(
        self, body: Obj, restore: DchatRestore, status: DchatRestoreStatus, cluster: DchatCluster
    ) -> tuple[str, str]:
        """(backup name, the cluster that made it)."""
        spec = restore.spec
        if spec.backup is not None:
            found = await self.kube.get(BACKUP, restore.namespace, spec.backup)
        else:
            items = await self.kube.list_objects(
                BACKUP, restore.namespace, f"{c.LABEL_CLUSTER}={spec.cluster}"
            )
            found = newest_completed_backup(items)
            if found is None:
                raise await self._fail(
                    body, status, f"DchatCluster {spec.cluster} has no Completed backup"
                )
        if found is None:
            raise await self._fail(body, status, f"DchatBackup {spec.backup} does not exist")
        phase = (found.get("status") or {}).get("phase")
        backup_name = str(found["metadata"]["name"])
        if phase != "Completed":
            raise await self._fail(
                body, status, f"DchatBackup {backup_name} is {phase}, not Completed"
            )
        engine = (found.get("status") or {}).get("engine")
        wanted = "sqlite" if cluster.spec.database.engine == DatabaseEngine.sqlite else "postgres"
        if engine and engine != wanted:
            raise await self._fail(
                body,
                status,
                f"DchatBackup {backup_name} is a {engine} backup; DchatCluster {cluster.name} "
                f"runs {wanted}",
            )
        return backup_name, str((found.get("spec") or {}).get("cluster") or "")

    async def _step(self, body: Obj, restore: DchatRestore, status: DchatRestoreStatus) -> Outcome:
        cluster_body, cluster, s3 = await self._target(body, restore, status)
        if status.backup is None:
            status.backup, status.source_cluster = await self._backup(
                body, restore, status, cluster
            )
        holder = ((cluster_body.get("status") or {}).get("restoreInProgress") or {}).get("name")
        if status.phase in ("Pending", "ScalingDown"):
            if holder and holder != restore.name:
                status.progress = f"waiting: DchatRestore {holder} is restoring into {cluster.name}"
                await self._write(body, status)
                return Outcome(requeue_after=WAIT_SECONDS, result="Pending")
            if not holder:
                now = rfc3339(self._clock())
                await self.hold(cluster_body, {"name": restore.name, "since": now})
                self._wake((cluster.namespace, cluster.name))
                status.started_at = status.started_at or now
            status.phase = "ScalingDown"
            status.progress = f"scaling DchatCluster {cluster.name} to 0 replicas"
        if status.phase == "ScalingDown":
            deployment = await self.kube.get(
                DEPLOYMENT, cluster.namespace, names(cluster).deployment
            )
            if not deployment_scaled_down(deployment):
                await self._write(body, status)
                return Outcome(requeue_after=STEP_SECONDS, result="ScalingDown")
            status.phase = "Restoring"
        if status.phase == "Restoring":
            return await self._restoring(body, restore, status, cluster, s3)
        return await self._scaling_up(body, status, cluster)

    async def _restoring(
        self,
        body: Obj,
        restore: DchatRestore,
        status: DchatRestoreStatus,
        cluster: DchatCluster,
        s3: S3Target,
    ) -> Outcome:
        backup = str(status.backup)
        job_id = job_name(restore.name, "restore")
        status.job = job_id
        status.progress = f"restoring DchatBackup {backup} into {cluster.name}"

        def build() -> Obj:
            return restore_job(
                cluster,
                s3,
                job=job_id,
                backup=backup,
                source=status.source_cluster or cluster.name,
                owner=owner_reference(
                    RESTORE.api_version, RESTORE.kind, restore.name, restore.metadata.uid
                ),
                labels=restore_labels(cluster, restore.name),
                replace=True,
            )

        job = await self.run_job(restore.namespace, job_id, build)
        outcome = job_outcome(job)[0] if job is not None else None
        if outcome is None:
            await self._write(body, status)
            return Outcome(requeue_after=POLL_SECONDS, result="Restoring")
        result = await self.result(restore.namespace, job_id)
        await self._release(cluster)
        if outcome != "Complete" or result is None or not result.ok:
            reason = (result.error if result is not None else None) or NO_RESULT
            raise await self._fail(body, status, f"the restore Job failed: {reason}")
        status.verified = result.verified
        status.phase = "ScalingUp"
        status.progress = f"scaling DchatCluster {cluster.name} back to {cluster.spec.replicas}"
        await self._write(body, status)
        return Outcome(requeue_after=STEP_SECONDS, result="ScalingUp")

    async def _release(self, cluster: DchatCluster) -> None:
        fresh = await self.kube.get(CLUSTER, cluster.namespace, cluster.name)
        if fresh is not None and (fresh.get("status") or {}).get("restoreInProgress"):
            await self.hold(fresh, None)
        self._wake((cluster.namespace, cluster.name))

    async def _scaling_up(
        self, body: Obj, status: DchatRestoreStatus, cluster: DchatCluster
    ) -> Outcome:
        deployment = await self.kube.get(DEPLOYMENT, cluster.namespace, names(cluster).deployment)
        ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
        if ready < cluster.spec.replicas:
            await self._write(body, status)
            return Outcome(requeue_after=STEP_SECONDS, result="ScalingUp")
        status.phase, status.progress = "Completed", None
        status.completed_at = rfc3339(self._clock())
        await self._write(body, status)
        log.info("DchatRestore %s completed", body["metadata"].get("name"))
        return Outcome(result="Completed")

    async def _write(self, body: Obj, status: DchatRestoreStatus) -> None:
        new = status.model_dump(by_alias=True, mode="json")
        old = body.get("status") or {}
        if all(old.get(k) == v for k, v in new.items() if v is not None) and not any(
            k in old for k, v in new.items() if v is None
        ):
            return
        meta = body.get("metadata") or {}
        await self.kube.patch_status(
            RESTORE,
            str(meta.get("namespace")),
            str(meta.get("name")),
            new,
            str(meta.get("resourceVersion") or ""),
        )


class BootstrapController(_Jobs):
    """Restores spec.bootstrap.fromBackup into a new cluster before its pods run."""

    kind = "DchatClusterBootstrap"

    def cluster_event(
        self, engine: Engine[RestoreState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))
        if event_type == "DELETED":
            engine.forget(key)
            return
        bootstrap = ((body.get("spec") or {}).get("bootstrap") or {}).get("fromBackup")
        phase = ((body.get("status") or {}).get("bootstrap") or {}).get("phase")
        if bootstrap and phase not in ("Completed", "Failed"):
            engine.trigger(key, "spec")

    def job_event(self, engine: Engine[RestoreState], body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(c.LABEL_BOOTSTRAP)
        if owner:
            engine.trigger((str(meta.get("namespace") or "default"), str(owner)), "child")

    async def reconcile(self, key: Key, state: RestoreState, attempt: Attempt) -> Outcome:
        namespace, name = key
        body = await self.kube.get(CLUSTER, namespace, name)
        if body is None:
            return Outcome(forget=True, result="gone")
        try:
            cluster = DchatCluster.parse(body)
        except ValidationError:
            return Outcome(result="InvalidSpec")
        source = cluster.spec.bootstrap.from_backup
        s3 = cluster.spec.backup.s3
        current: Obj = dict((body.get("status") or {}).get("bootstrap") or {})
        if source is None or s3 is None or current.get("phase") in ("Completed", "Failed"):
            return Outcome(result="idle")
        progress: Obj = {"phase": "Pending", "backup": source.name, **current}
        made_by, wait = await self._source(namespace, source.name, source.cluster, progress)
        if wait is not None:
            return await self._write(body, progress, wait)
        deployment = await self.kube.get(DEPLOYMENT, namespace, names(cluster).deployment)
        if not deployment_scaled_down(deployment):
            progress["error"] = "waiting for the Deployment to have no pod"
            return await self._write(body, progress, Outcome(requeue_after=STEP_SECONDS))
        job_id = job_name(cluster.name, "bootstrap")

        def build() -> Obj:
            labels = {**restore_labels(cluster, cluster.name), c.LABEL_BOOTSTRAP: cluster.name}
            labels.pop(c.LABEL_RESTORE)
            return restore_job(
                cluster,
                s3,
                job=job_id,
                backup=source.name,
                source=made_by,
                owner=cluster_owner(cluster),
                labels=labels,
            )

        job = await self.run_job(namespace, job_id, build)
        progress.update(phase="Restoring", job=job_id, error=None)
        outcome = job_outcome(job)[0] if job is not None else None
        if outcome is None:
            return await self._write(body, progress, Outcome(requeue_after=POLL_SECONDS))
        result = await self.result(namespace, job_id)
        if outcome == "Complete" and result is not None and result.ok:
            progress.update(
                phase="Completed", verified=result.verified, completedAt=rfc3339(self._clock())
            )
            outcome_ = await self._write(body, progress, Outcome(result="Completed"))
            self._wake(key)
            log.info("DchatCluster %s/%s bootstrapped from %s", namespace, name, source.name)
            return outcome_
        reason = (result.error if result is not None else None) or NO_RESULT
        progress.update(phase="Failed", error=f"the restore Job failed: {reason}")
        return await self._write(body, progress, Outcome(result="Failed"))

    async def _source(
        self, namespace: str, backup: str, cluster: str | None, progress: Obj
    ) -> tuple[str, Outcome | None]:
        """(the cluster that made the backup, an outcome when the restore cannot start now;
        ``progress`` then says why)."""
        found = await self.kube.get(BACKUP, namespace, backup)
        made_by = cluster or str(((found or {}).get("spec") or {}).get("cluster") or "")
        phase = ((found or {}).get("status") or {}).get("phase")
        if found is None and not cluster:
            progress.update(
                phase="Failed",
                error=f"DchatBackup {backup} does not exist here; set "
                "bootstrap.fromBackup.cluster to restore it from S3 by name",
            )
            return made_by, Outcome(result="Failed")
        if found is not None and phase != "Completed":
            progress["error"] = f"waiting for DchatBackup {backup} to complete (it is {phase})"
            if phase == "Failed":
                progress["phase"] = "Failed"
                return made_by, Outcome(result="Failed")
            return made_by, Outcome(requeue_after=WAIT_SECONDS)
        return made_by, None

    async def _write(self, body: Obj, progress: Obj, outcome: Outcome) -> Outcome:
        clean = {k: v for k, v in progress.items() if v is not None}
        if (body.get("status") or {}).get("bootstrap") != clean:
            meta = body.get("metadata") or {}
            await self.kube.patch_status(
                CLUSTER,
                str(meta.get("namespace")),
                str(meta.get("name")),
                {"bootstrap": clean},
                str(meta.get("resourceVersion") or ""),
            )
        return outcome
