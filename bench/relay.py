#!/usr/bin/env python3
"""Benchmark: envelopes/s and delivery latency across three real nodes.

    .venv/bin/python bench/relay.py [--envelopes 500] [--concurrency 16] [--json]

What it does: starts three node processes on loopback (the topology of
tests/node/test_relay_network.py: A <- B <- C, C finding B by DNS discovery; SQLite, free
ports, temp dir), opens a WebSocket at C for one recipient key (authenticated with a
signed challenge), then posts ``--envelopes`` signed envelopes (64-byte ciphertext, ten
sender keys) to A from ``--concurrency`` client threads, as fast as A accepts them. Each
envelope is timed from the moment its POST is sent to the moment C pushes it on the
WebSocket, i.e. through A's API and store, the gossip batcher, two GossipSub hops (A -> B
-> C) and C's store. It prints:
- accepted/s: envelopes A accepted (201) per second of the posting phase;
- delivered/s: envelopes per second from the first POST to the last arrival at C;
- latency p50/p99/max of post -> arrival at C, and how many arrived (all must).
The run is short by default (tens of seconds, most of it node start-up).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from tests.node.relay_client import Keys, challenge, envelope, proof  # noqa: E402
from tests.node.test_relay_network import FAST_LIMITS, Launcher, Net, api_url  # noqa: E402


def log(message: str) -> None:
    print(f"bench/relay: {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(envelopes: int, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            started = time.monotonic()
            log("starting three nodes (A <- B <- C)")
            net = Net(launcher, c_limits=FAST_LIMITS)
            log(f"nodes up and meshed in {time.monotonic() - started:.1f} s")
            return measure(net, envelopes, concurrency)
        finally:
            launcher.stop_all()


def measure(net: Net, count: int, concurrency: int) -> dict[str, Any]:
    bob = Keys.new()
    senders = [Keys.new() for _ in range(10)]
    bodies = [envelope(senders[i % 10], bob) for i in range(count)]
    sent_at: dict[str, float] = {}
    arrived_at: dict[str, float] = {}
    done = threading.Event()
    with httpx.Client(timeout=30) as http:
        ch = challenge(http, api_url(net.c), bob)
    query = httpx.QueryParams({"recipient": bob.b64, "challenge": ch, "signature": proof(bob, ch)})
    ws_url = api_url(net.c).replace("http://", "ws://") + f"/api/v1/relay/ws?{query}"

    def listen() -> None:
        with connect(ws_url, open_timeout=10) as ws:
            ready.set()
            while len(arrived_at) < count:
                try:
                    frame = ws.recv(timeout=60)
                except TimeoutError:
                    break
                arrived_at[json.loads(frame)["id"]] = time.monotonic()
        done.set()

    ready = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not ready.wait(15):
        raise RuntimeError("WebSocket at C did not open")
    from dchat_node.relay.envelope import parse_envelope

    ids = [parse_envelope(**b).id for b in bodies]
    statuses: list[int] = []
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as http:
        url = f"{api_url(net.a)}/api/v1/relay/envelopes"

        def post(i: int) -> int:
            sent_at[ids[i]] = time.monotonic()
            return http.post(url, json=bodies[i]).status_code

        first = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(post, range(count)))
        posted = time.monotonic() - first
    done.wait(120)
    latencies = [arrived_at[i] - sent_at[i] for i in ids if i in arrived_at]
    last = max(arrived_at.values(), default=first)
    return {
        "envelopes": count,
        "concurrency": concurrency,
        "accepted": statuses.count(201),
        "arrived_at_c": len(latencies),
        "accepted_per_sec": round(statuses.count(201) / posted, 1),
        "delivered_per_sec": round(len(latencies) / (last - first), 1) if latencies else 0.0,
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "latency_ms_max": round(max(latencies) * 1000, 1) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--envelopes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.envelopes, args.concurrency)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    if result["arrived_at_c"] != result["accepted"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
