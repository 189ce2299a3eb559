"""Purchases driven through their whole lifecycle over the HTTP API (Quart test client) and
the marketplace worker, with a controllable clock and a scripted payment verifier (a test
double of the chain: the worker's state-machine driving is what is tested here; the real
chain is in test_marketplace_chain.py). Timeouts are reached by moving the clock."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.config import NodeConfig
from dchat_node.marketplace.payments import reference_for
from dchat_node.marketplace.verify import verify_marketplace
from dchat_node.marketplace.worker import MarketplaceWorker
from dchat_node.services import Services, build_services
from dchat_node.storage import Storage, open_storage
from tests.node.conftest import DCHAT
from tests.node.marketplace_helpers import (
    CHAIN_ID,
    CONFIRM_SECS,
    ESCROW,
    ESCROW_SECS,
    PAYOUT,
    FakeClock,
    ScriptedVerifier,
    auth,
    final,
    invalid,
    market_config,
    mined,
)

pytestmark = pytest.mark.unit

API = "/api/v1/marketplace"
CREATOR, BUYER = auth("carol"), auth("bob")
ARBITER = auth("judge", "marketplace:write marketplace:arbiter")
TX1, TX2 = "0x" + "a1" * 32, "0x" + "b2" * 32


def dchat_verify(toml: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DCHAT, "--config", str(toml), "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Market:
    def __init__(
        self, services: Services, client: Client, clock: FakeClock, chain: ScriptedVerifier
    ) -> None:
        self.services = services
        self.client = client
        self.clock = clock
        self.chain = chain
        self.worker = MarketplaceWorker(services.marketplace, services.metrics)

    async def listing(self, **fields: Any) -> dict[str, Any]:
        body = {"title": "Album", "price": "1000", "payout_address": PAYOUT, **fields}
        r = await self.client.post(f"{API}/listings", json=body, headers=CREATOR)
        assert r.status_code == 201, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def buy(self, listing_id: int) -> dict[str, Any]:
        r = await self.client.post(
            f"{API}/purchases", json={"listing_id": listing_id}, headers=BUYER
        )
        assert r.status_code == 201, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def pay(self, purchase_id: int, tx: str, status: int = 202) -> dict[str, Any]:
        r = await self.client.post(
            f"{API}/purchases/{purchase_id}/payment", json={"tx_hash": tx}, headers=BUYER
        )
        assert r.status_code == status, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def act(
        self, purchase_id: int, action: str, who: dict[str, str], status: int = 200, **body: Any
    ) -> dict[str, Any]:
        r = await self.client.post(
            f"{API}/purchases/{purchase_id}/{action}", json=body or None, headers=who
        )
        assert r.status_code == status, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def get(self, purchase_id: int) -> dict[str, Any]:
        r = await self.client.get(f"{API}/purchases/{purchase_id}", headers=BUYER)
        assert r.status_code == 200
        return await r.get_json()  # type: ignore[no-any-return]

    async def state(self, purchase_id: int) -> str:
        return str((await self.get(purchase_id))["state"])

    async def events(self, purchase_id: int) -> list[tuple[str | None, str]]:
        r = await self.client.get(f"{API}/purchases/{purchase_id}/events", headers=CREATOR)
        return [(e["from_state"], e["to_state"]) for e in (await r.get_json())["items"]]

    async def verify_clean(self) -> dict[str, int]:
        report = await verify_marketplace(self.services.marketplace.store)
        assert report.problems == []
        return report.held

    def metric(self, name: str, **labels: str) -> float:
        value = self.services.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


@pytest.fixture
def config(tmp_path: Path) -> NodeConfig:
    return market_config(tmp_path)


@pytest.fixture
async def market(config: NodeConfig) -> AsyncIterator[Market]:
    storage: Storage = await open_storage(config.database)
    await storage.migrate()
    clock, chain = FakeClock(), ScriptedVerifier()
    services = build_services(config, storage, clock=clock, payment_verifier=chain)
    try:
        yield Market(services, create_api_app(services).test_client(), clock, chain)
    finally:
        await storage.close()


async def test_full_lifecycle_to_automatic_release(market: Market) -> None:
    lst = await market.listing(inventory=2)
    p = await market.buy(lst["id"])
    assert p["state"] == "created"
    assert (p["pay_to"], p["chain_id"], p["amount"], p["token"]) == (ESCROW, CHAIN_ID, "1000", None)
    assert p["creator"] == "carol"
    assert p["buyer"] == "bob"
    assert (await (await market.client.get(f"{API}/listings/{lst['id']}")).get_json())[
        "inventory"
    ] == 1
    await market.pay(p["id"], TX1)
    assert await market.state(p["id"]) == "payment_pending"
    # not on chain yet: nothing moves
    assert (await market.worker.tick())["checked"] == 0
    assert await market.state(p["id"]) == "payment_pending"
    # the verifier was asked about this transaction, with this purchase's reference and price
    req = market.chain.requests[-1]
    assert (req.tx_hash, req.chain_id, req.pay_to, req.min_value, req.token) == (
        TX1,
        CHAIN_ID,
        ESCROW,
        1000,
        None,
    )
    assert "0x" + req.reference.hex() == p["reference"]
    # the worker only checks again after the interval
    market.chain.payments[TX1] = mined()
    await market.worker.tick()
    assert await market.state(p["id"]) == "payment_pending"
    market.clock.advance(5)
    await market.worker.tick()
    got = await market.get(p["id"])
    assert (got["state"], got["block_number"]) == ("paid", 10)
    market.chain.payments[TX1] = final()
    market.clock.advance(5)
    await market.worker.tick()
    assert await market.state(p["id"]) == "confirmed"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 1000}
    await market.act(p["id"], "deliver", CREATOR)
    # not yet: the escrow timeout runs from delivery
    market.clock.advance(ESCROW_SECS - 1)
    market.chain.payments.clear()
    await market.worker.tick()
    assert await market.state(p["id"]) == "delivered"
    market.clock.advance(1)
    assert (await market.worker.tick())["released"] == 1
    assert await market.state(p["id"]) == "released"
    assert await market.events(p["id"]) == [
        (None, "created"),
        ("created", "payment_pending"),
        ("payment_pending", "paid"),
        ("paid", "confirmed"),
        ("confirmed", "delivered"),
        ("delivered", "released"),
    ]
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 0}
    assert market.metric("marketplace_purchases_total", outcome="created") == 1
    assert market.metric("marketplace_purchases_total", outcome="released") == 1
    assert market.metric("marketplace_purchase_latency_ms_count") == 3  # buy, pay, deliver
    assert market.metric("marketplace_payment_confirmation_seconds_count") == 1


async def test_final_at_first_sight_is_paid_then_confirmed_and_buyer_releases(
    market: Market,
) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    assert await market.events(p["id"]) == [
        (None, "created"),
        ("created", "payment_pending"),
        ("payment_pending", "paid"),
        ("paid", "confirmed"),
    ]
    await market.act(p["id"], "deliver", CREATOR)
    out = await market.act(p["id"], "release", BUYER)
    assert out["state"] == "released"


async def test_expiry_restocks_and_a_late_payment_goes_to_refund_pending(market: Market) -> None:
    lst = await market.listing(inventory=1)
    p = await market.buy(lst["id"])
    market.clock.advance(CONFIRM_SECS - 1)
    assert (await market.worker.tick())["expired"] == 0
    market.clock.advance(1)
    assert (await market.worker.tick())["expired"] == 1
    assert await market.state(p["id"]) == "expired"
    listing = await (await market.client.get(f"{API}/listings/{lst['id']}")).get_json()
    assert listing["inventory"] == 1  # the unit is for sale again
    # the buyer paid anyway: the payment is watched and kept for a refund, never lost
    await market.pay(p["id"], TX1)
    assert await market.state(p["id"]) == "expired"
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    assert await market.state(p["id"]) == "refund_pending"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 1000}
    out = await market.act(p["id"], "refund", CREATOR)
    assert out["state"] == "refunded"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 0}
    assert market.metric("marketplace_purchases_total", outcome="expired") == 1
    assert market.metric("marketplace_purchases_total", outcome="refund_pending") == 1


async def test_a_payment_mined_but_not_final_at_the_deadline_expires(market: Market) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = mined()
    await market.worker.tick()
    assert await market.state(p["id"]) == "paid"
    market.clock.advance(CONFIRM_SECS)
    await market.worker.tick()
    assert await market.state(p["id"]) == "expired"
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    assert await market.state(p["id"]) == "refund_pending"


async def test_reorgs_send_paid_and_confirmed_back_to_payment_pending(market: Market) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = mined(block=10, block_hash="0xold")
    await market.worker.tick()
    assert await market.state(p["id"]) == "paid"
    # the block is gone: the transaction is unknown again
    del market.chain.payments[TX1]
    market.clock.advance(5)
    await market.worker.tick()
    got = await market.get(p["id"])
    assert (got["state"], got["block_number"]) == ("payment_pending", None)
    # re-mined and final in another block
    market.chain.payments[TX1] = final(block=11, block_hash="0xnew")
    market.clock.advance(5)
    await market.worker.tick()
    assert await market.state(p["id"]) == "confirmed"
    # then that block is orphaned too
    market.chain.orphaned.add((11, "0xnew"))
    market.clock.advance(5)
    await market.worker.tick()
    assert await market.state(p["id"]) == "payment_pending"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 0}  # paid, then reversed
    market.chain.orphaned.clear()
    market.chain.payments[TX1] = final(block=12, block_hash="0xthird")
    await market.worker.tick()
    assert await market.state(p["id"]) == "confirmed"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 1000}
    assert market.metric("marketplace_purchases_total", outcome="reorged") == 2


async def test_an_invalid_payment_is_rejected_and_its_transaction_freed(market: Market) -> None:
    lst = await market.listing()
    p = await market.buy(lst["id"])
    q = await market.buy(lst["id"])
    await market.pay(p["id"], TX1)
    # the transaction pays another purchase: p cannot use it
    market.chain.payments[TX1] = invalid("carries another purchase's reference")
    await market.worker.tick()
    got = await market.get(p["id"])
    assert got["state"] == "created"
    assert got["tx_hash"] is None
    assert got["last_error"] == "payment rejected: carries another purchase's reference"
    # ... and its rightful purchase can claim it
    await market.pay(q["id"], TX1)
    assert market.metric("marketplace_purchases_total", outcome="rejected") == 1


async def test_one_transaction_cannot_pay_two_purchases(market: Market) -> None:
    lst = await market.listing()
    p = await market.buy(lst["id"])
    q = await market.buy(lst["id"])
    await market.pay(p["id"], TX1)
    again = await market.pay(p["id"], TX1)  # the same submission again is a no-op
    assert again["state"] == "payment_pending"
    body = await market.pay(q["id"], TX1, status=409)
    assert body["error"]["message"] == f"transaction {TX1} already pays for another purchase"


async def test_chain_outage_is_a_status_with_backoff_not_a_crash(market: Market) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.down = True
    await market.worker.tick()
    got = await market.get(p["id"])
    assert got["state"] == "payment_pending"
    assert got["last_error"].startswith("currency chain unavailable, retrying:")
    assert market.metric("marketplace_chain_errors_total") == 1
    calls = len(market.chain.requests)
    # backoff: 5 s * 2 after one failure, then 20 s after two
    market.clock.advance(9)
    await market.worker.tick()
    assert len(market.chain.requests) == calls
    market.clock.advance(1)
    await market.worker.tick()
    assert len(market.chain.requests) == calls + 1
    market.clock.advance(19)
    await market.worker.tick()
    assert len(market.chain.requests) == calls + 1
    # back up: the next check clears the error and goes on
    market.chain.down = False
    market.chain.payments[TX1] = final()
    market.clock.advance(1)
    await market.worker.tick()
    got = await market.get(p["id"])
    assert (got["state"], got["last_error"]) == ("confirmed", None)
    assert market.metric("marketplace_chain_errors_total") == 2


async def test_dispute_blocks_release_until_an_arbiter_resolves(market: Market) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    await market.act(p["id"], "deliver", CREATOR)
    await market.act(p["id"], "dispute", BUYER, reason="the file is empty")
    market.clock.advance(ESCROW_SECS * 2)
    await market.worker.tick()
    assert await market.state(p["id"]) == "disputed"
    # only an arbiter resolves
    await market.act(p["id"], "resolve", CREATOR, status=403, outcome="released")
    out = await market.act(p["id"], "resolve", ARBITER, outcome="refunded", note="empty file")
    assert out["state"] == "refunded"
    assert await market.verify_clean() == {f"{CHAIN_ID}:native": 0}


async def test_undelivered_confirmed_purchase_is_refunded_after_the_escrow_timeout(
    market: Market,
) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    market.clock.advance(ESCROW_SECS)
    assert (await market.worker.tick())["refunded"] == 1
    assert await market.state(p["id"]) == "refunded"


async def test_dchat_verify_checks_the_marketplace(
    market: Market, config: NodeConfig, tmp_path: Path
) -> None:
    p = await market.buy((await market.listing())["id"])
    await market.pay(p["id"], TX1)
    market.chain.payments[TX1] = final()
    await market.worker.tick()
    env = {**os.environ, "DATABASE_URL": config.database.url}
    toml = tmp_path / "config.toml"
    toml.write_text('env = "test"\n')
    ok = await asyncio.to_thread(dchat_verify, toml, env)
    assert ok.returncode == 0, ok.stderr
    assert f"ok: marketplace, 1 purchases replay, escrow holds {CHAIN_ID}:native 1000" in ok.stdout
    db = market.services.storage
    await db.execute("UPDATE market_purchases SET state = 'released' WHERE id = ?", p["id"])
    bad = await asyncio.to_thread(dchat_verify, toml, env)
    assert bad.returncode == 1
    assert (
        f"marketplace: purchase {p['id']}: events replay to confirmed, the purchase says released"
        in bad.stderr
    )
    assert (
        f"escrow {CHAIN_ID}:native: paid - released - refunded = 1000, "
        "but purchases holding funds add up to 0" in bad.stderr
    )


async def test_reference_binds_the_purchase(market: Market) -> None:
    lst = await market.listing()
    p, q = await market.buy(lst["id"]), await market.buy(lst["id"])
    assert p["reference"] != q["reference"]
    rec = await market.services.marketplace.store.get_purchase(p["id"])
    assert rec is not None
    assert "0x" + reference_for(rec.purchase_key).hex() == p["reference"]
