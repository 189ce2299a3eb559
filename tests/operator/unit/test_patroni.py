"""status.currentPrimary from Patroni's leader ConfigMap: the pure rules and the cluster
controller polling it on the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dchat_operator.api.constants import ANNOTATION_SWITCHOVER_REQUEST, switchover_member
from dchat_operator.api.kinds import CLUSTER, CONFIG_MAP, POD
from dchat_operator.builders.patroni import (
    Member,
    SwitchoverStep,
    current_primary,
    leader_of,
    members_of,
    switchover_step,
)
from dchat_operator.controllers.cluster import PRIMARY_POLL_SECONDS, SWITCHOVER_POLL_SECONDS
from tests.operator.unit.test_cluster_controller import NS, World, world  # noqa: F401

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _leader_cm(leader: str, renewed: dt.datetime = NOW, ttl: str = "10") -> dict[str, Any]:
    return {
        "metadata": {
            "name": "pg-leader",
            "namespace": NS,
            "annotations": {
                "leader": leader,
                "renewTime": renewed.isoformat(),
                "ttl": ttl,
                "transitions": "3",
            },
        }
    }


def test_the_leader_is_read_from_the_annotations_and_an_expired_lock_is_no_leader() -> None:
    assert leader_of(_leader_cm("pg-1"), NOW) == ("pg-1", "3")
    assert leader_of(_leader_cm("pg-1"), NOW + dt.timedelta(seconds=9)) == ("pg-1", "3")
    assert leader_of(_leader_cm("pg-1"), NOW + dt.timedelta(seconds=11)) == ("", "3")
    assert leader_of(None, NOW) == ("", "")
    assert leader_of(_leader_cm("pg-1", ttl="garbage"), NOW) == ("pg-1", "3")
    broken = _leader_cm("pg-1")
    broken["metadata"]["annotations"]["renewTime"] = "yesterday"
    assert leader_of(broken, NOW) == ("pg-1", "3")


def test_current_primary_keeps_since_while_the_leader_stays() -> None:
    first = current_primary(None, ("pg-0", "1"), "t1")
    assert first == {"name": "pg-0", "since": "t1", "transitions": "1"}
    assert current_primary(first, ("pg-0", "1"), "t2") is first  # nothing to write
    moved = current_primary(first, ("pg-1", "2"), "t3")
    assert moved == {"name": "pg-1", "since": "t3", "transitions": "2"}


async def test_the_controller_polls_the_leader_and_emits_an_event_on_a_change(
    world: World,  # noqa: F811
) -> None:
    world.kube.put(CONFIG_MAP, _leader_cm("pg-0"))
    postgres = {"primary": {"name": "db", "key": "url"}, "patroni": {"scope": "pg"}}
    world.add("c1", replicas=1, database={"engine": "postgres", "postgres": postgres})
    await world.idle()
    world.roll_out("c1")
    await world.idle()
    assert world.status("c1")["currentPrimary"]["name"] == "pg-0"
    state = world.engine.keys[(NS, "c1")]
    assert state.due is not None
    assert state.due - world.engine._clock() == pytest.approx(PRIMARY_POLL_SECONDS, abs=0.5)

    world.kube.calls.clear()
    world.engine.trigger((NS, "c1"), "requeue")  # the poll, leader unchanged
    await world.idle()
    assert world.kube.writes() == []  # nothing changed: nothing written
    verbs = sorted({(c.verb, c.plural) for c in world.kube.calls})
    assert verbs == [("GET", "configmaps"), ("GET", "deployments")]  # the CR from the watch

    changes = {"namespace": NS, "cluster": "c1"}
    before = REGISTRY.get_sample_value("dchat_operator_primary_changes_total", changes) or 0.0
    world.kube.put(CONFIG_MAP, _leader_cm("pg-1"))
    world.engine.trigger((NS, "c1"), "requeue")
    await world.idle()
    assert world.status("c1")["currentPrimary"]["name"] == "pg-1"
    assert "PrimaryChanged" in world.kube.event_reasons("c1")
    # the FailoverHappened alert (builders.monitoring) counts changes, not the first primary
    assert REGISTRY.get_sample_value("dchat_operator_primary_changes_total", changes) == before + 1


# --- switchover on request ------------------------------------------------------------------

MEMBERS = {
    "pg-0": Member("pg-0", "primary", "running"),
    "pg-1": Member("pg-1", "replica", "streaming"),
    "pg-2": Member("pg-2", "replica", "stopped"),
}


def _step(request: str, previous: dict[str, Any] | None = None, **kw: Any) -> SwitchoverStep:
    args: dict[str, Any] = {
        "scope": "pg",
        "leader": "pg-0",
        "members": MEMBERS,
        "pending": "",
        "now": NOW,
    }
    args.update(kw)
    return switchover_step(request, previous, **args)


def test_a_new_request_is_checked_before_patroni_is_asked() -> None:
    assert _step("") == SwitchoverStep(None)
    ok = _step("pg-1")
    assert ok.ask == ("pg-0", "pg-1")
    assert ok.status is not None
    assert ok.status["phase"] == "Running"
    assert ok.status["from"] == "pg-0"
    assert "finishedAt" not in ok.status

    def refused(step: SwitchoverStep) -> str:
        assert step.ask is None
        assert step.status is not None
        assert step.status["phase"] == "Failed"
        assert step.status["finishedAt"]
        return str(step.status["message"])

    assert "patroni is not set" in refused(_step("pg-1", scope=""))
    assert "leader lock is free" in refused(_step("pg-1", leader=""))
    assert "members: pg-0, pg-1, pg-2" in refused(_step("pg-9"))
    assert "not a healthy standby (role replica, state stopped)" in refused(_step("pg-2"))
    assert "longer than 63" in refused(_step("x" * 200))
    already = _step("pg-0")
    assert already.ask is None
    assert already.status is not None
    assert already.status["phase"] == "Completed"
    assert "already the primary" in already.status["message"]


def test_a_handled_value_is_acted_on_once() -> None:
    for phase in ("Completed", "Failed"):
        previous = {"request": "pg-1", "phase": phase, "from": "pg-0", "startedAt": "t"}
        assert _step("pg-1", previous) == SwitchoverStep(None)
    long_value = "x" * 200
    first = _step(long_value).status
    assert _step(long_value, first) == SwitchoverStep(None)
    # a new value asks again
    previous = {"request": "pg-1", "phase": "Completed", "from": "pg-0", "startedAt": "t"}
    after = {
        "pg-0": Member("pg-0", "replica", "streaming"),
        "pg-1": Member("pg-1", "primary", "running"),
    }
    assert _step("pg-0", previous, leader="pg-1", members=after).ask == ("pg-1", "pg-0")


def test_a_running_request_completes_is_declined_or_times_out() -> None:
    running = _step("pg-1").status
    assert running is not None
    later = NOW + dt.timedelta(seconds=4)
    # Patroni still has it, or is between demote and promote (no leader): keep waiting
    assert _step("pg-1", running, pending="pg-1", now=later) == SwitchoverStep(None)
    assert _step("pg-1", running, leader="", now=later) == SwitchoverStep(None)
    # cleared without a new leader, but not long ago: Patroni may be acting right now
    assert _step("pg-1", running, now=later) == SwitchoverStep(None)
    done = _step("pg-1", running, leader="pg-1", now=later).status
    assert done is not None
    assert done["phase"] == "Completed"
    assert done["message"] == "pg-1 is the primary (was pg-0), 4 s after the request"
    assert done["startedAt"] == running["startedAt"]
    declined = _step("pg-1", running, now=NOW + dt.timedelta(seconds=16)).status
    assert declined is not None
    assert declined["phase"] == "Failed"
    assert "declined" in declined["message"]
    timed_out = _step("pg-1", running, pending="pg-1", now=NOW + dt.timedelta(seconds=61)).status
    assert timed_out is not None
    assert timed_out["phase"] == "Failed"
    assert "within 60 s (primary: pg-0)" in timed_out["message"]


def test_members_are_read_from_patronis_pod_status_annotation() -> None:
    pods: list[dict[str, Any]] = [
        {
            "metadata": {
                "name": "a",
                "annotations": {"status": '{"role": "replica", "state": "running"}'},
            }
        },
        {"metadata": {"name": "b", "annotations": {"status": "not json"}}},
        {"metadata": {"name": "c"}},
    ]
    assert members_of(pods) == {
        "a": Member("a", "replica", "running"),
        "b": Member("b", "", ""),
        "c": Member("c", "", ""),
    }


async def test_the_controller_asks_patroni_and_follows_the_switchover(
    world: World,  # noqa: F811
) -> None:
    labels = {"app": "pg-harness", "cluster-name": "pg"}
    lock = _leader_cm("pg-0")
    lock["metadata"]["labels"] = labels
    world.kube.put(CONFIG_MAP, lock)
    for name, role in (("pg-0", "primary"), ("pg-1", "replica")):
        status = json.dumps({"role": role, "state": "running"})
        meta = {"name": name, "namespace": NS, "labels": labels, "annotations": {"status": status}}
        world.kube.put(POD, {"metadata": meta})
    world.kube.put(POD, {"metadata": {"name": "stranger", "namespace": NS, "labels": {}}})
    postgres = {"primary": {"name": "db", "key": "url"}, "patroni": {"scope": "pg"}}
    world.add("c1", replicas=1, database={"engine": "postgres", "postgres": postgres})
    await world.idle()
    world.roll_out("c1")
    await world.idle()

    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    body["metadata"]["annotations"] = {ANNOTATION_SWITCHOVER_REQUEST: "pg-1"}
    world.kube.put(CLUSTER, body)
    world.event("c1")
    await world.idle()
    asked = world.kube.obj(CONFIG_MAP, NS, "pg-failover")
    assert asked is not None
    assert asked["metadata"]["labels"] == labels  # Patroni lists its objects by these
    assert asked["metadata"]["annotations"] == {"leader": "pg-0", "member": "pg-1"}
    assert world.status("c1")["switchover"]["phase"] == "Running"
    assert "SwitchoverRequested" in world.kube.event_reasons("c1")
    state = world.engine.keys[(NS, "c1")]
    assert state.due is not None
    assert state.due - world.engine._clock() == pytest.approx(SWITCHOVER_POLL_SECONDS, abs=0.5)

    # Patroni's part: the candidate takes the lock, the request is cleared
    world.kube.put(
        CONFIG_MAP,
        {
            **lock,
            "metadata": {
                **lock["metadata"],
                "annotations": {**lock["metadata"]["annotations"], "leader": "pg-1"},
            },
        },
    )
    world.kube.put(
        CONFIG_MAP, {"metadata": {"name": "pg-failover", "namespace": NS, "labels": labels}}
    )
    world.engine.trigger((NS, "c1"), "requeue")
    await world.idle()
    switchover = world.status("c1")["switchover"]
    assert switchover["phase"] == "Completed", switchover
    assert world.status("c1")["currentPrimary"]["name"] == "pg-1"
    assert "SwitchoverCompleted" in world.kube.event_reasons("c1")

    # handled: later polls ask nothing again and write nothing
    world.kube.calls.clear()
    world.engine.trigger((NS, "c1"), "requeue")
    await world.idle()
    assert world.kube.writes() == []


async def test_a_failover_configmap_that_is_not_patronis_is_left_alone(
    world: World,  # noqa: F811
) -> None:
    labels = {"app": "pg-harness", "cluster-name": "pg"}
    lock = _leader_cm("pg-0")
    lock["metadata"]["labels"] = labels
    world.kube.put(CONFIG_MAP, lock)
    for name, role in (("pg-0", "primary"), ("pg-1", "replica")):
        status = json.dumps({"role": role, "state": "running"})
        meta = {"name": name, "namespace": NS, "labels": labels, "annotations": {"status": status}}
        world.kube.put(POD, {"metadata": meta})
    foreign = {"metadata": {"name": "pg-failover", "namespace": NS, "labels": {"team": "x"}}}
    world.kube.put(CONFIG_MAP, foreign)
    postgres = {"primary": {"name": "db", "key": "url"}, "patroni": {"scope": "pg"}}
    world.add("c1", replicas=1, database={"engine": "postgres", "postgres": postgres})
    await world.idle()
    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    body["metadata"]["annotations"] = {ANNOTATION_SWITCHOVER_REQUEST: "pg-1"}
    world.kube.put(CLUSTER, body)
    world.event("c1")
    await world.idle()
    switchover = world.status("c1")["switchover"]
    assert switchover["phase"] == "Failed", switchover
    assert "without the labels of Patroni's objects" in switchover["message"]
    left = world.kube.obj(CONFIG_MAP, NS, "pg-failover")
    assert left is not None
    assert not left["metadata"].get("annotations")  # nothing injected


def test_a_member_asked_for_again_gets_a_new_value() -> None:
    """pg-1 was asked for and became primary; a failover moved the primary back to pg-0:
    ``pg-1@<token>`` is a new value naming pg-1 again, and is checked and asked like one."""
    assert switchover_member("pg-1@1764567890") == "pg-1"
    assert switchover_member("pg-1") == "pg-1"
    handled = {"request": "pg-1", "phase": "Completed", "from": "pg-0", "startedAt": "t"}
    assert _step("pg-1", handled) == SwitchoverStep(None)
    again = _step("pg-1@2", handled)
    assert again.ask == ("pg-0", "pg-1")
    assert again.status is not None
    assert again.status["request"] == "pg-1@2"
    assert again.status["message"] == "asked Patroni to hand the primary role from pg-0 to pg-1"
    later = NOW + dt.timedelta(seconds=3)
    done = _step("pg-1@2", again.status, leader="pg-1", now=later).status
    assert done is not None
    assert done["phase"] == "Completed"
    assert done["message"] == "pg-1 is the primary (was pg-0), 3 s after the request"
    unknown = _step("pg-9@2").status
    assert unknown is not None
    assert unknown["message"].startswith("pg-9 is not a member of Patroni cluster pg")
    assert _step("pg-0@x").status["phase"] == "Completed"  # type: ignore[index]
