"""Bridge state snapshots: the Merkle tree and its proofs (a tampered leaf fails), the
snapshot hash chain and its EIP-191 signatures (checked against eth_account), the snapshot
store on both engines (SQLite unit, PostgreSQL integration), three real ``BridgeWorker``s
agreeing on and signing snapshots over ``LocalPubSub`` (their chains unreachable: snapshots
need only the stores), and the snapshot/initiate API with its 4xx answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak
from prometheus_client import CollectorRegistry

from dchat_node.app import create_api_app
from dchat_node.bridge import gossip
from dchat_node.bridge import worker as worker_module
from dchat_node.bridge.messages import Signer, deposit_calldata, recover
from dchat_node.bridge.snapshots import (
    ZERO_HASH,
    leaf_hash,
    merkle_proof,
    merkle_root,
    snapshot_hash,
    snapshot_signing_digest,
    verify_proof,
)
from dchat_node.bridge.store import CutEntry, ObservedDeposit, SnapshotRecord, SqlBridgeStore
from dchat_node.bridge.worker import BridgeWorker, ChainSide
from dchat_node.chain.client import ChainClient
from dchat_node.chain.finality import FinalityPolicy
from dchat_node.config import DatabaseConfig, parse_config
from dchat_node.observability.metrics import register_bridge
from dchat_node.p2p.local import LocalNetwork, LocalPubSub
from dchat_node.services import build_services
from dchat_node.storage import Storage, create_storage
from tests.harness.net import free_port
from tests.node.conftest import config_for

ENGINES = [
    pytest.param("sqlite", marks=pytest.mark.unit),
    pytest.param("postgresql", marks=pytest.mark.integration),
]
CHAIN_A, CHAIN_B = 2001, 2002
VAULT_A = "0x" + "A1" * 20
VAULT_B = "0x" + "B2" * 20
DEPOSITOR = "0x52908400098527886E0F7030069857D2E4169EE7"  # an EIP-55 test vector
RECIPIENT = "0x8617E340B3D01FA5F11F306F4090FD50E238070D"
KEYS = [bytes([i]) * 32 for i in (5, 6, 7)]


def tid(chain: int, nonce: int) -> str:
    return "0x" + keccak(encode(["uint256", "uint256"], [chain, nonce])).hex()


def deposit(chain: int, nonce: int) -> ObservedDeposit:
    return ObservedDeposit(
        transfer_id=tid(chain, nonce),
        src_chain_id=chain,
        src_vault=VAULT_A if chain == CHAIN_A else VAULT_B,
        nonce=nonce,
        depositor=DEPOSITOR,
        recipient=RECIPIENT,
        amount=10**18,
        dst_chain_id=CHAIN_B if chain == CHAIN_A else CHAIN_A,
        deadline=1_900_000_000,
        tx_hash="0x" + "cd" * 32,
        block_number=10 + nonce,
        block_hash="0x" + "ef" * 32,
    )


async def settle(store: SqlBridgeStore, chain: int, nonces: range, state: str = "released") -> None:
    await store.record_scan(chain, 100, [deposit(chain, n) for n in nonces])
    for n in nonces:
        assert await store.transition(tid(chain, n), ("observed",), state)


# -- Merkle tree and hashes --------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13])
def test_every_leaf_proves_and_a_tampered_leaf_does_not(n: int) -> None:
    transfers = [(tid(CHAIN_A, i), "released" if i % 3 else "refunded") for i in range(n)]
    root = merkle_root(transfers)
    assert root == merkle_root(list(reversed(transfers)))  # order in does not matter
    for transfer_id, state in transfers:
        proof = merkle_proof(transfers, transfer_id)
        assert proof is not None
        assert verify_proof(root, leaf_hash(transfer_id, state), proof)
        # the same transfer with another state, or another transfer: the proof fails
        assert not verify_proof(root, leaf_hash(transfer_id, "dropped"), proof)
        assert not verify_proof(root, leaf_hash(tid(CHAIN_B, 99), state), proof)
    tampered = [*transfers[:-1], (transfers[-1][0], "dropped")]
    assert merkle_root(tampered) != root
    assert merkle_proof(transfers, tid(CHAIN_B, 99)) is None


@pytest.mark.unit
def test_leaf_and_tree_encoding_as_documented() -> None:
    t0, t1, t2 = sorted((tid(CHAIN_A, i) for i in range(3)), key=lambda t: bytes.fromhex(t[2:]))
    inner = keccak(encode(["bytes32", "uint8"], [bytes.fromhex(t0[2:]), 2]))  # released = 2
    assert leaf_hash(t0, "released") == keccak(inner)
    l0, l1, l2 = (leaf_hash(t, "released") for t in (t0, t1, t2))

    def pair(a: bytes, b: bytes) -> bytes:
        return keccak(min(a, b) + max(a, b))

    assert merkle_root([(t2, "released"), (t0, "released"), (t1, "released")]) == pair(
        pair(l0, l1), l2
    )  # the odd leaf moves up unchanged
    assert merkle_root([(t1, "released")]) == l1
    assert merkle_root([]) == ZERO_HASH
    with pytest.raises(ValueError, match="32 bytes"):
        leaf_hash("0x1234", "released")


@pytest.mark.unit
def test_snapshot_hashes_chain_and_signatures_are_eip191() -> None:
    cut = (CutEntry(CHAIN_A, VAULT_A, 3), CutEntry(CHAIN_B, VAULT_B, 0))
    root = merkle_root([(tid(CHAIN_A, i), "released") for i in range(3)])
    first = snapshot_hash(1, root, ZERO_HASH, 3, cut)
    second = snapshot_hash(2, root, first, 3, cut)
    assert second != snapshot_hash(2, root, ZERO_HASH, 3, cut)  # bound to its predecessor
    assert first != snapshot_hash(1, root, ZERO_HASH, 3, (cut[0], CutEntry(CHAIN_B, VAULT_B, 1)))
    assert first == snapshot_hash(1, root, ZERO_HASH, 3, tuple(reversed(cut)))  # by chain id
    signer = Signer(KEYS[0])
    sig = signer.sign(snapshot_signing_digest(first))
    # what a wallet's personal_sign / eth_account's encode_defunct verifies
    assert Account.recover_message(encode_defunct(primitive=first), signature=sig) == signer.address
    assert recover(snapshot_signing_digest(first), sig) == signer.address
    assert recover(snapshot_signing_digest(second), sig) != signer.address


# -- store on both engines ---------------------------------------------------------------


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        cfg = DatabaseConfig(url=f"sqlite:///{tmp_path}/s.db")
    else:
        cfg = DatabaseConfig(url=request.getfixturevalue("postgres_url"), max_connections=5)
    st = create_storage(cfg)
    await st.open()
    await st.migrate()
    try:
        yield st
    finally:
        await st.close()


async def test_store_cuts_snapshots_and_signatures(db: Storage) -> None:
    store = SqlBridgeStore(db)
    assert await store.settled_next_nonce(CHAIN_A) == 0
    assert await store.snapshot() is None
    await settle(store, CHAIN_A, range(3))
    await store.record_scan(CHAIN_A, 101, [deposit(CHAIN_A, 3), deposit(CHAIN_A, 4)])
    await store.transition(tid(CHAIN_A, 4), ("observed",), "dropped")
    assert await store.settled_next_nonce(CHAIN_A) == 3  # nonce 3 is still open
    await store.transition(tid(CHAIN_A, 3), ("observed",), "attesting")
    await store.transition(tid(CHAIN_A, 3), ("attesting",), "refund_pending")
    assert await store.settled_next_nonce(CHAIN_A) == 3  # refund_pending is not final
    await store.transition(tid(CHAIN_A, 3), ("refund_pending",), "refunded")
    assert await store.settled_next_nonce(CHAIN_A) == 5
    assert await store.settled_next_nonce(CHAIN_B) == 0
    cut = (CutEntry(CHAIN_A, VAULT_A, 4), CutEntry(CHAIN_B, VAULT_B, 0))
    assert await store.cut_count(cut) == 4
    states = dict(await store.cut_states(cut))
    assert states == {
        tid(CHAIN_A, 0): "released",
        tid(CHAIN_A, 1): "released",
        tid(CHAIN_A, 2): "released",
        tid(CHAIN_A, 3): "refunded",
    }
    one = SnapshotRecord(1, "0x" + "11" * 32, "0x" + "00" * 32, "0x" + "22" * 32, 4, cut, 7)
    assert await store.add_snapshot(one)
    assert not await store.add_snapshot(  # a sequence number is taken once
        SnapshotRecord(1, "0x" + "33" * 32, "0x" + "00" * 32, "0x" + "22" * 32, 4, cut, 8)
    )
    two = SnapshotRecord(2, "0x" + "44" * 32, one.hash, "0x" + "55" * 32, 5, cut, 9)
    assert await store.add_snapshot(two)
    assert await store.snapshot() == two
    assert await store.snapshot(1) == one
    assert await store.snapshot(3) is None
    assert await store.add_snapshot_signature(one.hash, "0xB", "0xsb")
    assert not await store.add_snapshot_signature(one.hash, "0xB", "0xsb")
    assert await store.add_snapshot_signature(one.hash, "0xA", "0xsa")
    assert await store.snapshot_signatures(one.hash) == {"0xA": "0xsa", "0xB": "0xsb"}
    assert await store.snapshot_signatures(two.hash) == {}


# -- three workers agree on snapshots ----------------------------------------------------


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    network = LocalNetwork()
    tasks: list[asyncio.Task[None]] = []
    closers: list[Any] = []
    dead_rpc = f"http://127.0.0.1:{free_port()}"  # nothing listens: chains unreachable
    signers = [Signer(k) for k in KEYS]

    async def make(index: int, *, validator: bool = True) -> tuple[BridgeWorker, SqlBridgeStore]:
        storage = create_storage(DatabaseConfig(url=f"sqlite:///{tmp_path}/w{index}/db.sqlite"))
        await storage.open()
        await storage.migrate()
        closers.append(storage.close)
        sides = []
        for name, chain, vault in (("chat", CHAIN_A, VAULT_A), ("currency", CHAIN_B, VAULT_B)):
            client = ChainClient(dead_rpc, timeout_secs=1, retries=0, name=name)
            closers.append(client.aclose)
            sides.append(ChainSide(name, chain, vault, client, FinalityPolicy(confirmations=1)))
        config = parse_config(
            {
                "bridge": {
                    "chat_vault_address": VAULT_A,
                    "currency_vault_address": VAULT_B,
                    "validators": [s.address for s in signers],
                    "roles": ["validator"] if validator else [],
                    "validator_key_path": "/unused" if validator else None,
                    "poll_interval_secs": 0.05,
                    "state_snapshot_interval": 2,
                }
            },
            environ={},
        ).bridge
        store = SqlBridgeStore(storage)
        worker = BridgeWorker(
            config,
            store,
            sides,
            LocalPubSub(network, f"peer{index}"),
            register_bridge(CollectorRegistry()),
            validator=signers[index] if validator else None,
        )
        tasks.append(asyncio.create_task(worker.run()))
        return worker, store

    yield make
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for close in reversed(closers):
        await close()


async def wait_snapshot(
    store: SqlBridgeStore, seq: int, signatures: int, within: float = 10
) -> SnapshotRecord:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while loop.time() < end:
        snap = await store.snapshot(seq)
        if snap is not None and len(await store.snapshot_signatures(snap.hash)) >= signatures:
            return snap
        await asyncio.sleep(0.05)
    raise AssertionError(f"no snapshot {seq} with {signatures} signatures in {within} s")


@pytest.mark.unit
async def test_workers_agree_sign_and_chain_snapshots(
    workers: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the leader of snapshot 2 lags behind: the others take over after the (shortened) grace
    monkeypatch.setattr(worker_module, "SNAPSHOT_GRACE_SECS", 0.5)
    order = sorted(Signer(k).address.lower() for k in KEYS)
    lag = [Signer(k).address.lower() for k in KEYS].index(order[1])  # leads seq 2
    nodes = [await workers(i) for i in range(3)]
    observer_worker, observer = await workers(3, validator=False)  # stores, never signs
    stores = [store for _, store in nodes] + [observer]
    for store in stores:
        await settle(store, CHAIN_A, range(2))
        await settle(store, CHAIN_B, range(1))
        await store.record_scan(CHAIN_B, 101, [deposit(CHAIN_B, 1)])  # open: not covered
    first = [await wait_snapshot(store, 1, 3) for store in stores]
    assert len({s.hash for s in first}) == 1  # the same snapshot everywhere
    snap = first[0]
    assert (snap.prev_hash, snap.leaf_count) == ("0x" + ZERO_HASH.hex(), 3)
    assert [c.next_nonce for c in snap.cut] == [2, 1]
    states = await observer.cut_states(snap.cut)
    assert snap.root == "0x" + merkle_root(states).hex()
    sigs = await observer.snapshot_signatures(snap.hash)
    digest = snapshot_signing_digest(bytes.fromhex(snap.hash[2:]))
    assert sorted(recover(digest, bytes.fromhex(s[2:])) or "" for s in sigs.values()) == sorted(
        Signer(k).address for k in KEYS
    )

    # one more settled transfer is below the interval (2): no snapshot 2 yet
    for store in stores:
        await store.transition(tid(CHAIN_B, 1), ("observed",), "released")
    await asyncio.sleep(0.5)
    assert all([await store.snapshot(2) is None for store in stores])
    # the second one is settled everywhere but on the lagging validator
    for store in stores:
        await store.record_scan(CHAIN_A, 102, [deposit(CHAIN_A, 2)])
    for store in stores:
        if store is not nodes[lag][1]:
            await store.transition(tid(CHAIN_A, 2), ("observed",), "refunded")
    second = await wait_snapshot(observer, 2, 2)
    assert second.prev_hash == snap.hash  # chained
    assert [c.next_nonce for c in second.cut] == [3, 2]
    assert second.leaf_count == 5
    lagging = nodes[lag][1]
    assert await lagging.snapshot(2) is None  # cannot re-derive it yet: does not sign
    assert nodes[lag][0].validator is not None
    assert nodes[lag][0].validator.address not in await observer.snapshot_signatures(second.hash)
    await lagging.transition(tid(CHAIN_A, 2), ("observed",), "refunded")
    assert (await wait_snapshot(lagging, 2, 3)).hash == second.hash
    assert (await wait_snapshot(observer, 2, 3)).hash == second.hash
    assert observer_worker.validator is None


@pytest.mark.unit
async def test_a_header_that_does_not_match_the_store_is_not_adopted(
    workers: Callable[..., Any],
) -> None:
    worker, store = await workers(0, validator=False)
    await settle(store, CHAIN_A, range(2))
    forged_root = merkle_root([(tid(CHAIN_A, 0), "released"), (tid(CHAIN_A, 1), "refunded")])
    cut = (CutEntry(CHAIN_A, VAULT_A, 2), CutEntry(CHAIN_B, VAULT_B, 0))
    h = snapshot_hash(1, forged_root, ZERO_HASH, 2, cut)
    validator = Signer(KEYS[1])
    msg = gossip.SnapshotSignature(
        seq=1,
        root="0x" + forged_root.hex(),
        prev_hash="0x" + ZERO_HASH.hex(),
        leaf_count=2,
        cut=[gossip.SnapshotCut(chain_id=c.chain_id, vault=c.vault, next_nonce=c.next_nonce)
             for c in cut],
        signer=validator.address,
        signature="0x" + validator.sign(snapshot_signing_digest(h)).hex(),
    )  # fmt: skip
    assert await worker.receive(gossip.encode(msg))  # a registered validator's signature
    outsider = Signer(bytes([9]) * 32)
    forged = msg.model_copy(
        update={
            "signer": outsider.address,
            "signature": "0x" + outsider.sign(snapshot_signing_digest(h)).hex(),
        }
    )
    assert not await worker.receive(gossip.encode(forged))  # not a validator
    claimed = forged.model_copy(update={"signer": validator.address})
    assert not await worker.receive(gossip.encode(claimed))  # signature is not theirs
    await asyncio.sleep(0.4)
    assert await store.snapshot(1) is None  # its root is not what this store derives
    assert list(await store.snapshot_signatures("0x" + h.hex())) == [validator.address]


# -- API ---------------------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, SqlBridgeStore]]:
    cfg = config_for(tmp_path)
    st = create_storage(cfg.database)
    await st.open()
    await st.migrate()
    try:
        services = build_services(cfg, st)
        yield services, create_api_app(services).test_client(), SqlBridgeStore(st)
    finally:
        await st.close()


BAD_CHECKSUM = DEPOSITOR[:-1] + "e"


@pytest.mark.unit
async def test_snapshot_api(api: tuple[Any, Any, SqlBridgeStore]) -> None:
    _, client, store = api
    r = await client.get("/api/v1/bridge/snapshots/latest")
    assert r.status_code == 404
    assert "no bridge snapshot yet" in (await r.get_json())["error"]["message"]
    await settle(store, CHAIN_A, range(3))
    cut = (CutEntry(CHAIN_A, VAULT_A, 3), CutEntry(CHAIN_B, VAULT_B, 0))
    root = merkle_root(await store.cut_states(cut))
    h = snapshot_hash(1, root, ZERO_HASH, 3, cut)
    await store.add_snapshot(
        SnapshotRecord(1, "0x" + h.hex(), "0x" + ZERO_HASH.hex(), "0x" + root.hex(), 3, cut, 1)
    )
    signer = Signer(KEYS[0])
    sig = "0x" + signer.sign(snapshot_signing_digest(h)).hex()
    await store.add_snapshot_signature("0x" + h.hex(), signer.address, sig)
    for path in ("latest", "1"):
        r = await client.get(f"/api/v1/bridge/snapshots/{path}")
        assert r.status_code == 200
        body = await r.get_json()
        assert (body["seq"], body["hash"], body["leaf_count"]) == (1, "0x" + h.hex(), 3)
        assert body["signatures"] == [{"signer": signer.address, "signature": sig}]
        assert (body["quorum"], body["signed"]) == (2, False)
        assert [(c["next_nonce"], c["last_nonce"]) for c in body["cut"]] == [(3, 2), (0, None)]
    r = await client.get(f"/api/v1/bridge/snapshots/1/proofs/{tid(CHAIN_A, 1)[2:]}")
    assert r.status_code == 400  # no 0x
    r = await client.get(f"/api/v1/bridge/snapshots/1/proofs/{tid(CHAIN_A, 1)}")
    assert r.status_code == 200
    proof = await r.get_json()
    leaf = bytes.fromhex(proof["leaf"][2:])
    siblings = [bytes.fromhex(p[2:]) for p in proof["proof"]]
    assert proof["state"] == "released"
    assert verify_proof(bytes.fromhex(proof["root"][2:]), leaf, siblings)
    assert proof["root"] == "0x" + root.hex()
    r = await client.get(f"/api/v1/bridge/snapshots/1/proofs/{tid(CHAIN_B, 0)}")
    assert r.status_code == 404
    assert "not in snapshot 1" in (await r.get_json())["error"]["message"]
    for missing in ("2", "9" * 30, "x1"):
        r = await client.get(f"/api/v1/bridge/snapshots/{missing}")
        assert r.status_code == 404, missing
    # a store that no longer gives the snapshot's root (here: a state rewritten) is a 409
    await store.db.execute(
        "UPDATE bridge_transfers SET state = 'dropped' WHERE transfer_id = ?", tid(CHAIN_A, 0)
    )
    r = await client.get(f"/api/v1/bridge/snapshots/1/proofs/{tid(CHAIN_A, 1)}")
    assert r.status_code == 409


@pytest.mark.unit
async def test_list_by_account_normalises_addresses(api: tuple[Any, Any, SqlBridgeStore]) -> None:
    _, client, store = api
    await settle(store, CHAIN_A, range(3))
    r = await client.get(f"/api/v1/bridge/transfers?account={DEPOSITOR.lower()}")
    assert len((await r.get_json())["items"]) == 3
    r = await client.get(f"/api/v1/bridge/transfers?account={RECIPIENT}&limit=2")
    page = await r.get_json()
    assert (len(page["items"]), page["next_cursor"] is not None) == (2, True)
    r = await client.get(f"/api/v1/bridge/transfers?account={BAD_CHECKSUM}")
    assert r.status_code == 422
    assert "checksum" in str(await r.get_json())


@pytest.mark.unit
async def test_initiate_returns_the_unsigned_deposit(
    api: tuple[Any, Any, SqlBridgeStore],
) -> None:
    services, client, _ = api
    good = {"dst_chain_id": CHAIN_B, "recipient": RECIPIENT.lower(), "amount": "1000"}
    r = await client.post("/api/v1/bridge/initiate", json=good)
    assert r.status_code == 503  # the runtime has not read the chain ids
    services.bridge.set_chains({CHAIN_A: VAULT_A, CHAIN_B: VAULT_B})
    r = await client.post("/api/v1/bridge/initiate", json=good)
    assert r.status_code == 200
    tx = await r.get_json()
    assert (tx["chain_id"], tx["to"], tx["value"]) == (CHAIN_A, VAULT_A, "1000")
    assert tx["data"] == "0x" + deposit_calldata(CHAIN_B, RECIPIENT).hex()
    r = await client.post("/api/v1/bridge/initiate", json={**good, "dst_chain_id": 1})
    assert r.status_code == 422
    assert "not a chain of this bridge" in (await r.get_json())["error"]["message"]
    for field, value in (
        ("amount", "0"),
        ("amount", "-1"),
        ("amount", "1.5"),
        ("amount", str(2**256)),
        ("amount", 5),
        ("recipient", "0x12"),
        ("recipient", BAD_CHECKSUM),
        ("recipient", "0x" + "00" * 20),
        ("dst_chain_id", 0),
        ("dst_chain_id", "two"),
    ):
        r = await client.post("/api/v1/bridge/initiate", json={**good, field: value})
        assert r.status_code == 422, (field, value)
        assert field in str(await r.get_json()), (field, value)
    r = await client.post("/api/v1/bridge/initiate", json={**good, "from": DEPOSITOR})
    assert r.status_code == 422
