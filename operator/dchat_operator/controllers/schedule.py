"""The backup schedule of one DchatCluster: scheduled DchatBackups, retention, backup status.

Design:
- Its own engine and key per cluster (``(namespace, cluster)``), so the schedule never waits
  behind the cluster controller and vice versa. Triggers: a new generation of the cluster, any
  event of one of its DchatBackups (label ``dchat.dev/cluster``), the resync, and its own
  ``requeue_after`` until the next cron time (CloudNativePG's ScheduledBackup way; no
  CronJob).
- Each run: read the cluster (the first run of a cluster just created takes it from the
  watch) and its DchatBackups (one list by label), decide with the pure
  ``builders.schedule.plan`` (one backup when due, however many times were missed), create
  that DchatBackup (named after its cron time, so a crash between the create and the status
  write finds it existing and moves on; none while the previous scheduled one is still
  Pending or Running, so a cluster that cannot take backups does not pile them up), apply
  retention (``builders.schedule.expired``: a
  delete; the backup's finalizer deletes its S3 objects first), then write the status fields
  it owns (``BACKUP_OWNED``, conditions ``BACKUP_CONDITIONS``) with the resourceVersion read;
  the cluster controller's fields and conditions are left as they are, and a conflict is a
  failure the engine retries.
- ContinuousArchiving (SQLite with backups on): True when the Litestream sidecar is ready in
  every node pod (one list of the cluster's pods). Deployment events trigger a run; while the
  sidecar is not ready the schedule also looks again every 30 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, POD
from dchat_operator.api.models import DatabaseEngine, DchatCluster
from dchat_operator.builders import litestream
from dchat_operator.builders.backup import scheduled_backup
from dchat_operator.builders.common import selector_string
from dchat_operator.builders.schedule import (
    BACKUP_CONDITIONS,
    BACKUP_OWNED,
    BackupView,
    backup_status,
    expired,
    newest_completed,
    plan,
)
from dchat_operator.builders.status import status_patch
from dchat_operator.clients.kube import KubeAPI
from dchat_operator.clients.metrics import (
    BACKUP_HEALTHY,
    BACKUP_LAST_SUCCESS,
    CONTINUOUS_ARCHIVING,
)
from dchat_operator.controllers.engine import (
    Attempt,
    Engine,
    Key,
    Outcome,
    just_created,
    object_key,
    route_child_event,
    slim,
)

log = logging.getLogger("dchat_operator.schedule")
Obj = dict[str, Any]
ARCHIVING_POLL = 30.0
MAX_REQUEUE = 3600.0
"""Run at least hourly while backups are scheduled (overdue checks, retention by age)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ScheduleState:
    uid: str = ""
    requested_generation: int = 0
    archives: bool = True
    """The cluster's spec (as last seen on the watch) may replicate continuously: SQLite, or
    no engine said, with backups enabled. Only then do its pods matter here."""
    created: Obj | None = None
    """The watched body of a cluster just created (no status yet), for its first run."""


class ScheduleController:
    """Drives every cluster's backup schedule through an ``Engine``."""

    kind = "DchatClusterBackups"

    def __init__(self, kube: KubeAPI, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.kube = kube
        self._clock = clock

    def new_state(self) -> ScheduleState:
        return ScheduleState()

    # --- watch events -----------------------------------------------------------------------

    def cluster_event(
        self, engine: Engine[ScheduleState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        meta = body.get("metadata") or {}
        key = object_key(body)
        if event_type == "DELETED":
            engine.forget(key)
            return
        state = engine.ensure(key)
        state.archives = _may_archive(body)
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 0)
        if uid != state.uid or generation > state.requested_generation:
            state.uid, state.requested_generation = uid, generation
            state.created = slim(body) if not body.get("status") else None
            engine.trigger(key, "spec")

    def deployment_event(self, engine: Engine[ScheduleState], body: Mapping[str, Any]) -> None:
        """The node Deployment changed (pods came or went): ContinuousArchiving may have, on a
        cluster that archives (the others' schedule has nothing to do with their pods)."""
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
        key = (str(meta.get("namespace") or "default"), str(owner or ""))
        state = engine.state(key) if owner else None
        if state is not None and state.archives:
            engine.trigger(key, "child")

    def backup_event(self, engine: Engine[ScheduleState], body: Mapping[str, Any]) -> None:
        labels = (body.get("metadata") or {}).get("labels") or {}
        route_child_event(
            engine, body, labels.get(c.LABEL_CLUSTER) or (body.get("spec") or {}).get("cluster")
        )

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: Key, state: ScheduleState, attempt: Attempt) -> Outcome:
        namespace, name = key
        body, watched = await self._read(key, state, attempt)
        if body is None:
            _forget(namespace, name)
            return Outcome(forget=True, result="gone")
        try:
            cluster = DchatCluster.parse(body)
        except ValidationError:
            return Outcome(result="InvalidSpec")  # the cluster controller reports it
        now = self._clock()
        spec = cluster.spec.backup
        previous: Obj = body.get("status") or {}
        items = await self.kube.list_objects(BACKUP, namespace, f"{c.LABEL_CLUSTER}={name}")
        backups = [BackupView.of(item) for item in items]
        decision = plan(spec, previous.get("backupSchedule"), now)
        if decision.due is not None:
            backups = await self._due(cluster, decision.due, decision.verify, backups)
        backups = await self._retention(namespace, backups, cluster, now)
        archiving = await self._archiving(cluster)
        owned = backup_status(
            spec,
            decision.schedule_status,
            backups,
            previous,
            now,
            cluster.metadata.generation,
            archiving,
        )
        _export(cluster, backups, owned["conditions"])
        try:
            if not await self._write(body, previous, owned):
                return Outcome(forget=True, result="gone")
        except ApiException as exc:
            if not (watched and exc.status == 409):
                raise
            # the cluster controller wrote its status since the watch event: run again on a
            # fresh read (the backup created above is found by its name, not made twice)
            return Outcome(requeue_after=0.0, result="stale")
        if decision.schedule_status is None:
            return Outcome(result="unscheduled")
        wait = decision.requeue_after if decision.requeue_after is not None else MAX_REQUEUE
        if any(cond["status"] != "True" for cond in archiving):
            wait = min(wait, ARCHIVING_POLL)  # pod changes do not all reach this engine
        return Outcome(requeue_after=min(wait, MAX_REQUEUE), result="scheduled")

    async def _read(
        self, key: Key, state: ScheduleState, attempt: Attempt
    ) -> tuple[Obj | None, bool]:
        """(the cluster, whether it came from the watch): the first run of a cluster just
        created takes it from the watch (nothing but its author has written to it yet)."""
        body, state.created = state.created, None
        if body is not None and just_created(body, attempt):
            return body, True
        return await self.kube.get(CLUSTER, *key), False

    async def _due(
        self, cluster: DchatCluster, due: dt.datetime, verify: bool, backups: list[BackupView]
    ) -> list[BackupView]:
        """Create the backup that is due, unless the last scheduled one has not finished."""
        unfinished = [b.name for b in backups if b.scheduled and b.phase in ("Pending", "Running")]
        if unfinished:
            # never stack backups on a cluster that cannot take them (BackupHealthy turns
            # False as the schedule gets overdue)
            log.warning(
                "schedule of %s/%s: skipping the backup due at %s, %s has not finished",
                cluster.namespace,
                cluster.metadata.name,
                due.isoformat(),
                unfinished[0],
            )
            return backups
        created = await self._create(cluster, due, verify)
        return [*backups, BackupView.of(created)] if created is not None else backups

    async def _archiving(self, cluster: DchatCluster) -> tuple[Obj, ...]:
        """The ContinuousArchiving condition of a SQLite cluster with backups on."""
        if litestream.target(cluster) is None:
            return ()
        pods = await self.kube.list_objects(POD, cluster.namespace, selector_string(cluster))
        ready, message = litestream.sidecar_ready(pods)
        reason = "SidecarReady" if ready else "SidecarNotReady"
        return (
            {
                "type": "ContinuousArchiving",
                "status": "True" if ready else "False",
                "reason": reason,
                "message": message,
            },
        )

    async def _retention(
        self, namespace: str, backups: list[BackupView], cluster: DchatCluster, now: dt.datetime
    ) -> list[BackupView]:
        """Delete what retention expires; the backups that remain."""
        gone = set()
        for expired_name in expired(backups, cluster.spec.backup.retention, now):
            log.info("retention: deleting DchatBackup %s/%s", namespace, expired_name)
            await self.kube.delete(BACKUP, namespace, expired_name)
            gone.add(expired_name)
        return [b for b in backups if b.name not in gone]

    async def _write(self, body: Obj, previous: Obj, owned: Obj) -> bool:
        """Patch the owned status fields (False: the cluster is gone; 409 raises)."""
        patch = status_patch(previous, owned, BACKUP_OWNED, BACKUP_CONDITIONS)
        if patch is None:
            return True
        meta = body.get("metadata") or {}
        try:
            await self.kube.patch_status(
                CLUSTER,
                str(meta.get("namespace")),
                str(meta.get("name")),
                patch,
                str(meta.get("resourceVersion") or ""),
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _create(self, cluster: DchatCluster, due: dt.datetime, verify: bool) -> Obj | None:
        obj = scheduled_backup(cluster, due, verify=verify)
        try:
            created = await self.kube.create(obj, BACKUP)
        except ApiException as exc:
            if exc.status != 409:
                raise
            log.info("scheduled DchatBackup %s exists already", obj["metadata"]["name"])
            return None
        log.info("schedule: created DchatBackup %s/%s", cluster.namespace, obj["metadata"]["name"])
        return created


def _may_archive(body: Mapping[str, Any]) -> bool:
    """``litestream.target`` on the raw spec, without parsing it: backups enabled and the
    engine SQLite (or not said: the default). Errs on True, which costs a reconcile."""
    spec = body.get("spec") or {}
    backup = spec.get("backup") or {}
    engine = (spec.get("database") or {}).get("engine", DatabaseEngine.sqlite.value)
    return bool(backup.get("enabled")) and engine == DatabaseEngine.sqlite.value


def _export(cluster: DchatCluster, backups: list[BackupView], conditions: list[Obj]) -> None:
    """The metrics the alert rules read (``builders.monitoring``): the completion time of the
    newest completed backup (from the DchatBackups, so a restarted operator has it before
    the next backup completes), the BackupHealthy condition (1/0; no series while Unknown)
    and whether continuous archiving runs (SQLite with backups on)."""
    labels = (cluster.namespace, cluster.name)
    done = newest_completed(backups)
    if done is not None and done.completed is not None:
        BACKUP_LAST_SUCCESS.labels(*labels).set(done.completed.timestamp())
    by_type = {cond["type"]: cond["status"] for cond in conditions}
    healthy = by_type.get("BackupHealthy")
    if healthy in ("True", "False"):
        BACKUP_HEALTHY.labels(*labels).set(1.0 if healthy == "True" else 0.0)
    else:
        with contextlib.suppress(KeyError):
            BACKUP_HEALTHY.remove(*labels)
    archiving = by_type.get("ContinuousArchiving")
    if archiving is not None:
        CONTINUOUS_ARCHIVING.labels(*labels).set(1.0 if archiving == "True" else 0.0)


def _forget(namespace: str, name: str) -> None:
    """A deleted cluster's series go (no stale "no backup for 26 h" alert for it)."""
    for gauge in (BACKUP_LAST_SUCCESS, BACKUP_HEALTHY, CONTINUOUS_ARCHIVING):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
