#!/usr/bin/env python3
"""Benchmark: the dchat node's representative read route against a bare Quart+hypercorn
hello-world app, same machine, same run.

    .venv/bin/python bench/node_platform.py [--duration 10] [--connections 32] [--json]

What it does:
- starts a bare app (Quart, one route returning "hello", served by hypercorn) and the real
  node (``dchat`` with a temp SQLite database, rate limiting ON with a limit the load
  cannot reach, so the limiter's code path is measured), each in its own process;
- seeds one channel with 20 messages and loads ``GET /api/v1/channels/1/messages?limit=20``
  (public read: routing, query validation, rate limiter, CORS, metrics, SQLite query,
  pydantic serialisation of 20 messages);
- drives load from a separate process: ``wrk`` when installed (``apt-get install wrk``),
  otherwise a bounded asyncio httpx client; server and load generator are pinned to
  different CPUs with ``taskset`` when available;
- prints requests/s, p50 and p99 for both, and the node/bare ratio (goal >= 0.7): the
  ratio of the median req/s, and the median of the per-round ratios (each round measures
  bare then node back to back, so a slow drift of the machine's speed cancels out of a
  round's ratio);
- also prints the server process's CPU time per request (user + system, all threads,
  from ``/proc/<pid>/stat`` around each measurement) and bare/node of it: with the server's
  CPU saturated, throughput is 1 / CPU per request, and this figure is not moved by time
  the server spends off the CPU (another tenant of a shared VM's host running instead),
  which moves the req/s of single rounds here by +-20%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import jwt

PY = sys.executable
DCHAT = str(Path(PY).parent / "dchat")
SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
READ_PATH = "/api/v1/channels/1/messages?limit=20"

BARE_APP = textwrap.dedent(
    """
    import asyncio, sys
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from quart import Quart

    app = Quart("bare")

    @app.get("/")
    async def hello():
        return "hello"

    cfg = Config()
    cfg.bind = [f"127.0.0.1:{sys.argv[1]}"]
    cfg.accesslog = None
    asyncio.run(serve(app, cfg))
    """
)


@dataclass
class Result:
    name: str
    url: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    tool: str
    cpu_us_per_request: float | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *cmd]
    return cmd


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, duration: float, connections: int, cpu: int | None) -> Result:
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", url], cpu)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))$", out, re.M))
    p50 = _ms(*re.match(r"([\d.]+)(us|ms|s)", lat["50"]).groups())  # type: ignore[union-attr]
    p99 = _ms(*re.match(r"([\d.]+)(us|ms|s)", lat["99"]).groups())  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    return Result("", url, rps, p50, p99, total, errors, "wrk")


HTTPX_CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time, uuid
    import httpx
    method, url, body, headers = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    duration, conns, idem = float(sys.argv[5]), int(sys.argv[6]), sys.argv[7] == "1"
    content = body.encode() if body else None
    lat, errors = [], 0
    async def worker(client, stop):
        global errors
        while time.monotonic() < stop:
            h = dict(headers)
            if idem:
                h["Idempotency-Key"] = uuid.uuid4().hex
            t = time.perf_counter()
            r = await client.request(method, url, content=content, headers=h)
            lat.append(time.perf_counter() - t)
            if r.status_code >= 300:
                errors += 1
    async def main():
        limits = httpx.Limits(max_connections=conns)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            start = time.monotonic()
            await asyncio.gather(*(worker(client, start + duration) for _ in range(conns)))
            return time.monotonic() - start
    elapsed = asyncio.run(main())
    lat.sort()
    print(json.dumps({"n": len(lat), "elapsed": elapsed, "errors": errors,
                      "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
    """
)
"""The load client of both benchmarks (a separate process): argv method, url, body, headers
(JSON), seconds, connections, and "1" for a new Idempotency-Key per request; prints n,
elapsed, errors (answers >= 300), p50 and p99 as JSON."""


def httpx_load(
    method: str,
    url: str,
    duration: float,
    connections: int,
    cpu: int | None,
    *,
    body: str = "",
    headers: dict[str, str] | None = None,
    idempotency: bool = False,
) -> dict[str, float]:
    """Run ``HTTPX_CLIENT`` once (pinned to ``cpu``); its JSON result."""
    cmd = pinned(
        [PY, "-c", HTTPX_CLIENT, method, url, body, json.dumps(headers or {}),
         str(duration), str(connections), "1" if idempotency else "0"],
        cpu,
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"load client failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def run_httpx(url: str, duration: float, connections: int, cpu: int | None) -> Result:
    data = httpx_load("GET", url, duration, connections, cpu)
    return Result(
        "", url, data["n"] / data["elapsed"], data["p50"] * 1000, data["p99"] * 1000,
        data["n"], data["errors"], "httpx (wrk not installed: the client may be the bottleneck)",
    )  # fmt: skip


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), or None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after "pid (comm)": state is field 3, utime 14 and stime 15 (1-based, man proc)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, url: str, pid: int, args: argparse.Namespace) -> Result:
    runner = run_wrk if shutil.which("wrk") else run_httpx
    runner(url, min(1.0, args.duration), args.connections, args.load_cpu)  # warm-up
    before = cpu_seconds(pid)
    result = runner(url, args.duration, args.connections, args.load_cpu)
    after = cpu_seconds(pid)
    result.name = name
    if before is not None and after is not None and result.requests:
        result.cpu_us_per_request = (after - before) / result.requests * 1e6
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median_result(name: str, results: list[Result]) -> Result:
    ordered = sorted(results, key=lambda r: r.requests_per_sec)
    mid = ordered[len(ordered) // 2]
    total = sum(r.requests for r in results)
    errors = sum(r.errors for r in results)
    return Result(
        name, mid.url, mid.requests_per_sec, mid.p50_ms, mid.p99_ms, total, errors, mid.tool
    )


def median_cpu(results: list[Result]) -> float | None:
    values = sorted(r.cpu_us_per_request for r in results if r.cpu_us_per_request is not None)
    return values[len(values) // 2] if values else None


def start_bare(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        pinned([PY, "-c", BARE_APP, str(port)], args.server_cpu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/")
    return proc, f"http://127.0.0.1:{port}/"


def launch_node(
    argv: list[str],
    cpu: int | None,
    tmp: Path,
    database_url: str,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """A node process (``argv``) on free loopback ports with the benchmarks' settings (rate
    limit out of reach, warnings only) plus ``env``, pinned to ``cpu``, once ready:
    (process, API base URL, ops base URL)."""
    api, ops = free_port(), free_port()
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))},
        "DCHAT_HOST": "127.0.0.1",
        "DCHAT_API_PORT": str(api),
        "DCHAT_METRICS_PORT": str(ops),
        "DCHAT_P2P_PORT": str(free_port()),
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "DCHAT_SECURITY__RATE_LIMIT_REQUESTS_PER_SEC": "100000000",
        "DCHAT_LOGGING__LEVEL": "warning",
        **(env or {}),
    }
    proc = subprocess.Popen(
        pinned(argv, cpu),
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    wait_http(f"http://127.0.0.1:{ops}/ready")
    return proc, f"http://127.0.0.1:{api}", f"http://127.0.0.1:{ops}"


def start_node(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc, base, _ = launch_node([DCHAT], args.server_cpu, tmp, f"sqlite:///{tmp}/dchat.db")
    claims = {"sub": "bench", "iss": "dchat", "exp": int(time.time()) + 3600, "scope": "chat:write"}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        c.post("/api/v1/channels", json={"name": "bench"}).raise_for_status()
        for i in range(20):
            c.post("/api/v1/channels/1/messages", json={"body": f"message {i} " * 8})
        assert len(c.get(READ_PATH).json()["items"]) == 20
    return proc, f"{base}{READ_PATH}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds; medians reported")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dchat-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    bare_runs: list[Result] = []
    node_runs: list[Result] = []
    try:
        bare, bare_url = start_bare(args)
        procs.append(bare)
        node, node_url = start_node(args, tmp)
        procs.append(node)
        # both servers are up (and idle when not measured); alternate to share any drift
        for _ in range(args.rounds):
            bare_runs.append(measure("bare Quart+hypercorn hello", bare_url, bare.pid, args))
            node_runs.append(measure("dchat node GET messages", node_url, node.pid, args))
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    bare_result = median_result("bare Quart+hypercorn hello", bare_runs)
    node_result = median_result("dchat node GET messages", node_runs)
    ratio = node_result.requests_per_sec / bare_result.requests_per_sec
    ratios = [
        n.requests_per_sec / b.requests_per_sec for b, n in zip(bare_runs, node_runs, strict=True)
    ]
    paired = sorted(ratios)[len(ratios) // 2]
    cpu_bare = median_cpu(bare_runs)
    cpu_node = median_cpu(node_runs)
    cpu_ratio = cpu_bare / cpu_node if cpu_bare and cpu_node else None
    if args.json:
        print(json.dumps({"bare": asdict(bare_result), "node": asdict(node_result),
                          "ratio": ratio, "paired_ratio": paired, "round_ratios": ratios,
                          "cpu_us_per_request": {"bare": cpu_bare, "node": cpu_node},
                          "cpu_ratio": cpu_ratio}, indent=2))  # fmt: skip
        return 0
    print(f"load: {bare_result.tool}, {args.connections} connections, {args.rounds} alternating "
          f"rounds of {args.duration:.0f} s, server on CPU {args.server_cpu}, load on CPU "
          f"{args.load_cpu}; medians")  # fmt: skip
    print(f"{'app':<30} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}")
    for r in (bare_result, node_result):
        print(f"{r.name:<30} {r.requests_per_sec:>10.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.requests:>9} {r.errors:>7}")  # fmt: skip
    print("per-round req/s  bare: " + ", ".join(f"{r.requests_per_sec:.0f}" for r in bare_runs))
    print("per-round req/s  node: " + ", ".join(f"{r.requests_per_sec:.0f}" for r in node_runs))
    print(
        f"ratio node/bare: {ratio:.2f} of the medians, {paired:.2f} median of the rounds "
        "(goal >= 0.70); per round: " + ", ".join(f"{x:.2f}" for x in ratios)
    )
    if cpu_bare and cpu_node and cpu_ratio:
        print(
            f"server CPU per request (median): bare {cpu_bare:.0f} us, node {cpu_node:.0f} us; "
            f"bare/node {cpu_ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
