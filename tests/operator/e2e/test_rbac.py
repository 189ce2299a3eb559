"""The operator works under exactly the RBAC it documents (``dchat-operator rbac``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dchat_operator.api.rbac import cluster_role
from tests.harness.cluster import KubeCluster
from tests.operator.e2e.conftest import start_operator, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator_kubeconfig(kube: KubeCluster, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount bound to the documented ClusterRole only."""
    suffix = uuid.uuid4().hex[:8]
    ns = kube.create_namespace("ops")
    role = cluster_role(f"dchat-operator-e2e-{suffix}")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "dchat-operator", "namespace": ns}],
    }
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "dchat-operator"}}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(sa))
    payload = json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    kube.kubectl("apply", "-f", "-", input=payload)
    token = kube.kubectl("create", "token", "dchat-operator", "-n", ns, "--duration=1h").stdout
    admin: dict[str, Any] = yaml.safe_load(kube.kubeconfig.read_text())
    admin["users"] = [{"name": "dchat-operator", "user": {"token": token.strip()}}]
    for ctx in admin["contexts"]:
        ctx["context"]["user"] = "dchat-operator"
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    path.chmod(0o600)
    try:
        yield path
    finally:
        kube.kubectl("delete", "-f", "-", "--wait=false", input=payload, check=False)
        kube.delete_namespace(ns)


@pytest.mark.timeout(150)
def test_operator_runs_with_the_documented_least_rbac(
    kube: KubeCluster, namespace: str, tmp_path: Path, operator_kubeconfig: Path
) -> None:
    assert (
        kube.kubectl(
            "--kubeconfig",
            str(operator_kubeconfig),
            "auth",
            "can-i",
            "delete",
            "secrets",
            "-n",
            namespace,
            check=False,
        ).stdout.strip()
        == "no"
    )
    op = start_operator(kube, [namespace], tmp_path / "op.log", kubeconfig=operator_kubeconfig)
    try:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "stringData": {"url": "postgresql://dchat:pw@postgres:5432/dchat"},
        }
        cr = {
            "apiVersion": "dchat.dev/v1alpha1",
            "kind": "DchatCluster",
            "metadata": {"name": "rbac"},
            "spec": {
                "replicas": 2,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "database": {
                    "engine": "postgres",
                    "postgres": {"primary": {"name": "db", "key": "url"}},
                },
                "ingress": {"enabled": True, "host": "x.example"},
            },
        }
        kube.apply([secret, cr], namespace)
        wait_ready(kube, namespace, "rbac", replicas=2)
        assert kube.kubectl("-n", namespace, "get", "pdb,ingress,netpol", "rbac").returncode == 0
        # prune needs delete: one replica and no ingress remove the PDB and the Ingress
        kube.kubectl(
            "-n",
            namespace,
            "patch",
            "dchatcluster",
            "rbac",
            "--type=merge",
            "-p",
            '{"spec":{"replicas":1,"ingress":{"enabled":false}}}',
        )
        wait_ready(kube, namespace, "rbac", replicas=1)
        kube.wait_for(
            lambda: (
                kube.kubectl("-n", namespace, "get", "pdb", "rbac", check=False).returncode != 0
                and kube.kubectl("-n", namespace, "get", "ingress", "rbac", check=False).returncode
                != 0
            ),
            timeout=30,
            what="PDB and Ingress pruned",
        )
        kube.kubectl("-n", namespace, "delete", "deployment", "rbac")
        kube.wait_for(
            lambda: (
                kube.kubectl("-n", namespace, "get", "deployment", "rbac", check=False).returncode
                == 0
            ),
            timeout=30,
            what="Deployment recreated",
        )
        log = op.log.read_text()
        assert "orbidden" not in log, log[-4000:]
    finally:
        op.stop()
