"""Smoke tests of the Kubernetes test cluster: real controllers, admission and CEL.

These prove the harness is the real thing before any dchat test relies on it: a
Deployment rolls out onto kwok nodes, a CRD's CEL rule rejects a bad object with its
message, Pod Security admission rejects a privileged pod, and the fault stages work.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster

pytestmark = pytest.mark.e2e

RESTRICTED_POD_SPEC: dict[str, Any] = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "app",
            "image": "example.invalid/app:1",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }
    ],
}


def deployment(name: str, replicas: int, image: str = "example.invalid/app:1") -> dict[str, Any]:
    spec = json.loads(json.dumps(RESTRICTED_POD_SPEC))
    spec["containers"][0]["image"] = image
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def test_version_and_three_ready_nodes(kube_cluster: KubeCluster) -> None:
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"]
    nodes = kube_cluster.get_json("nodes")["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert len(ready) >= 3


def test_deployment_rolls_out_three_ready_pods(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(deployment("web", 3), namespace)
    kube_cluster.kubectl(
        "-n", namespace, "rollout", "status", "deployment/web", "--timeout=90s", timeout=100
    )
    pods = kube_cluster.get_json("pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} <= {
        n["metadata"]["name"] for n in kube_cluster.get_json("nodes")["items"]
    }
    # The ReplicaSet controller and the garbage collector are real: deleting the
    # Deployment removes its ReplicaSet and pods through owner references.
    kube_cluster.kubectl("-n", namespace, "delete", "deployment", "web", "--wait=true")
    kube_cluster.wait_for(
        lambda: not kube_cluster.get_json("replicasets", "-n", namespace)["items"],
        timeout=60,
        what="ReplicaSet garbage collection",
    )


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.dchat.dev"},
    "spec": {
        "group": "smoke.dchat.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "min": {"type": "integer"},
                                    "max": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "min must not exceed max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_cel_rule_rejects_invalid_object(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(CRD))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.dchat.dev", "--timeout=30s"
    )

    def widget(name: str, lo: int, hi: int) -> str:
        return json.dumps(
            {
                "apiVersion": "smoke.dchat.dev/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"min": lo, "max": hi},
            }
        )

    kube_cluster.wait_for(
        lambda: (
            kube_cluster.kubectl(
                "apply", "-f", "-", input=widget("ok", 1, 2), check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the new CRD to be served",
    )
    bad = kube_cluster.kubectl("apply", "-f", "-", input=widget("bad", 3, 2), check=False)
    assert bad.returncode != 0
    assert "min must not exceed max" in bad.stderr
    assert kube_cluster.kubectl("-n", namespace, "get", "widget", "bad", check=False).returncode


def test_pod_security_rejects_privileged_pod(kube_cluster: KubeCluster, namespace: str) -> None:
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "priv", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "example.invalid/app:1",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    result = kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(privileged), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr
    # ...while a pod that meets the profile is admitted.
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "good", "namespace": namespace},
        "spec": RESTRICTED_POD_SPEC,
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(good))


def test_fault_stage_keeps_marked_image_unready(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.apply(
        [deployment("good", 1), deployment("bad", 1, "example.invalid/app:2-never-ready")],
        namespace,
    )
    kube_cluster.kubectl("-n", namespace, "rollout", "status", "deployment/good", "--timeout=60s")

    def bad_pod_running() -> dict[str, Any] | None:
        pods = kube_cluster.get_json("pods", "-n", namespace, "-l", "app=bad")["items"]
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    pod = kube_cluster.wait_for(bad_pod_running, timeout=60, what="the faulty pod to run")
    conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conditions["Ready"] == "False"
    status = kube_cluster.get_json("deployment/bad", "-n", namespace)["status"]
    assert status.get("readyReplicas", 0) == 0


def test_fault_stage_marks_node_not_ready(kube_cluster: KubeCluster) -> None:
    node = "node-fault-smoke"
    manifest = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": node},
        },
        "spec": {"taints": [{"key": "dchat.dev/smoke", "effect": "NoSchedule"}]},
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        kube_cluster.kubectl("wait", "--for=condition=Ready", f"node/{node}", "--timeout=60s")
        kube_cluster.kubectl("label", "node", node, "node-not-ready.stage.kwok.x-k8s.io=true")
        kube_cluster.kubectl("wait", "--for=condition=Ready=False", f"node/{node}", "--timeout=60s")
    finally:
        kube_cluster.kubectl("delete", "node", node, "--ignore-not-found", check=False)
