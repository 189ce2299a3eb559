"""The console scripts: crd, render, rbac, and kubectl-dchat's usage error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dchat_operator.api.crd import render_crd_yaml
from dchat_operator.cli import _parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_crd_command_prints_the_generated_crd() -> None:
    out = subprocess.run(
        [str(BIN / "dchat-operator"), "crd"], capture_output=True, text=True, check=True
    )
    assert out.stdout == render_crd_yaml()


def test_render_prints_children_as_a_yaml_stream() -> None:
    out = subprocess.run(
        [
            str(BIN / "dchat-operator"),
            "render",
            "-f",
            str(REPO / "manifests/samples/postgres.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Service") == 4  # api, metrics, p2p, p2p-peers (headless)
    assert {"Deployment", "ConfigMap", "Ingress", "NetworkPolicy", "PodDisruptionBudget"} <= set(
        kinds
    )
    assert all(d["metadata"]["namespace"] == "dchat" for d in docs)


def test_render_reports_invalid_cr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: dchat.dev/v1alpha1\nkind: DchatCluster\nmetadata: {name: x}\n"
        "spec: {replicas: 2}\n"
    )
    out = subprocess.run(
        [str(BIN / "dchat-operator"), "render", "-f", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "SQLite mode allows at most 1 replica" in out.stderr


def test_kubectl_plugin_without_a_command_is_a_usage_error() -> None:
    """The plugin itself is tested in test_kubectl_plugin.py (unit) and the e2e tests."""
    out = subprocess.run([str(BIN / "kubectl-dchat")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "the following arguments are required: COMMAND" in out.stderr


def test_rbac_command_prints_a_cluster_role() -> None:
    out = subprocess.run(
        [str(BIN / "dchat-operator"), "rbac"], capture_output=True, text=True, check=True
    )
    role = yaml.safe_load(out.stdout)
    assert role["kind"] == "ClusterRole"
    rules = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    # read; created once for managed PostgreSQL's generated passwords, never updated
    assert rules[("", "secrets")] == {"get", "create"}
    assert rules[("dchat.dev", "dchatclusters/status")] == {"patch"}
    # the data claim is deleted only by fencing (a volume pinned to a dead node, with a
    # continuous replica to restore from): controllers/cluster.py, docs/failover.md
    assert rules[("", "persistentvolumeclaims")] == {"get", "create", "patch", "delete"}
    assert "&id" not in out.stdout  # no YAML anchors
    assert ("", "namespaces") in rules


def test_rbac_namespaced_prints_a_role_and_the_cluster_scoped_rest() -> None:
    out = subprocess.run(
        [str(BIN / "dchat-operator"), "rbac", "--namespaced", "team-a"],
        capture_output=True,
        text=True,
        check=True,
    )
    role, cluster_role = yaml.safe_load_all(out.stdout)
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "team-a")
    role_resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"secrets", "deployments", "dchatclusters/status"} <= role_resources
    assert not role_resources & {"namespaces", "customresourcedefinitions"}
    assert cluster_role["kind"] == "ClusterRole"
    assert sorted(r for rule in cluster_role["rules"] for r in rule["resources"]) == [
        "clusterroles",  # bind, of dchat-postgres only
        "customresourcedefinitions",
        "namespaces",
        "nodes",
        "persistentvolumes",
    ]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--workers", "0", "outside 1..256"),
        ("--workers", "many", "is not an integer"),
        ("--request-timeout", "-1", "outside 0.5..600"),
        ("--reconcile-timeout", "soon", "is not a number"),
        ("--lease-duration", "1", "outside 3..600"),
        ("--resync-seconds", "0", "outside 0.5..86400"),
        ("--metrics-port", "70000", "outside 0..65535"),
        ("--allowed-service-type", "Ingress", "invalid choice"),
    ],
)
def test_run_flags_refuse_garbage_with_a_clear_message(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args([flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err
    assert message in err
