"""The marketplace end to end against a real EVM dev chain (anvil), on SQLite and on
PostgreSQL: purchases over the HTTP API (Quart's ASGI test client), payments as real
transactions carrying the purchase's reference, the worker checking them with the real
web3 verifier (``dchat_node.chain``), timeouts driven by a controllable clock.

Uses ``dchat_node.chain`` and the anvil harness (``tests/harness/chain.py``, the
``chain``/``anvil_factory``/``anvil`` fixtures of tests/conftest.py; ``make chain``
installs anvil and solc-js and compiles the contracts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.chain import (
    ChainClient,
    FinalityPolicy,
    Web3PaymentVerifier,
    payment_call,
)
from dchat_node.config import NodeConfig
from dchat_node.marketplace.verify import verify_marketplace
from dchat_node.marketplace.worker import MarketplaceWorker
from dchat_node.services import Services, build_services
from dchat_node.storage import open_storage
from tests.harness.chain import Anvil, load_artifact
from tests.node.conftest import config_for
from tests.node.marketplace_helpers import CONFIRM_SECS, ESCROW_SECS, PAYOUT, FakeClock, auth

pytestmark = pytest.mark.e2e

API = "/api/v1/marketplace"
CREATOR, BUYER = auth("carol"), auth("bob")
CHAIN_ID = 31337
PRICE = 10**18


@pytest.fixture(params=["sqlite", pytest.param("postgresql")])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"
    return str(request.getfixturevalue("postgres_url"))


class Shop:
    def __init__(self, node: Anvil, services: Services, clock: FakeClock) -> None:
        self.node = node
        self.services = services
        self.clock = clock
        self.client: Client = create_api_app(services).test_client()
        self.worker = MarketplaceWorker(services.marketplace, services.metrics)
        self.payer = node.accounts[1]
        self.escrow = services.config.marketplace.escrow_address

    async def listing(self, **fields: Any) -> dict[str, Any]:
        body = {"title": "Album", "price": str(PRICE), "payout_address": PAYOUT, **fields}
        r = await self.client.post(f"{API}/listings", json=body, headers=CREATOR)
        assert r.status_code == 201, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def buy(self, listing_id: int) -> dict[str, Any]:
        r = await self.client.post(
            f"{API}/purchases", json={"listing_id": listing_id}, headers=BUYER
        )
        assert r.status_code == 201, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    def send_payment(
        self,
        purchase: dict[str, Any],
        amount: int | None = None,
        *,
        to: str | None = None,
        reference: str | None = None,
    ) -> str:
        ref = bytes.fromhex((reference or purchase["reference"])[2:])
        value = int(purchase["amount"]) if amount is None else amount
        call = payment_call(to or purchase["pay_to"], value, ref, purchase["token"])
        return str(self.node.send(self.payer, call.to, value=call.value, data=call.data))

    async def submit(self, purchase_id: int, tx: str, status: int = 202) -> dict[str, Any]:
        r = await self.client.post(
            f"{API}/purchases/{purchase_id}/payment", json={"tx_hash": tx}, headers=BUYER
        )
        assert r.status_code == status, await r.get_data()
        return await r.get_json()  # type: ignore[no-any-return]

    async def get(self, purchase_id: int) -> dict[str, Any]:
        r = await self.client.get(f"{API}/purchases/{purchase_id}", headers=BUYER)
        return await r.get_json()  # type: ignore[no-any-return]

    async def settle(self) -> None:
        """One worker pass after the clock moved past the next check."""
        self.clock.advance(5)
        await self.worker.tick()

    async def verify_clean(self) -> dict[str, int]:
        report = await verify_marketplace(self.services.marketplace.store)
        assert report.problems == []
        return report.held


async def make_shop(node: Anvil, url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    config: NodeConfig = config_for(
        tmp_path,
        database={"url": url},
        marketplace={
            "escrow_address": node.accounts[9],
            "chain_id": CHAIN_ID,
            "payment_confirmation_timeout_secs": CONFIRM_SECS,
            "escrow_timeout_secs": ESCROW_SECS,
        },
    )
    storage = await open_storage(config.database)
    await storage.migrate()
    client = ChainClient(node.url, timeout_secs=2, retries=1, backoff_base_secs=0.05)
    clock = FakeClock()
    verifier = Web3PaymentVerifier(client, FinalityPolicy(confirmations=3))
    try:
        yield Shop(
            node, build_services(config, storage, clock=clock, payment_verifier=verifier), clock
        )
    finally:
        await client.aclose()
        await storage.close()


@pytest.fixture
async def shop(chain: Anvil, engine_url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    async for s in make_shop(chain, engine_url, tmp_path):
        yield s


async def test_native_purchase_end_to_end(shop: Shop) -> None:
    p = await shop.buy((await shop.listing(inventory=1))["id"])
    tx = shop.send_payment(p)
    await shop.submit(p["id"], tx)
    await shop.settle()
    assert (await shop.get(p["id"]))["state"] == "paid"  # 1 of 3 confirmations
    shop.node.mine(2)
    await shop.settle()
    got = await shop.get(p["id"])
    assert (got["state"], got["payer"]) == ("confirmed", shop.payer)
    assert await shop.verify_clean() == {f"{CHAIN_ID}:native": PRICE}
    r = await shop.client.post(f"{API}/purchases/{p['id']}/deliver", headers=CREATOR)
    assert r.status_code == 200
    shop.clock.advance(ESCROW_SECS)
    await shop.worker.tick()
    assert (await shop.get(p["id"]))["state"] == "released"
    assert await shop.verify_clean() == {f"{CHAIN_ID}:native": 0}


async def test_erc20_purchase(shop: Shop) -> None:
    token = shop.node.deploy(load_artifact("TestToken"), "Test Token", "TST")
    shop.node.erc20_mint(token, shop.payer, 1000 * 10**18)
    p = await shop.buy((await shop.listing(token=token, price=str(250 * 10**18)))["id"])
    await shop.submit(p["id"], shop.send_payment(p))
    shop.node.mine(2)
    await shop.settle()
    assert (await shop.get(p["id"]))["state"] == "confirmed"
    assert await shop.verify_clean() == {f"{CHAIN_ID}:{token}": 250 * 10**18}


@pytest.mark.parametrize("case", ["underpaid", "wrong_address", "reverted", "other_reference"])
async def test_bad_payments_are_rejected(shop: Shop, case: str) -> None:
    lst = await shop.listing()
    p = await shop.buy(lst["id"])
    if case == "underpaid":
        tx, words = shop.send_payment(p, PRICE - 1), "underpaid"
    elif case == "wrong_address":
        tx, words = shop.send_payment(p, to=shop.node.accounts[8]), "not the escrow"
    elif case == "other_reference":
        q = await shop.buy(lst["id"])
        tx, words = shop.send_payment(p, reference=q["reference"]), "reference"
    else:
        token = shop.node.deploy(load_artifact("TestToken"), "Test Token", "TST")
        p = await shop.buy((await shop.listing(token=token, price="5"))["id"])
        tx, words = shop.send_payment(p), "reverted"  # the payer holds no tokens
    await shop.submit(p["id"], tx)
    shop.node.mine(3)
    await shop.settle()
    got = await shop.get(p["id"])
    assert got["state"] == "created"
    assert got["tx_hash"] is None
    assert words in got["last_error"]


async def test_a_payment_cannot_pay_twice(shop: Shop) -> None:
    lst = await shop.listing()
    p, q = await shop.buy(lst["id"]), await shop.buy(lst["id"])
    tx = shop.send_payment(p)
    await shop.submit(p["id"], tx)
    body = await shop.submit(q["id"], tx, status=409)
    assert "already pays for another purchase" in body["error"]["message"]


async def test_payment_confirmed_after_expiry_goes_to_refund_pending(shop: Shop) -> None:
    p = await shop.buy((await shop.listing())["id"])
    shop.clock.advance(CONFIRM_SECS)
    await shop.worker.tick()
    assert (await shop.get(p["id"]))["state"] == "expired"
    await shop.submit(p["id"], shop.send_payment(p))
    shop.node.mine(2)
    await shop.settle()
    assert (await shop.get(p["id"]))["state"] == "refund_pending"
    assert await shop.verify_clean() == {f"{CHAIN_ID}:native": PRICE}


async def test_reorg_sends_a_confirmed_payment_back(shop: Shop) -> None:
    p = await shop.buy((await shop.listing())["id"])
    fork = shop.node.snapshot()
    await shop.submit(p["id"], shop.send_payment(p))
    shop.node.mine(2)
    await shop.settle()
    assert (await shop.get(p["id"]))["state"] == "confirmed"
    assert shop.node.revert(fork)
    shop.node.mine(5)
    await shop.settle()
    assert (await shop.get(p["id"]))["state"] == "payment_pending"
    assert await shop.verify_clean() == {f"{CHAIN_ID}:native": 0}


async def test_rpc_outage_during_confirmation(
    anvil_factory: Callable[..., Anvil], engine_url: str, tmp_path: Path
) -> None:
    node = anvil_factory(chain_id=CHAIN_ID)
    async for shop in make_shop(node, engine_url, tmp_path):
        p = await shop.buy((await shop.listing())["id"])
        await shop.submit(p["id"], shop.send_payment(p))
        await shop.settle()
        assert (await shop.get(p["id"]))["state"] == "paid"
        node.stop()
        await shop.settle()
        got = await shop.get(p["id"])
        assert got["state"] == "paid"
        assert "retrying" in got["last_error"]
        node.restart()
        node.mine(2)
        shop.clock.advance(60)
        await shop.worker.tick()
        got = await shop.get(p["id"])
        assert (got["state"], got["last_error"]) == ("confirmed", None)
