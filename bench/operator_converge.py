"""Converge benchmark: N DchatClusters through the operator vs the same objects applied directly.

Operator run: ``kubectl apply`` of N DchatCluster CRs (PostgreSQL mode, one replica each,
one shared database Secret) into a fresh namespace watched by a real ``dchat-operator``
process; the clock stops when every CR reports ``Ready=True`` for its current generation.

Baseline run: the objects the operator's builders make for the same N CRs (``dchat-operator
render``: ServiceAccount, ConfigMap, Services, Deployment, NetworkPolicy) are ``kubectl
apply``-ed directly into another fresh namespace; the clock stops when every Deployment is
rolled out (the same condition the operator's Ready is built from: observed generation,
updated = available = desired replicas).

Both use one ``kubectl apply`` of one List. Each run's time is taken from a watch (``kubectl
get -w`` of the Deployments, and of the CRs in the operator run): the moment the last object
was seen done, relative to the start of the apply. The runs also poll (a LIST every 0.5 s,
which at N=500 takes about a second on the loaded apiserver) to know when to stop; the
polled time is printed beside the watched one (it adds the poll's granularity to both).
Each run measures both, the baseline first in odd runs and the operator first in even runs
(the first measurement on a freshly created test cluster is slower), so drift in the
machine's load hits both. Prints each run, the median ratio operator/baseline of the
watched times (goal <= 1.0: the rollouts dominate both) and the operator's RSS (goal < 160
MiB at N=500).

After converging, the operator run waits for one idle resync pass of all N clusters (the
resync interval is 30 s in the bench unless --resync-seconds says otherwise; the operator's
default is 60) and prints how long the pass took and how many writes it made (goal: 0
writes, under 10 s at N=500).

The test cluster is sized for N: fake nodes at 90 pods each (at least 3); the Service range
of the test cluster is a /16 (tests/cluster/up.sh), so 3 Services per cluster fit at N=500.

Usage: .venv/bin/python bench/operator_converge.py [--n 50] [--runs 2]
(DCHAT_BENCH_BREAKDOWN=1: requests and reconciles per cluster by kind; DCHAT_BENCH_TIMELINE=1:
when the Deployments and CRs were created and done (median and last), and the operator's CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))

from dchat_operator.api.models import DchatCluster  # noqa: E402
from dchat_operator.builders.children import Capabilities, desired_children  # noqa: E402
from tests.harness.cluster import KubeCluster  # noqa: E402
from tests.operator.e2e.conftest import (  # noqa: E402
    Operator,
    metric_sum,
    ready_names,
    start_operator,
)

POLL = 0.5
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "db"},
    "stringData": {"url": "postgresql://dchat:pw@postgres:5432/dchat"},
}


def cluster_cr(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "dchat.dev/v1alpha1",
        "kind": "DchatCluster",
        "metadata": {"name": f"bench-{i:03d}"},
        "spec": {
            "replicas": 1,
            "resources": {
                "requests": {"cpu": "50m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
            "database": {
                "engine": "postgres",
                "postgres": {"primary": {"name": "db", "key": "url"}},
            },
        },
    }


def rendered(namespace: str, n: int) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i in range(n):
        doc = cluster_cr(i)
        doc["metadata"]["namespace"] = namespace
        objs.extend(desired_children(DchatCluster.parse(doc), Capabilities()))
    return objs


def all_crs_ready(kube: KubeCluster, namespace: str, n: int) -> bool:
    return len(ready_names(kube, namespace)) == n


def all_deployments_ready(kube: KubeCluster, namespace: str, n: int) -> bool:
    items = kube.get_json("-n", namespace, "deployments")["items"]
    ready = 0
    for dep in items:
        want = dep["spec"]["replicas"]
        st = dep.get("status") or {}
        if (
            st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and st.get("updatedReplicas", 0) == want
            and st.get("replicas", 0) == want
            and st.get("availableReplicas", 0) >= want
        ):
            ready += 1
    return ready == n


def wait(predicate: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(POLL)
    raise TimeoutError("did not converge")


def apply_list(kube: KubeCluster, namespace: str, objs: list[dict[str, Any]]) -> None:
    payload = json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=payload, timeout=300)


class Timeline:
    """A ``kubectl get -w`` of one resource in the run's namespace, recording when each object
    was first seen and first ``done``. ``last_done`` is the run's time; ``report`` (with
    DCHAT_BENCH_TIMELINE set) prints the median and the last of both, relative to the start."""

    def __init__(self, kube: KubeCluster, ns: str, resource: str, done: Any) -> None:
        self.on = bool(os.environ.get("DCHAT_BENCH_TIMELINE"))
        self.resource, self.done = resource, done
        self.seen: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.events = 0
        args = [str(kube.bin_dir / "kubectl"), "--kubeconfig", str(kube.kubeconfig)]
        args += ["get", resource, "-n", ns, "-w", "-o", "json"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        decoder, buf = json.JSONDecoder(), ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            buf += line
            try:
                obj, end = decoder.raw_decode(buf.lstrip())
            except ValueError:
                continue
            buf = buf.lstrip()[end:]
            now, name = time.monotonic(), obj["metadata"]["name"]
            self.events += 1
            self.seen.setdefault(name, now)
            if name not in self.finished and self.done(obj):
                self.finished[name] = now

    def last_done(self, start: float, n: int, timeout: float = 30) -> float:
        """Seconds from ``start`` until the last of ``n`` objects was seen done (waits for the
        watch to deliver what the poll already saw)."""
        deadline = time.monotonic() + timeout
        while len(self.finished) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(self.finished) < n:
            raise TimeoutError(f"the watch saw {len(self.finished)} of {n} {self.resource} done")
        return max(self.finished.values()) - start

    def report(self, start: float, label: str) -> None:
        self.proc.terminate()
        if not self.on:
            return

        def span(times: dict[str, float]) -> str:
            t = sorted(v - start for v in times.values())
            if not t:
                return "-"
            return f"first {t[0]:5.2f} s, median {statistics.median(t):5.2f} s, last {t[-1]:5.2f} s"

        print(
            f"    {label}: {self.resource} created {span(self.seen)}; done {span(self.finished)}; "
            f"{self.events / max(1, len(self.seen)):.1f} watch events each",
            file=sys.stderr,
        )


def _rolled_out(dep: dict[str, Any]) -> bool:
    st = dep.get("status") or {}
    want = dep["spec"]["replicas"]
    return bool(
        st.get("observedGeneration", 0) >= dep["metadata"]["generation"]
        and st.get("updatedReplicas", 0) == want
        and st.get("availableReplicas", 0) >= want
    )


def _cr_ready(cr: dict[str, Any]) -> bool:
    conds = (cr.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def run_baseline(kube: KubeCluster, n: int) -> tuple[float, float]:
    """(watched seconds, polled seconds)."""
    ns = kube.create_namespace("bench-base")
    try:
        objs = [SECRET, *rendered(ns, n)]
        deployments = Timeline(kube, ns, "deployments", _rolled_out)
        time.sleep(1)  # the watch is established
        start = time.monotonic()
        apply_list(kube, ns, objs)
        wait(lambda: all_deployments_ready(kube, ns, n))
        polled = time.monotonic() - start
        watched = deployments.last_done(start, n)
        deployments.report(start, "baseline")
        return watched, polled
    finally:
        kube.delete_namespace(ns)


@dataclass
class OperatorRun:
    seconds: float
    polled: float
    rss: float
    peak: float
    writes: float
    requests: float
    resync_seconds: float
    resync_writes: float


def _resync_reconciles(op: Operator) -> float:
    return metric_sum(op.metrics(), "dchat_operator_reconciles_total", trigger="resync")


def idle_resync(op: Operator, n: int) -> tuple[float, float]:
    """(seconds from a resync tick until its N reconciles are done, writes meanwhile).

    Polls every 20 ms; the pass starts when ``dchat_operator_resyncs_total`` moves, and the
    resync reconciles counted before that poll are the base (between passes an idle
    operator makes none)."""
    deadline = time.monotonic() + 180
    ticks, base = op.resyncs(), _resync_reconciles(op)
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("no resync pass")
        now_ticks, now_reconciles = op.resyncs(), _resync_reconciles(op)
        if now_ticks > ticks:
            break
        ticks, base = now_ticks, now_reconciles
        time.sleep(0.02)
    started, writes = time.monotonic(), op.writes()
    while _resync_reconciles(op) < base + n:
        if time.monotonic() > deadline:
            raise TimeoutError("resync pass did not finish")
        time.sleep(0.02)
    return time.monotonic() - started, op.writes() - writes


def run_operator(kube: KubeCluster, n: int, logdir: Path, resync: float) -> OperatorRun:
    ns = kube.create_namespace("bench-op")
    extra = os.environ.get("DCHAT_BENCH_OPERATOR_ARGS", "").split()  # e.g. "--workers 32"
    op = start_operator(
        kube, [ns], logdir / f"operator-{ns}.log", resync_seconds=resync, extra=extra or None
    )
    try:
        kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(SECRET))
        crs = [cluster_cr(i) for i in range(n)]
        clusters = Timeline(kube, ns, "dchatclusters", _cr_ready)
        timeline = clusters.on  # the Deployments' watch only for the timeline's report
        deployments = Timeline(kube, ns, "deployments", _rolled_out) if timeline else None
        time.sleep(1)  # the watches are established
        start = time.monotonic()
        apply_list(kube, ns, crs)
        wait(lambda: all_crs_ready(kube, ns, n))
        polled = time.monotonic() - start
        elapsed = clusters.last_done(start, n)
        if deployments is not None:
            deployments.report(start, "operator")
        clusters.report(start, "operator")
        if deployments is not None:  # CR seen -> its Deployment seen, in the CRs' order
            chain = [
                deployments.seen[name] - seen
                for name, seen in sorted(clusters.seen.items(), key=lambda kv: kv[1])
                if name in deployments.seen
            ]
            print(
                f"    operator: CR -> Deployment first {chain[0]:.3f} s, median "
                f"{statistics.median(chain):.3f} s, max {max(chain):.3f} s",
                file=sys.stderr,
            )
        if timeline:
            fields = Path(f"/proc/{op.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            print(f"    operator: CPU {cpu:.2f} s since its start", file=sys.stderr)
        rss = op.rss_mib()
        writes = op.writes()
        metrics = op.metrics()
        requests = metric_sum(metrics, "dchat_operator_api_requests_total")
        if os.environ.get("DCHAT_BENCH_BREAKDOWN"):  # where the requests and reconciles went
            for key, value in sorted(metrics.items(), key=lambda kv: -kv[1]):
                names = ("dchat_operator_api_requests_total{", "dchat_operator_reconciles_total{")
                if key.startswith(names):
                    print(f"    {value / n:6.2f} per cluster  {key}", file=sys.stderr)
        resync_seconds, resync_writes = idle_resync(op, n)
        status = Path(f"/proc/{op.process.pid}/status").read_text()
        peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
        return OperatorRun(
            elapsed, polled, rss, peak, writes, requests, resync_seconds, resync_writes
        )
    finally:
        op.stop()
        kube.delete_namespace(ns)


def wait_quiet(kube: KubeCluster, settle: float) -> None:
    """Let namespaces of earlier runs finish terminating (their pods load the scheduler), then
    ``settle`` seconds more: the controller-manager's garbage collector works through the
    deleted objects' dependents for ~10 s after the namespace is gone (measured at N=50:
    ~470 GETs answered 404), and a run started then shares the control plane with it."""

    def quiet() -> bool:
        out = kube.kubectl("get", "namespaces", "-o", "json").stdout
        return not any(
            item["status"].get("phase") == "Terminating"
            and item["metadata"]["name"].startswith("bench-")
            for item in json.loads(out)["items"]
        )

    wait(quiet, timeout=300)
    time.sleep(settle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=30.0,
        help="the operator's resync interval (its default is 60; 30 measures the idle pass "
        "sooner, and at N=500 runs three to four full passes during the converge)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=15.0,
        help="the wait before each run after the earlier runs' namespaces are gone (the "
        "garbage collector's tail; see wait_quiet)",
    )
    args = parser.parse_args()
    if args.settle_seconds < 0 or args.resync_seconds <= 0:
        parser.error("--settle-seconds must be >= 0 and --resync-seconds > 0")

    kube = KubeCluster.ensure()
    nodes = max(3, math.ceil(args.n / 90))
    if kube.scale_nodes(nodes):
        print(f"test cluster: {nodes} fake nodes", flush=True)
    # all three CRDs, as an install has them: without DchatBackup's, the backup schedule's
    # reads of a new cluster's backups answer 404 and retry (extra requests, errors in the log)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(REPO / "crds"))
    for plural in ("dchatclusters", "dchatbackups", "dchatrestores"):
        kube.kubectl("wait", "--for=condition=Established", f"crd/{plural}.dchat.dev")
    logdir = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())

    base_times: list[float] = []
    op_times: list[float] = []
    rss: list[float] = []
    peaks: list[float] = []
    for run in range(1, args.runs + 1):
        # the first run on a fresh test cluster is slower: odd runs start with the baseline,
        # even runs with the operator
        if run % 2:
            wait_quiet(kube, args.settle_seconds)
            b, b_polled = run_baseline(kube, args.n)
        wait_quiet(kube, args.settle_seconds)
        result = run_operator(kube, args.n, logdir, args.resync_seconds)
        if not run % 2:
            wait_quiet(kube, args.settle_seconds)
            b, b_polled = run_baseline(kube, args.n)
        base_times.append(b)
        op_times.append(result.seconds)
        rss.append(result.rss)
        peaks.append(result.peak)
        print(
            f"run {run}: N={args.n} baseline {b:6.2f} s   operator {result.seconds:6.2f} s   "
            f"ratio {result.seconds / b:5.3f}   (polled: {b_polled:6.2f} s, "
            f"{result.polled:6.2f} s, {result.polled / b_polled:5.3f})   "
            f"operator RSS {result.rss:5.1f} MiB "
            f"(peak {result.peak:5.1f})   operator writes {result.writes:.0f}, API requests "
            f"{result.requests:.0f} ({result.requests / args.n:.1f} per cluster)   "
            f"idle resync of {args.n}: {result.resync_seconds:.2f} s, "
            f"{result.resync_writes:.0f} writes",
            flush=True,
        )
    ratio = statistics.median(op_times) / statistics.median(base_times)
    print(
        f"median: baseline {statistics.median(base_times):.2f} s, operator "
        f"{statistics.median(op_times):.2f} s, ratio {ratio:.3f} (goal <= 1.0); "
        f"operator RSS max {max(rss):.1f} MiB, peak {max(peaks):.1f} MiB (goal < 160 MiB)"
    )
    print(f"operator logs: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
