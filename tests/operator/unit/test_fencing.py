"""Fencing a SQLite pod stuck on a node that stopped reporting Ready: the pure rule and the
cluster controller on the in-memory fake of the Kubernetes API."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from prometheus_client import REGISTRY

from dchat_operator.api.kinds import CLUSTER, DEPLOYMENT, NODE, PERSISTENT_VOLUME, POD, PVC, SECRET
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import selector_labels
from dchat_operator.builders.fencing import pinned_to, to_fence
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


def _local_volume(name: str, node: str) -> dict[str, Any]:
    term = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    return {
        "metadata": {"name": name, "namespace": ""},
        "spec": {
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [term]}]}}
        },
    }


def test_a_volume_is_lost_with_its_node_only_when_pinned_to_it() -> None:
    assert pinned_to(_local_volume("pv", "lost"), "lost")
    assert not pinned_to(_local_volume("pv", "other"), "lost")
    assert not pinned_to({"spec": {"csi": {"driver": "ebs"}}}, "lost")  # network storage
    assert not pinned_to(None, "lost")
    two = _local_volume("pv", "lost")
    two["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"].append({"matchExpressions": []})
    assert not pinned_to(two, "lost")  # another term lets it elsewhere


S3 = {
    "bucket": "bkt",
    "prefix": "dchat/",
    "region": "eu-west-1",
    "credentialsSecretRef": {"name": "s3creds"},
}


async def _dead_node_with_local_claim(world: World, **spec: Any) -> FakeKube:  # noqa: F811
    """A SQLite cluster whose pod and local volume are on a node NotReady since 11:59."""
    world.add("c1", replicas=1, **spec)
    await world.idle()
    body = world.kube.obj(CLUSTER, NS, "c1")
    assert body is not None
    kube: FakeKube = world.kube
    node = _node("lost", "Unknown", dt.datetime(2026, 11, 30, 11, 59, 0, tzinfo=dt.UTC))
    node["metadata"]["namespace"] = ""
    kube.put(NODE, node)
    kube.put(PERSISTENT_VOLUME, _local_volume("pv-1", "lost"))
    claim = kube.obj(PVC, NS, "c1-data")
    assert claim is not None
    claim["spec"]["volumeName"] = "pv-1"
    kube.objects[(PVC.plural, NS, "c1-data")] = claim
    kube.put(POD, _pod("c1-abc-1", "lost", selector_labels(DchatCluster.parse(body))))
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
    return kube


async def test_a_claim_on_the_dead_nodes_volume_is_replaced_when_a_replica_exists(
    world: World,  # noqa: F811
) -> None:
    keys = {"AWS_ACCESS_KEY_ID": "YQ==", "AWS_SECRET_ACCESS_KEY": "Yg=="}
    world.kube.put(SECRET, {"metadata": {"name": "s3creds", "namespace": NS}, "data": keys})
    sqlite = {"engine": "sqlite", "sqlite": {"failoverDelaySeconds": 30}}
    kube = await _dead_node_with_local_claim(
        world, database=sqlite, backup={"enabled": True, "s3": S3}
    )
    assert kube.force_deleted == ["c1-abc-1"]
    assert "VolumeReplaced" in kube.event_reasons("c1")
    # the claim went (no finalizer in the fake) and the next run applied a new, empty one
    await asyncio.sleep(1.2)
    await world.idle()
    claim = kube.obj(PVC, NS, "c1-data")
    assert claim is not None
    assert "volumeName" not in claim.get("spec", {})


async def test_without_a_replica_the_claim_on_the_dead_node_is_kept(
    world: World,  # noqa: F811
) -> None:
    kube = await _dead_node_with_local_claim(
        world, database={"engine": "sqlite", "sqlite": {"failoverDelaySeconds": 30}}
    )
    assert kube.force_deleted == ["c1-abc-1"]  # the world's clock is 12:00: 60 s > 30 s
    assert kube.event_reasons("c1")[-2:] == ["Fenced", "VolumeLost"]
    fenced = {"namespace": NS, "cluster": "c1"}
    assert REGISTRY.get_sample_value("dchat_operator_pods_fenced_total", fenced)
    claim = kube.obj(PVC, NS, "c1-data")
    assert claim is not None
    assert claim["spec"]["volumeName"] == "pv-1"
