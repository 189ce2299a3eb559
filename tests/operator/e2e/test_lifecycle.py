"""Operator lifecycle on the real control plane: crash safety, restart without writes,
monitoring objects only when the Prometheus Operator's CRDs exist."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.operator.e2e.conftest import start_operator, wait_ready

pytestmark = pytest.mark.e2e

SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}}
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "db"},
    "stringData": {"url": "postgresql://dchat:pw@postgres:5432/dchat"},
}


def _cr(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dchat.dev/v1alpha1",
        "kind": "DchatCluster",
        "metadata": {"name": name},
        "spec": {"resources": SMALL, **spec},
    }


@pytest.mark.timeout(180)
def test_crash_mid_reconcile_then_restart_converges_and_idle_restart_writes_nothing(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    op = start_operator(kube, [namespace], tmp_path / "op1.log")
    try:
        kube.apply([SECRET, *[_cr(f"c{i}", replicas=2, database=PG) for i in range(5)]], namespace)
        time.sleep(0.3)  # somewhere in the middle of the first reconciles
        op.process.send_signal(signal.SIGKILL)
        op.process.wait(timeout=10)
    finally:
        op.stop()

    op = start_operator(kube, [namespace], tmp_path / "op2.log")
    try:
        for i in range(5):
            wait_ready(kube, namespace, f"c{i}", replicas=2)
    finally:
        op.stop()

    # a fresh operator on a converged namespace: reads only
    op = start_operator(kube, [namespace], tmp_path / "op3.log")
    try:
        kube.wait_for(lambda: op.resyncs() >= 3, timeout=30, what="3 resyncs")
        assert op.writes() == 0, op.log.read_text()[-3000:]
    finally:
        op.stop()


def _stub_crd(plural: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def monitoring_crds(kube: KubeCluster) -> Iterator[None]:
    """Stand-ins for the Prometheus Operator's CRDs (schema-less), removed afterwards."""
    crds = [
        _stub_crd("servicemonitors", "ServiceMonitor"),
        _stub_crd("prometheusrules", "PrometheusRule"),
    ]
    payload = json.dumps({"apiVersion": "v1", "kind": "List", "items": crds})
    kube.kubectl("apply", "-f", "-", input=payload)
    for crd in crds:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
    try:
        yield
    finally:
        kube.kubectl("delete", "-f", "-", "--wait=false", input=payload, check=False)


@pytest.mark.serial
@pytest.mark.timeout(120)
def test_monitoring_objects_only_when_their_crds_exist(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    op = start_operator(kube, [namespace], tmp_path / "op.log")
    try:
        result = kube.kubectl("api-resources", "--api-group=monitoring.coreos.com", "-o", "name")
        assert result.stdout.strip() == "", "this test needs a cluster without those CRDs"
        kube.apply([SECRET, _cr("nomon", database=PG)], namespace)
        obj = wait_ready(kube, namespace, "nomon", replicas=1)
        assert obj["status"]["phase"] == "Ready"  # no Degraded for the missing API group
    finally:
        op.stop()


@pytest.mark.serial
@pytest.mark.timeout(120)
def test_service_monitor_and_rules_when_crds_exist(
    kube: KubeCluster, namespace: str, tmp_path: Path, monitoring_crds: None
) -> None:
    op = start_operator(kube, [namespace], tmp_path / "op.log")
    try:
        kube.apply([SECRET, _cr("mon", database=PG)], namespace)
        wait_ready(kube, namespace, "mon", replicas=1)
        sm = kube.get_json("-n", namespace, "servicemonitors.monitoring.coreos.com", "mon")
        assert sm["spec"]["endpoints"][0]["port"] == "metrics"
        rules = kube.get_json("-n", namespace, "prometheusrules.monitoring.coreos.com", "mon")
        alerts = [r["alert"] for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r]
        assert "BridgeFinalityProofTimeout" in alerts
        # switching it off in the spec removes it
        kube.kubectl(
            "-n",
            namespace,
            "patch",
            "dchatcluster",
            "mon",
            "--type=merge",
            "-p",
            '{"spec":{"monitoring":{"prometheusRule":false}}}',
        )
        kube.wait_for(
            lambda: (
                kube.kubectl(
                    "-n",
                    namespace,
                    "get",
                    "prometheusrules.monitoring.coreos.com",
                    "mon",
                    check=False,
                ).returncode
                != 0
            ),
            timeout=30,
            what="PrometheusRule pruned",
        )
    finally:
        op.stop()
