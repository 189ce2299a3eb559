"""Fencing a SQLite pod stuck on a node that stopped reporting Ready: the pure rule and the
cluster controller on the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dchat_operator.api.kinds import CLUSTER, DEPLOYMENT, NODE, POD
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import selector_labels
from dchat_operator.builders.fencing import to_fence
from tests.operator.unit.fake_kube import FakeKube
from tests.operator.unit.test_cluster_controller import NS, World, world  # noqa: F401

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _node(name: str, ready: str, since: dt.datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": since.isoformat()}
            ]
        },
    }


def _pod(name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": labels or {},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "c1-abc", "uid": "rs"}],
        },
        "spec": {"nodeName": node},
    }


def test_only_pods_of_nodes_not_ready_for_the_delay_are_fenced() -> None:
    nodes = {
        "ok": _node("ok", "True", NOW - dt.timedelta(hours=1)),
        "lost": _node("lost", "Unknown", NOW - dt.timedelta(seconds=90)),
        "flaky": _node("flaky", "False", NOW - dt.timedelta(seconds=20)),
        "gone": None,
    }
    pods = [_pod("a", "ok"), _pod("b", "lost"), _pod("c", "flaky"), _pod("d", "gone")]
    pods.append({"metadata": {"name": "unscheduled"}, "spec": {}})
    fence, soonest = to_fence(pods, nodes, 60, NOW)
    assert [(f.pod, f.node) for f in fence] == [("b", "lost"), ("d", "gone")]
    assert fence[0].since == "2026-11-30T11:58:30Z"
    assert soonest == pytest.approx(40)
    # never while the node reports Ready, however long the pod has been there
    assert to_fence([_pod("a", "ok")], nodes, 0, NOW) == ([], None)


async def test_the_controller_fences_the_sqlite_pod_of_a_lost_node(
    world: World,  # noqa: F811
) -> None:
    world.add(
        "c1", replicas=1, database={"engine": "sqlite", "sqlite": {"failoverDelaySeconds": 30}}
    )
    await world.idle()
    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    labels = selector_labels(DchatCluster.parse(body))
    kube: FakeKube = world.kube
    node = _node("lost", "Unknown", dt.datetime(2026, 11, 30, 11, 59, 0, tzinfo=dt.UTC))
    node["metadata"]["namespace"] = ""  # cluster-scoped: the fake keys it without one
    kube.put(NODE, node)
    kube.put(POD, _pod("c1-abc-1", "lost", labels))
    # the Deployment shows the pod not Ready (the node controller marked it)
    dep = kube.obj(DEPLOYMENT, NS, "c1")
    assert dep is not None
    kube.set_status(
        DEPLOYMENT,
        NS,
        "c1",
        {"observedGeneration": dep["metadata"]["generation"], "replicas": 1, "readyReplicas": 0},
    )
    found = kube.obj(DEPLOYMENT, NS, "c1")
    assert found is not None
    world.controller.deployment_event(world.engine, "MODIFIED", found)
    await world.idle()
    assert kube.force_deleted == ["c1-abc-1"]  # the world's clock is 12:00: 60 s > 30 s
    assert "Fenced" in kube.event_reasons("c1")
