"""The bridge store contract on both engines (SQLite unit, PostgreSQL integration), the bridge
API's 4xx answers and its pagination, the bridge config keys' errors, and /health/bridge
without a bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.bridge.service import check_bridge
from dchat_node.bridge.store import ObservedDeposit, SqlBridgeStore
from dchat_node.config import ConfigError, DatabaseConfig, parse_config
from dchat_node.lifecycle import NodeState
from dchat_node.services import build_services
from dchat_node.storage import Storage, create_storage
from tests.node.conftest import config_for

ENGINES = [
    pytest.param("sqlite", marks=pytest.mark.unit),
    pytest.param("postgresql", marks=pytest.mark.integration),
]
ALICE = "0x" + "aa" * 20
BOB = "0x" + "bb" * 20


def deposit(nonce: int, *, depositor: str = ALICE, amount: int = 2**255) -> ObservedDeposit:
    return ObservedDeposit(
        transfer_id="0x" + f"{nonce:064x}",
        src_chain_id=1,
        src_vault="0x" + "01" * 20,
        nonce=nonce,
        depositor=depositor,
        recipient=BOB,
        amount=amount,
        dst_chain_id=2,
        deadline=1_900_000_000,
        tx_hash="0x" + "cd" * 32,
        block_number=10 + nonce,
        block_hash="0x" + "ef" * 32,
    )


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        cfg = DatabaseConfig(url=f"sqlite:///{tmp_path}/b.db")
    else:
        cfg = DatabaseConfig(url=request.getfixturevalue("postgres_url"), max_connections=5)
    st = create_storage(cfg)
    await st.open()
    await st.migrate()
    try:
        yield st
    finally:
        await st.close()


async def test_scan_records_deposits_once_with_the_cursor(db: Storage) -> None:
    store = SqlBridgeStore(db)
    assert await store.cursor(1) is None
    assert await store.record_scan(1, 20, [deposit(0), deposit(1)]) == 2
    assert await store.record_scan(1, 25, [deposit(1), deposit(2)]) == 1  # 1 seen already
    assert await store.cursor(1) == 25
    rec = await store.get("0x" + f"{1:064x}")
    assert rec is not None
    assert (rec.state, rec.amount, rec.nonce, rec.final_at) == ("observed", 2**255, 1, None)
    backlog = await store.backlog()
    assert backlog.pending == 3
    assert backlog.oldest_observed_at is not None


async def test_transitions_are_compare_and_set(db: Storage) -> None:
    store = SqlBridgeStore(db)
    await store.record_scan(1, 1, [deposit(0)])
    tid = "0x" + f"{0:064x}"
    assert await store.transition(tid, ("observed",), "attesting", final_at=5)
    assert not await store.transition(tid, ("observed",), "refund_pending")  # lost the race
    results = await asyncio.gather(
        *(store.transition(tid, ("attesting",), "released") for _ in range(5))
    )
    assert sorted(results) == [False] * 4 + [True]
    rec = await store.get(tid)
    assert rec is not None
    assert (rec.state, rec.final_at) == ("released", 5)
    assert (await store.backlog()).pending == 0
    assert await store.claim_timeout(tid)
    assert not await store.claim_timeout(tid)
    with pytest.raises(ValueError, match="not settable"):
        await store.update(tid, state="x")
    with pytest.raises(ValueError, match="unknown state"):
        await store.transition(tid, ("released",), "nonsense")


async def test_signatures_by_digest_and_pagination(db: Storage) -> None:
    store = SqlBridgeStore(db)
    tid, d1, d2 = "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "03" * 32
    assert await store.add_signature(tid, "release", d1, "0xA", "0xs1")
    assert not await store.add_signature(tid, "release", d1, "0xA", "0xs1")  # duplicate
    assert await store.add_signature(tid, "release", d1, "0xB", "0xs2")
    assert await store.add_signature(tid, "release", d2, "0xC", "0xs3")  # another digest
    assert await store.add_signature(tid, "refund", d1, "0xC", "0xs4")
    assert await store.signatures(tid, "release", d1) == {"0xA": "0xs1", "0xB": "0xs2"}
    await store.record_scan(1, 9, [deposit(n, depositor=ALICE if n % 2 else BOB) for n in range(7)])
    page, more = await store.list_transfers(ALICE, None, 0, 2)
    assert [r.nonce for r in page] == [1, 3]
    assert more
    page, more = await store.list_transfers(ALICE, None, page[-1].id, 2)
    assert ([r.nonce for r in page], more) == ([5], False)
    assert len((await store.list_transfers(BOB, "observed", 0, 50))[0]) == 7  # recipient too
    assert (await store.list_transfers(None, "released", 0, 50))[0] == []


@pytest.mark.unit
async def test_api_reads_and_rejects_bad_input(tmp_path: Path) -> None:
    cfg = config_for(tmp_path)
    st = create_storage(cfg.database)
    await st.open()
    await st.migrate()
    try:
        services = build_services(cfg, st)
        await SqlBridgeStore(st).record_scan(1, 9, [deposit(n) for n in range(3)])
        client = create_api_app(services).test_client()
        tid = "0x" + f"{2:064x}"
        r = await client.get(f"/api/v1/bridge/transfers/{tid.upper().replace('0X', '0x')}")
        assert r.status_code == 200
        body = await r.get_json()
        assert body["transfer_id"] == tid
        assert body["amount"] == str(2**255)
        assert body["deadline"].startswith("2030-03-17T")
        r = await client.get("/api/v1/bridge/transfers/0x1234")
        assert r.status_code == 400
        assert "64 hex digits" in (await r.get_json())["error"]["message"]
        r = await client.get("/api/v1/bridge/transfers/0x" + "ff" * 32)
        assert r.status_code == 404
        r = await client.get("/api/v1/bridge/transfers?limit=2")
        page = await r.get_json()
        assert [x["nonce"] for x in page["items"]] == [0, 1]
        r = await client.get(f"/api/v1/bridge/transfers?limit=2&cursor={page['next_cursor']}")
        page2 = await r.get_json()
        assert ([x["nonce"] for x in page2["items"]], page2["next_cursor"]) == ([2], None)
        for bad in ("account=0x12", "state=lost", "limit=0", "cursor=zzz", "nope=1"):
            r = await client.get(f"/api/v1/bridge/transfers?{bad}")
            assert r.status_code == 422, bad
            fields = (await r.get_json())["error"]["fields"]
            assert [f["field"] for f in fields] == [bad.partition("=")[0]]
        # no bridge component: /health/bridge says disabled
        ops = create_ops_app(services, NodeState()).test_client()
        r = await ops.get("/health/bridge")
        assert r.status_code == 503
        assert (await r.get_json())["status"] == "disabled"
    finally:
        await st.close()


@pytest.mark.unit
def test_bridge_config_errors_name_the_key(tmp_path: Path) -> None:
    v = ["0x" + f"{i:040x}" for i in (1, 2, 3)]
    with pytest.raises(ConfigError, match=r"bridge\.validator_key_path is required"):
        parse_config({"bridge": {"roles": ["validator"]}}, environ={})
    with pytest.raises(ConfigError, match=r"bridge\.relayer_key_path is required"):
        parse_config({"bridge": {"roles": ["relayer"]}}, environ={})
    with pytest.raises(ConfigError, match=r"exceeds the 1 bridge\.validators"):
        parse_config({"bridge": {"validators": v[:1], "validator_quorum": 2}}, environ={})
    with pytest.raises(ConfigError, match=r"bridge\.validators lists an address twice"):
        parse_config({"bridge": {"validators": [v[0], v[0].upper().replace("0X", "0x")]}},
                     environ={})  # fmt: skip
    with pytest.raises(ConfigError, match=r"bridge\.chat_vault_address"):
        parse_config({"bridge": {"chat_vault_address": "0x12"}}, environ={})
    with pytest.raises(ConfigError, match=r"bridge\.roles"):
        parse_config({}, environ={"DCHAT_BRIDGE__ROLES": "validator,miner"})
    env = {"DCHAT_BRIDGE__VALIDATORS": ",".join(v), "DCHAT_BRIDGE__POLL_INTERVAL_SECS": "0.5"}
    cfg = parse_config({}, environ=env)
    assert (cfg.bridge.validators, cfg.bridge.poll_interval_secs) == (v, 0.5)
    assert not cfg.bridge.enabled

    # preflight: an enabled bridge needs both RPCs; key files are read, never echoed
    key = tmp_path / "validator.key"
    key.write_text("not a key, but secret-looking text")
    cfg = parse_config(
        {
            "bridge": {
                "chat_vault_address": v[0],
                "currency_vault_address": v[1],
                "validators": v,
                "roles": ["validator"],
                "validator_key_path": str(key),
            },
            "chain": {"chat_chain_rpc": "http://127.0.0.1:1"},
        },
        environ={},
    )
    problems = {p.key: p.message for p in check_bridge(cfg)}
    assert set(problems) == {"chain.currency_chain_rpc", "bridge.validator_key_path"}
    assert "secret-looking" not in str(problems)
    key.write_text("ab" * 32)
    problems = {p.key: p.message for p in check_bridge(cfg)}
    assert "is not in bridge.validators" in problems["bridge.validator_key_path"]
    half = parse_config({"bridge": {"chat_vault_address": v[0]}}, environ={})
    assert [p.key for p in check_bridge(half)] == ["bridge.currency_vault_address"]
