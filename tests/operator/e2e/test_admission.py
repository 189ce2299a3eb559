"""Admission refuses what reconcile would fail on: the real apiserver, the generated CRD.

Every input of ``tests/operator/admission_cases.py`` is sent to the apiserver (server-side dry
run: full validation, OpenAPI bounds and CEL rules, nothing stored) and must be refused with
its message; the same field with a good value beside it must be accepted. The model refuses the
same inputs (``tests/operator/unit/test_crd.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.operator.admission_cases import CASES, Case, cr
from tests.operator.e2e.conftest import Operator, condition, get_cluster, wait_ready

pytestmark = pytest.mark.e2e

SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


@pytest.fixture(scope="module")
def admission_ns(crd_installed: KubeCluster) -> Iterator[str]:
    with crd_installed.namespace("adm") as name:
        yield name


def _dry_run(kube: KubeCluster, namespace: str, doc: dict[str, Any]) -> tuple[int, str]:
    result = kube.kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_admission_refuses_bad_input_and_accepts_the_good_value_beside_it(
    crd_installed: KubeCluster, admission_ns: str, case: Case
) -> None:
    """Both objects in one server-side dry run (one kubectl process per case: ~75 cases
    share 2 CPUs with the rest of the suite); kubectl reports each object on its own."""
    good = case.good_name if case.good_name != case.bad_name else f"{case.good_name}-ok"
    both = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [cr(case.bad_name, case.bad), cr(good, case.good)],
    }
    result = crd_installed.kubectl(
        "-n",
        admission_ns,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(both),
        check=False,
    )
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.startswith(("The DchatCluster ", "Error from server", "error:"))
    ]
    assert result.returncode != 0, f"accepted: {case.bad}"
    assert len(errors) == 1, result.stderr[:3000]
    assert f'"{case.bad_name}"' in errors[0], errors[0][:3000]
    assert case.message in result.stderr, result.stderr[:3000]
    assert f"dchatcluster.dchat.dev/{good} created (server dry run)" in result.stdout, (
        result.stdout + result.stderr[:3000]
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 2}, "SQLite mode allows at most 1 replica"),
        ({"replicas": "three"}, "spec.replicas"),
        ({"backup": {"schedule": "every night"}}, "spec.backup.schedule"),
        ({"database": {"engine": "postgres"}}, "PostgreSQL mode needs database.postgres.primary"),
        ({"replicaz": 1}, 'unknown field "spec.replicaz"'),
        ({"server": {"apiPort": 9001}}, "must be distinct"),
        ({"security": {"tlsEnabled": True}}, "tlsEnabled needs security.tlsSecretRef"),
        ({"database": {"engine": "mysql"}}, "Unsupported value"),
    ],
    ids=["sqlite-2", "type", "cron", "pg-no-secret", "unknown", "ports", "tls", "enum"],
)
def test_invalid_crs_are_rejected_by_the_apiserver(
    kube: KubeCluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = kube.kubectl(
        "-n", namespace, "apply", "-f", "-", input=json.dumps(cr("bad", spec)), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert kube.kubectl("-n", namespace, "get", "dchat", "bad", check=False).returncode != 0


def test_a_full_cr_with_every_bound_at_its_limit_is_accepted(
    crd_installed: KubeCluster, admission_ns: str
) -> None:
    """The bounds leave room for real use: large but valid values together pass."""
    spec: dict[str, Any] = {
        "version": "v" + "1" * 62,
        "image": {"pullSecrets": [f"reg-{i}" for i in range(16)]},
        "scheduling": {
            "tolerations": [{"key": f"k{i}", "operator": "Exists"} for i in range(32)],
            "nodeSelector": {f"example.com/k{i}": "v" for i in range(32)},
        },
        "ingress": {
            "enabled": True,
            "host": "*.dchat.dev",
            "annotations": {f"example.com/a{i}": "x" * 4096 for i in range(40)},
        },
        "relay": {"bootstrapNodes": [f"/dns/relay{i}.dchat.dev/tcp/7000" for i in range(32)]},
        "security": {"corsAllowedOrigins": [f"https://a{i}.dchat.dev" for i in range(64)]},
        "networkPolicy": {"extraEgressPorts": list(range(60000, 60032))},
        "logging": {"output": "file", "filePath": "/var/log/dchat/dchat.log"},
    }
    code, stderr = _dry_run(crd_installed, admission_ns, cr("a" * 52, spec))
    assert code == 0, stderr[:3000]


def _secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


@pytest.mark.timeout(180)
def test_url_from_a_secret_is_checked_then_mounted_as_a_file(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    """A chain RPC URL given as a Secret reference: a missing Secret degrades the cluster
    (naming it), and once it exists the pod gets the key as a file and CHAT_CHAIN_RPC_FILE."""
    spec = {
        "replicas": 1,
        "resources": SMALL,
        "database": {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}},
        "chain": {"chatChainRpcSecretRef": {"name": "chain-rpc", "key": "chat"}},
        "networkPolicy": {"extraEgressPorts": [443]},
    }
    kube.apply(
        [_secret("db", url="postgresql://dchat:pw@postgres:5432/dchat"), cr("rpc", spec)], namespace
    )

    def degraded() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, "rpc")
        return obj if condition(obj, "Degraded").get("reason") == "SecretNotFound" else None

    obj = kube.wait_for(degraded, timeout=30, what="Degraded/SecretNotFound")
    assert "chain-rpc" in condition(obj, "Degraded")["message"]

    kube.apply([_secret("chain-rpc", chat="https://rpc.example/key-123")], namespace)
    wait_ready(kube, namespace, "rpc", replicas=1, timeout=60)
    pod = kube.get_json("-n", namespace, "deployment", "rpc")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["CHAT_CHAIN_RPC_FILE"] == "/etc/dchat/secrets/chat-chain-rpc/url"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["chat-chain-rpc"]["secret"]["secretName"] == "chain-rpc"
    assert volumes["chat-chain-rpc"]["secret"]["items"] == [{"key": "chat", "path": "url"}]
    config = kube.get_json("-n", namespace, "configmap", "rpc-config")["data"]["config.toml"]
    assert "rpc.example" not in config
    policy = kube.get_json("-n", namespace, "networkpolicy", "rpc")["spec"]
    assert {"port": 443, "protocol": "TCP"} in policy["egress"][1]["ports"]
