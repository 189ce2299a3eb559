#!/usr/bin/env python3
"""Benchmark: time from deposit to release across the bridge, on two dev chains.

    .venv/bin/python bench/bridge.py [--finality 2] [--block-time 0.5] [--transfers 10] \
        [--json]

What it does:
- starts two anvil chains (tests/harness/chain.py; chain ids 4001 and 4002), deploys a
  BridgeVault on each (validators: anvil accounts 5, 6, 7; quorum 2), and three real node
  processes (``dchat``), each a validator and a relayer, gossiping over libp2p on loopback,
  with ``chain.*_chain_finality`` = ``--finality`` confirmations and a 0.25 s bridge poll;
- mines one block on each chain every ``--block-time`` seconds (anvil mines only on
  transactions otherwise), so finality N takes about (N - 1) block times after the
  deposit's own block (see the last point);
- makes ``--transfers`` deposits one after the other (chat -> currency chain) and measures,
  for each, the wall time from the deposit's receipt to the recipient's balance having
  grown on the destination chain (polled every 20 ms);
- prints each time, the median, p90 and max. Finality needs N - 1 more blocks after the
  deposit's own: the first comes 0..block-time after the deposit, so the wait for finality
  alone is between (N - 2) and (N - 1) block times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "node"))

from tests.harness.chain import Anvil, private_key  # noqa: E402
from tests.harness.net import free_port  # noqa: E402
from tests.node.bridge_helpers import deploy_bridge  # noqa: E402

DCHAT = str(Path(sys.executable).parent / "dchat")


def _peer_id(key_path: Path) -> str:
    from libp2p.peer.id import ID

    from dchat_node.p2p.host import load_or_create_key

    return str(ID.from_pubkey(load_or_create_key(key_path).public_key).to_base58())


def _ready(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"node on ops port {port} not ready")


def _start_nodes(
    tmp: Path, bridge: Any, a: Anvil, b: Anvil, finality: int
) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Three validator+relayer node processes that bootstrap to each other over libp2p."""
    procs: list[subprocess.Popen[bytes]] = []
    p2p = [free_port() for _ in range(3)]
    dirs = [tmp / f"n{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    ids = [_peer_id(d / "identity.key") for d in dirs]
    addrs = [f"/ip4/127.0.0.1/tcp/{p}/p2p/{pid}" for p, pid in zip(p2p, ids, strict=True)]
    ops_ports = []
    for i, d in enumerate(dirs):
        (d / "v.key").write_text(private_key(5 + i).hex())
        (d / "r.key").write_text(private_key(2 + i).hex())
        ops = free_port()
        ops_ports.append(ops)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DCHAT_")}
        env.update(
            {
                "DCHAT_HOST": "127.0.0.1",
                "DCHAT_API_PORT": str(free_port()),
                "DCHAT_METRICS_PORT": str(ops),
                "DCHAT_P2P_PORT": str(p2p[i]),
                "DATABASE_URL": f"sqlite:///{d}/dchat.db",
                "JWT_SECRET": "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz",
                "CHAT_CHAIN_RPC": a.url,
                "CURRENCY_CHAIN_RPC": b.url,
                "DCHAT_CHAIN__CHAT_CHAIN_FINALITY": str(finality),
                "DCHAT_CHAIN__CURRENCY_CHAIN_FINALITY": str(finality),
                "DCHAT_RELAY__IDENTITY_KEY_PATH": str(d / "identity.key"),
                "RELAY_BOOTSTRAP_NODES": ",".join(x for j, x in enumerate(addrs) if j != i),
                "DCHAT_BRIDGE__CHAT_VAULT_ADDRESS": bridge.vault_a,
                "DCHAT_BRIDGE__CURRENCY_VAULT_ADDRESS": bridge.vault_b,
                "DCHAT_BRIDGE__VALIDATORS": ",".join(s.address for s in bridge.validators),
                "DCHAT_BRIDGE__ROLES": "validator,relayer",
                "DCHAT_BRIDGE__VALIDATOR_KEY_PATH": str(d / "v.key"),
                "DCHAT_BRIDGE__RELAYER_KEY_PATH": str(d / "r.key"),
                "DCHAT_BRIDGE__POLL_INTERVAL_SECS": "0.25",
                "RUST_LOG": "warning",
            }
        )
        log = (d / "node.log").open("wb")
        procs.append(subprocess.Popen([DCHAT], env=env, stdout=log, stderr=log, cwd=d))
    return procs, ops_ports


def main() -> None:  # noqa: C901, PLR0915 (one measured sequence)
    ap = argparse.ArgumentParser()
    ap.add_argument("--finality", type=int, default=2, help="confirmations (N)")
    ap.add_argument("--block-time", type=float, default=0.5)
    ap.add_argument("--transfers", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="dchat-bench-bridge-") as tmp_s:
        tmp = Path(tmp_s)
        a = Anvil.start(tmp / "a", chain_id=4001, max_lifetime_secs=900)
        b = Anvil.start(tmp / "b", chain_id=4002, max_lifetime_secs=900)
        procs: list[subprocess.Popen[bytes]] = []
        stop = threading.Event()
        try:
            bridge = deploy_bridge(a, b)
            started, ops_ports = _start_nodes(tmp, bridge, a, b, args.finality)
            procs += started
            t0 = time.monotonic()
            for port in ops_ports:
                _ready(port)
            startup = time.monotonic() - t0

            def mine() -> None:
                while not stop.wait(args.block_time):
                    a.mine(1)
                    b.mine(1)

            threading.Thread(target=mine, daemon=True).start()
            time.sleep(5)  # the libp2p mesh forms (GossipSub heartbeat 1 s)
            recipient = b.accounts[8]
            times = []
            for _ in range(args.transfers):
                before = b.balance(recipient)
                bridge.deposit(a, b, 10**15, recipient=recipient)
                start = time.monotonic()
                while b.balance(recipient) == before:
                    if time.monotonic() - start > 120:
                        raise TimeoutError("a transfer was not released in 120 s")
                    time.sleep(0.02)
                times.append(time.monotonic() - start)
        finally:
            stop.set()
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            a.stop()
            b.stop()
    times.sort()
    result = {
        "finality_confirmations": args.finality,
        "block_time_secs": args.block_time,
        "transfers": len(times),
        "finality_blocks_to_wait": args.finality - 1,
        "median_secs": round(statistics.median(times), 3),
        "p90_secs": round(times[max(0, int(len(times) * 0.9) - 1)], 3),
        "max_secs": round(times[-1], 3),
        "node_startup_secs": round(startup, 1),
        "all_secs": [round(t, 3) for t in times],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
