"""The reconcile engine on the real control plane: no lost triggers, a frozen apiserver, a
stalled cluster, a child rejected forever, deletion while down, two replicas.

Faults are made with real components: the kube-apiserver process is frozen with SIGSTOP; API
calls of one cluster stall in a validating admission webhook served on loopback; a child is
rejected by a ValidatingAdmissionPolicy (CEL, HTTP 422). Every fault is bounded in time and
undone by the test itself.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
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
    metric_sum,
    ready_names,
    start_operator,
    wait_ready,
)

pytestmark = pytest.mark.e2e

SECRET = db_secret()
NEVER = "3600"  # a resync interval far beyond any test's length


def _cr(name: str, **spec: Any) -> dict[str, Any]:
    return cluster_cr(name, database=PG, **spec)


def _wait_all_ready(kube: KubeCluster, namespace: str, names: set[str], timeout: float) -> float:
    start = time.monotonic()
    kube.wait_for(
        lambda: names <= ready_names(kube, namespace),
        timeout=timeout,
        interval=0.5,
        what=f"{len(names)} clusters Ready",
    )
    return time.monotonic() - start


@pytest.mark.serial
@pytest.mark.timeout(600)
def test_no_trigger_is_lost_over_ten_rounds_of_fifty_clusters(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    """Round 1 creates 50 clusters, rounds 2-10 change all 50 (a config change rolls every
    Deployment); every round must converge with the resync an hour away."""
    op = start_operator(kube, [namespace], tmp_path / "op.log", resync_seconds=float(NEVER))
    try:
        names = {f"s{i:02d}" for i in range(50)}
        kube.apply([SECRET], namespace)
        rounds: list[float] = []
        for round_ in range(10):
            crs = [_cr(n, marketplace={"cacheSize": 1000 + round_}) for n in sorted(names)]
            start = time.monotonic()
            kube.apply(crs, namespace)
            _wait_all_ready(kube, namespace, names, timeout=50)
            rounds.append(time.monotonic() - start)
        assert op.resyncs() == 0
        print("rounds (s):", [round(r, 1) for r in rounds])
    finally:
        op.stop()


@pytest.mark.serial
@pytest.mark.timeout(240)
def test_a_frozen_apiserver_does_not_hang_the_operator_and_clusters_converge_after(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    pid = kube.component_pid("kube-apiserver")
    if pid is None:
        pytest.skip("needs the local test cluster's kube-apiserver process")
    op = start_operator(
        kube,
        [namespace],
        tmp_path / "op.log",
        resync_seconds=float(NEVER),
        extra=["--request-timeout", "5"],
    )
    names = {f"f{i}" for i in range(8)}
    try:
        kube.apply([SECRET, *[_cr(n) for n in sorted(names)]], namespace)
        time.sleep(0.5)  # in the middle of the first reconciles
        os.kill(pid, signal.SIGSTOP)
        try:
            healthy = 0
            for _ in range(6):  # 30 s frozen; the operator answers its probe all along
                time.sleep(5)
                assert op.process.poll() is None
                op.healthz()
                healthy += 1
        finally:
            os.kill(pid, signal.SIGCONT)
        assert healthy == 6
        took = _wait_all_ready(kube, namespace, names, timeout=90)
        assert op.resyncs() == 0
        print(f"converged {took:.1f} s after the thaw")
    finally:
        op.stop()


class _Stall(http.server.BaseHTTPRequestHandler):
    """An admission webhook that answers only after ``delay`` seconds (bounded)."""

    delay = 25.0

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        review = json.loads(self.rfile.read(length) or b"{}")
        time.sleep(self.delay)
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review.get("request", {}).get("uid", ""), "allowed": True},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """The apiserver hangs up on a webhook past its timeout: expected here."""


@pytest.fixture
def stalling_webhook(kube: KubeCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    """Writes of objects labelled instance=slow in ``namespace`` stall 25 s in a webhook."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = _QuietServer(("127.0.0.1", 0), _Stall)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    name = f"stall-{namespace}"
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "stall.dchat.dev",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/",
                    "caBundle": base64.b64encode(cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": ["", "apps", "policy", "networking.k8s.io"],
                        "apiVersions": ["*"],
                        "resources": ["*"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {"app.kubernetes.io/instance": "slow"}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 30,
            }
        ],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(hook))
    try:
        yield name
    finally:
        kube.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(240)
def test_one_cluster_whose_api_calls_stall_does_not_delay_the_others(
    kube: KubeCluster, namespace: str, tmp_path: Path, stalling_webhook: str
) -> None:
    op = start_operator(
        kube,
        [namespace],
        tmp_path / "op.log",
        resync_seconds=float(NEVER),
        extra=["--workers", "4"],
    )
    try:
        kube.apply([SECRET, _cr("slow")], namespace)
        time.sleep(1)  # the slow cluster's first apply is now hanging in the webhook
        others = {f"o{i}" for i in range(12)}
        kube.apply([_cr(n) for n in sorted(others)], namespace)
        took = _wait_all_ready(kube, namespace, others, timeout=40)
        slow = get_cluster(kube, namespace, "slow")
        assert condition(slow, "Ready").get("status") != "True"
        print(f"12 others Ready in {took:.1f} s while 'slow' hangs")
        # the stall ends: the slow cluster converges too, without a resync
        kube.kubectl("delete", "validatingwebhookconfiguration", stalling_webhook)
        wait_ready(kube, namespace, "slow", replicas=1, timeout=90)
        assert op.resyncs() == 0
        assert metric_sum(op.metrics(), "dchat_operator_reconcile_errors_total") >= 1
    finally:
        op.stop()


@pytest.fixture
def rejecting_policy(kube: KubeCluster, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy refusing the metrics Service of cluster ``rejected``."""
    name = f"reject-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["services"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "object.metadata.name != 'rejected-metrics'",
                    "message": "rejected by the test's admission policy",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    kube.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}),
    )
    probe = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "rejected-metrics"},
        "spec": {"ports": [{"port": 1}]},
    }

    def denied() -> bool:
        result = kube.kubectl(
            "-n",
            namespace,
            "create",
            "--dry-run=server",
            "-f",
            "-",
            input=json.dumps(probe),
            check=False,
        )
        return "rejected by the test" in result.stderr

    kube.wait_for(denied, timeout=30, what="the admission policy in force")
    try:
        yield
    finally:
        kube.kubectl("delete", "validatingadmissionpolicybinding", name, check=False)
        kube.kubectl("delete", "validatingadmissionpolicy", name, check=False)


@pytest.mark.timeout(180)
def test_a_child_rejected_forever_is_retried_with_backoff_visible_in_status_and_metrics(
    kube: KubeCluster, namespace: str, tmp_path: Path, rejecting_policy: None
) -> None:
    op = start_operator(kube, [namespace], tmp_path / "op.log", resync_seconds=1.0)
    try:
        kube.apply([SECRET, _cr("rejected")], namespace)

        def failing() -> dict[str, Any] | None:
            obj = get_cluster(kube, namespace, "rejected")
            cond = condition(obj, "Degraded")
            return obj if cond.get("reason") == "ReconcileFailed" else None

        kube.wait_for(failing, timeout=30, what="Degraded/ReconcileFailed")
        time.sleep(8)  # past the first few quick retries
        writes0, resyncs0 = op.writes(), op.resyncs()
        time.sleep(20)
        writes, resyncs = op.writes() - writes0, op.resyncs() - resyncs0
        assert resyncs >= 15
        # with a resync every second, a retry per resync would be >= 30 writes here; the
        # backoff (1, 2, 4, 8, 16 s ...) leaves one or two attempts of <= 3 writes each
        assert writes <= 8, (writes, resyncs)
        cond = condition(get_cluster(kube, namespace, "rejected"), "Degraded")
        assert "rejected by the test's admission policy" in cond["message"]
        assert "next retry in" in cond["message"]
        metrics = op.metrics()
        assert metric_sum(metrics, "dchat_operator_reconcile_retries_total") >= 3
        assert (
            metric_sum(metrics, "dchat_operator_work_queue", kind="DchatCluster", state="backoff")
            == 1
        )
    finally:
        op.stop()


@pytest.mark.timeout(180)
def test_a_cluster_deleted_while_the_operator_is_down_stays_deleted(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    op = start_operator(kube, [namespace], tmp_path / "op1.log")
    try:
        kube.apply([SECRET, _cr("gone"), _cr("kept")], namespace)
        wait_ready(kube, namespace, "gone", replicas=1)
        wait_ready(kube, namespace, "kept", replicas=1)
    finally:
        op.stop()
    kube.kubectl("-n", namespace, "delete", "dchatcluster", "gone", "--wait=true")
    kube.wait_for(
        lambda: kube.kubectl("-n", namespace, "get", "deploy", "gone", check=False).returncode != 0,
        timeout=60,
        what="garbage collection",
    )
    op = start_operator(kube, [namespace], tmp_path / "op2.log")
    try:
        wait_ready(kube, namespace, "kept", replicas=1)
        time.sleep(5)  # several resyncs
        for kind in ("dchatcluster", "deployment", "configmap", "service"):
            found = kube.kubectl(
                "-n",
                namespace,
                "get",
                kind,
                "-l",
                "app.kubernetes.io/instance=gone",
                "-o",
                "name",
                check=False,
            ).stdout.strip()
            assert found == "", found
        assert kube.kubectl("-n", namespace, "get", "dchat", "gone", check=False).returncode != 0
    finally:
        op.stop()


@pytest.mark.timeout(180)
def test_two_replicas_one_acts_and_the_other_takes_over_when_the_leader_dies(
    kube: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    first = start_operator(kube, [namespace], tmp_path / "a.log")
    second = start_operator(kube, [namespace], tmp_path / "b.log", wait_leader=False)
    ops: list[Operator] = [first, second]
    try:
        kube.apply([SECRET, _cr("one")], namespace)
        wait_ready(kube, namespace, "one", replicas=1)
        assert first.leader()
        assert not second.leader()
        assert second.writes() == 0
        assert metric_sum(second.metrics(), "dchat_operator_reconciles_total") == 0
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        killed = time.monotonic()
        kube.wait_for(second.leader, timeout=30, interval=0.2, what="the standby to lead")
        took = time.monotonic() - killed
        assert took < 30
        kube.apply([_cr("two")], namespace)
        wait_ready(kube, namespace, "two", replicas=1)
        assert second.writes() > 0
        print(f"standby took over {took:.1f} s after the leader was killed")
    finally:
        for op in ops:
            op.stop()
