"""The product on a real kubelet: the project's own images, really running.

The test cluster's real node (tests/cluster/realnode.sh: kubelet + containerd + runc + CNI
bridge + kube-proxy, all from this machine) runs the node image built by
tests/cluster/images.sh. Unlike on kwok's nodes, a pod is Ready here only when the kubelet's
own readiness probe got a 200 from the node's ``/ready``, a Service routes only to such pods
(kube-proxy), and a process that exits really exits. The module is skipped with the reason
up.sh recorded when the machine cannot run a real node.

Scenarios: the SQLite sample serves through its Service (channel, post, read back) as uid
1000 on a read-only root; the PostgreSQL sample against the harness PostgreSQL (bound to the
bridge address) rolls a version bump pod by pod with a Ready pod at every sampled moment,
a version whose process exits leaves the old pods serving until the operator rolls it back,
a deleted pod is replaced, and a version whose Ready pods answer 504 is rolled back on the
pods' own metrics during the soak window; a Job and a native sidecar
of the node image; and the operator itself from its image, installed from manifests/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cluster import REPO, KubeCluster
from tests.harness.postgres import PostgresServer

from .conftest import PG, db_secret, wait_ready
from .realnode import (
    BRIDGE,
    IMAGE,
    LABEL,
    SCHEDULING,
    VERSION,
    chat_round_trip,
    hostpath_volume,
    http,
    is_ready,
    jwt_secret,
    pods,
    real_cr,
    service_url,
    wait_serving,
)

# The tests of this module run one after another on one parallel worker (`--dist
# loadgroup`: they share its module fixtures and keep the one real node's two cores from
# starting many node images at once), beside the kwok-only tests and the other real-node module.
pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.xdist_group("real-node")]


def probe_successes(kube: KubeCluster, node: str, namespace: str, pod: str) -> set[str]:
    """Probe types the kubelet ran successfully against ``pod`` (prober_probe_total)."""
    text = kube.kubectl("get", "--raw", f"/api/v1/nodes/{node}/proxy/metrics/probes").stdout
    found: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("prober_probe_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
        )
        labels = {k: v.strip('"') for k, v in labels.items()}
        value = float(line.rsplit(" ", 1)[1])
        if (
            labels.get("namespace") == namespace
            and labels.get("pod") == pod
            and labels.get("result") == "successful"
            and value >= 1
        ):
            found.add(labels["probe_type"])
    return found


def exec_in(
    kube: KubeCluster, namespace: str, pod: str, *cmd: str
) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("exec", "-n", namespace, pod, "-c", "dchat", "--", *cmd, check=False)


@pytest.mark.timeout(300)
def test_sqlite_sample_serves_from_the_real_node(
    real_node: str, kube: KubeCluster, namespace: str, operator: Any, volumes: list[str]
) -> None:
    volumes.append(hostpath_volume(kube, namespace, "chat-data", real_node))
    cr = real_cr("chat", replicas=1, database={"engine": "sqlite"})
    kube.apply([jwt_secret(), cr], namespace)
    wait_ready(kube, namespace, "chat", replicas=1, timeout=180)

    (pod,) = pods(kube, namespace, "chat")
    assert pod["spec"]["nodeName"] == real_node
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["ready"]
    assert cs["started"]
    assert cs["restartCount"] == 0
    assert cs["imageID"], "the runtime reports the image it really runs"
    probes = pod["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health"

    # The process: the image's non-root user, on a read-only root filesystem.
    name = pod["metadata"]["name"]
    ids = exec_in(
        kube, namespace, name, "python", "-c", "import os; print(os.getuid(), os.getgid())"
    )
    assert ids.returncode == 0, ids.stderr
    assert ids.stdout.split() == ["1000", "1000"]
    write = exec_in(kube, namespace, name, "python", "-c", "open('/probe', 'w')")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr

    # The kubelet itself probed /ready and /health and got answers (its prober metrics,
    # read through the apiserver's node proxy).
    kube.wait_for(
        lambda: probe_successes(kube, real_node, namespace, name) >= {"Readiness", "Liveness"},
        timeout=60,
        interval=2,
        what="successful kubelet readiness and liveness probes",
    )

    # The API through the Service (kube-proxy routes the ClusterIP to the pod).
    base = service_url(kube, namespace, "chat-api")
    wait_serving(kube, base)
    chat_round_trip(base, "general")


@dataclass
class Sampler:
    """Samples, until stopped, the ready endpoints of a Service (EndpointSlices) and one
    request through its ClusterIP; counts the moments without either."""

    kube: KubeCluster
    namespace: str
    service: str
    url: str
    samples: int = 0
    no_ready_endpoint: int = 0
    failed_requests: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            slices = self.kube.get_json(
                "-n",
                self.namespace,
                "endpointslices",
                "-l",
                f"kubernetes.io/service-name={self.service}",
            )["items"]
            ready = [
                e
                for s in slices
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready")
            ]
            self.samples += 1
            if not ready:
                self.no_ready_endpoint += 1
            try:
                status, _ = http("GET", f"{self.url}/api/v1/channels", timeout=3)
                if status != 200:
                    self.failed_requests.append(str(status))
            except OSError as exc:
                self.failed_requests.append(repr(exc))
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def crashing_version_stalls(
    kube: KubeCluster, namespace: str, base: str, old_pods: set[str]
) -> None:
    """A version whose process exits: its pod never turns Ready, the old pods keep serving."""
    sampler = Sampler(kube, namespace, "pg-api", base).start()
    try:
        kube.kubectl(
            "patch",
            "-n",
            namespace,
            "dchatcluster",
            "pg",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"version": "0.1.1-exits"}}),
        )

        def crashed() -> dict[str, Any] | None:
            for p in pods(kube, namespace, "pg"):
                if p["spec"]["containers"][0]["image"] != f"{IMAGE}:0.1.1-exits":
                    continue
                for cs in p["status"].get("containerStatuses") or []:
                    term = (cs.get("lastState") or {}).get("terminated") or (
                        cs.get("state") or {}
                    ).get("terminated")
                    if term and cs["restartCount"] >= 1:
                        return p
            return None

        bad = kube.wait_for(crashed, timeout=120, interval=1, what="the 0.1.1-exits pod to crash")
        cs = bad["status"]["containerStatuses"][0]
        term = (cs.get("lastState") or {}).get("terminated") or cs["state"]["terminated"]
        assert term["exitCode"] == 1
        # What the process printed before it exited, kept by the kubelet in the pod status
        # (terminationMessagePolicy FallbackToLogsOnError): no log file needed.
        assert "exits" in (term.get("message") or ""), term
        time.sleep(5)  # the stall holds: nothing replaced the old pods
        now = pods(kube, namespace, "pg")
        serving = {p["metadata"]["name"] for p in now if is_ready(p)}
        assert serving == old_pods, (serving, old_pods)
        assert not is_ready(bad)
    finally:
        sampler.stop()
    assert sampler.no_ready_endpoint == 0, sampler
    assert sampler.failed_requests == [], sampler
    dep = kube.get_json("-n", namespace, "deployment", "pg")
    assert dep["status"].get("readyReplicas") == 2
    assert dep["status"].get("updatedReplicas") == 1
    chat_round_trip(base, "still-serving")


def a_deleted_pod_is_replaced(kube: KubeCluster, namespace: str, base: str) -> None:
    """One of two pods deleted: the other serves throughout, the status shows the reduced
    capacity while it lasts, and the time to a Ready replacement (the RTO) is printed."""
    victim = sorted(p["metadata"]["name"] for p in pods(kube, namespace, "pg") if is_ready(p))[0]
    sampler = Sampler(kube, namespace, "pg-api", base).start()
    seen_ready: set[int] = set()
    try:
        started = time.monotonic()
        kube.kubectl("delete", "pod", "-n", namespace, victim, "--wait=false")

        def replaced() -> bool:
            status = kube.get_json("-n", namespace, "dchatcluster", "pg").get("status") or {}
            seen_ready.add(int(status.get("readyReplicas") or 0))
            ready = [p for p in pods(kube, namespace, "pg") if is_ready(p)]
            names = {p["metadata"]["name"] for p in ready}
            return len(ready) == 2 and victim not in names

        kube.wait_for(replaced, timeout=120, interval=0.3, what="a Ready replacement pod")
        rto = time.monotonic() - started
    finally:
        sampler.stop()
    print(f"pod deleted -> replacement Ready: RTO {rto:.1f} s (the other pod served)")
    assert sampler.failed_requests == [], sampler
    assert sampler.no_ready_endpoint == 0, sampler
    assert 1 in seen_ready, seen_ready  # the status showed the reduced capacity
    wait_ready(kube, namespace, "pg", replicas=2, timeout=60)


def crashing_version_rolled_back(
    kube: KubeCluster, namespace: str, base: str, old_pods: set[str]
) -> None:
    """Past the progress deadline the operator rolls back by itself: the crashing pod goes,
    the old pods (the very same ones) serve throughout, the status says why."""
    sampler = Sampler(kube, namespace, "pg-api", base).start()
    try:

        def rolled_back() -> dict[str, Any] | None:
            obj = kube.get_json("-n", namespace, "dchatcluster", "pg")
            status = obj.get("status") or {}
            gone = all(
                p["spec"]["containers"][0]["image"] != f"{IMAGE}:0.1.1-exits"
                for p in pods(kube, namespace, "pg")
            )
            return obj if status.get("rollback") and gone else None

        obj = kube.wait_for(rolled_back, timeout=180, interval=1, what="the automatic rollback")
    finally:
        sampler.stop()
    assert sampler.no_ready_endpoint == 0, sampler
    assert sampler.failed_requests == [], sampler
    rollback = obj["status"]["rollback"]
    assert (rollback["fromVersion"], rollback["toVersion"]) == ("0.1.1-exits", "0.1.1")
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolledBack", degraded
    wait_ready(kube, namespace, "pg", replicas=2, timeout=60)
    serving = {p["metadata"]["name"] for p in pods(kube, namespace, "pg") if is_ready(p)}
    assert serving == old_pods, (serving, old_pods)
    chat_round_trip(base, "after-the-rollback")


@dataclass
class Traffic:
    """API requests through the Service, 10 a second until stopped (bounded: 120 s)."""

    url: str
    codes: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                code = str(http("GET", f"{self.url}/api/v1/channels", timeout=3)[0])
            except OSError as exc:
                code = type(exc).__name__
            self.codes[code] = self.codes.get(code, 0) + 1
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


SOAK = {"soakSeconds": 60, "intervalSeconds": 5, "failureLimit": 2, "minRequests": 5}


def failing_version_rolled_back_on_its_metrics(
    kube: KubeCluster, namespace: str, base: str, operator: Any
) -> None:
    """A version whose pods turn Ready but answer 504 to every API request: the operator reads
    the pods' /metrics during the soak window and rolls back to the last good revision. The
    operator is SIGKILLed after the first failed check and restarted: the window goes on
    from status.soak (same start, the failed check kept), so the second failed check rolls
    back."""
    traffic = Traffic(base).start()
    try:
        started = time.monotonic()
        patch = {"spec": {"version": "0.1.1-errors", "rollout": {"analysis": SOAK}}}
        kube.kubectl(
            "patch", "-n", namespace, "dchatcluster", "pg", "--type=merge", "-p", json.dumps(patch)
        )
        complete: list[float] = []
        before_kill: dict[str, Any] = {}

        def rolled_back() -> dict[str, Any] | None:
            obj = kube.get_json("-n", namespace, "dchatcluster", "pg")
            status = obj.get("status") or {}
            soak = status.get("soak") or {}
            if not complete and soak.get("checks"):
                complete.append(time.monotonic())
            if not before_kill and soak.get("failedChecks") == 1:
                before_kill.update(soak)
                operator.kill_and_restart()
            elif before_kill and soak:
                # after the restart: the same window, its failed check kept
                assert soak["startedAt"] == before_kill["startedAt"], (soak, before_kill)
                assert soak["failedChecks"] >= 1, soak
            return (
                obj if (status.get("rollback") or {}).get("fromVersion") == "0.1.1-errors" else None
            )

        obj = kube.wait_for(rolled_back, timeout=240, interval=0.5, what="the rollback on metrics")
        rolled = time.monotonic()
    finally:
        traffic.stop()
    status = obj["status"]
    reason = status["rollback"]["reason"]
    assert before_kill, "the operator was never killed mid-soak"
    assert reason.startswith("soak window failed 2 of 2 checks"), reason
    assert "error ratio" in reason, reason
    assert "answered 5xx" in reason, reason
    assert status["rollback"]["toVersion"] == "0.1.1"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolledBack", degraded
    assert status["rolloutHistory"][-1]["result"] == "RolledBack"
    assert "504" in traffic.codes, traffic.codes  # the bad version really served errors
    print(
        f"0.1.1-errors: patch -> rollback {rolled - started:.1f} s; first soak check -> "
        f"rollback {rolled - (complete[0] if complete else started):.1f} s; answers "
        f"{traffic.codes}"
    )
    events = kube.get_json("-n", namespace, "events", "--field-selector", "involvedObject.name=pg")[
        "items"
    ]
    assert any(e.get("reason") == "RolledBack" for e in events)

    def serving_old() -> bool:
        ps = pods(kube, namespace, "pg")
        return len(ps) == 2 and all(
            p["spec"]["containers"][0]["image"] == f"{IMAGE}:0.1.1" and is_ready(p) for p in ps
        )

    kube.wait_for(serving_old, timeout=180, interval=1, what="0.1.1 serving again")
    wait_ready(kube, namespace, "pg", replicas=2, timeout=60)
    chat_round_trip(base, "after-the-soak-rollback")


@pytest.mark.timeout(900)
def test_postgres_sample_rolls_on_real_readiness_and_a_crashing_version_is_rolled_back(
    real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_postgres: PostgresServer,
) -> None:
    db = f"rn_{uuid.uuid4().hex[:10]}"
    url = bridge_postgres.create_login_database(db, uuid.uuid4().hex, BRIDGE)
    # a progress deadline long enough for a real pod to start on a busy machine, short
    # enough for the automatic rollback of the crashing version to come within the test
    cr = real_cr("pg", replicas=2, database=PG, rollout={"progressDeadlineSeconds": 60})
    kube.apply([jwt_secret(), db_secret(url), cr], namespace)
    wait_ready(kube, namespace, "pg", replicas=2, timeout=240)
    for pod in pods(kube, namespace, "pg"):
        assert pod["spec"]["nodeName"] == real_node
        assert is_ready(pod)
    base = service_url(kube, namespace, "pg-api")
    wait_serving(kube, base)
    chat_round_trip(base, "pg-general")

    # A version bump: pods replaced one by one, each new one Ready before an old one goes.
    sampler = Sampler(kube, namespace, "pg-api", base).start()
    try:
        kube.kubectl(
            "patch",
            "-n",
            namespace,
            "dchatcluster",
            "pg",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"version": "0.1.1"}}),
        )

        def rolled() -> bool:
            ps = pods(kube, namespace, "pg")
            return len(ps) == 2 and all(
                p["spec"]["containers"][0]["image"] == f"{IMAGE}:0.1.1" and is_ready(p) for p in ps
            )

        kube.wait_for(rolled, timeout=240, interval=1, what="rollout to 0.1.1")
        wait_ready(kube, namespace, "pg", replicas=2, timeout=60)
    finally:
        sampler.stop()
    assert sampler.samples >= 10, sampler
    assert sampler.no_ready_endpoint == 0, sampler
    assert sampler.failed_requests == [], sampler
    old_pods = {p["metadata"]["name"] for p in pods(kube, namespace, "pg")}

    crashing_version_stalls(kube, namespace, base, old_pods)
    crashing_version_rolled_back(kube, namespace, base, old_pods)
    a_deleted_pod_is_replaced(kube, namespace, base)
    failing_version_rolled_back_on_its_metrics(kube, namespace, base, operator)


SQLITE_CONFIG = """\
env = "development"
[server]
host = "0.0.0.0"
[database]
url = "sqlite:////data/dchat.db"
"""


def _restricted(container: dict[str, Any]) -> dict[str, Any]:
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container["imagePullPolicy"] = "Never"
    return container


def _pod_spec(containers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        **SCHEDULING,
        "securityContext": {"runAsNonRoot": True, "fsGroup": 1000},
        "automountServiceAccountToken": False,
        "containers": containers,
        "volumes": [
            {"name": "config", "configMap": {"name": "node-config"}},
            {"name": "data", "emptyDir": {}},
        ],
        **extra,
    }


MOUNTS = [
    {"name": "config", "mountPath": "/etc/dchat", "readOnly": True},
    {"name": "data", "mountPath": "/data"},
]

# A sidecar's loop, shaped like the backup sidecar of the backups issue: it watches the
# node's data directory and answers its own readiness probe.
SIDECAR = """\
import http.server, os, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists('/data/dchat.db')
        self.send_response(200 if ok else 503); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', 9101), H).serve_forever()
"""


@pytest.mark.timeout(300)
def test_job_and_native_sidecar_of_the_node_image(
    real_node: str, kube: KubeCluster, namespace: str
) -> None:
    image = f"{IMAGE}:{VERSION}"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "node-config"},
        "data": {"config.toml": SQLITE_CONFIG},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate"},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 120,
            "template": {
                "spec": _pod_spec(
                    [
                        _restricted(
                            {
                                "name": "migrate",
                                "image": image,
                                "args": ["--config", "/etc/dchat/config.toml", "migrate"],
                                "volumeMounts": MOUNTS,
                            }
                        )
                    ],
                    restartPolicy="Never",
                )
            },
        },
    }
    node = _restricted(
        {
            "name": "dchat",
            "image": image,
            "args": ["--config", "/etc/dchat/config.toml"],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 9001}, "periodSeconds": 2},
            "volumeMounts": MOUNTS,
        }
    )
    sidecar = _restricted(
        {
            "name": "watcher",
            "image": image,
            "command": ["python", "-c", SIDECAR],
            "restartPolicy": "Always",
            "readinessProbe": {"httpGet": {"path": "/", "port": 9101}, "periodSeconds": 2},
            "volumeMounts": MOUNTS,
        }
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "with-sidecar"},
        "spec": _pod_spec([node], initContainers=[sidecar]),
    }
    kube.apply([config, job, pod], namespace)

    def job_done() -> dict[str, Any] | None:
        obj: dict[str, Any] = kube.get_json("-n", namespace, "job", "migrate")
        status = obj.get("status") or {}
        assert not status.get("failed"), status
        return obj if status.get("succeeded") == 1 else None

    kube.wait_for(job_done, timeout=150, interval=1, what="the migrate Job to complete")
    job_pod = kube.get_json("-n", namespace, "pods", "-l", "job-name=migrate")["items"][0]
    assert job_pod["spec"]["nodeName"] == real_node
    term = job_pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    assert term["reason"] == "Completed"

    def both_ready() -> dict[str, Any] | None:
        obj: dict[str, Any] = kube.get_json("-n", namespace, "pod", "with-sidecar")
        statuses = (obj["status"].get("initContainerStatuses") or []) + (
            obj["status"].get("containerStatuses") or []
        )
        if len(statuses) == 2 and all(s.get("ready") for s in statuses) and is_ready(obj):
            return obj
        return None

    kube.wait_for(both_ready, timeout=120, interval=1, what="node + sidecar Ready")
    time.sleep(6)  # it stays Ready: several probe periods of both containers
    obj = both_ready()
    assert obj is not None
    assert obj["spec"]["nodeName"] == real_node
    restarts = [
        s["restartCount"]
        for s in obj["status"]["initContainerStatuses"] + obj["status"]["containerStatuses"]
    ]
    assert restarts == [0, 0]


@pytest.mark.timeout(420)
def test_operator_runs_in_cluster_from_its_image(
    real_node: str, kube: KubeCluster, tmp_path: Path, volumes: list[str]
) -> None:
    """manifests/overlays/namespaced as its comment tells a user to adapt it (another
    namespace), plus this cluster's scheduling (the real node's taint, the local image)."""
    ns = f"op-{uuid.uuid4().hex[:8]}"
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    shutil.copytree(REPO / "crds", tmp_path / "crds")
    overlay = tmp_path / "manifests" / "overlays" / "namespaced"
    for f in (tmp_path / "manifests").rglob("*.yaml"):
        text = f.read_text().replace("dchat-system", f"{ns}-system")
        text = text.replace("namespace: dchat\n", f"namespace: {ns}\n")
        text = text.replace("name: dchat\n", f"name: {ns}\n")
        text = text.replace("namespace=dchat\n", f"namespace={ns}\n")
        f.write_text(text)
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text()
        + json.dumps(
            {
                "target": {"group": "apps", "kind": "Deployment", "name": "dchat-operator"},
                "patch": json.dumps(
                    [
                        {
                            "op": "add",
                            "path": "/spec/template/spec/tolerations",
                            "value": SCHEDULING["tolerations"],
                        },
                        {
                            "op": "add",
                            "path": f"/spec/template/spec/nodeSelector/{LABEL.replace('/', '~1')}",
                            "value": "true",
                        },
                        {
                            "op": "replace",
                            "path": "/spec/template/spec/containers/0/imagePullPolicy",
                            "value": "Never",
                        },
                        {"op": "replace", "path": "/spec/replicas", "value": 1},
                    ]
                ),
            }
        ).join(["  - ", "\n"])
    )
    rendered = kube.kubectl("kustomize", str(overlay)).stdout
    assert f"--namespace={ns}" in rendered
    # The cluster-scoped ClusterRole and its binding get this test's name too, so the test
    # may run beside the install test (which applies the base's `dchat-operator`).
    docs = list(yaml.safe_load_all(rendered))
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding") and doc["metadata"]["name"] == (
            "dchat-operator"
        ):  # (dchat-postgres keeps its name: the operator binds it by name)
            doc["metadata"]["name"] = f"dchat-operator-{ns}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"dchat-operator-{ns}"
    rendered = yaml.safe_dump_all(docs)
    try:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=rendered)

        def operator_ready() -> dict[str, Any] | None:
            items = kube.get_json(
                "-n", f"{ns}-system", "pods", "-l", "app.kubernetes.io/name=dchat-operator"
            )
            ready = [p for p in items["items"] if is_ready(p)]
            return ready[0] if ready else None

        op_pod = kube.wait_for(operator_ready, timeout=180, interval=1, what="operator pod Ready")
        assert op_pod["spec"]["nodeName"] == real_node
        assert op_pod["status"]["containerStatuses"][0]["restartCount"] == 0

        volumes.append(hostpath_volume(kube, ns, "solo-data", real_node))
        kube.apply([jwt_secret(), real_cr("solo", replicas=1, database={"engine": "sqlite"})], ns)
        wait_ready(kube, ns, "solo", replicas=1, timeout=180)
        (pod,) = pods(kube, ns, "solo")
        assert pod["spec"]["nodeName"] == real_node
        assert is_ready(pod)
        logs = kube.kubectl("logs", "-n", f"{ns}-system", op_pod["metadata"]["name"]).stdout
        assert "became the leader" in logs, logs[-3000:]
        assert " 403" not in logs, logs[-3000:]
        assert "Forbidden" not in logs, logs[-3000:]
        base = service_url(kube, ns, "solo-api")
        wait_serving(kube, base)
        chat_round_trip(base, "from-the-operator-pod")
    finally:
        for obj in ("namespace/" + ns, f"namespace/{ns}-system"):
            kube.kubectl("delete", obj, "--wait=false", "--ignore-not-found", check=False)
        for obj in (f"clusterrolebinding/dchat-operator-{ns}", f"clusterrole/dchat-operator-{ns}"):
            kube.kubectl("delete", obj, "--ignore-not-found", check=False)
