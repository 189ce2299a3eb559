"""A node goes NotReady: its pods are replaced on a healthy node.

A fake node of the test's own holds the cluster's pods; kwok's chaos stage (the label
``node-not-ready.stage.kwok.x-k8s.io=true``) makes it report Ready=False, as a node whose
kubelet or runtime broke. The node-lifecycle controller taints it ``not-ready:NoExecute``
and the pods, which tolerate that for ``scheduling.nodeLostTolerationSeconds`` (the
operator's default 30 s instead of Kubernetes' 300 s), are evicted and replaced elsewhere.
RTO printed. (A node that stops heartbeating altogether is tainted ``unreachable`` after the
node-monitor grace period, 40-50 s upstream, and then handled the same way.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster

from .conftest import PG, Operator, db_secret, get_cluster, wait_ready
from .objects import cluster_cr

pytestmark = pytest.mark.e2e


@pytest.fixture
def lost_node(kube: KubeCluster, namespace: str) -> Iterator[str]:
    name = f"lost-{namespace}"[:63]
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, "dchat.dev/lost": name},
        },
    }
    kube.apply([node], namespace)  # cluster-scoped: the namespace is ignored
    kube.wait_for(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (kube.get_json("node", name).get("status") or {}).get("conditions") or []
        ),
        timeout=60,
        what=f"node {name} Ready",
    )
    try:
        yield name
    finally:
        kube.kubectl("delete", "node", name, "--wait=false", check=False)
        # pods bound to a node without a kubelet never finish terminating by themselves
        kube.kubectl(
            "delete", "pods", "-n", namespace, "--all", "--force", "--grace-period=0", check=False
        )


def _pods(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get_json(
        "-n", namespace, "pods", "-l", "app.kubernetes.io/instance=nl"
    )["items"]
    return items


@pytest.mark.timeout(300)
def test_the_pods_of_a_lost_node_are_replaced_on_a_healthy_one(
    kube: KubeCluster, namespace: str, operator: Operator, lost_node: str
) -> None:
    prefer = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {"key": "dchat.dev/lost", "operator": "In", "values": [lost_node]}
                        ]
                    },
                }
            ]
        }
    }
    cr = cluster_cr("nl", replicas=2, database=PG, scheduling={"affinity": prefer})
    kube.apply([db_secret(), cr], namespace)
    wait_ready(kube, namespace, "nl", replicas=2)
    tolerations = _pods(kube, namespace)[0]["spec"]["tolerations"]
    assert {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 30,
    } in tolerations
    on_lost = {
        p["metadata"]["name"]
        for p in _pods(kube, namespace)
        if p["spec"].get("nodeName") == lost_node
    }
    assert on_lost, [p["spec"].get("nodeName") for p in _pods(kube, namespace)]

    lost_at = time.monotonic()
    kube.kubectl("label", "node", lost_node, "node-not-ready.stage.kwok.x-k8s.io=true")
    seen_ready: set[int] = set()
    marks: dict[str, float] = {}

    def replaced() -> bool:
        status = get_cluster(kube, namespace, "nl").get("status") or {}
        seen_ready.add(int(status.get("readyReplicas") or 0))
        node = kube.get_json("node", lost_node)
        taints = {t["key"] for t in node["spec"].get("taints") or []}
        if "node.kubernetes.io/not-ready" in taints:
            marks.setdefault("tainted", time.monotonic() - lost_at)
        ready = [
            p
            for p in _pods(kube, namespace)
            if p["spec"].get("nodeName") not in (None, lost_node)
            and not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]
        return len(ready) == 2 and int(status.get("readyReplicas") or 0) == 2

    kube.wait_for(replaced, timeout=240, interval=1, what="replacement pods on healthy nodes")
    rto = time.monotonic() - lost_at
    print(
        f"\nnode NotReady -> tainted not-ready after {marks.get('tainted', -1):.0f} s -> "
        f"{len(on_lost)} pods replaced and all Ready: RTO {rto:.1f} s "
        "(nodeLostTolerationSeconds 30)"
    )
    # kwok keeps the pods of its NotReady node "Ready" until they are evicted (a real node's
    # pods are marked NotReady at once), so the status need not show a dip here; the real
    # node's pod-deletion test checks that the status shows reduced capacity.
    print(f"readyReplicas seen in the status meanwhile: {sorted(seen_ready)}")
    assert rto < 120  # the guide's target for a node failure: 2 min
    final = get_cluster(kube, namespace, "nl")["status"]
    assert final["phase"] == "Ready"
