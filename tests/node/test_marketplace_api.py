"""Marketplace API: every 4xx path answers with a body saying what is wrong, and the
Idempotency-Key contract of purchase creation (same body: first response again; other
body: 422; still running: 409)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.marketplace.service import IDEMPOTENCY_STALE_SECS
from dchat_node.services import Services, build_services
from dchat_node.storage import open_storage
from tests.node.marketplace_helpers import PAYOUT, FakeClock, ScriptedVerifier, auth, market_config

pytestmark = pytest.mark.unit

API = "/api/v1/marketplace"
CREATOR, BUYER, OTHER = auth("carol"), auth("bob"), auth("mallory")
TX = "0x" + "c3" * 32


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Client, Services]]:
    config = market_config(tmp_path)
    storage = await open_storage(config.database)
    await storage.migrate()
    services = build_services(
        config, storage, clock=FakeClock(), payment_verifier=ScriptedVerifier()
    )
    try:
        yield create_api_app(services).test_client(), services
    finally:
        await storage.close()


@pytest.fixture
def client(env: tuple[Client, Services]) -> Client:
    return env[0]


async def error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, await resp.get_data()
    body = await resp.get_json()
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def new_listing(client: Client, **fields: Any) -> dict[str, Any]:
    body = {"title": "Album", "price": "1000", "payout_address": PAYOUT, **fields}
    r = await client.post(f"{API}/listings", json=body, headers=CREATOR)
    assert r.status_code == 201, await r.get_data()
    return await r.get_json()  # type: ignore[no-any-return]


def field_messages(err: dict[str, Any]) -> dict[str, str]:
    return {f["field"]: f["message"] for f in err["fields"]}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"payout_address": "0xAbcdef0000000000000000000000000000000000"},
            "payout_address",
            "is not a valid EIP-55 checksummed address",
        ),
        ({"payout_address": "0x1234"}, "payout_address", "String should match pattern"),
        ({"token": "not-an-address"}, "token", "String should match pattern"),
        ({"price": "-5"}, "price", "must not be negative"),
        ({"price": -5}, "price", "must not be negative"),
        ({"price": str(2**256)}, "price", "must fit in 256 bits"),
        ({"price": "1.5"}, "price", "String should match pattern"),
        ({"inventory": -1}, "inventory", "greater than or equal to 0"),
        ({"title": ""}, "title", "at least 1 character"),
        ({"status": "delisted"}, "status", "Input should be 'active' or 'paused'"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)
async def test_create_listing_rejects_bad_fields(
    client: Client, change: dict[str, Any], field: str, message: str
) -> None:
    body = {"title": "Album", "price": "1000", "payout_address": PAYOUT, **change}
    err = await error(await client.post(f"{API}/listings", json=body, headers=CREATOR), 422)
    assert message in field_messages(err)[field]


async def test_listing_auth_and_ownership(client: Client) -> None:
    body = {"title": "Album", "price": "1", "payout_address": PAYOUT}
    err = await error(await client.post(f"{API}/listings", json=body), 401)
    assert err["code"] == "missing_token" or "token" in err["message"]
    err = await error(
        await client.post(f"{API}/listings", json=body, headers=auth("carol", "chat:write")), 403
    )
    assert "marketplace:write" in err["message"]
    lst = await new_listing(client)
    err = await error(
        await client.patch(f"{API}/listings/{lst['id']}", json={"title": "x"}, headers=OTHER), 403
    )
    assert err["message"] == f"listing {lst['id']} belongs to another creator"
    err = await error(await client.delete(f"{API}/listings/{lst['id']}", headers=OTHER), 403)
    err = await error(
        await client.patch(f"{API}/listings/999", json={"title": "x"}, headers=CREATOR), 404
    )
    assert err["message"] == "listing 999 does not exist"
    err = await error(
        await client.patch(f"{API}/listings/{lst['id']}", json={"title": None}, headers=CREATOR),
        400,
    )
    assert err["message"] == "title cannot be null"
    r = await client.delete(f"{API}/listings/{lst['id']}", headers=CREATOR)
    assert (await r.get_json())["status"] == "delisted"
    err = await error(
        await client.patch(f"{API}/listings/{lst['id']}", json={"title": "x"}, headers=CREATOR), 409
    )
    assert "delisted" in err["message"]


async def test_update_changes_only_given_fields_and_invalidates_the_cache(client: Client) -> None:
    lst = await new_listing(client, inventory=5)
    r = await client.get(f"{API}/listings/{lst['id']}")  # cached now
    assert (await r.get_json())["price"] == "1000"
    r = await client.patch(
        f"{API}/listings/{lst['id']}", json={"price": "7", "inventory": None}, headers=CREATOR
    )
    assert r.status_code == 200
    got = await (await client.get(f"{API}/listings/{lst['id']}")).get_json()
    assert (got["price"], got["inventory"], got["title"]) == ("7", None, "Album")


async def test_listing_reads(client: Client) -> None:
    err = await error(await client.get(f"{API}/listings/12345"), 404)
    assert err["message"] == "listing 12345 does not exist"
    for q, field in (
        ("cursor=abc", "cursor"),
        ("min_price=-1", "min_price"),
        ("limit=0", "limit"),
        ("token=0x12", "token"),
        ("status=gone", "status"),
    ):
        err = await error(await client.get(f"{API}/listings?{q}"), 422)
        assert field in field_messages(err)
    ids = [(await new_listing(client, title=f"t{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        r = await client.get(f"{API}/listings?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        page = await r.get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    page = await (
        await client.get(
            f"{API}/listings?q=T3&creator=carol&status=active&token=native&max_price=1000"
        )
    ).get_json()
    assert [i["title"] for i in page["items"]] == ["t3"]


async def test_purchase_errors(client: Client) -> None:
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": 999}, headers=BUYER), 404
    )
    assert err["message"] == "listing 999 does not exist"
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": 0}, headers=BUYER), 422
    )
    lst = await new_listing(client, inventory=1)
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=CREATOR), 409
    )
    assert err["message"] == "you cannot buy your own listing"
    r = await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=BUYER)
    assert r.status_code == 201
    p = await r.get_json()
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=OTHER), 409
    )
    assert err["message"] == f"listing {lst['id']} is sold out"
    paused = await new_listing(client, status="paused")
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": paused["id"]}, headers=BUYER), 409
    )
    assert err["message"] == f"listing {paused['id']} is not for sale (not active)"
    # someone else's purchase is not there
    err = await error(await client.get(f"{API}/purchases/{p['id']}", headers=OTHER), 404)
    assert err["message"] == f"purchase {p['id']} does not exist"
    err = await error(await client.get(f"{API}/purchases/{p['id']}"), 401)
    # wrong transitions
    err = await error(await client.post(f"{API}/purchases/{p['id']}/deliver", headers=CREATOR), 409)
    assert err["message"] == "a purchase in state created cannot move to delivered"
    err = await error(await client.post(f"{API}/purchases/{p['id']}/release", headers=BUYER), 409)
    err = await error(
        await client.post(
            f"{API}/purchases/{p['id']}/dispute", json={"reason": "x"}, headers=BUYER
        ),
        409,
    )
    err = await error(
        await client.post(
            f"{API}/purchases/{p['id']}/resolve", json={"outcome": "released"}, headers=BUYER
        ),
        403,
    )
    assert "marketplace:arbiter" in err["message"]
    # payments: the buyer's only, a real hash
    err = await error(
        await client.post(
            f"{API}/purchases/{p['id']}/payment", json={"tx_hash": TX}, headers=CREATOR
        ),
        403,
    )
    assert err["message"] == "only the buyer submits the payment of a purchase"
    err = await error(
        await client.post(
            f"{API}/purchases/{p['id']}/payment", json={"tx_hash": "0x12"}, headers=BUYER
        ),
        422,
    )
    assert "tx_hash" in field_messages(err)
    r = await client.post(f"{API}/purchases/{p['id']}/payment", json={"tx_hash": TX}, headers=BUYER)
    assert r.status_code == 202
    # a buyer cannot do the creator's part
    err = await error(await client.post(f"{API}/purchases/{p['id']}/refund", headers=BUYER), 409)


async def test_wrong_party_for_a_known_transition_is_403(env: tuple[Client, Services]) -> None:
    client, services = env
    lst = await new_listing(client)
    p = await (
        await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=BUYER)
    ).get_json()
    await client.post(f"{API}/purchases/{p['id']}/payment", json={"tx_hash": TX}, headers=BUYER)
    from tests.node.marketplace_helpers import final

    chain = services.marketplace.verifier
    assert isinstance(chain, ScriptedVerifier)
    chain.payments[TX] = final()
    from dchat_node.marketplace.worker import MarketplaceWorker

    await MarketplaceWorker(services.marketplace).tick()
    err = await error(await client.post(f"{API}/purchases/{p['id']}/deliver", headers=BUYER), 403)
    assert err["message"] == "only the creator may move a purchase from confirmed to delivered"


async def test_purchases_without_payment_config_are_503(tmp_path: Path) -> None:
    config = market_config(tmp_path, escrow_address=None)
    storage = await open_storage(config.database)
    await storage.migrate()
    try:
        client = create_api_app(build_services(config, storage)).test_client()
        lst = await new_listing(client)
        err = await error(
            await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=BUYER),
            503,
        )
        assert "marketplace.escrow_address" in err["message"]
    finally:
        await storage.close()


async def test_idempotency_key_same_body_replays(client: Client) -> None:
    lst = await new_listing(client)
    headers = {**BUYER, "Idempotency-Key": "order-1"}
    first = await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=headers)
    second = await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert await first.get_json() == await second.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    listed = await (await client.get(f"{API}/purchases", headers=BUYER)).get_json()
    assert len(listed["items"]) == 1
    # keys belong to their user: another buyer's same key is a new purchase
    other = await client.post(
        f"{API}/purchases",
        json={"listing_id": lst["id"]},
        headers={**OTHER, "Idempotency-Key": "order-1"},
    )
    assert other.status_code == 201
    assert (await other.get_json())["id"] != (await first.get_json())["id"]


async def test_idempotency_key_other_body_is_422(client: Client) -> None:
    a, b = await new_listing(client), await new_listing(client)
    headers = {**BUYER, "Idempotency-Key": "order-2"}
    assert (
        await client.post(f"{API}/purchases", json={"listing_id": a["id"]}, headers=headers)
    ).status_code == 201
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": b["id"]}, headers=headers), 422
    )
    assert err["message"] == "this Idempotency-Key was already used with a different request body"


async def test_idempotency_key_stores_a_4xx_too(client: Client) -> None:
    headers = {**BUYER, "Idempotency-Key": "order-3"}
    for _ in range(2):
        err = await error(
            await client.post(f"{API}/purchases", json={"listing_id": 4242}, headers=headers), 404
        )
        assert err["message"] == "listing 4242 does not exist"


async def test_idempotency_key_in_progress_is_409(env: tuple[Client, Services]) -> None:
    client, services = env
    lst = await new_listing(client)
    # another request holds the key (claimed, no response yet)
    import hashlib
    import json

    digest = hashlib.sha256(
        json.dumps({"listing_id": lst["id"]}, sort_keys=True).encode()
    ).hexdigest()
    market = services.marketplace
    assert await market.store.claim_idempotency("bob", "order-4", digest, market.now_us()) is None
    headers = {**BUYER, "Idempotency-Key": "order-4"}
    err = await error(
        await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=headers), 409
    )
    assert err["message"] == "a request with this Idempotency-Key is still in progress, retry later"
    # the claim's request never answered (its process died): once stale, a retry of the
    # same request takes the key over
    clock = services.marketplace.clock
    assert isinstance(clock, FakeClock)
    clock.advance(IDEMPOTENCY_STALE_SECS)
    r = await client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=headers)
    assert r.status_code == 201, await r.get_data()


async def test_concurrent_duplicates_make_one_purchase(client: Client) -> None:
    lst = await new_listing(client)
    headers = {**BUYER, "Idempotency-Key": "order-5"}
    results = await asyncio.gather(
        *(
            client.post(f"{API}/purchases", json={"listing_id": lst["id"]}, headers=headers)
            for _ in range(6)
        )
    )
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    ids = {(await r.get_json())["id"] for r in results if r.status_code == 201}
    assert len(ids) == 1
    listed = await (await client.get(f"{API}/purchases", headers=BUYER)).get_json()
    assert len(listed["items"]) == 1


async def test_bad_idempotency_key_is_400(client: Client) -> None:
    lst = await new_listing(client)
    for key in ("x" * 201, "has space"):
        err = await error(
            await client.post(
                f"{API}/purchases",
                json={"listing_id": lst["id"]},
                headers={**BUYER, "Idempotency-Key": key},
            ),
            400,
        )
        assert err["message"] == "Idempotency-Key must be 1 to 200 visible ASCII characters"
