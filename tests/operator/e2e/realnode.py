"""Shared pieces of the real-node e2e tests (test_real_node.py, test_backups_real_node.py).

The real node is tests/cluster/realnode.sh's kubelet: pods there run the locally built
images (``imagePullPolicy: Never``), so a DchatCluster for it carries the real node's
nodeSelector and toleration. Fixtures (``real_node``, ``bridge_postgres``, ``bridge_s3``,
``volumes``) live in conftest.py; these are the plain helpers.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt

from tests.harness.cluster import KubeCluster

from .objects import cluster_cr

IMAGE = "ghcr.io/dchat-dev/dchat"
VERSION = "0.1.0"
BRIDGE = "10.88.0.1"
LABEL = "dchat.dev/real-node"
SCHEDULING = {
    "nodeSelector": {LABEL: "true"},
    "tolerations": [{"key": LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
}
VOLUMES = Path("/var/lib/dchat-test-volumes")  # hostPath volumes on the real node
JWT_KEY = "real-node-test-" + "k" * 40


def real_node_status(kube: KubeCluster) -> str:
    """What up.sh recorded for the real node: "ready <node>" or "skipped: <reason>"."""
    name = kube.kubeconfig.name.removesuffix(".kubeconfig")
    path = kube.kubeconfig.parent / f"{name}.realnode"
    try:
        return path.read_text().strip()
    except OSError:
        return "skipped: no real node for this cluster (KUBECONFIG names another cluster)"


def real_cr(name: str, version: str = VERSION, **spec: Any) -> dict[str, Any]:
    """A DchatCluster whose pods go to the real node and run the locally built image."""
    return cluster_cr(
        name,
        version=version,
        image={"repository": IMAGE, "pullPolicy": "Never"},
        scheduling=SCHEDULING,
        security={"jwtSecretRef": {"name": "jwt", "key": "secret"}},
        **spec,
    )


def jwt_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "jwt"},
        "stringData": {"secret": JWT_KEY},
    }


def token() -> str:
    claims = {"sub": "e2e", "iss": "dchat", "scope": "chat:write", "exp": time.time() + 600}
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if method != "GET":
        headers["Authorization"] = f"Bearer {token()}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - test pod IPs
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def message_bodies(base: str, channel: str) -> set[str]:
    """Every message body of the channel, read through the API page by page."""
    found: set[str] = set()
    cursor = ""
    while True:
        url = f"{base}/api/v1/channels/{channel}/messages?limit=200"
        code, page = http("GET", url + (f"&cursor={cursor}" if cursor else ""), timeout=10)
        assert code == 200, page
        found.update(m["body"] for m in page["items"])
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return found


def wait_archiving(kube: KubeCluster, namespace: str, name: str, timeout: float = 90) -> None:
    """Until the cluster reports ContinuousArchiving=True (Litestream replicating to S3)."""

    def archiving() -> bool:
        status = kube.get_json("-n", namespace, "dchatcluster", name).get("status") or {}
        return any(
            c.get("type") == "ContinuousArchiving" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    kube.wait_for(archiving, timeout=timeout, interval=1, what=f"{name} ContinuousArchiving")


def service_url(kube: KubeCluster, namespace: str, service: str) -> str:
    svc = kube.get_json("-n", namespace, "service", service)
    port = svc["spec"]["ports"][0]["port"]
    return f"http://{svc['spec']['clusterIP']}:{port}"


def wait_serving(kube: KubeCluster, base: str) -> None:
    """Until the Service answers: kube-proxy programs a new Service's endpoints
    asynchronously (about a second here), as in any cluster."""

    def answers() -> bool:
        try:
            return http("GET", f"{base}/api/v1/channels", timeout=3)[0] == 200
        except OSError:
            return False

    kube.wait_for(answers, timeout=30, interval=0.5, what=f"{base} answering")


def chat_round_trip(base: str, channel: str) -> None:
    """Create a channel, post to it and read the message back, all through ``base``."""
    status, created = http("POST", f"{base}/api/v1/channels", {"name": channel})
    assert status == 201, created
    cid = created["id"]
    status, posted = http("POST", f"{base}/api/v1/channels/{cid}/messages", {"body": "hello"})
    assert status == 201, posted
    status, page = http("GET", f"{base}/api/v1/channels/{cid}/messages")
    assert status == 200, page
    assert [m["body"] for m in page["items"]] == ["hello"]


def pods(kube: KubeCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.get_json(
        "-n", namespace, "pods", "-l", f"app.kubernetes.io/instance={name}"
    )["items"]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def hostpath_volume(
    kube: KubeCluster, namespace: str, claim: str, node: str, uid: int = 1000, tag: str = ""
) -> str:
    """A PersistentVolume on the real node bound to ``claim`` (the test cluster has no
    provisioner); its directory belongs to the pod's uid (the node's 1000 by default), as a
    provisioner's would. ``tag`` tells apart two volumes of one claim (a claim replaced on
    another node): its own PersistentVolume and its own, empty, directory."""
    path = VOLUMES / namespace / f"{claim}{tag}"
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    pv = f"{namespace}-{claim}{tag}"
    manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv, "labels": {"dchat.dev/test-volume": "true"}},
        "spec": {
            "capacity": {"storage": "20Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    return pv
