"""Hardening on the real control plane: no takeover of objects the operator does not own,
Secret rotation rolls the pods, the operator's policy allow-lists."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.operator.e2e.conftest import (
    PG,
    Operator,
    cluster_cr,
    condition,
    db_secret,
    get_cluster,
    start_operator,
    wait_ready,
)

pytestmark = pytest.mark.e2e


def _degraded(kube: KubeCluster, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, name)
        return obj if condition(obj, "Degraded").get("reason") == reason else None

    found: dict[str, Any] = kube.wait_for(check, timeout=40, what=f"Degraded/{reason}")
    return found


VICTIMS = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "victim-api", "labels": {"team": "other"}},
        "spec": {"ports": [{"port": 8443}], "selector": {"app": "other"}},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "victim", "labels": {"team": "other"}},
        "spec": {"podSelector": {"matchLabels": {"app": "other"}}, "policyTypes": ["Ingress"]},
    },
    {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "victim", "labels": {"team": "other"}},
    },
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "victim-config", "labels": {"team": "other"}},
        "data": {"precious": "yes"},
    },
    {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "victim-data", "labels": {"team": "other"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": "none-such",
        },
    },
]
_RESOURCES = {
    "Service": "service",
    "NetworkPolicy": "networkpolicy",
    "ServiceAccount": "serviceaccount",
    "ConfigMap": "configmap",
    "PersistentVolumeClaim": "pvc",
}


def _snapshot(kube: KubeCluster, namespace: str) -> dict[str, tuple[str, Any, Any]]:
    out: dict[str, tuple[str, Any, Any]] = {}
    for victim in VICTIMS:
        kind, name = victim["kind"], victim["metadata"]["name"]
        live = kube.get_json("-n", namespace, _RESOURCES[kind], name, "--show-managed-fields")
        managers = sorted(m["manager"] for m in live["metadata"].get("managedFields") or [])
        out[f"{kind}/{name}"] = (
            live["metadata"]["resourceVersion"],
            live["metadata"].get("ownerReferences"),
            managers,
        )
    return out


@pytest.mark.timeout(180)
def test_objects_it_does_not_own_are_never_taken_over_and_survive_thecluster_cr(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    kube.apply(VICTIMS, namespace)
    before = _snapshot(kube, namespace)
    kube.apply([cluster_cr("victim")], namespace)  # SQLite: all five kinds are children
    obj = _degraded(kube, namespace, "victim", "ChildConflict")
    message = condition(obj, "Degraded")["message"]
    for name in before:
        assert name in message, message
    time.sleep(3)  # a few retries and resyncs
    assert _snapshot(kube, namespace) == before
    assert "dchat-operator" not in str(before)
    # nothing at all was created for the cluster: its pods would mount someone else's objects
    assert kube.kubectl("-n", namespace, "get", "deploy", "victim", check=False).returncode != 0
    kube.kubectl("-n", namespace, "delete", "dchatcluster", "victim", "--wait=true")
    time.sleep(3)  # the garbage collector has had its chance
    assert _snapshot(kube, namespace) == before


@pytest.mark.timeout(180)
def test_rotating_a_referenced_secret_rolls_the_pods(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    old = db_secret("postgresql://dchat:old@pg:5432/dchat")
    kube.apply([old, cluster_cr("rot", database=PG)], namespace)
    wait_ready(kube, namespace, "rot", replicas=1)
    ann = "dchat.dev/secrets-checksum"

    def template_checksum() -> str:
        dep = kube.get_json("-n", namespace, "deployment", "rot")
        return str(dep["spec"]["template"]["metadata"]["annotations"][ann])

    before = template_checksum()
    pods_before = {
        p["metadata"]["name"]
        for p in kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=rot")[
            "items"
        ]
    }
    kube.apply([db_secret("postgresql://dchat:new-password@pg:5432/dchat")], namespace)
    kube.wait_for(lambda: template_checksum() != before, timeout=30, what="pod template rolled")
    wait_ready(kube, namespace, "rot", replicas=1)

    def rolled() -> bool:
        pods = kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=rot")
        names = {
            p["metadata"]["name"]
            for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")
        }
        return bool(names) and not names & pods_before

    kube.wait_for(rolled, timeout=60, what="new pods")
    cm = kube.get_json("-n", namespace, "configmap", "rot-config")
    assert "new-password" not in json.dumps(cm)


@pytest.mark.timeout(180)
def test_the_policy_allow_lists_refuse_specs_and_apply_nothing(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    op = start_operator(
        kube,
        [namespace],
        tmp_path / "op.log",
        extra=[
            "--allowed-registry",
            "ghcr.io/dchat-dev/",
            "--allowed-cluster-issuer",
            "letsencrypt-prod",
        ],
    )
    try:
        ingress = {"enabled": True, "host": "api.dchat.dev"}
        kube.apply(
            [
                db_secret("postgresql://dchat:pw@pg:5432/dchat"),
                cluster_cr("reg", database=PG, image={"repository": "evil.example/dchat"}),
                cluster_cr("lb", database=PG, p2p={"serviceType": "LoadBalancer"}),
                cluster_cr("ann", database=PG, p2p={"annotations": {"metallb.io/pool": "x"}}),
                cluster_cr("iss", database=PG, ingress={**ingress, "clusterIssuer": "selfsigned"}),
            ],
            namespace,
        )
        for name, rule in (
            ("reg", "allowed-registries"),
            ("lb", "allowed-service-types"),
            ("ann", "allowed-annotation-prefixes"),
            ("iss", "allowed-cluster-issuers"),
        ):
            obj = _degraded(kube, namespace, name, "PolicyViolation")
            assert rule in condition(obj, "Degraded")["message"]
            found = kube.kubectl(
                "-n",
                namespace,
                "get",
                "all,cm,sa,netpol,ingress",
                "-l",
                f"app.kubernetes.io/instance={name}",
                "-o",
                "name",
            ).stdout.strip()
            assert found == "", found
        # the author fixes the spec: it converges
        kube.apply([cluster_cr("lb", database=PG, p2p={"serviceType": "ClusterIP"})], namespace)
        wait_ready(kube, namespace, "lb", replicas=1)
    finally:
        op.stop()
