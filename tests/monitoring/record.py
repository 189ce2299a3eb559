"""Record a real node's /metrics under real traffic: the source of the rule tests' series.

Design: ``record(workdir)`` starts a real node process (``tests/node/overload_node.py``: the
node's own ``run_node`` with each SQLite statement slowed on the database thread, so a burst
of concurrent writes really fills the database queue and the node really answers 503), with
``database.max_pending_queries`` 0, on free loopback ports; it drives chat traffic (channels
created, messages posted and read, 401s, 404s, 422s, a burst that is shed with 503s) while
its Pushgateway pushes fail (nothing listens there), scrapes ``/metrics`` and stops the
node. ``series(text)`` turns an exposition into the set of (name, labels) of its samples.
The committed fixture ``node_metrics.prom`` is one such recording; ``python -m
tests.monitoring.record`` rewrites it, and an integration test re-records and compares the
series (``test_recording.py``), so the rule tests' input series (checked against the
fixture) cannot drift from what the node really exports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.net import free_port

FIXTURE = Path(__file__).with_name("node_metrics.prom")
OVERLOAD_NODE = Path(__file__).resolve().parents[1] / "node" / "overload_node.py"
SECRET = "record-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
Series = frozenset[tuple[str, str]]


def token() -> str:
    claims = {"sub": "recorder", "iss": "dchat", "scope": "chat:write", "exp": time.time() + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def _wait_ready(ops: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{ops}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"node not ready in 30 s:\n{log.read_text()}")


def traffic(api: str, channel: str = "general") -> dict[int, int]:
    """Real requests of every kind the rules and boards read; returns count by status."""
    auth = {"Authorization": f"Bearer {token()}"}
    statuses: dict[int, int] = {}

    def note(r: httpx.Response) -> httpx.Response:
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        return r

    # one connection per request: after a refused POST (the 401 below) the server may close
    # the connection without reading the body, and a reused keep-alive connection then
    # fails with "Server disconnected" (seen once under a loaded CI run)
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=api, timeout=10, limits=fresh) as c:
        # the queue holds one statement and no more: a background task's query (the
        # marketplace worker's) may hold it this instant, and the post is shed; try again
        for _ in range(50):
            created = note(c.post("/api/v1/channels", json={"name": channel}, headers=auth))
            if created.status_code != 503:
                break
            time.sleep(0.1)
        created.raise_for_status()
        cid = created.json()["id"]
        for i in range(5):
            note(c.post(f"/api/v1/channels/{cid}/messages", json={"body": f"m{i}"}, headers=auth))
        note(c.get(f"/api/v1/channels/{cid}/messages"))
        note(c.get(f"/api/v1/channels/{cid}"))
        note(c.get("/api/v1/channels"))
        note(c.get("/api/v1/channels/987654321"))  # 404 on a known route
        note(c.get("/no/such/route"))  # 404, route <unmatched>
        note(c.post("/api/v1/channels", json={"name": "x"}))  # 401: no token
        note(c.post("/api/v1/channels", json={"nom": 1}, headers=auth))  # 422/400

    # a burst the database queue cannot hold (capacity 1, no pending slots): 503s
    def post(i: int) -> int:
        with httpx.Client(base_url=api, timeout=10) as c:
            r = c.post(f"/api/v1/channels/{cid}/messages", json={"body": f"b{i}"}, headers=auth)
            return r.status_code

    with ThreadPoolExecutor(16) as pool:
        for code in pool.map(post, range(32)):
            statuses[code] = statuses.get(code, 0) + 1
    return statuses


@contextmanager
def running_node(
    workdir: Path,
    *,
    max_pending: int = 0,
    statement_delay: float = 0.05,
    config: str = "",
) -> Iterator[tuple[str, str]]:
    """A real node process (overload_node.py) on free loopback ports: yields (api, ops)."""
    api_port, ops_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
    env.update(
        {
            "DCHAT_HOST": "127.0.0.1",
            "DCHAT_API_PORT": str(api_port),
            "DCHAT_METRICS_PORT": str(ops_port),
            "DCHAT_P2P_PORT": str(free_port()),
            "DATABASE_URL": f"sqlite:///{workdir}/db/dchat.db",
            "DATABASE_MAX_PENDING_QUERIES": str(max_pending),
            "DCHAT_TEST_STATEMENT_DELAY_SECS": str(statement_delay),
            "JWT_SECRET": SECRET,
        }
    )
    config_path = workdir / "config.toml"
    config_path.write_text(config)
    log = workdir / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(OVERLOAD_NODE), "--config", str(config_path)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    try:
        ops = f"http://127.0.0.1:{ops_port}"
        _wait_ready(ops, proc, log)
        yield f"http://127.0.0.1:{api_port}", ops
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def record(workdir: Path) -> tuple[str, dict[int, int]]:
    """Start a real node, drive traffic, return its /metrics text and the statuses seen."""
    # a Pushgateway address where nothing listens: every push fails, as when the gateway
    # is down (observability_errors_total{kind="pushgateway"}, the MetricsRecordingError alert)
    # and a per-user write limit the burst below cannot reach: whether it would answer 429 or
    # the queue 503 first is timing, and the recording must not depend on timing
    config = (
        "[observability]\n"
        f'prometheus_pushgateway = "http://127.0.0.1:{free_port()}"\n'
        "prometheus_push_interval_secs = 0.2\n"
        "[security]\n"
        "rate_limit_writes_per_user_per_sec = 100000\n"
    )
    with running_node(workdir, config=config) as (api, ops):
        statuses = traffic(api)
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"{ops}/metrics", timeout=10).text
            if 'kind="pushgateway"' in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return text, statuses


def series(text: str) -> Series:
    """(name, labels as ``k="v",...`` sorted) of every sample in an exposition."""
    out = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out.add((sample.name, labels))
    return frozenset(out)


# Series whose presence depends on timing or the machine, not on the node's code.
VOLATILE_PREFIXES = ("process_",)


def stable(found: Series) -> Series:
    return frozenset(s for s in found if not s[0].startswith(VOLATILE_PREFIXES))


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dchat-record-") as tmp:
        text, statuses = record(Path(tmp))
    FIXTURE.write_text(text)
    print(f"{FIXTURE}: {len(series(text))} series; statuses {sorted(statuses.items())}")


if __name__ == "__main__":
    main()
