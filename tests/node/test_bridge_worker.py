"""The bridge worker's logic on two real anvil chains, three validators in one process
talking over ``LocalPubSub`` (the p2p package's in-process PubSub): quorum release, no
release below quorum then the refund after the deadline, pause, forged gossip, and the
finality-proof timeout counter. (The same scenarios over real libp2p between node processes
are in test_bridge_nodes.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dchat_node.bridge import gossip
from dchat_node.bridge.messages import Signer
from dchat_node.bridge.store import SqlBridgeStore
from dchat_node.bridge.worker import BridgeWorker, ChainSide
from dchat_node.chain.client import ChainClient
from dchat_node.chain.finality import FinalityPolicy
from dchat_node.config import DatabaseConfig, parse_config
from dchat_node.observability.metrics import BridgeMetrics, register_bridge
from dchat_node.p2p.local import LocalNetwork, LocalPubSub
from dchat_node.storage import Storage, create_storage
from tests.harness.chain import Anvil, private_key
from tests.node.bridge_helpers import Bridge, deploy_bridge, increase_time

pytestmark = pytest.mark.integration

RELAYER_ACCOUNT = 2


class Miner:
    """Mines a block on each chain every ``interval`` (anvil only mines on transactions)."""

    def __init__(self, chains: list[Anvil], interval: float = 0.2) -> None:
        self.chains = chains
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for chain in self.chains:
                with contextlib.suppress(Exception):  # a stopped chain in the outage test
                    chain.mine(1)

    def __enter__(self) -> Miner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@dataclass
class Node:
    worker: BridgeWorker
    storage: Storage
    store: SqlBridgeStore
    metrics: BridgeMetrics
    registry: CollectorRegistry
    task: asyncio.Task[None] | None = None


@pytest.fixture
def bridge(anvil_factory: Callable[..., Anvil]) -> Bridge:
    a = anvil_factory(chain_id=2001)
    b = anvil_factory(chain_id=2002)
    return deploy_bridge(a, b, window=3600)


def _config(bridge: Bridge, roles: list[str], **extra: Any) -> Any:
    return parse_config(
        {
            "bridge": {
                "chat_vault_address": bridge.vault_a,
                "currency_vault_address": bridge.vault_b,
                "validators": [s.address for s in bridge.validators],
                "validator_quorum": 2,
                "roles": roles,
                "validator_key_path": "/unused" if "validator" in roles else None,
                "relayer_key_path": "/unused" if "relayer" in roles else None,
                "poll_interval_secs": 0.1,
                **extra,
            }
        },
        environ={},
    ).bridge


@pytest.fixture
async def make_node(bridge: Bridge, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    nodes: list[Node] = []
    network = LocalNetwork()
    clients: list[ChainClient] = []

    async def make(
        index: int,
        *,
        validator: bool = True,
        relayer: bool = False,
        database_url: str | None = None,
        peer: str | None = None,
        **extra: Any,
    ) -> Node:
        url = database_url or f"sqlite:///{tmp_path}/n{len(nodes)}/db.sqlite"
        storage = create_storage(DatabaseConfig(url=url))
        await storage.open()
        await storage.migrate()
        store = SqlBridgeStore(storage)
        roles = (["validator"] if validator else []) + (["relayer"] if relayer else [])
        sides = []
        for name, chain, vault in (
            ("chat", bridge.a, bridge.vault_a),
            ("currency", bridge.b, bridge.vault_b),
        ):
            client = ChainClient(chain.url, timeout_secs=2, retries=0, name=name)
            clients.append(client)
            sides.append(
                ChainSide(name, chain.chain_id, vault, client, FinalityPolicy(confirmations=2))
            )
        registry = CollectorRegistry()
        metrics = register_bridge(registry)
        worker = BridgeWorker(
            _config(bridge, roles, **extra),
            store,
            sides,
            LocalPubSub(network, peer or f"peer{index}"),
            metrics,
            validator=bridge.validators[index] if validator else None,
            relayer=Signer(private_key(RELAYER_ACCOUNT)) if relayer else None,
        )
        node = Node(worker, storage, store, metrics, registry)
        node.task = asyncio.create_task(worker.run())
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if node.task is not None:
            node.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node.task
        await node.storage.close()
    for client in clients:
        await client.aclose()


async def wait_state(node: Node, transfer_id: str, states: set[str], within: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    rec = None
    while asyncio.get_running_loop().time() < deadline:
        rec = await node.store.get(transfer_id)
        if rec is not None and rec.state in states:
            return rec
        await asyncio.sleep(0.1)
    raise AssertionError(f"{transfer_id} not in {states} after {within} s: {rec}")


async def test_two_of_three_release_and_pause_stops_signing(
    bridge: Bridge, make_node: Callable[..., Any]
) -> None:
    a, b = bridge.a, bridge.b
    aggregator = await make_node(0, relayer=True)
    await make_node(1)  # validator 2 of 3 is down: never started
    recipient = b.accounts[8]
    before = b.balance(recipient)
    with Miner([a, b]):
        t = await asyncio.to_thread(bridge.deposit, a, b, 10**18, recipient=recipient)
        rec = await wait_state(aggregator, t.id, {"released"})
    assert b.balance(recipient) - before == 10**18
    assert rec.release_tx_hash is not None
    m = aggregator.metrics
    assert m.attestations_signed_total.labels(kind="release")._value.get() == 1
    assert m.transactions_submitted_total.labels(kind="release")._value.get() == 1
    assert m.deposits_observed_total.labels(chain="chat")._value.get() == 1
    assert m.transfers_finished_total.labels(outcome="released")._value.get() == 1
    for stage in ("final", "released"):
        assert (
            aggregator.registry.get_sample_value(
                "bridge_transfer_latency_seconds_count", {"stage": stage}
            )
            == 1
        )
    status = await aggregator.worker.status()
    assert status.state == "ok"
    assert status.details["validators_reachable"] == 2
    assert [v["reachable"] for v in status.details["validators"]] == [True, True, False]
    assert aggregator.registry.get_sample_value("bridge_validators_reachable") == 2
    assert status.details["backlog"] == 0

    # paused: observes the next deposit, signs and submits nothing
    aggregator.worker.config = aggregator.worker.config.model_copy(update={"paused": True})
    await asyncio.sleep(0.3)
    signed = m.attestations_signed_total.labels(kind="release")._value.get()
    with Miner([a, b]):
        t2 = await asyncio.to_thread(bridge.deposit, a, b, 10**17, recipient=recipient)
        rec2 = await wait_state(aggregator, t2.id, {"attesting"})
        await asyncio.sleep(1.0)
    assert rec2.state == "attesting"
    assert m.attestations_signed_total.labels(kind="release")._value.get() == signed
    again = await aggregator.store.get(t2.id)
    assert again is not None
    assert again.state == "attesting"
    assert (await aggregator.worker.status()).state == "paused"
    assert aggregator.registry.get_sample_value("bridge_paused") == 1


async def test_one_of_three_never_releases_and_is_refunded_after_the_deadline(
    bridge: Bridge, make_node: Callable[..., Any]
) -> None:
    a, b = bridge.a, bridge.b
    lone = await make_node(0, relayer=True, finality_proof_timeout_secs=2)
    depositor = a.accounts[3]
    with Miner([a, b]):
        t = await asyncio.to_thread(
            bridge.deposit, a, b, 3 * 10**18, sender=depositor, recipient=b.accounts[8]
        )
        rec = await wait_state(lone, t.id, {"refund_pending"}, within=15)
    assert rec.release_tx_hash is None
    assert lone.metrics.finality_proof_timeout_total._value.get() == 1
    assert (await lone.worker.status()).state == "no_quorum"
    # the other validators come back after the deadline: they sign refunds, not releases
    before = a.balance(depositor)
    increase_time(b, 3700)
    increase_time(a, 3700)
    await make_node(1)
    with Miner([a, b]):
        rec = await wait_state(lone, t.id, {"refunded"}, within=20)
    assert a.balance(depositor) - before == 3 * 10**18
    assert rec.refund_tx_hash is not None
    assert lone.metrics.transactions_submitted_total.labels(kind="release")._value.get() == 0
    assert lone.metrics.transactions_submitted_total.labels(kind="refund")._value.get() == 1
    assert lone.metrics.finality_proof_timeout_total._value.get() == 1  # counted once
    assert lone.metrics.transfers_finished_total.labels(outcome="refunded")._value.get() == 1
    assert lone.metrics.transfers_finished_total.labels(outcome="released")._value.get() == 0


async def test_forged_and_malformed_gossip_is_dropped(
    bridge: Bridge, make_node: Callable[..., Any]
) -> None:
    node = await make_node(0, validator=False)
    forger = Signer(private_key(9))
    digest = b"\x11" * 32
    sig = "0x" + forger.sign(digest).hex()
    forged = gossip.Attestation(
        kind="release", transfer_id="0x" + "22" * 32, digest="0x" + digest.hex(),
        signer=forger.address, signature=sig,
    )  # fmt: skip
    assert await node.worker.receive(gossip.encode(forged)) is False
    # a validator's address with the forger's signature: the recovered signer differs
    claimed = forged.model_copy(update={"signer": bridge.validators[0].address})
    assert await node.worker.receive(gossip.encode(claimed)) is False
    assert await node.worker.receive(b"{not json") is False
    assert await node.worker.receive(b"x" * 5000) is False
    good = gossip.Attestation(
        kind="release", transfer_id="0x" + "22" * 32, digest="0x" + digest.hex(),
        signer=bridge.validators[1].address,
        signature="0x" + bridge.validators[1].sign(digest).hex(),
    )  # fmt: skip
    assert await node.worker.receive(gossip.encode(good)) is True
    stored = await node.store.signatures("0x" + "22" * 32, "release", "0x" + digest.hex())
    assert list(stored) == [bridge.validators[1].address]


async def test_snapshot_after_n_transfers_is_signed_by_the_validators(
    bridge: Bridge, make_node: Callable[..., Any]
) -> None:
    a, b = bridge.a, bridge.b
    nodes = [await make_node(0, relayer=True, state_snapshot_interval=2)]
    nodes += [await make_node(i, state_snapshot_interval=2) for i in (1, 2)]
    ids = []
    with Miner([a, b]):
        for src, dst in ((a, b), (b, a)):
            t = await asyncio.to_thread(bridge.deposit, src, dst, 10**16, recipient=dst.accounts[8])
            ids.append(t.id)
            await wait_state(nodes[0], t.id, {"released"})
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while loop.time() < end:
            snap = await nodes[0].store.snapshot(1)
            sigs = {} if snap is None else await nodes[0].store.snapshot_signatures(snap.hash)
            if len(sigs) == 3:
                break
            await asyncio.sleep(0.1)
    assert snap is not None
    assert sorted(sigs) == sorted(s.address for s in bridge.validators)
    assert snap.leaf_count == 2
    assert sorted(tid for tid, _ in await nodes[0].store.cut_states(snap.cut)) == sorted(ids)
    health = (await nodes[0].worker.status()).details["snapshot"]
    assert health == {"seq": 1, "hash": snap.hash, "leaf_count": 2, "signatures": 3}
    for node in nodes[1:]:
        theirs = await node.store.snapshot(1)
        assert theirs is not None
        assert theirs.hash == snap.hash


async def test_two_pods_of_one_validator_share_its_key_and_database(
    bridge: Bridge, make_node: Callable[..., Any], new_database: Callable[[], str]
) -> None:
    """A DchatCluster is one validator: its pods (PostgreSQL mode, 2 replicas) run the bridge
    with the same validator and relayer keys over the same database. Both observe, sign and
    submit; the signatures are identical (RFC 6979) and count once, a transfer is released
    once, and the shared store keeps one snapshot per sequence number, signed once by each
    validator. Validator 1 is another cluster (its own database); validator 2 is down."""
    a, b = bridge.a, bridge.b
    shared = new_database()
    pods = [
        await make_node(
            0, relayer=True, database_url=shared, peer=f"pod{i}", state_snapshot_interval=2
        )
        for i in (0, 1)
    ]
    other = await make_node(1, state_snapshot_interval=2)
    recipient = b.accounts[7]
    before = b.balance(recipient)
    ids = []
    with Miner([a, b]):
        for _ in range(2):
            t = await asyncio.to_thread(bridge.deposit, a, b, 10**16, recipient=recipient)
            ids.append(t.id)
            await wait_state(pods[0], t.id, {"released"})
            await wait_state(other, t.id, {"released"})
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        sigs: dict[str, Any] = {}
        while loop.time() < end:
            snap = await pods[0].store.snapshot(1)
            sigs = {} if snap is None else await pods[0].store.snapshot_signatures(snap.hash)
            if len(sigs) == 2:
                break
            await asyncio.sleep(0.1)
    assert b.balance(recipient) - before == 2 * 10**16  # each released once
    assert snap is not None
    assert sorted(sigs) == sorted(s.address for s in bridge.validators[:2])
    theirs = await other.store.snapshot(1)
    assert theirs is not None
    assert theirs.hash == snap.hash
    assert await pods[0].store.snapshot(2) is None
    # both pods kept running (no unique-key race killed a worker) and report the same state
    for node in (*pods, other):
        assert node.task is not None
        assert not node.task.done(), node.task
    for pod in pods:
        status = await pod.worker.status()
        assert status.state == "ok", status.details
        assert status.details["validators_reachable"] == 2
        for tid in ids:
            rec = await pod.store.get(tid)
            assert rec is not None
            assert rec.state == "released"
