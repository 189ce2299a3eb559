#!/usr/bin/env python3
"""The Overview dashboard's data path, drawn: a real Prometheus scraping a real node under a
bounded load, its key graphs plotted from Prometheus' query API.

    .venv/bin/python bench/monitoring_picture.py [--seconds 150] [--out docs/img/overview.png]

What it does (everything on loopback, free ports, temp dirs, bounded in time):
- starts a real node process (tests/monitoring/record.py ``running_node``: the node's own
  ``run_node``, SQLite statements slowed to 5 ms on the database thread, a database queue of
  4 pending queries, so bursts are really shed with 503s);
- starts Debian's Prometheus with the shipped scrape example and rules
  (``manifests/monitoring/``; tests/harness/prometheus.py: file discovery in place of
  Kubernetes pod discovery, scrape and rule evaluation every 2 s);
- drives a load for ``--seconds``: a steady stream of reads and writes by 4 clients, 4xx
  mixed in, and three bursts of 48 concurrent writes that overflow the queue;
- queries, over the run, the Overview board's queries (the same PromQL as
  ``devtools/monitoring/dashboards.py``, its ``$namespace``/``$cluster`` variables set to
  the demo pod): request rate by status, latency p50/p99, errors/requests, availability and
  budget burn from the recording rules, resident memory, and the alerts that fired;
- plots them with matplotlib into one PNG and prints the numbers it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devtools.monitoring import dashboards  # noqa: E402
from tests.harness.prometheus import Pod, PrometheusServer, example_config  # noqa: E402
from tests.monitoring.record import running_node, token  # noqa: E402

LABELS = {
    "app.kubernetes.io/name": "dchat",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/component": "node",
}
STEP = 2.0


def _bind(expr: str) -> str:
    """The board's variables set to the demo cluster."""
    return expr.replace('=~"$namespace"', '="demo"').replace('=~"$cluster"', '="demo"')


class Counts:
    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self._lock = threading.Lock()

    def note(self, code: int) -> None:
        with self._lock:
            self.by_status[code] = self.by_status.get(code, 0) + 1


def _steady(api: str, cid: int, worker: int, counts: Counts, stop: threading.Event) -> None:
    """One client: reads, every third request a write, now and then a 404."""
    auth = {"Authorization": f"Bearer {token()}"}
    with httpx.Client(base_url=api, timeout=10) as c:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 3 == 0:
                body = {"body": f"w{worker}-{i}"}
                r = c.post(f"/api/v1/channels/{cid}/messages", json=body, headers=auth)
            elif i % 17 == 0:
                r = c.get("/api/v1/channels/987654321")
            else:
                r = c.get(f"/api/v1/channels/{cid}/messages")
            counts.note(r.status_code)
            time.sleep(0.02)


def _burst(api: str, cid: int, counts: Counts) -> None:
    """48 concurrent writes: more than the database queue holds."""
    auth = {"Authorization": f"Bearer {token()}"}

    def post(i: int) -> int:
        with httpx.Client(base_url=api, timeout=10) as c:
            body = {"body": f"b{i}"}
            return c.post(f"/api/v1/channels/{cid}/messages", json=body, headers=auth).status_code

    with ThreadPoolExecutor(48) as pool:
        for code in pool.map(post, range(48)):
            counts.note(code)


def load(api: str, seconds: float) -> dict[int, int]:
    auth = {"Authorization": f"Bearer {token()}"}
    with httpx.Client(base_url=api, timeout=10) as c:
        cid = int(c.post("/api/v1/channels", json={"name": "load"}, headers=auth).json()["id"])
    counts, stop = Counts(), threading.Event()
    threads = [
        threading.Thread(target=_steady, args=(api, cid, w, counts, stop), daemon=True)
        for w in range(4)
    ]
    for t in threads:
        t.start()
    began = time.monotonic()
    for at in (0.3, 0.5, 0.7, 1.0):
        while time.monotonic() - began < seconds * at:
            time.sleep(0.2)
        if at < 1.0:
            _burst(api, cid, counts)
    stop.set()
    for t in threads:
        t.join(15)
    return counts.by_status


def _series(server: PrometheusServer, expr: str, start: float, end: float) -> list[Any]:
    return server.query_range(_bind(expr), start, end, STEP)


def plot(server: PrometheusServer, start: float, end: float, out: Path) -> dict[str, float]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(dashboards.overview().json())
    queries = {
        p["title"]: [(t["expr"], t.get("legendFormat", "")) for t in p.get("targets") or []]
        for p in data["panels"]
        if p["type"] != "row"
    }
    shown = [
        ("Request rate by status", "req/s"),
        ("Latency p50 / p99", "seconds"),
        ("Error ratio (errors / requests)", "ratio"),
        ("Availability (5m)", "ratio"),
        ("Error budget burn (1h)", "x budget"),
        ("Node pods up", "pods"),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), constrained_layout=True)
    measured: dict[str, float] = {}
    for ax, (title, unit) in zip(axes.flat, shown, strict=True):
        for expr, legend in queries[title]:
            for result in _series(server, expr, start, end):
                xs = [float(t) - start for t, _ in result["values"]]
                ys = [float(v) for _, v in result["values"]]
                label = legend
                for key, value in result["metric"].items():
                    label = label.replace("{{" + key + "}}", value)
                ax.plot(xs, ys, label=label or title)
                finite = [y for y in ys if y == y]
                if finite:
                    measured[f"{title} [{label or title}] max"] = max(finite)
        ax.set_title(title)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fired = server.query_range('ALERTS{alertstate="firing"}', start, end, STEP)
    names = sorted({r["metric"]["alertname"] for r in fired})
    fig.suptitle(
        "dchat / Overview: a real node under load, scraped by Prometheus "
        f"(alerts fired: {', '.join(names) or 'none'})"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    for name in names:
        measured[f"alert fired: {name}"] = 1
    return measured


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "overview.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dchat-picture-") as tmp:
        work = Path(tmp)
        with running_node(work, max_pending=4, statement_delay=0.005) as (api, ops):
            prom_dir = work / "prom"
            prom_dir.mkdir()
            pods = {"dchat-node": [Pod(ops.removeprefix("http://"), "demo", "demo-0", LABELS)]}
            server = PrometheusServer.start(prom_dir, example_config(prom_dir, pods, "2s", "2s"))
            try:
                assert server.wait_for('up{job="dchat-node"} == 1'), server.log()
                start = time.time()
                counts = load(api, args.seconds)
                time.sleep(3 * STEP)  # the last scrapes and evaluations
                end = time.time()
                measured = plot(server, start, end, args.out)
            finally:
                server.stop()
    print(f"requests by status: {dict(sorted(counts.items()))}")
    for key, value in sorted(measured.items()):
        print(f"{key}: {value:.4g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
