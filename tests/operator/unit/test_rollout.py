"""Automatic rollback: the pure rules (builders.rollout, build_status) and the cluster
controller rolling back a stalled rollout on the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dchat_operator.api.kinds import CLUSTER, DEPLOYMENT
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import condition
from dchat_operator.builders.rollout import HISTORY_LIMIT, pinned, serving_image, with_record
from dchat_operator.builders.status import Observed, build_status, status_patch
from dchat_operator.controllers.cluster import ROLLBACK_REQUEUE_SECONDS
from tests.operator.unit.conftest import cluster
from tests.operator.unit.test_cluster_controller import NS, PG, World, world  # noqa: F401

pytestmark = pytest.mark.unit


def _at(generation: int, version: str, **spec: Any) -> DchatCluster:
    return DchatCluster.parse(
        {
            "metadata": {"name": "c1", "namespace": "ns1", "uid": "u", "generation": generation},
            "spec": {"version": version, **spec},
        }
    )


def _dep(ready: int, generation: int = 5, stalled: bool = False, observed: int = 5) -> Any:
    conditions = (
        [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
        if stalled
        else []
    )
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": observed,
            "replicas": 1,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


def test_a_completed_rollout_is_the_good_revision_recorded_once() -> None:
    good = _at(2, "0.1.0", replicas=1)
    status = build_status(good, Observed(deployment=_dep(1)), None, "t1")
    rev = status["lastGoodRevision"]
    assert (rev["version"], rev["generation"], rev["completedAt"]) == ("0.1.0", 2, "t1")
    assert "replicas" not in json.loads(rev["spec"])  # scaling is never rolled back
    assert status["rolloutHistory"] == [
        {"generation": 2, "version": "0.1.0", "result": "Completed", "at": "t1"}
    ]
    again = build_status(good, Observed(deployment=_dep(1)), status, "t2")
    assert status_patch(status, again) is None  # idle: nothing to write


def test_a_stalled_rollout_rolls_back_to_the_good_revision_until_the_spec_changes() -> None:
    before = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(1)), None, "t1")
    bad = _at(3, "0.2.0")
    stalled = build_status(bad, Observed(deployment=_dep(0, stalled=True)), before, "t2")
    rollback = stalled["rollback"]
    assert rollback["fromVersion"] == "0.2.0"
    assert rollback["fromGeneration"] == 3
    assert (rollback["toVersion"], rollback["toGeneration"]) == ("0.1.0", 2)
    assert rollback["reason"].startswith("progress deadline exceeded")
    degraded = condition(stalled, "Degraded")
    assert degraded is not None
    assert degraded["reason"] == "RolledBack"
    assert "version 0.2.0 (generation 3) did not roll out" in degraded["message"]
    assert stalled["rolloutHistory"][-1]["result"] == "RolledBack"
    assert stalled["lastGoodRevision"] == before["lastGoodRevision"]

    # from now on the children are built from the good revision, with today's replicas
    scaled = _at(3, "0.2.0", replicas=1)
    run = pinned(scaled, stalled)
    assert run.spec.version == "0.1.0"
    assert run.spec.replicas == 1
    assert run.metadata.generation == 3
    # the good revision's pods serve: Ready, still Degraded/RolledBack, not a new good one
    serving = build_status(run, Observed(deployment=_dep(1)), stalled, "t3")
    assert condition(serving, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(serving, "Degraded")["reason"] == "RolledBack"  # type: ignore[index]
    assert condition(serving, "Progressing")["reason"] == "RolledBack"  # type: ignore[index]
    assert serving["phase"] == "Degraded"
    assert serving["currentVersion"] == "0.1.0"
    assert serving["lastGoodRevision"] == before["lastGoodRevision"]
    assert (
        status_patch(serving, build_status(run, Observed(deployment=_dep(1)), serving, "t4"))
        is None
    )

    # a new spec (generation 4) drops the rollback and is tried
    fixed = _at(4, "0.2.1")
    assert pinned(fixed, serving) is fixed
    rolling = build_status(
        fixed, Observed(deployment=_dep(0, generation=6, observed=6)), serving, "t5"
    )
    assert "rollback" not in rolling
    assert status_patch(serving, rolling)["rollback"] is None  # type: ignore[index]


def test_no_rollback_without_a_good_revision_or_before_the_deployment_saw_the_template() -> None:
    first = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(0, stalled=True)), None, "t")
    assert "rollback" not in first
    assert condition(first, "Degraded")["reason"] == "RolloutStalled"  # type: ignore[index]
    before = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(1)), None, "t1")
    # the condition still describes the previous template (observedGeneration behind)
    stale = _dep(0, generation=6, stalled=True, observed=5)
    assert "rollback" not in build_status(_at(3, "0.2.0"), Observed(deployment=stale), before, "t2")
    # an apply error explains the stall: not a rollback either
    failing = Observed(deployment=_dep(0, stalled=True), errors=["422"])
    assert "rollback" not in build_status(_at(3, "0.2.0"), failing, before, "t2")


def test_the_history_keeps_the_last_ten() -> None:
    history: list[dict[str, Any]] = []
    for i in range(HISTORY_LIMIT + 3):
        history = with_record(history, {"generation": i})
    assert [r["generation"] for r in history] == list(range(3, HISTORY_LIMIT + 3))


def test_an_unreadable_good_revision_rolls_nothing_back() -> None:
    status = {
        "lastGoodRevision": {"version": "0.1.0", "generation": 1, "spec": "{not json"},
        "rollback": {"fromGeneration": 2},
    }
    current = cluster()
    assert pinned(current, status) is current


async def set_version(world: World, name: str, version: str) -> None:  # noqa: F811
    """As `kubectl apply` of a new spec.version (the status stays); the watch event follows."""
    body = world.kube.obj(CLUSTER, NS, name)
    assert body is not None
    body["spec"]["version"] = version
    world.kube.put(CLUSTER, body)
    world.event(name)
    await world.idle()


async def test_the_controller_rolls_a_stalled_rollout_back_and_does_not_retry_it(
    world: World,  # noqa: F811
) -> None:
    world.add("c1", replicas=1, database=PG, version="0.1.0")
    await world.idle()
    world.roll_out("c1")
    await world.idle()
    assert world.status("c1")["lastGoodRevision"]["version"] == "0.1.0"
    good_image = world.kube.obj(DEPLOYMENT, NS, "c1")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ]  # type: ignore[index]

    rollbacks = {"namespace": NS, "cluster": "c1", "cause": "progress_deadline"}
    before = REGISTRY.get_sample_value("dchat_operator_rollbacks_total", rollbacks) or 0.0
    await set_version(world, "c1", "0.2.0")
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0")
    # the Deployment controller gives up on the new pods
    world.kube.set_status(
        DEPLOYMENT,
        NS,
        "c1",
        {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": 2,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ],
        },
    )
    world.controller.deployment_event(
        world.engine, "MODIFIED", world.kube.obj(DEPLOYMENT, NS, "c1")
    )  # type: ignore[arg-type]
    await world.idle()
    await world.idle()
    status = world.status("c1")
    assert "rollback" in status, json.dumps(
        {k: v for k, v in status.items() if k != "conditions"}, indent=1
    )[:3000]
    assert status["rollback"]["fromVersion"] == "0.2.0"
    assert world.condition("c1", "Degraded")["reason"] == "RolledBack"
    assert "RolledBack" in world.kube.event_reasons("c1")
    # counted once per rollback, per cluster (the RolloutRolledBack alert reads it)
    assert REGISTRY.get_sample_value("dchat_operator_rollbacks_total", rollbacks) == before + 1
    await asyncio.sleep(ROLLBACK_REQUEUE_SECONDS + 0.1)  # the run that applies the good one
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == good_image  # type: ignore[index]
    # resyncs do not try the failed spec again
    for _ in range(3):
        world.engine.resync()
        await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == good_image  # type: ignore[index]


def test_backup_and_restore_jobs_run_the_image_that_serves() -> None:
    before = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(1)), None, "t1")
    bad = _at(3, "0.2.0", backup={"schedule": "0 3 * * *"})
    stalled = build_status(bad, Observed(deployment=_dep(0, stalled=True)), before, "t2")
    jobs = serving_image(bad, stalled)
    assert jobs.spec.version == "0.1.0"  # the pods' image
    assert jobs.spec.backup == bad.spec.backup  # the spec's other settings
    assert serving_image(bad, before) is bad  # no rollback: the spec as it is


def test_a_rollback_request_goes_back_to_the_previous_good_revision_once() -> None:
    v1 = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(1)), None, "t1")
    v2_cluster = _at(3, "0.2.0")
    v2 = build_status(v2_cluster, Observed(deployment=_dep(1)), v1, "t2")
    assert v2["lastGoodRevision"]["version"] == "0.2.0"
    assert v2["previousGoodRevision"] == v1["lastGoodRevision"]
    asked = build_status(v2_cluster, Observed(deployment=_dep(1), rollback_request="r1"), v2, "t3")
    assert asked["rollback"]["toVersion"] == "0.1.0"
    assert asked["rollback"]["reason"] == "rollback requested (dchat.dev/rollback-request=r1)"
    assert asked["rollbackRequest"] == {
        "value": "r1",
        "at": "t3",
        "result": "rolled back to version 0.1.0 (generation 2)",
    }
    assert asked["rolloutHistory"][-1]["result"] == "RolledBack"
    assert pinned(v2_cluster, asked).spec.version == "0.1.0"
    degraded = condition(asked, "Degraded")
    assert degraded is not None
    assert degraded["reason"] == "RolledBack"
    # the same value again (a resync, a restarted operator): nothing more
    again = build_status(
        pinned(v2_cluster, asked), Observed(deployment=_dep(1), rollback_request="r1"), asked, "t4"
    )
    assert again["rollback"] == asked["rollback"]
    assert again["rollbackRequest"] == asked["rollbackRequest"]
    assert again["rolloutHistory"] == asked["rolloutHistory"]


def test_a_rollback_request_without_an_earlier_revision_is_refused_and_recorded() -> None:
    only = _at(2, "0.1.0")
    v1 = build_status(only, Observed(deployment=_dep(1)), None, "t1")
    asked = build_status(only, Observed(deployment=_dep(1), rollback_request="r1"), v1, "t2")
    assert "rollback" not in asked
    assert asked["rollbackRequest"]["result"].startswith("refused: no earlier good revision")


def test_a_rescale_does_not_become_the_previous_revision() -> None:
    v1 = build_status(_at(2, "0.1.0"), Observed(deployment=_dep(1)), None, "t1")
    v2 = build_status(_at(3, "0.2.0"), Observed(deployment=_dep(1)), v1, "t2")
    scaled = build_status(_at(4, "0.2.0"), Observed(deployment=_dep(1)), v2, "t3")
    assert scaled["lastGoodRevision"]["generation"] == 4
    assert scaled["previousGoodRevision"]["version"] == "0.1.0"
    asked = build_status(
        _at(4, "0.2.0"), Observed(deployment=_dep(1), rollback_request="x"), scaled, "t4"
    )
    assert asked["rollback"]["toVersion"] == "0.1.0"


async def test_the_controller_acts_on_a_new_rollback_request_annotation(
    world: World,  # noqa: F811
) -> None:
    world.add("c1", replicas=1, database=PG, version="0.1.0")
    await world.idle()
    world.roll_out("c1")
    await world.idle()
    await set_version(world, "c1", "0.2.0")
    world.roll_out("c1")
    await world.idle()
    assert world.status("c1")["lastGoodRevision"]["version"] == "0.2.0"

    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    body["metadata"].setdefault("annotations", {})["dchat.dev/rollback-request"] = "now"
    world.kube.put(CLUSTER, body)
    world.event("c1")  # an annotation: no new generation, still a trigger
    await world.idle()
    await asyncio.sleep(ROLLBACK_REQUEST_WAIT)
    await world.idle()
    dep = world.kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")
    assert world.status("c1")["rollbackRequest"]["value"] == "now"
    assert "RolledBack" in world.kube.event_reasons("c1")


ROLLBACK_REQUEST_WAIT = ROLLBACK_REQUEUE_SECONDS + 0.1
