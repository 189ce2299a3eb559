"""The backup schedule: next-time math, missed times once, suspend, retention, cluster backup
status; and the schedule controller on the fake Kubernetes API (no fight with the cluster
controller over status)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, POD
from dchat_operator.api.models import BackupSpec, RetentionSpec
from dchat_operator.builders.schedule import BackupView, backup_status, expired, health, plan
from dchat_operator.builders.status import CLUSTER_OWNED
from dchat_operator.controllers.engine import Backoff, Engine
from dchat_operator.controllers.schedule import ScheduleController, ScheduleState
from tests.operator.unit.fake_kube import FakeKube, cluster_cr

pytestmark = pytest.mark.unit

NS = "ns1"
UTC = dt.UTC
S3 = {"bucket": "bkt", "credentialsSecretRef": {"name": "s3creds"}}
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}


def at(hour: int, minute: int = 0, day: int = 30) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def spec(**over: Any) -> BackupSpec:
    return BackupSpec.model_validate({"enabled": True, "schedule": "0 * * * *", "s3": S3, **over})


# --- plan ---------------------------------------------------------------------------------


def test_a_new_schedule_starts_from_now_and_waits_for_the_next_time() -> None:
    p = plan(spec(), None, at(10, 20))
    assert p.due is None
    assert p.schedule_status is not None
    assert p.schedule_status["nextScheduleTime"] == "2026-11-30T11:00:00Z"
    assert p.schedule_status["since"] == "2026-11-30T10:20:00Z"
    assert p.requeue_after == 40 * 60


def test_due_time_creates_one_and_moves_on() -> None:
    first = plan(spec(), None, at(10, 20)).schedule_status
    p = plan(spec(), first, at(11, 0))
    assert p.due == at(11)
    assert p.schedule_status is not None
    assert p.schedule_status["lastScheduleTime"] == "2026-11-30T11:00:00Z"
    assert p.schedule_status["nextScheduleTime"] == "2026-11-30T12:00:00Z"
    assert p.schedule_status["scheduled"] == 1
    assert p.requeue_after == 3600
    # the same instant again (a rerun after the status write): nothing new is due
    again = plan(spec(), p.schedule_status, at(11, 0))
    assert again.due is None


def test_missed_times_during_downtime_run_once() -> None:
    first = plan(spec(), None, at(10, 20)).schedule_status
    p = plan(spec(), first, at(15, 37))  # 11:00 ... 15:00 missed: five times
    assert p.due == at(15)  # one backup, named after the newest missed time
    assert p.schedule_status is not None
    assert p.schedule_status["scheduled"] == 1
    assert p.schedule_status["nextScheduleTime"] == "2026-11-30T16:00:00Z"
    assert plan(spec(), p.schedule_status, at(15, 38)).due is None


def test_suspend_stops_and_resume_does_not_catch_up() -> None:
    first = plan(spec(), None, at(10, 20)).schedule_status
    suspended = plan(spec(suspend=True), first, at(12, 30))
    assert suspended.due is None
    assert suspended.requeue_after is None
    assert suspended.schedule_status is not None
    assert "nextScheduleTime" not in suspended.schedule_status
    resumed = plan(spec(), suspended.schedule_status, at(14, 10))
    assert resumed.due is None
    assert resumed.schedule_status is not None
    assert resumed.schedule_status["nextScheduleTime"] == "2026-11-30T15:00:00Z"


def test_a_changed_schedule_restarts_from_now() -> None:
    first = plan(spec(), None, at(10, 20)).schedule_status
    p = plan(spec(schedule="30 3 * * *"), first, at(11, 5))
    assert p.due is None
    assert p.schedule_status is not None
    assert p.schedule_status["nextScheduleTime"] == "2026-12-01T03:30:00Z"


def test_verify_every_nth() -> None:
    status = plan(spec(verifyEvery=3), None, at(0, 30)).schedule_status
    verified = []
    for hour in range(1, 7):
        p = plan(spec(verifyEvery=3), status, at(hour))
        verified.append(p.verify)
        status = p.schedule_status
    assert verified == [False, False, True, False, False, True]
    never = plan(spec(verifyEvery=0), plan(spec(), None, at(0, 30)).schedule_status, at(1))
    assert never.due is not None
    assert not never.verify


def test_disabled_backups_are_not_scheduled() -> None:
    assert plan(BackupSpec(), None, at(10)).schedule_status is None


# --- retention ----------------------------------------------------------------------------


def view(
    name: str,
    created: dt.datetime,
    phase: str = "Completed",
    *,
    scheduled: bool = True,
    verified: bool | None = None,
) -> BackupView:
    completed = created + dt.timedelta(minutes=5) if phase == "Completed" else None
    return BackupView(
        name=name,
        phase=phase,
        created=created,
        started=created,
        completed=completed,
        location=f"s3://bkt/{name}/" if phase == "Completed" else "",
        scheduled=scheduled,
        deleting=False,
        verified=verified,
        error="boom" if phase == "Failed" else "",
    )


def test_retention_keeps_the_newest_and_drops_the_old() -> None:
    backups = [view(f"b{d}", at(3, day=d)) for d in range(20, 30)]
    keep3 = RetentionSpec(keepLast=3, maxAgeDays=30)
    assert expired(backups, keep3, at(12)) == [f"b{d}" for d in range(20, 27)]
    by_age = RetentionSpec(keepLast=100, maxAgeDays=5)
    assert expired(backups, by_age, at(12)) == ["b20", "b21", "b22", "b23", "b24", "b25"]


def test_retention_never_deletes_the_last_successful_backup() -> None:
    backups = [
        view("ok-old", at(3, day=1)),
        *[view(f"f{d}", at(3, day=d), "Failed") for d in range(20, 25)],
    ]
    gone = expired(backups, RetentionSpec(keepLast=2, maxAgeDays=7), at(12, day=25))
    assert "ok-old" not in gone
    assert gone == ["f20", "f21", "f22"]


def test_retention_ignores_on_demand_and_unfinished_backups() -> None:
    backups = [
        view("manual", at(3, day=1), scheduled=False),
        view("running", at(3, day=2), "Running"),
        view("new", at(3, day=29)),
    ]
    assert expired(backups, RetentionSpec(keepLast=1, maxAgeDays=1), at(12)) == []


# --- status -------------------------------------------------------------------------------


def test_status_fields_and_conditions() -> None:
    sched = plan(spec(), None, at(0, 30)).schedule_status
    backups = [
        view("b1", at(1), verified=True),
        view("b2", at(2)),
        view("b3", at(3), "Running"),
    ]
    status = backup_status(spec(), sched, backups, None, at(3, 2), 4)
    assert status["lastBackup"]["name"] == "b3"
    assert status["lastBackup"]["phase"] == "Running"
    assert status["lastSuccessfulBackup"] == {
        "name": "b2",
        "phase": "Completed",
        "time": "2026-11-30T02:05:00Z",
        "location": "s3://bkt/b2/",
    }
    assert status["firstRecoverabilityPoint"] == "2026-11-30T01:05:00Z"
    assert status["backupSchedule"] == sched
    conds = {x["type"]: x for x in status["conditions"]}
    assert conds["BackupHealthy"]["status"] == "True"
    assert (conds["BackupVerified"]["status"], conds["BackupVerified"]["message"]) == (
        "True",
        "backup b1 verified",
    )
    assert set(status) & CLUSTER_OWNED == {"conditions"}


def test_health_is_false_after_a_failed_scheduled_backup_or_when_overdue() -> None:
    sched = plan(spec(), None, at(0, 30)).schedule_status
    failed = health(spec(), sched, [view("b1", at(1)), view("b2", at(2), "Failed")], at(2, 10))
    assert failed is not None
    assert (failed["status"], failed["reason"]) == ("False", "LastBackupFailed")
    assert "b2" in failed["message"]
    # the 01:00 backup completed at 01:05; at 03:30 the 02:00 one had a whole period: overdue
    overdue = health(spec(), sched, [view("b1", at(1))], at(3, 30))
    assert overdue is not None
    assert (overdue["status"], overdue["reason"]) == ("False", "BackupOverdue")
    fine = health(spec(), sched, [view("b1", at(1)), view("b2", at(2))], at(3, 30))
    assert fine is not None
    assert fine["status"] == "True"
    assert health(BackupSpec(), None, [], at(3)) is None


# --- the controller -----------------------------------------------------------------------


@dataclass
class World:
    kube: FakeKube
    controller: ScheduleController
    engine: Engine[ScheduleState]
    now: list[dt.datetime] = field(default_factory=list)

    def cluster(self, name: str = "c1", **backup: Any) -> None:
        backup.setdefault("schedule", "0 * * * *")
        self.kube.put(
            CLUSTER,
            cluster_cr(name, NS, database=PG, backup={"enabled": True, "s3": S3, **backup}),
        )
        self.event(name)

    def event(self, name: str = "c1") -> None:
        body = self.kube.obj(CLUSTER, NS, name)
        assert body is not None
        self.controller.cluster_event(self.engine, "MODIFIED", body)

    async def tick(self, when: dt.datetime, name: str = "c1") -> None:
        self.now[0] = when
        self.kube.now = when.strftime("%Y-%m-%dT%H:%M:%SZ")  # creationTimestamp of new objects
        self.engine.trigger((NS, name), "requeue")
        await asyncio.sleep(0)
        await self.engine.wait_idle()

    def status(self, name: str = "c1") -> dict[str, Any]:
        found = self.kube.obj(CLUSTER, NS, name)
        assert found is not None
        return dict(found.get("status") or {})

    def backups(self) -> list[str]:
        return sorted(n for (p, _, n) in self.kube.objects if p == BACKUP.plural)

    def finish(self, name: str, phase: str, completed: str) -> None:
        found = self.kube.obj(BACKUP, NS, name)
        assert found is not None
        status = {"phase": phase, "completedAt": completed, "startedAt": completed}
        if phase == "Completed":
            status["location"] = f"s3://bkt/{name}/"
        self.kube.set_status(BACKUP, NS, name, status)
        self.controller.backup_event(self.engine, found)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    kube = FakeKube()
    now = [at(10, 20)]
    controller = ScheduleController(kube, clock=lambda: now[0])
    engine: Engine[ScheduleState] = Engine(
        controller, workers=2, backoff=Backoff(base=0.02, cap=0.1, jitter=0.0)
    )
    engine.start()
    yield World(kube, controller, engine, now)
    await engine.stop()


async def test_the_schedule_creates_backups_on_time_and_once_after_downtime(world: World) -> None:
    world.cluster(schedule="0 * * * *")
    await world.tick(at(10, 20))
    assert world.backups() == []
    assert world.status()["backupSchedule"]["nextScheduleTime"] == "2026-11-30T11:00:00Z"
    await world.tick(at(11, 0))
    assert world.backups() == ["c1-20261130110000"]
    made = world.kube.obj(BACKUP, NS, "c1-20261130110000")
    assert made is not None
    assert made["metadata"]["labels"][c.LABEL_CLUSTER] == "c1"
    assert made["spec"] == {"cluster": "c1", "verify": True}
    assert world.status()["lastBackup"]["name"] == "c1-20261130110000"
    world.finish("c1-20261130110000", "Completed", "2026-11-30T11:05:00Z")
    # the operator is away from 11:30 to 15:10: one backup, not four
    await world.tick(at(15, 10))
    assert world.backups() == ["c1-20261130110000", "c1-20261130150000"]
    await world.tick(at(15, 11))
    assert len(world.backups()) == 2


async def test_a_new_clusters_first_run_takes_it_from_the_watch(world: World) -> None:
    world.cluster()
    await world.engine.wait_idle()
    assert world.kube.count("GET", CLUSTER.plural) == 0
    assert world.status()["backupSchedule"]["nextScheduleTime"] == "2026-11-30T11:00:00Z"


async def test_a_stale_watched_body_on_the_first_run_means_a_rerun_on_a_fresh_read(
    world: World,
) -> None:
    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"kind": "DchatClusterBackups", **labels}) or 0.0

    errors = count("dchat_operator_reconcile_errors_total", trigger="spec")
    stale = count("dchat_operator_reconciles_total", trigger="spec", result="stale")
    world.cluster("c2")
    # the cluster controller writes its status before the schedule's first run
    world.kube.set_status(CLUSTER, NS, "c2", {"phase": "Progressing"})
    await asyncio.sleep(0)
    await world.engine.wait_idle()  # the first run: 409, a requeue at once
    await asyncio.sleep(0.01)
    await world.engine.wait_idle()
    assert world.kube.count("PATCH_STATUS", CLUSTER.plural) == 2  # a 409, then the write
    assert world.kube.count("GET", CLUSTER.plural) == 1
    status = world.status("c2")
    assert status["phase"] == "Progressing"
    assert status["backupSchedule"]["nextScheduleTime"] == "2026-11-30T11:00:00Z"
    # a requeue, not a failure retried with backoff
    assert count("dchat_operator_reconciles_total", trigger="spec", result="stale") == stale + 1
    assert count("dchat_operator_reconcile_errors_total", trigger="spec") == errors


async def test_suspend_stops_the_schedule(world: World) -> None:
    world.cluster(suspend=True)
    await world.tick(at(10, 20))
    await world.tick(at(12, 0))
    assert world.backups() == []
    healthy = next(x for x in world.status()["conditions"] if x["type"] == "BackupHealthy")
    assert healthy["reason"] == "Suspended"


async def test_retention_runs_after_backups_finish(world: World) -> None:
    world.cluster(retention={"keepLast": 2, "maxAgeDays": 30})
    await world.tick(at(10, 20))
    for hour in (11, 12, 13):
        await world.tick(at(hour))
        world.finish(f"c1-20261130{hour}0000", "Completed", f"2026-11-30T{hour}:05:00Z")
    await world.tick(at(13, 10))
    assert world.backups() == ["c1-20261130120000", "c1-20261130130000"]
    status = world.status()
    assert status["lastSuccessfulBackup"]["name"] == "c1-20261130130000"
    assert status["firstRecoverabilityPoint"] == "2026-11-30T12:05:00Z"
    healthy = next(x for x in status["conditions"] if x["type"] == "BackupHealthy")
    assert healthy["status"] == "True"


async def test_the_schedule_leaves_the_cluster_controllers_status_alone(world: World) -> None:
    world.cluster()
    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "AllReplicasReady",
        "message": "",
        "lastTransitionTime": "t0",
    }
    theirs = {"phase": "Ready", "readyReplicas": 1, "conditions": [ready]}
    world.kube.set_status(CLUSTER, NS, "c1", theirs)
    await world.tick(at(10, 20))
    status = world.status()
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 1
    assert status["conditions"][0] == ready
    assert [x["type"] for x in status["conditions"]] == ["Ready", "BackupHealthy"]
    writes = len(world.kube.writes())
    await world.tick(at(10, 21))
    assert len(world.kube.writes()) == writes  # nothing changed: nothing written


async def test_continuous_archiving_follows_the_litestream_sidecar(world: World) -> None:
    world.kube.put(
        CLUSTER,
        cluster_cr("lite", NS, backup={"enabled": True, "s3": S3, "schedule": "0 * * * *"}),
    )
    world.event("lite")
    await world.tick(at(10, 20), "lite")
    cond = next(x for x in world.status("lite")["conditions"] if x["type"] == "ContinuousArchiving")
    assert (cond["status"], cond["message"]) == ("False", "no node pod")
    labels = {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: "lite",
        c.LABEL_COMPONENT: c.COMPONENT,
    }
    world.kube.put(
        POD,
        {
            "metadata": {"name": "lite-abc", "namespace": NS, "labels": labels},
            "status": {"initContainerStatuses": [{"name": "litestream", "ready": True}]},
        },
    )
    await world.tick(at(10, 21), "lite")
    cond = next(x for x in world.status("lite")["conditions"] if x["type"] == "ContinuousArchiving")
    assert (cond["status"], cond["reason"]) == ("True", "SidecarReady")
    # the alert rules read the condition as a gauge (builders.monitoring)
    assert _sample("dchat_operator_continuous_archiving_ready", "lite") == 1.0


def _sample(metric: str, cluster: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": NS, "cluster": cluster})


async def test_the_last_successful_backup_time_is_exported_from_the_backups(
    world: World,
) -> None:
    """A restarted operator has the gauge from the DchatBackups before the next backup
    completes (the "no successful backup in 26 h" alert reads it); a deleted cluster's
    series goes."""
    world.cluster("c9")
    await world.tick(at(10, 20), "c9")
    assert _sample("dchat_operator_backup_last_success_timestamp_seconds", "c9") is None
    assert _sample("dchat_operator_backup_healthy", "c9") is None
    await world.tick(at(11, 0), "c9")
    world.finish("c9-20261130110000", "Completed", "2026-11-30T11:05:00Z")
    await world.tick(at(11, 6), "c9")
    completed = dt.datetime(2026, 11, 30, 11, 5, tzinfo=dt.UTC).timestamp()
    assert _sample("dchat_operator_backup_last_success_timestamp_seconds", "c9") == completed
    assert _sample("dchat_operator_backup_healthy", "c9") == 1.0
    await world.tick(at(12, 0), "c9")
    world.finish("c9-20261130120000", "Failed", "2026-11-30T12:05:00Z")
    await world.tick(at(12, 6), "c9")
    assert _sample("dchat_operator_backup_healthy", "c9") == 0.0  # DchatBackupUnhealthy
    world.kube.objects.pop((CLUSTER.plural, NS, "c9"))
    await world.tick(at(11, 7), "c9")
    assert _sample("dchat_operator_backup_last_success_timestamp_seconds", "c9") is None
    assert _sample("dchat_operator_backup_healthy", "c9") is None


async def test_no_new_backup_while_the_last_scheduled_one_has_not_finished(world: World) -> None:
    world.cluster()
    await world.tick(at(10, 20))
    await world.tick(at(11, 0))
    await world.tick(at(12, 0))  # the 11:00 backup is still Pending (cluster not Ready)
    assert world.backups() == ["c1-20261130110000"]
    await world.tick(at(13, 30))
    healthy = next(x for x in world.status()["conditions"] if x["type"] == "BackupHealthy")
    assert (healthy["status"], healthy["reason"]) == ("False", "BackupOverdue")
    world.finish("c1-20261130110000", "Completed", "2026-11-30T13:31:00Z")
    await world.tick(at(14, 0))
    assert world.backups() == ["c1-20261130110000", "c1-20261130140000"]


async def test_deployment_events_reach_only_the_schedules_of_archiving_clusters(
    world: World,
) -> None:
    """The node Deployment's events matter to a schedule only for ContinuousArchiving
    (SQLite with backups on): a cluster without backups, or on PostgreSQL, is not run for
    them (at 50 new clusters this was ~8 of ~43 API requests per cluster)."""
    world.kube.put(CLUSTER, cluster_cr("plain", NS))
    world.kube.put(CLUSTER, cluster_cr("pg", NS, database=PG, backup={"enabled": True, "s3": S3}))
    world.kube.put(CLUSTER, cluster_cr("lite", NS, backup={"enabled": True, "s3": S3}))
    for name in ("plain", "pg", "lite"):
        world.event(name)
    await asyncio.sleep(0)
    await world.engine.wait_idle()
    world.kube.calls.clear()
    for name in ("plain", "pg", "lite"):
        deployment = {
            "metadata": {"name": name, "namespace": NS, "labels": {c.LABEL_INSTANCE: name}}
        }
        world.controller.deployment_event(world.engine, deployment)
    await asyncio.sleep(0)
    await world.engine.wait_idle()
    read = {call.name for call in world.kube.calls if call.plural == CLUSTER.plural}
    assert read == {"lite"}
    # backups turned on for the plain cluster: its Deployment events count from then on
    found = world.kube.obj(CLUSTER, NS, "plain")
    assert found is not None
    found["spec"]["backup"] = {"enabled": True, "s3": S3}
    found["metadata"]["generation"] = 2
    world.kube.put(CLUSTER, found)
    world.event("plain")
    await asyncio.sleep(0)
    await world.engine.wait_idle()
    world.kube.calls.clear()
    deployment = {
        "metadata": {"name": "plain", "namespace": NS, "labels": {c.LABEL_INSTANCE: "plain"}}
    }
    world.controller.deployment_event(world.engine, deployment)
    await asyncio.sleep(0)
    await world.engine.wait_idle()
    assert {call.name for call in world.kube.calls if call.plural == CLUSTER.plural} == {"plain"}
