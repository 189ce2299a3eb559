"""The cluster controller on the engine, against the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from dchat_operator.api.kinds import CLUSTER, DEPLOYMENT, PDB, PVC, SECRET, SERVICE
from dchat_operator.api.policy import Policy
from dchat_operator.controllers.cluster import ClusterController, ClusterState
from dchat_operator.controllers.engine import Backoff, Engine
from tests.operator.unit.fake_kube import FakeKube, api_error, cluster_cr

pytestmark = pytest.mark.unit

NS = "ns1"
SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}}
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}


@dataclass
class World:
    kube: FakeKube
    controller: ClusterController
    engine: Engine[ClusterState]

    def add(self, name: str, **spec: Any) -> None:
        self.kube.put(CLUSTER, cluster_cr(name, NS, resources=SMALL, **spec))
        self.event(name)

    def edit_spec(self, name: str, **spec: Any) -> None:
        """The author edits the CR's spec (a new generation) and the watch delivers it."""
        found = self.kube.obj(CLUSTER, NS, name)
        assert found is not None
        found["spec"].update(spec)
        self.kube.put(CLUSTER, found)
        self.event(name)

    def event(self, name: str, event_type: str = "MODIFIED") -> None:
        body = self.kube.obj(CLUSTER, NS, name)
        assert body is not None
        self.controller.cluster_event(self.engine, event_type, body)

    def roll_out(self, name: str) -> None:
        """The Deployment controller's part: the Deployment becomes available."""
        dep = self.kube.obj(DEPLOYMENT, NS, name)
        assert dep is not None
        want = dep["spec"]["replicas"]
        self.kube.set_status(
            DEPLOYMENT,
            NS,
            name,
            {
                "observedGeneration": dep["metadata"]["generation"],
                "replicas": want,
                "updatedReplicas": want,
                "readyReplicas": want,
                "availableReplicas": want,
            },
        )
        found = self.kube.obj(DEPLOYMENT, NS, name)
        assert found is not None
        self.controller.deployment_event(self.engine, "MODIFIED", found)

    async def idle(self) -> None:
        await asyncio.sleep(0)
        await self.engine.wait_idle()

    def status(self, name: str) -> dict[str, Any]:
        found = self.kube.obj(CLUSTER, NS, name)
        assert found is not None
        return dict(found.get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for cond in self.status(name).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}


@pytest.fixture
async def world() -> AsyncIterator[World]:
    kube = FakeKube()
    kube.put(
        SECRET,
        {"metadata": {"name": "db", "namespace": NS}, "data": {"url": "cG9zdGdyZXNxbDovL3g="}},
    )
    controller = ClusterController(
        kube, clock=lambda: dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    )
    engine: Engine[ClusterState] = Engine(
        controller, workers=4, backoff=Backoff(base=0.02, cap=0.1, jitter=0.0)
    )
    engine.start()
    yield World(kube, controller, engine)
    await engine.stop()


async def test_a_new_cluster_converges_with_one_ready_event_and_idle_resyncs_write_nothing(
    world: World,
) -> None:
    world.add("c1", replicas=2, database=PG)
    await world.idle()
    assert world.status("c1")["phase"] == "Progressing"
    assert world.kube.obj(SERVICE, NS, "c1-api") is not None
    world.roll_out("c1")
    await world.idle()
    assert world.status("c1")["phase"] == "Ready"
    assert world.condition("c1", "Ready")["status"] == "True"
    # our own status write comes back as an event: it triggers nothing
    world.event("c1")
    world.roll_out("c1")  # a repeated Deployment event: status only, already so
    await world.idle()
    assert world.kube.event_reasons("c1").count("Ready") == 1
    writes = len(world.kube.writes())
    for _ in range(3):
        world.engine.resync()
        await world.idle()
    assert len(world.kube.writes()) == writes


async def test_children_are_applied_in_stages_around_the_deployment(world: World) -> None:
    """The ServiceAccount, ConfigMap and NetworkPolicy before the Deployment (its pods need the
    first two and never run unguarded), the Services and the PDB after it (nothing waits on
    them): the Deployment's apply starts only once the first stage has returned."""
    gate = asyncio.Event()
    world.kube.stall[("APPLY", "networkpolicies", "*")] = gate
    world.add("c1", replicas=2, database=PG)
    for _ in range(20):
        await asyncio.sleep(0)
    applied = [c.plural for c in world.kube.calls if c.verb == "APPLY"]
    assert "deployments" not in applied
    assert {"serviceaccounts", "configmaps", "networkpolicies"} <= set(applied)
    gate.set()
    await world.idle()
    applied = [c.plural for c in world.kube.calls if c.verb == "APPLY"]
    at = applied.index("deployments")
    assert set(applied[:at]) == {"serviceaccounts", "configmaps", "networkpolicies"}
    assert set(applied[at + 1 :]) == {"services", "poddisruptionbudgets"}
    assert applied.count("services") == 4


async def test_a_new_clusters_first_run_takes_the_cr_from_the_watch_later_specs_read_it(
    world: World,
) -> None:
    """A CR with no status yet comes from the watch (one round trip less before its
    Deployment exists); a new generation of a cluster with a status is read fresh."""
    world.add("c1", replicas=1, database=PG)
    await world.idle()
    assert world.kube.count("GET", "dchatclusters") == 0
    assert world.kube.obj(DEPLOYMENT, NS, "c1") is not None
    assert world.status("c1")["phase"] == "Progressing"
    world.edit_spec("c1", replicas=2)
    await world.idle()
    assert world.kube.count("GET", "dchatclusters") == 1
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["replicas"] == 2


async def test_a_rotated_secret_rebuilds_the_children_read_at_the_same_time(world: World) -> None:
    world.add("c1", replicas=1, database=PG)
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    before = dep["spec"]["template"]["metadata"].get("annotations") or {}
    world.kube.put(
        SECRET,
        {"metadata": {"name": "db", "namespace": NS}, "data": {"url": "cG9zdGdyZXNxbDovL3k="}},
    )
    world.engine.resync()
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    after = dep["spec"]["template"]["metadata"].get("annotations") or {}
    assert after != before  # the pods roll for the new Secret version


async def test_the_status_path_of_a_deployment_event_reads_nothing(world: World) -> None:
    """The CR comes from the watch (or our own status patch's response), not a GET."""
    world.add("c1", replicas=1, database=PG)
    await world.idle()
    world.kube.calls.clear()
    world.roll_out("c1")
    await world.idle()
    verbs = [(c.verb, c.plural) for c in world.kube.calls if c.verb != "EVENT"]
    assert verbs == [("PATCH_STATUS", "dchatclusters")]
    assert world.status("c1")["phase"] == "Ready"


async def test_a_stale_watched_body_costs_one_conflict_then_a_fresh_read(world: World) -> None:
    world.add("c1", replicas=1, database=PG)
    await world.idle()
    # someone else writes the CR after the controller's last look; no watch event yet
    found = world.kube.obj(CLUSTER, NS, "c1")
    assert found is not None
    found["metadata"].setdefault("labels", {})["team"] = "x"
    world.kube.put(CLUSTER, found)
    world.kube.calls.clear()
    world.roll_out("c1")
    await world.idle()
    verbs = [(c.verb, c.plural) for c in world.kube.calls if c.verb != "EVENT"]
    assert verbs == [
        ("PATCH_STATUS", "dchatclusters"),  # 409: built from the older body
        ("GET", "dchatclusters"),
        ("PATCH_STATUS", "dchatclusters"),
    ]
    assert world.status("c1")["phase"] == "Ready"
    # a new generation is never served from the watch: it is read fresh
    world.kube.calls.clear()
    world.engine.trigger((NS, "c1"), "spec")
    await world.idle()
    assert ("GET", "dchatclusters") in [(c.verb, c.plural) for c in world.kube.calls]


async def test_status_keeps_other_controllers_fields_and_retries_a_conflict(
    world: World,
) -> None:
    world.add("c1", database=PG)
    await world.idle()
    # another controller owns lastBackup and the BackupHealthy condition
    found = world.kube.obj(CLUSTER, NS, "c1")
    assert found is not None
    status = found["status"]
    status["lastBackup"] = "2026-11-30T03:00:00Z"
    status["conditions"].append({"type": "BackupHealthy", "status": "True", "reason": "Ok"})
    world.kube.set_status(CLUSTER, NS, "c1", status)

    def conflict_once() -> BaseException:
        world.kube.fail.pop(("PATCH_STATUS", "dchatclusters", "c1"))
        return api_error(409, "the object has been modified")

    world.kube.fail[("PATCH_STATUS", "dchatclusters", "c1")] = conflict_once
    world.roll_out("c1")
    await world.idle()
    assert world.kube.count("PATCH_STATUS") >= 2
    final = world.status("c1")
    assert final["phase"] == "Ready"
    assert final["lastBackup"] == "2026-11-30T03:00:00Z"
    types = [c["type"] for c in final["conditions"]]
    assert sorted(types) == ["BackupHealthy", "Degraded", "Progressing", "Ready", "Warning"]
    assert world.kube.event_reasons("c1").count("Ready") == 1


async def test_a_cluster_that_is_gone_is_forgotten_without_writes(world: World) -> None:
    world.add("c1", database=PG)
    await world.idle()
    world.kube.remove(CLUSTER, NS, "c1")  # deleted while the DELETED event was lost
    writes = len(world.kube.writes())
    world.engine.resync()
    await world.idle()
    assert ("ns1", "c1") not in world.engine.keys
    assert len(world.kube.writes()) == writes


async def test_forgetting_a_cluster_keeps_the_state_of_a_cluster_with_a_longer_name(
    world: World,
) -> None:
    world.add("a", database=PG)
    world.add("a-b", database=PG)
    await world.idle()
    other = world.engine.state((NS, "a-b"))
    assert other is not None
    assert other.applied
    before = dict(other.applied)
    world.controller.cluster_event(world.engine, "DELETED", cluster_cr("a", NS))
    assert world.engine.state((NS, "a")) is None
    assert world.engine.state((NS, "a-b")) is not None
    assert world.engine.state((NS, "a-b")).applied == before  # type: ignore[union-attr]


async def test_an_object_it_does_not_control_is_not_taken_over(world: World) -> None:
    victim = {
        "metadata": {"name": "c1-api", "namespace": NS, "labels": {"team": "other"}},
        "spec": {"ports": [{"port": 80}]},
    }
    world.kube.put(SERVICE, victim)
    before = world.kube.obj(SERVICE, NS, "c1-api")
    world.add("c1", database=PG)
    await world.idle()
    assert world.kube.obj(SERVICE, NS, "c1-api") == before
    degraded = world.condition("c1", "Degraded")
    assert degraded["reason"] == "ChildConflict"
    assert "Service/c1-api" in degraded["message"]
    assert "attempt 1" in degraded["message"]
    assert world.engine.in_backoff((NS, "c1"))
    assert not any(c.verb == "APPLY" and c.name == "c1-api" for c in world.kube.calls)


async def test_a_retained_data_pvc_of_the_same_cluster_is_adopted(world: World) -> None:
    pvc = {
        "metadata": {
            "name": "s1-data",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/managed-by": "dchat-operator",
                "app.kubernetes.io/instance": "s1",
            },
        },
        "spec": {"accessModes": ["ReadWriteOnce"]},
    }
    world.kube.put(PVC, pvc)
    world.add("s1")
    await world.idle()
    assert world.condition("s1", "Degraded")["status"] == "False"


async def test_a_failed_deployment_apply_keeps_reporting_the_running_pods(world: World) -> None:
    world.add("c1", replicas=2, database=PG)
    await world.idle()
    world.roll_out("c1")
    await world.idle()
    world.kube.fail[("APPLY", "deployments", "c1")] = lambda: api_error(422, "bad template")
    world.edit_spec("c1", replicas=3)
    await world.idle()
    status = world.status("c1")
    assert status["readyReplicas"] == 2
    assert status["replicas"] == 2
    degraded = world.condition("c1", "Degraded")
    assert degraded["reason"] == "ReconcileFailed"
    assert "bad template" in degraded["message"]
    assert "not created yet" not in str(status)


async def test_a_child_rejected_forever_is_retried_with_backoff_not_per_resync(
    world: World,
) -> None:
    world.engine.backoff = Backoff(base=0.05, cap=0.4, jitter=0.0)
    world.kube.fail[("APPLY", "services", "c1-metrics")] = lambda: api_error(422, "denied")
    world.add("c1", database=PG)
    await world.idle()
    for _ in range(40):  # 40 resyncs over ~0.8 s
        world.engine.resync()
        await asyncio.sleep(0.02)
    attempts = sum(1 for c in world.kube.calls if c.verb == "APPLY" and c.name == "c1-metrics")
    # 0, 0.05, 0.15, 0.35, 0.75: about 5 attempts, not 40
    assert 3 <= attempts <= 7, attempts
    assert world.condition("c1", "Degraded")["reason"] == "ReconcileFailed"
    assert "next retry in" in world.condition("c1", "Degraded")["message"]
    # the author fixes the cause and edits the spec: retried at once
    world.kube.fail.clear()
    world.edit_spec("c1", replicas=1, marketplace={"cacheSize": 7})
    await world.idle()
    assert world.condition("c1", "Degraded")["status"] == "False"
    assert not world.engine.in_backoff((NS, "c1"))


async def test_a_missing_secret_degrades_without_applying_the_deployment(world: World) -> None:
    world.add("c1", database={**PG, "postgres": {"primary": {"name": "nope", "key": "url"}}})
    await world.idle()
    assert world.condition("c1", "Degraded")["reason"] == "SecretNotFound"
    assert world.kube.obj(DEPLOYMENT, NS, "c1") is None
    assert "SecretNotFound" in world.kube.event_reasons("c1")


async def test_a_rotated_secret_rolls_the_pods_and_an_unchanged_one_writes_nothing(
    world: World,
) -> None:
    world.add("c1", database=PG)
    await world.idle()
    world.roll_out("c1")
    await world.idle()
    ann = "dchat.dev/secrets-checksum"
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    before = dep["spec"]["template"]["metadata"]["annotations"][ann]
    writes = len(world.kube.writes())
    world.engine.resync()
    await world.idle()
    assert len(world.kube.writes()) == writes
    secret = world.kube.obj(SECRET, NS, "db")
    assert secret is not None
    secret["data"]["url"] = "cG9zdGdyZXNxbDovL25ldw=="  # a new password
    world.kube.put(SECRET, secret)
    world.engine.resync()
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["template"]["metadata"]["annotations"][ann] != before


async def test_a_spec_the_policy_refuses_applies_nothing(world: World) -> None:
    world.controller.policy = Policy(allowed_registries=("ghcr.io/dchat-dev/",))
    world.add("c1", database=PG, image={"repository": "evil.example/dchat"})
    await world.idle()
    degraded = world.condition("c1", "Degraded")
    assert degraded["reason"] == "PolicyViolation"
    assert "allowed-registries" in degraded["message"]
    assert not any(c.verb == "APPLY" for c in world.kube.calls)
    assert not world.engine.in_backoff((NS, "c1"))  # nothing to retry until the spec changes


async def test_fields_not_acted_on_yet_set_a_warning_condition(world: World) -> None:
    world.add("c1", database=PG, relay={"natUpnp": True})
    await world.idle()
    warning = world.condition("c1", "Warning")
    assert (warning["status"], warning["reason"]) == ("True", "NotActedOn")
    assert "spec.relay" in warning["message"]
    world.add("c2", database=PG)
    await world.idle()
    assert world.condition("c2", "Warning")["status"] == "False"


async def test_a_restore_hold_scales_the_deployment_to_zero_and_back(world: World) -> None:
    world.add("c1", replicas=2, database=PG)
    await world.idle()
    held_status = {**world.status("c1"), "restoreInProgress": {"name": "r1", "since": "t"}}
    world.kube.set_status(CLUSTER, NS, "c1", held_status)
    world.engine.trigger((NS, "c1"), "child")  # the restore controller wakes the cluster
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["replicas"] == 0
    assert world.status("c1")["restoreInProgress"] == {"name": "r1", "since": "t"}  # not ours
    released = {k: v for k, v in world.status("c1").items() if k != "restoreInProgress"}
    world.kube.set_status(CLUSTER, NS, "c1", released)
    world.engine.trigger((NS, "c1"), "child")
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["replicas"] == 2


async def test_prune_reads_nothing_when_nothing_can_be_unwanted(world: World) -> None:
    """A new cluster (generation 1, never reconciled) controls nothing built from another
    spec, and a cluster pruned at this generation has nothing new to prune: no GET of the
    ~14 optional children. A new generation prunes again (and removes what it dropped)."""
    world.add("c1", replicas=2, database=PG)
    await world.idle()
    optional = {
        ("ingresses", "c1"),
        ("statefulsets", "c1-postgres"),
        ("services", "c1-postgres-rw"),
        ("rolebindings", "c1-postgres"),
    }
    gets = {(c.plural, c.name) for c in world.kube.calls if c.verb == "GET"}
    assert not gets & optional, gets & optional
    world.roll_out("c1")
    await world.idle()
    world.kube.calls.clear()
    world.engine.resync()  # a resync of the same generation after a restart-free run
    await world.idle()
    gets = {(c.plural, c.name) for c in world.kube.calls if c.verb == "GET"}
    assert not gets & optional, gets & optional
    # generation 2 without the PodDisruptionBudget: pruned
    assert world.kube.obj(PDB, NS, "c1") is not None
    found = world.kube.obj(CLUSTER, NS, "c1")
    assert found is not None
    found["spec"]["disruption"] = {"enabled": False}
    found["metadata"]["generation"] = 2
    world.kube.put(CLUSTER, found)
    world.event("c1")
    await world.idle()
    assert world.kube.obj(PDB, NS, "c1") is None
