"""The bridge worker's metrics, driven tick by tick on a real SQLite store with scripted
chains (no anvil): deposits observed by source chain, transfers finished by outcome, the
latency from observation to final and to released, the validator gauges and the paused
gauge. (The counters of signing and submitting are covered on real chains in
test_bridge_worker.py.)"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_utils.address import to_checksum_address
from prometheus_client import CollectorRegistry

from dchat_node.bridge import gossip
from dchat_node.bridge.messages import DEPOSIT_TOPIC, Signer, Transfer
from dchat_node.bridge.store import SqlBridgeStore
from dchat_node.bridge.worker import BridgeWorker, ChainSide, heartbeat_digest
from dchat_node.chain.client import BlockHeader, BlockRef, ChainLog
from dchat_node.chain.finality import FinalityPolicy
from dchat_node.config import DatabaseConfig, parse_config
from dchat_node.observability.metrics import BridgeMetrics, register_bridge
from dchat_node.storage import Storage, create_storage

pytestmark = pytest.mark.unit

VAULT_A = to_checksum_address("0x" + "a1" * 20)
VAULT_B = to_checksum_address("0x" + "b2" * 20)
OWN = Signer(bytes.fromhex("11" * 32))
OTHER = Signer(bytes.fromhex("22" * 32))
THIRD = Signer(bytes.fromhex("33" * 32))
SKEW = 40.0  # the worker's clock runs this far ahead of the store's: the measured latency


def block_hash(number: int) -> str:
    return "0x" + f"{number:064x}"


class ScriptedChain:
    """What the worker asks of a chain, answered from a script: a head far past every
    deposit (all final), the Deposit logs given, ``executed`` true for the ids given, and
    a reorged block (another hash, no receipt) for the numbers given."""

    def __init__(self, chain_id: int, vault: str) -> None:
        self.chain_id = chain_id
        self.vault = vault
        self.head = 100
        self.deposits: list[ChainLog] = []
        self.executed: set[str] = set()
        self.reorged: set[int] = set()

    async def block_number(self) -> int:
        return self.head

    async def block(self, ref: int | str) -> BlockRef | None:
        number = self.head if isinstance(ref, str) else ref
        if number in self.reorged:
            return BlockRef(number, "0x" + "ee" * 32)
        return BlockRef(number, block_hash(number))

    async def header(self, ref: int | str) -> BlockHeader | None:
        number = self.head if isinstance(ref, str) else ref
        return BlockHeader(number, block_hash(number), int(time.time()))

    async def logs(self, address: str, topic0: bytes, start: int, end: int) -> list[ChainLog]:
        return [d for d in self.deposits if start <= (d.block_number or 0) <= end]

    async def receipt(self, tx_hash: str) -> None:
        return None  # only asked for a reorged deposit: gone

    async def call(self, to: str, data: bytes, **_: Any) -> bytes:
        tid = "0x" + data[4:36].hex()
        return encode(["uint256"], [1 if tid in self.executed else 0])

    def deposit(self, nonce: int, block: int, dst_chain_id: int) -> str:
        t = Transfer(
            self.chain_id, self.vault, nonce, to_checksum_address("0x" + "0d" * 20),
            to_checksum_address("0x" + "0e" * 20), 10**18, dst_chain_id,
            int(time.time()) + 3600,
        )  # fmt: skip
        topics = (
            DEPOSIT_TOPIC,
            bytes.fromhex(t.id[2:]),
            nonce.to_bytes(32, "big"),
            bytes(12) + bytes.fromhex(t.depositor[2:]),
        )
        data = encode(
            ["address", "uint256", "uint256", "uint64"],
            [t.recipient, t.amount, t.dst_chain_id, t.deadline],
        )
        tx = "0x" + f"{self.chain_id:032x}{nonce:032x}"
        self.deposits.append(ChainLog(self.vault, topics, data, tx, block, block_hash(block)))
        return t.id


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    s = create_storage(DatabaseConfig(url=f"sqlite:///{tmp_path}/db.sqlite"))
    await s.open()
    await s.migrate()
    yield s
    await s.close()


def make_worker(
    storage: Storage, tmp_path: Path
) -> tuple[BridgeWorker, BridgeMetrics, CollectorRegistry, list[ScriptedChain]]:
    config = parse_config(
        {
            "bridge": {
                "chat_vault_address": VAULT_A,
                "currency_vault_address": VAULT_B,
                "validators": [OWN.address, OTHER.address, THIRD.address],
                "validator_quorum": 2,
                "roles": ["validator"],
                "validator_key_path": "/unused",
                "pause_flag_path": str(tmp_path / "paused"),
            }
        },
        environ={},
    ).bridge
    chains = [ScriptedChain(1001, VAULT_A), ScriptedChain(1002, VAULT_B)]
    sides = [
        ChainSide(name, c.chain_id, c.vault, c, FinalityPolicy(confirmations=2))  # type: ignore[arg-type]
        for name, c in zip(("chat", "currency"), chains, strict=True)
    ]
    registry = CollectorRegistry()
    metrics = register_bridge(registry)
    worker = BridgeWorker(
        config,
        SqlBridgeStore(storage),
        sides,
        None,
        metrics,
        validator=OWN,
        clock=lambda: time.time() + SKEW,
    )
    return worker, metrics, registry, chains


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, (name, labels)
    return got


def test_every_bridge_series_exists_from_the_first_scrape() -> None:
    registry = CollectorRegistry()
    register_bridge(registry)
    for chain in ("chat", "currency"):
        assert value(registry, "bridge_deposits_observed_total", chain=chain) == 0
    for outcome in ("released", "refunded", "dropped"):
        assert value(registry, "bridge_transfers_finished_total", outcome=outcome) == 0
    for stage in ("final", "released"):
        assert value(registry, "bridge_transfer_latency_seconds_count", stage=stage) == 0
    for gauge in ("bridge_validators_reachable", "bridge_validator_quorum", "bridge_paused"):
        assert value(registry, gauge) == 0


async def test_observed_final_released_and_dropped_are_counted_once(
    storage: Storage, tmp_path: Path
) -> None:
    worker, _, registry, (chat, currency) = make_worker(storage, tmp_path)
    released = chat.deposit(0, block=10, dst_chain_id=currency.chain_id)
    chat.executed.add(released)
    currency.executed.add(released)  # release is read on the destination
    dropped = chat.deposit(1, block=11, dst_chain_id=currency.chain_id)
    chat.reorged.add(11)
    back = currency.deposit(0, block=20, dst_chain_id=chat.chain_id)  # final, not executed

    await worker.tick()
    assert value(registry, "bridge_deposits_observed_total", chain="chat") == 2
    assert value(registry, "bridge_deposits_observed_total", chain="currency") == 1
    assert (await worker.store.get(released)).state == "released"  # type: ignore[union-attr]
    assert (await worker.store.get(dropped)).state == "dropped"  # type: ignore[union-attr]
    assert (await worker.store.get(back)).state == "attesting"  # type: ignore[union-attr]
    assert value(registry, "bridge_transfers_finished_total", outcome="released") == 1
    assert value(registry, "bridge_transfers_finished_total", outcome="dropped") == 1
    assert value(registry, "bridge_transfers_finished_total", outcome="refunded") == 0
    # final: the released one and the one still attesting; the dropped one never was
    assert value(registry, "bridge_transfer_latency_seconds_count", stage="final") == 2
    assert value(registry, "bridge_transfer_latency_seconds_count", stage="released") == 1
    bucket = "bridge_transfer_latency_seconds_bucket"
    for stage in ("final", "released"):
        # observed by the store's clock, measured by the worker's, SKEW seconds ahead
        assert value(registry, bucket, stage=stage, le="30.0") == 0
        assert value(registry, bucket, stage=stage, le="60.0") >= 1
    total = value(registry, "bridge_transfer_latency_seconds_sum", stage="released")
    assert SKEW <= total < SKEW + 5

    # a second poll sees the same deposits and states: nothing counted again
    await worker.tick()
    assert value(registry, "bridge_deposits_observed_total", chain="chat") == 2
    assert value(registry, "bridge_transfers_finished_total", outcome="released") == 1
    assert value(registry, "bridge_transfer_latency_seconds_count", stage="final") == 2


async def test_validator_and_paused_gauges_follow_health(storage: Storage, tmp_path: Path) -> None:
    worker, _, registry, _ = make_worker(storage, tmp_path)
    assert value(registry, "bridge_validator_quorum") == 2
    await worker.tick()
    assert value(registry, "bridge_validators_reachable") == 1  # its own validator
    assert value(registry, "bridge_paused") == 0

    when = int(worker.clock())
    sig = OTHER.sign(heartbeat_digest(worker.topic, when))
    beat = gossip.Heartbeat(signer=OTHER.address, time=when, signature="0x" + sig.hex())
    assert await worker.receive(gossip.encode(beat))
    await worker.tick()
    assert value(registry, "bridge_validators_reachable") == 2
    status = await worker.status()
    assert status.details["validators_reachable"] == 2
    assert status.state == "ok"

    (tmp_path / "paused").write_text("true\n")
    await worker.tick()
    assert value(registry, "bridge_paused") == 1
    assert (await worker.status()).state == "paused"
    (tmp_path / "paused").write_text("false\n")
    await worker.tick()
    assert value(registry, "bridge_paused") == 0
