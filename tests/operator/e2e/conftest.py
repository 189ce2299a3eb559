"""Fixtures for the operator's end-to-end tests on the real control plane.

The operator runs as a real subprocess (``dchat-operator --namespace <ns>``) against the
test cluster; the CRD is installed with kubectl. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cluster import KubeCluster
from tests.harness.net import free_port
from tests.harness.postgres import PostgresServer
from tests.harness.s3 import S3Server

from .objects import PG, SMALL, cluster_cr, db_secret  # noqa: F401 - the test modules import them from here
from .realnode import BRIDGE, real_node_status

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "crds" / "dchat.dev_dchatclusters.yaml"
SAMPLES = REPO / "manifests" / "samples"
OPERATOR = Path(sys.executable).parent / "dchat-operator"
_METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line.strip())
        if match:
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        if not key.startswith(name + "{") and key != name:
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


@dataclass
class Operator:
    """A running dchat-operator process."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    liveness_port: int
    log: Path
    namespaces: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def kill_and_restart(self) -> None:
        """SIGKILL (no cleanup: the leader Lease stays held until it expires), then the same
        command again in its place, appending to the same log; returns once it leads."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                self.argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env
            )
        self.wait_live(wait_leader=True)

    def wait_live(self, wait_leader: bool) -> None:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"operator exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                self.healthz()
                if not wait_leader or self.leader():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"operator did not become live:\n{self.log.read_text()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def writes(self) -> float:
        return metric_sum(self.metrics(), "dchat_operator_api_writes_total")

    def leader(self) -> bool:
        """Holds the leader Lease (or runs without leader election)."""
        return metric_sum(self.metrics(), "dchat_operator_leader") == 1

    def resyncs(self) -> float:
        return metric_sum(self.metrics(), "dchat_operator_resyncs_total")

    def healthz(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kib / 1024

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_operator(
    kube: KubeCluster,
    namespaces: list[str],
    log: Path,
    resync_seconds: float = 2.0,
    kubeconfig: Path | None = None,
    extra: list[str] | None = None,
    wait_leader: bool = True,
) -> Operator:
    metrics_port, liveness_port = free_port(), free_port()
    args = [str(OPERATOR)]
    for ns in namespaces:
        args += ["--namespace", ns]
    args += [
        "--resync-seconds",
        str(resync_seconds),
        "--metrics-port",
        str(metrics_port),
        "--liveness-port",
        str(liveness_port),
        "--log-format",
        "json",
        *(extra or []),
    ]
    handle = log.open("wb")
    env = {**kube.env, "PYTHONUNBUFFERED": "1"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    op = Operator(process, metrics_port, liveness_port, log, namespaces, args, env)
    op.wait_live(wait_leader)
    return op


@pytest.fixture
def kube(crd_installed: KubeCluster) -> KubeCluster:
    return crd_installed


@pytest.fixture
def operator(
    kube: KubeCluster, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    op = start_operator(kube, [namespace], tmp_path / "operator.log")
    try:
        yield op
    finally:
        op.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            sys.stderr.write(f"--- operator log ---\n{op.log.read_text()[-6000:]}\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def ready_names(kube: KubeCluster, namespace: str) -> set[str]:
    """DchatClusters whose status says Ready for their current generation."""
    out: set[str] = set()
    for item in kube.get_json("-n", namespace, "dchatclusters")["items"]:
        status = item.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        if (
            conds.get("Ready", {}).get("status") == "True"
            and status.get("observedGeneration") == item["metadata"]["generation"]
        ):
            out.add(item["metadata"]["name"])
    return out


def load_sample(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]


KUBECTL_DCHAT = Path(sys.executable).parent / "kubectl-dchat"


def kubectl_dchat(
    kube: KubeCluster, namespace: str, *args: str, timeout: float = 330
) -> subprocess.CompletedProcess[str]:
    """``kubectl dchat ARGS -n NAMESPACE`` as on-call runs it: the console script in a
    subprocess with the test cluster's kubeconfig (exit code, stdout, stderr)."""
    env = {**kube.env, "KUBECONFIG": str(kube.kubeconfig)}
    return subprocess.run(
        [str(KUBECTL_DCHAT), *args, "-n", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def get_cluster(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = kube.get_json("-n", namespace, "dchatcluster", name)
    return data


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def wait_ready(
    kube: KubeCluster, namespace: str, name: str, replicas: int | None = None, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, name)
        status = obj.get("status") or {}
        if condition(obj, "Ready").get("status") != "True":
            return None
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        if replicas is not None and status.get("readyReplicas") != replicas:
            return None
        return obj

    result: dict[str, Any] = kube.wait_for(check, timeout=timeout, what=f"{name} Ready")
    return result


# --- the real node (tests/cluster/realnode.sh): fixtures of the real_node tests -----------


@pytest.fixture(scope="module")
def real_node(kube_cluster: KubeCluster) -> str:
    status = real_node_status(kube_cluster)
    if not status.startswith("ready "):
        pytest.skip(f"real-node tier: {status}")
    node = status.split()[1]
    kube_cluster.wait_for(
        lambda: _node_ready(kube_cluster, node), timeout=60, what=f"node {node} Ready"
    )
    return node


def _node_ready(kube: KubeCluster, node: str) -> bool:
    obj = kube.get_json("node", node)
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])


@pytest.fixture(scope="module")
def bridge_postgres() -> Iterator[PostgresServer]:
    """The harness PostgreSQL, also on the bridge address pods reach (password logins)."""
    base = Path(tempfile.mkdtemp(prefix="dchat-pg-real-"))
    server = PostgresServer.start(base, also_listen=(BRIDGE,), password_networks=("10.88.0.0/16",))
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def volumes(kube: KubeCluster) -> Iterator[list[str]]:
    """PersistentVolumes a test made (realnode.hostpath_volume): deleted after it, with their
    directories."""
    made: list[str] = []
    yield made
    for pv in made:
        found = kube.kubectl("get", "pv", pv, "-o", "json", check=False)
        kube.kubectl("delete", "pv", pv, "--wait=false", "--ignore-not-found", check=False)
        if found.returncode == 0:
            path = Path(json.loads(found.stdout)["spec"].get("hostPath", {}).get("path") or "/")
            if path.is_relative_to("/var/lib/dchat-test-volumes/"):
                shutil.rmtree(path, True)
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # the namespace's directory, once empty


@pytest.fixture(scope="module")
def bridge_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on the bridge address, where pods (backup Jobs, Litestream) reach it."""
    server = S3Server.start(tmp_path_factory.mktemp("s3-real"), host=BRIDGE)
    try:
        yield server
    finally:
        server.stop()
