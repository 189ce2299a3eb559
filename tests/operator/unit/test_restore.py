"""Restores on the fake Kubernetes API: DchatRestore into an existing PostgreSQL cluster (hold
at 0 replicas, restore Job, release), failures, and spec.bootstrap.fromBackup."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, DEPLOYMENT, JOB, POD, RESTORE
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import workload
from dchat_operator.builders.restore import held, hold_reason
from dchat_operator.controllers.engine import Backoff, Engine, Key
from dchat_operator.controllers.restore import BootstrapController, RestoreController, RestoreState
from tests.operator.unit.conftest import cluster as parsed_cluster
from tests.operator.unit.fake_kube import FakeKube, cluster_cr

pytestmark = pytest.mark.unit

NS = "ns1"
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
S3 = {"bucket": "bkt", "credentialsSecretRef": {"name": "s3creds"}}
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def finish_job(kube: FakeKube, job: str, message: str | None, *, ok: bool = True) -> None:
    terminated: dict[str, Any] = {"exitCode": 0 if ok else 1}
    if message is not None:
        terminated["message"] = message
    kube.put(
        POD,
        {
            "metadata": {
                "name": f"{job}-x",
                "namespace": NS,
                "labels": {"batch.kubernetes.io/job-name": job},
            },
            "status": {
                "containerStatuses": [{"name": "backup", "state": {"terminated": terminated}}]
            },
        },
    )
    kind = "Complete" if ok else "Failed"
    kube.set_status(JOB, NS, job, {"conditions": [{"type": kind, "status": "True"}]})


@dataclass
class World:
    kube: FakeKube
    restores: RestoreController
    restore_engine: Engine[RestoreState]
    bootstraps: BootstrapController
    bootstrap_engine: Engine[RestoreState]
    woken: list[Key] = field(default_factory=list)

    def cluster(self, name: str = "c1", replicas: int = 2, **spec: Any) -> None:
        spec.setdefault("database", PG)
        spec.setdefault("backup", {"s3": S3})
        self.kube.put(CLUSTER, cluster_cr(name, NS, replicas=replicas, **spec))
        self.deployment(name, replicas, replicas)

    def deployment(self, name: str, want: int, running: int) -> None:
        self.kube.put(
            DEPLOYMENT,
            {
                "metadata": {"name": name, "namespace": NS},
                "spec": {"replicas": want},
                "status": {"replicas": running, "readyReplicas": running},
            },
        )

    def backup(
        self,
        name: str,
        cluster: str = "c1",
        phase: str = "Completed",
        done: str = "",
        engine: str = "postgres",
    ) -> None:
        self.kube.put(
            BACKUP,
            {
                "metadata": {"name": name, "namespace": NS, "labels": {c.LABEL_CLUSTER: cluster}},
                "spec": {"cluster": cluster},
                "status": {
                    "phase": phase,
                    "completedAt": done or "2026-11-30T03:00:00Z",
                    "engine": engine,
                },
            },
        )

    def restore(self, name: str = "r1", **spec: Any) -> None:
        self.kube.put(RESTORE, {"metadata": {"name": name, "namespace": NS}, "spec": spec})
        self.trigger(name)

    def trigger(self, name: str = "r1") -> None:
        self.restore_engine.trigger((NS, name), "spec")

    async def idle(self) -> None:
        for _ in range(2):
            await asyncio.sleep(0.01)
            await self.restore_engine.wait_idle()
            await self.bootstrap_engine.wait_idle()

    def status(self, name: str = "r1") -> dict[str, Any]:
        found = self.kube.obj(RESTORE, NS, name)
        assert found is not None
        return dict(found.get("status") or {})

    def cluster_status(self, name: str = "c1") -> dict[str, Any]:
        found = self.kube.obj(CLUSTER, NS, name)
        assert found is not None
        return dict(found.get("status") or {})


@pytest.fixture
async def world() -> AsyncIterator[World]:
    kube = FakeKube()
    woken: list[Key] = []
    restores = RestoreController(kube, wake=woken.append, clock=lambda: NOW)
    bootstraps = BootstrapController(kube, wake=woken.append, clock=lambda: NOW)
    backoff = Backoff(base=0.02, cap=0.1, jitter=0.0)
    r_engine: Engine[RestoreState] = Engine(restores, workers=2, backoff=backoff)
    b_engine: Engine[RestoreState] = Engine(bootstraps, workers=2, backoff=backoff)
    r_engine.start()
    b_engine.start()
    yield World(kube, restores, r_engine, bootstraps, b_engine, woken)
    await r_engine.stop()
    await b_engine.stop()


def test_a_hold_builds_the_cluster_with_zero_replicas() -> None:
    cl = parsed_cluster("c1", database=PG, replicas=3)
    assert held(cl, None) is cl
    status = {"restoreInProgress": {"name": "r1"}}
    assert hold_reason(cl, status) == "DchatRestore r1 is restoring into it"
    assert workload.deployment(held(cl, status))["spec"]["replicas"] == 0
    boot = parsed_cluster(
        "c2", database=PG, replicas=2, backup={"s3": S3}, bootstrap={"fromBackup": {"name": "b1"}}
    )
    assert held(boot, None).spec.replicas == 0
    assert held(boot, {"bootstrap": {"phase": "Restoring"}}).spec.replicas == 0
    assert held(boot, {"bootstrap": {"phase": "Completed"}}).spec.replicas == 2


def test_bootstrap_needs_s3() -> None:
    DchatCluster.parse(  # SQLite too: the restore Job fills the new volume
        cluster_cr("c1", NS, backup={"s3": S3}, bootstrap={"fromBackup": {"name": "b1"}})
    )
    with pytest.raises(ValueError, match=r"needs backup\.s3"):
        DchatCluster.parse(
            cluster_cr("c1", NS, database=PG, bootstrap={"fromBackup": {"name": "b1"}})
        )


async def test_a_restore_holds_the_cluster_restores_and_releases_it(world: World) -> None:
    world.cluster("c1", replicas=2)
    world.backup("b1")
    world.restore(backup="b1", target="c1")
    await world.idle()
    assert world.status()["phase"] == "ScalingDown"
    assert world.cluster_status()["restoreInProgress"]["name"] == "r1"
    assert (NS, "c1") in world.woken
    assert world.kube.obj(JOB, NS, "r1-restore") is None  # not while pods run
    world.deployment("c1", 0, 0)  # the cluster controller's part, woken by the hold
    world.trigger()
    await world.idle()
    status = world.status()
    assert status["phase"] == "Restoring"
    assert status["backup"] == "b1"
    job = world.kube.obj(JOB, NS, "r1-restore")
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:4] == ["backup", "restore", "--name", "b1"]
    assert "--replace" in container["args"]  # over what the existing cluster holds
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DCHAT_BACKUP_PREFIX"] == "dchat/ns1/c1/"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DchatRestore"
    finish_job(world.kube, "r1-restore", json.dumps({"ok": True, "verified": True}))
    world.trigger()
    await world.idle()
    assert world.status()["phase"] == "ScalingUp"
    assert world.status()["verified"] is True
    assert "restoreInProgress" not in world.cluster_status()
    world.deployment("c1", 2, 2)
    world.trigger()
    await world.idle()
    assert world.status()["phase"] == "Completed"


async def test_a_failed_restore_releases_the_cluster_and_says_why(world: World) -> None:
    world.cluster("c1")
    world.deployment("c1", 0, 0)
    world.backup("b1")
    world.restore(backup="b1", target="c1")
    await world.idle()
    finish_job(
        world.kube, "r1-restore", json.dumps({"ok": False, "error": "target not empty"}), ok=False
    )
    world.trigger()
    await world.idle()
    status = world.status()
    assert status["phase"] == "Failed"
    assert "target not empty" in status["error"]
    assert "restoreInProgress" not in world.cluster_status()


async def test_latest_picks_the_newest_completed_backup_of_the_source(world: World) -> None:
    world.cluster("c2")  # runs pods: the Job comes in a later run, after the scale-down
    world.backup("old", "c1", done="2026-11-28T03:00:00Z")
    world.backup("new", "c1", done="2026-11-30T03:00:00Z")
    world.backup("broken", "c1", phase="Failed", done="2026-11-30T04:00:00Z")
    world.restore(latest=True, cluster="c1", target="c2")
    await world.idle()
    assert world.status()["backup"] == "new"
    assert world.status()["sourceCluster"] == "c1"
    world.deployment("c2", 0, 0)
    world.trigger()
    await world.idle()
    job = world.kube.obj(JOB, NS, "r1-restore")
    assert job is not None
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DCHAT_BACKUP_PREFIX"] == "dchat/ns1/c1/"  # the source cluster's backups
    assert env["DCHAT_BACKUP_CLUSTER"] == "c1"


async def test_restores_that_cannot_run_fail_with_a_reason(world: World) -> None:
    world.cluster("c1")
    world.cluster("lite", replicas=1, database={"engine": "sqlite"})
    world.backup("b1")
    world.backup("running", phase="Running")
    world.restore("r1", backup="nope", target="c1")
    world.restore("r2", backup="b1", target="missing")
    world.restore("r3", backup="b1", target="lite")
    world.restore("r4", backup="running", target="c1")
    await world.idle()
    assert "DchatBackup nope does not exist" in world.status("r1")["error"]
    assert "DchatCluster missing does not exist" in world.status("r2")["error"]
    assert world.status("r3")["error"] == (
        "DchatBackup b1 is a postgres backup; DchatCluster lite runs sqlite"
    )
    assert "not Completed" in world.status("r4")["error"]
    for name in ("r1", "r2", "r3", "r4"):
        assert world.status(name)["phase"] == "Failed"
    assert "restoreInProgress" not in world.cluster_status()


async def test_a_restore_into_an_existing_sqlite_cluster_replaces_its_file(world: World) -> None:
    world.cluster("lite", replicas=1, database={"engine": "sqlite"})
    world.backup("s1", "lite", engine="sqlite")
    world.restore(backup="s1", target="lite")
    await world.idle()
    assert world.status()["phase"] == "ScalingDown"
    world.deployment("lite", 0, 0)
    world.trigger()
    await world.idle()
    job = world.kube.obj(JOB, NS, "r1-restore")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:4] == ["backup", "restore", "--name", "s1"]
    assert "--replace" in pod["containers"][0]["args"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "lite-data"}


async def test_one_restore_at_a_time(world: World) -> None:
    world.cluster("c1")
    world.backup("b1")
    world.restore("r1", backup="b1", target="c1")
    await world.idle()
    world.restore("r2", backup="b1", target="c1")
    await world.idle()
    assert world.status("r2")["phase"] == "Pending"
    assert "r1" in world.status("r2")["progress"]


async def test_bootstrap_restores_before_the_pods_start(world: World) -> None:
    world.backup("b1", "old")
    world.kube.put(
        CLUSTER,
        cluster_cr(
            "c2", NS, database=PG, backup={"s3": S3}, bootstrap={"fromBackup": {"name": "b1"}}
        ),
    )
    body = world.kube.obj(CLUSTER, NS, "c2")
    assert body is not None
    world.bootstraps.cluster_event(world.bootstrap_engine, "ADDED", body)
    await world.idle()
    boot = world.cluster_status("c2")["bootstrap"]
    assert (boot["phase"], boot["backup"], boot["job"]) == ("Restoring", "b1", "c2-bootstrap")
    job = world.kube.obj(JOB, NS, "c2-bootstrap")
    assert job is not None
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DchatCluster"
    assert job["metadata"]["labels"][c.LABEL_BOOTSTRAP] == "c2"
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DCHAT_BACKUP_PREFIX"] == "dchat/ns1/old/"
    finish_job(world.kube, "c2-bootstrap", json.dumps({"ok": True, "verified": True}))
    world.bootstrap_engine.trigger((NS, "c2"), "child")
    await world.idle()
    boot = world.cluster_status("c2")["bootstrap"]
    assert boot["phase"] == "Completed"
    assert boot["verified"] is True
    assert (NS, "c2") in world.woken


async def test_bootstrap_from_a_backup_of_another_kubernetes_cluster(world: World) -> None:
    world.kube.put(
        CLUSTER,
        cluster_cr(
            "c2", NS, database=PG, backup={"s3": S3}, bootstrap={"fromBackup": {"name": "gone"}}
        ),
    )
    world.bootstrap_engine.trigger((NS, "c2"), "spec")
    await world.idle()
    boot = world.cluster_status("c2")["bootstrap"]
    assert boot["phase"] == "Failed"
    assert "bootstrap.fromBackup.cluster" in boot["error"]
    world.kube.put(
        CLUSTER,
        cluster_cr(
            "c3",
            NS,
            database=PG,
            backup={"s3": S3},
            bootstrap={"fromBackup": {"name": "gone", "cluster": "prod"}},
        ),
    )
    world.bootstrap_engine.trigger((NS, "c3"), "spec")
    await world.idle()
    job = world.kube.obj(JOB, NS, "c3-bootstrap")
    assert job is not None
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DCHAT_BACKUP_PREFIX"] == "dchat/ns1/prod/"


async def test_sqlite_bootstrap_restores_onto_the_new_volume(world: World) -> None:
    world.backup("b1", "old")
    world.kube.put(
        CLUSTER,
        cluster_cr(
            "lite", NS, backup={"enabled": True, "s3": S3}, bootstrap={"fromBackup": {"name": "b1"}}
        ),
    )
    world.bootstrap_engine.trigger((NS, "lite"), "spec")
    await world.idle()
    job = world.kube.obj(JOB, NS, "lite-bootstrap")
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert "affinity" not in pod  # no node pod runs: the Job takes the volume itself
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "lite-data"}
    assert pod["containers"][0]["args"][:4] == ["backup", "restore", "--name", "b1"]
    assert "--replace" not in pod["containers"][0]["args"]  # a new, empty volume
