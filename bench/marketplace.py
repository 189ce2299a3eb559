#!/usr/bin/env python3
"""Benchmark: marketplace purchase creation and listing reads on SQLite and PostgreSQL,
side by side with the bare Quart+hypercorn hello-world app, same machine, same run.

    .venv/bin/python bench/marketplace.py [--duration 10] [--connections 16] \
        [--json]

What it does:
- starts the bare app of bench/node_platform.py (measured first and last), the test
  harness's PostgreSQL (tests/harness/postgres.py) and, per engine, a real node process
  (tests/node/market_node.py: ``dchat``'s ``run_node`` with payments configured and a
  verifier that reaches no chain, so purchases can be created; rate limiting ON with a limit
  the load cannot reach);
- seeds 20 listings (unlimited inventory) and measures, each for ``--duration`` seconds
  after a 1 s warm-up:
  ``GET /api/v1/marketplace/listings/1`` (read by id, served from the listing cache),
  ``GET /api/v1/marketplace/listings?limit=20`` (a page of 20, from the database), and
  ``POST /api/v1/marketplace/purchases`` with a new ``Idempotency-Key`` per request (JWT
  auth, key claimed, inventory reserved, purchase + event written in one transaction, key
  finished: 3 write statements + 1 transaction per purchase);
- drives load from a separate process (an asyncio httpx client, the same kind as
  node_platform.py's fallback; it can be the bottleneck), pinned to another CPU than the
  server with ``taskset`` when available;
- prints requests/s, p50 and p99 as the client saw them, and the node's own p99 of
  ``marketplace_purchase_latency_ms`` (from /metrics: the alert's series; linear within
  the bucket).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import node_platform as plat  # noqa: E402
from tests.harness.postgres import PostgresServer  # noqa: E402

PY = sys.executable
MARKET_NODE = str(REPO / "tests" / "node" / "market_node.py")
SECRET = plat.SECRET
API = "/api/v1/marketplace"


@dataclass
class Case:
    engine: str
    name: str
    requests_per_sec: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    node_p99_ms: float | None = None


def token(sub: str) -> str:
    claims = {"sub": sub, "iss": "dchat", "exp": int(time.time()) + 3600}
    claims["scope"] = "marketplace:write"
    return jwt.encode(claims, SECRET, algorithm="HS256")


def load(
    method: str,
    url: str,
    args: argparse.Namespace,
    *,
    body: str = "",
    headers: dict[str, str] | None = None,
    idempotency: bool = False,
    duration: float | None = None,
) -> dict[str, float]:
    return plat.httpx_load(
        method,
        url,
        duration or args.duration,
        args.connections,
        args.load_cpu,
        body=body,
        headers=headers,
        idempotency=idempotency,
    )


def measure(
    engine: str, name: str, method: str, url: str, args: argparse.Namespace, **kw: object
) -> Case:
    load(method, url, args, duration=1.0, **kw)  # type: ignore[arg-type]  # warm-up
    data = load(method, url, args, **kw)  # type: ignore[arg-type]
    return Case(
        engine, name, data["n"] / data["elapsed"], data["p50"] * 1000, data["p99"] * 1000,
        int(data["n"]), int(data["errors"]),
    )  # fmt: skip


def histogram_p99(metrics: str, name: str) -> float | None:
    """p99 of a Prometheus histogram from its cumulative buckets (linear in the bucket)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append(
                (float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1]))
            )
    if not buckets or buckets[-1][1] == 0:
        return None
    target = 0.99 * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= target:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (target - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return None


def start_node(
    args: argparse.Namespace, tmp: Path, database_url: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {
        "DCHAT_SECURITY__RATE_LIMIT_WRITES_PER_USER_PER_SEC": "1000000",
        "DCHAT_MARKETPLACE__ESCROW_ADDRESS": "0x" + "22" * 20,
        "DCHAT_MARKETPLACE__CHAIN_ID": "31337",
        "PYTHONPATH": str(REPO),
    }
    proc, base, ops = plat.launch_node([PY, MARKET_NODE], args.server_cpu, tmp, database_url, env)
    seller = {"Authorization": f"Bearer {token('seller')}"}
    with httpx.Client(base_url=base, headers=seller) as c:
        for i in range(20):
            body = {"title": f"Album {i}", "description": "lossless " * 10, "price": str(10**18),
                    "payout_address": "0x" + "11" * 20}  # fmt: skip
            c.post(f"{API}/listings", json=body).raise_for_status()
    return proc, base, ops


def run_engine(engine: str, url: str, args: argparse.Namespace, tmp: Path) -> list[Case]:
    node, base, ops = start_node(args, tmp, url)
    buyer = {"Authorization": f"Bearer {token('buyer')}", "Content-Type": "application/json"}
    try:
        cases = [
            measure(engine, "GET listing by id (cached)", "GET", f"{base}{API}/listings/1", args),
            measure(engine, "GET listings page of 20", "GET",
                    f"{base}{API}/listings?limit=20", args),
            measure(engine, "POST purchase (Idempotency-Key)", "POST", f"{base}{API}/purchases",
                    args, body=json.dumps({"listing_id": 1}), headers=buyer, idempotency=True),
        ]  # fmt: skip
        cases[-1].node_p99_ms = histogram_p99(
            httpx.get(f"{ops}/metrics").text, "marketplace_purchase_latency_ms"
        )
    finally:
        plat.stop(node)
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dchat-bench-market-"))
    os.chmod(tmp, 0o755)  # noqa: S103 - PostgreSQL runs as an unprivileged user when we are root
    cases: list[Case] = []
    bare = None
    pg = None
    try:
        pg = PostgresServer.start(tmp / "pg")
        bare, bare_url = plat.start_bare(args)
        # the baseline before and after the node cases: the machine's drift shows
        cases.append(measure("bare", "Quart+hypercorn GET hello", "GET", bare_url, args))
        cases += run_engine("sqlite", f"sqlite:///{tmp}/market.db", args, tmp)
        cases += run_engine("postgresql", pg.create_database("market"), args, tmp)
        cases.append(measure("bare", "Quart+hypercorn GET hello", "GET", bare_url, args))
    finally:
        if bare is not None:
            plat.stop(bare)
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps([asdict(c) for c in cases], indent=2))
        return 0
    print(f"load: asyncio httpx client, {args.connections} connections, {args.duration:.0f} s "
          f"per case after 1 s warm-up, server on CPU {args.server_cpu}, load on CPU "
          f"{args.load_cpu}")  # fmt: skip
    print(f"{'engine':<11} {'case':<33} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'requests':>8} "
          f"{'errors':>6} {'node p99 ms':>11}")  # fmt: skip
    for c in cases:
        node_p99 = "" if c.node_p99_ms is None else f"{c.node_p99_ms:.1f}"
        print(f"{c.engine:<11} {c.name:<33} {c.requests_per_sec:>7.0f} {c.p50_ms:>7.2f} "
              f"{c.p99_ms:>7.2f} {c.requests:>8} {c.errors:>6} {node_p99:>11}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
