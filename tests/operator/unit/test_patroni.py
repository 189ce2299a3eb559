"""status.currentPrimary from Patroni's leader ConfigMap: the pure rules and the cluster
controller polling it on the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dchat_operator.api.kinds import CONFIG_MAP
from dchat_operator.builders.patroni import current_primary, leader_of
from dchat_operator.controllers.cluster import PRIMARY_POLL_SECONDS
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
    assert verbs == [("GET", "configmaps"), ("GET", "dchatclusters"), ("GET", "deployments")]

    changes = {"namespace": NS, "cluster": "c1"}
    before = REGISTRY.get_sample_value("dchat_operator_primary_changes_total", changes) or 0.0
    world.kube.put(CONFIG_MAP, _leader_cm("pg-1"))
    world.engine.trigger((NS, "c1"), "requeue")
    await world.idle()
    assert world.status("c1")["currentPrimary"]["name"] == "pg-1"
    assert "PrimaryChanged" in world.kube.event_reasons("c1")
    # the FailoverHappened alert (builders.monitoring) counts changes, not the first primary
    assert REGISTRY.get_sample_value("dchat_operator_primary_changes_total", changes) == before + 1
