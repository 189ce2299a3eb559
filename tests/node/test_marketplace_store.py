"""The marketplace store contract on both engines: SQLite (temp file, unit) and PostgreSQL
(the harness's real server, a fresh database per test, integration)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dchat_node.config import DatabaseConfig
from dchat_node.marketplace.states import Actor, Entry, State
from dchat_node.marketplace.store import (
    ListingFilter,
    ListingRecord,
    Move,
    NewPurchase,
    PurchaseRecord,
    ReserveFailed,
    SqlMarketplaceStore,
)
from dchat_node.marketplace.verify import verify_marketplace
from dchat_node.storage import Conflict, Storage, create_storage

ENGINES = [
    pytest.param("sqlite", marks=pytest.mark.unit),
    pytest.param("postgresql", marks=pytest.mark.integration),
]
PAYOUT = "0x" + "11" * 20
ESCROW = "0x" + "22" * 20
TOKEN = "0x" + "33" * 20
BIG = 2**256 - 1
TX = "0x" + "ab" * 32


@pytest.fixture(params=ENGINES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        cfg = DatabaseConfig(url=f"sqlite:///{tmp_path}/m.db")
    else:
        cfg = DatabaseConfig(url=request.getfixturevalue("postgres_url"), max_connections=5)
    st = create_storage(cfg)
    await st.open()
    await st.migrate()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
def store(db: Storage) -> SqlMarketplaceStore:
    return SqlMarketplaceStore(db)


async def listing(
    store: SqlMarketplaceStore,
    *,
    creator: str = "carol",
    title: str = "A song",
    price: int = 1000,
    token: str | None = None,
    inventory: int | None = None,
    description: str = "",
) -> ListingRecord:
    return await store.create_listing(
        creator=creator,
        title=title,
        description=description,
        price=price,
        token=token,
        payout_address=PAYOUT,
        inventory=inventory,
        status="active",
        now_us=1_000,
    )


async def purchase(store: SqlMarketplaceStore, listing_id: int, key: str = "k1") -> PurchaseRecord:
    return await store.create_purchase(
        NewPurchase(key, listing_id, "bob", 31337, ESCROW, expires_at_us=10_000, now_us=2_000)
    )


async def test_listing_round_trip_with_a_uint256_price(store: SqlMarketplaceStore) -> None:
    rec = await listing(store, price=BIG, token=TOKEN, inventory=3)
    assert rec.price == BIG
    got = await store.get_listing(rec.id)
    assert got == rec
    assert (got.token, got.inventory, got.status, got.version) == (TOKEN, 3, "active", 1)
    assert await store.get_listing(rec.id + 1000) is None


async def test_update_and_delist(store: SqlMarketplaceStore) -> None:
    rec = await listing(store)
    up = await store.update_listing(rec.id, {"title": "B", "price": 5, "inventory": None}, 3_000)
    assert up is not None
    assert (up.title, up.price, up.inventory, up.version, up.updated_at_us) == (
        "B",
        5,
        None,
        2,
        3_000,
    )
    gone = await store.update_listing(rec.id, {"status": "delisted"}, 4_000)
    assert gone is not None
    assert gone.status == "delisted"
    # a delisted listing never changes again
    assert await store.update_listing(rec.id, {"title": "C"}, 5_000) is None


async def test_filters_and_cursor_pages(store: SqlMarketplaceStore) -> None:
    a = await listing(store, creator="carol", title="Blue 50% off_sale", price=10)
    b = await listing(store, creator="dave", title="Red", price=2 * 10**30, token=TOKEN)
    c = await listing(store, creator="carol", title="Green", price=300, description="BLUE-ish")
    await store.update_listing(c.id, {"status": "paused"}, 3_000)

    async def ids(**kw: object) -> list[int]:
        return [r.id for r in await store.list_listings(ListingFilter(**kw), 0, 50)]  # type: ignore[arg-type]

    assert await ids() == [a.id, b.id, c.id]
    assert await ids(creator="carol") == [a.id, c.id]
    assert await ids(status="paused") == [c.id]
    assert await ids(token="native") == [a.id, c.id]
    assert await ids(token=TOKEN) == [b.id]
    assert await ids(min_price=11) == [b.id, c.id]
    assert await ids(max_price=300) == [a.id, c.id]
    assert await ids(min_price=10**30, max_price=BIG) == [b.id]
    assert await ids(text="blue") == [a.id, c.id]  # title or description, any case
    assert await ids(text="50%") == [a.id]  # LIKE wildcards are literal
    assert await ids(text="ff%s") == []  # would match "off_sale" as a wildcard
    assert await ids(text="o_f") == []  # would match "off" as a wildcard
    assert await ids(text="off_") == [a.id]
    first = await store.list_listings(ListingFilter(), 0, 2)
    rest = await store.list_listings(ListingFilter(), first[-1].id, 2)
    assert [r.id for r in first + rest] == [a.id, b.id, c.id]


async def test_inventory_is_reserved_atomically_and_never_below_zero(
    store: SqlMarketplaceStore,
) -> None:
    rec = await listing(store, inventory=3)
    results = await asyncio.gather(
        *(purchase(store, rec.id, key=f"k{i}") for i in range(8)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, PurchaseRecord)]
    failed = [r for r in results if isinstance(r, ReserveFailed)]
    assert len(made) == 3
    assert [f.why for f in failed] == ["sold_out"] * 5
    after = await store.get_listing(rec.id)
    assert after is not None
    assert after.inventory == 0
    assert made[0].amount == 1000
    assert made[0].state == State.CREATED
    assert (await store.events(made[0].id))[0].target == State.CREATED


async def test_reserve_failures_say_why(store: SqlMarketplaceStore) -> None:
    with pytest.raises(ReserveFailed) as info:
        await purchase(store, 999)
    assert info.value.why == "missing"
    rec = await listing(store)
    await store.update_listing(rec.id, {"status": "paused"}, 3_000)
    with pytest.raises(ReserveFailed) as info:
        await purchase(store, rec.id)
    assert info.value.why == "inactive"
    unlimited = await listing(store)
    for i in range(3):
        await purchase(store, unlimited.id, key=f"u{i}")
    got = await store.get_listing(unlimited.id)
    assert got is not None
    assert got.inventory is None


async def test_transitions_are_compare_and_set(store: SqlMarketplaceStore) -> None:
    rec = await listing(store)
    p = await purchase(store, rec.id)
    pay = Move(State.PAYMENT_PENDING, Actor.BUYER, "pay", {"tx_hash": TX})
    racers = await asyncio.gather(*(store.transition(p, [pay], 3_000) for _ in range(4)))
    winners = [r for r in racers if r is not None]
    assert len(winners) == 1
    assert winners[0].tx_hash == TX
    assert winners[0].version == p.version + 1
    events = await store.events(p.id)
    assert [(e.seq, e.source, e.target) for e in events] == [
        (1, None, State.CREATED),
        (2, State.CREATED, State.PAYMENT_PENDING),
    ]
    # the stale record loses
    assert await store.transition(p, [pay], 3_000) is None


async def test_one_transaction_pays_for_one_purchase(store: SqlMarketplaceStore) -> None:
    rec = await listing(store)
    p1 = await purchase(store, rec.id, "k1")
    p2 = await purchase(store, rec.id, "k2")
    pay = Move(State.PAYMENT_PENDING, Actor.BUYER, "pay", {"tx_hash": TX})
    assert await store.transition(p1, [pay], 3_000) is not None
    with pytest.raises(Conflict):
        await store.transition(p2, [pay], 3_000)
    # nothing of the failed transition was written
    assert [e.seq for e in await store.events(p2.id)] == [1]
    again = await store.get_purchase(p2.id)
    assert again == p2


async def test_ledger_follows_the_transitions_and_verify_balances(
    store: SqlMarketplaceStore,
) -> None:
    rec = await listing(store, price=7)
    p = await purchase(store, rec.id)
    s = State
    p2 = await store.transition(
        p,
        [
            Move(s.PAYMENT_PENDING, Actor.BUYER, "pay", {"tx_hash": TX}),
            Move(s.PAID, Actor.SYSTEM, "seen", {"block_number": 5, "block_hash": "0x01"}),
            Move(s.CONFIRMED, Actor.SYSTEM, "final", {"confirmed_at": 4_000}),
        ],
        4_000,
    )
    assert p2 is not None
    report = await verify_marketplace(store)
    assert report.problems == []
    assert report.held == {"31337:native": 7}
    p3 = await store.transition(p2, [Move(s.DELIVERED, Actor.CREATOR, "d")], 5_000)
    assert p3 is not None
    p4 = await store.transition(p3, [Move(s.RELEASED, Actor.BUYER, "ok")], 6_000)
    assert p4 is not None
    ledger = await store.ledger_of([p.id])
    assert [(e.seq, e.entry, e.amount, e.tx_hash) for e in ledger] == [
        (4, Entry.PAID, 7, TX),
        (6, Entry.RELEASED, 7, TX),
    ]
    report = await verify_marketplace(store)
    assert report.problems == []
    assert report.held == {"31337:native": 0}
    assert report.purchases == 1


async def test_verify_finds_tampering(db: Storage, store: SqlMarketplaceStore) -> None:
    rec = await listing(store, price=7)
    p = await purchase(store, rec.id, "k1")
    q = await purchase(store, rec.id, "k2")
    p2 = await store.transition(
        p,
        [
            Move(State.PAYMENT_PENDING, Actor.BUYER, "pay", {"tx_hash": TX}),
            Move(State.PAID, Actor.SYSTEM, "seen"),
            Move(State.CONFIRMED, Actor.SYSTEM, "final"),
        ],
        4_000,
    )
    assert p2 is not None
    # someone edits rows behind the state machine's back
    await db.execute("UPDATE market_purchases SET state = 'released' WHERE id = ?", q.id)
    await db.execute(
        "INSERT INTO market_escrow_ledger (purchase_id, seq, currency, entry, amount, chain_id, "
        "tx_hash, created_at) VALUES (?, 9, '31337:native', 'paid', ?, 31337, ?, 1)",
        q.id,
        "0" * 77 + "7",
        TX,
    )
    report = await verify_marketplace(store)
    assert (
        f"purchase {q.id}: events replay to created, the purchase says released" in report.problems
    )
    assert any(
        msg.startswith(f"purchase {q.id}: escrow ledger [#9 paid 7]") for msg in report.problems
    )
    assert (
        "escrow 31337:native: paid - released - refunded = 14, "
        "but purchases holding funds add up to 7" in report.problems
    )
    assert f"payment {TX} on chain 31337 is booked for 2 purchases" in report.problems


async def test_overdue_and_due_queries(store: SqlMarketplaceStore) -> None:
    rec = await listing(store)
    p = await purchase(store, rec.id)
    assert [r.id for r in await store.overdue([State.CREATED], "expires_at", 9_999, 10)] == []
    assert [r.id for r in await store.overdue([State.CREATED], "expires_at", 10_000, 10)] == [p.id]
    assert await store.due_purchases([State.CREATED], 10**9, 10) == []  # no transaction yet
    p2 = await store.annotate(p, {"tx_hash": TX, "next_check_at": 50}, 3_000)
    assert p2 is not None
    assert await store.due_purchases([State.CREATED], 49, 10) == []
    assert [r.id for r in await store.due_purchases([State.CREATED], 50, 10)] == [p.id]
    assert await store.annotate(p, {"last_error": "x"}, 3_000) is None  # stale version
    with pytest.raises(ValueError, match="not a deadline column"):
        await store.overdue([State.CREATED], "buyer", 1, 1)


async def test_restock_on_expiry(store: SqlMarketplaceStore) -> None:
    rec = await listing(store, inventory=1)
    p = await purchase(store, rec.id)
    with pytest.raises(ReserveFailed):
        await purchase(store, rec.id, "k2")
    out = await store.transition(
        p, [Move(State.EXPIRED, Actor.SYSTEM, "late")], 20_000, restock=True
    )
    assert out is not None
    got = await store.get_listing(rec.id)
    assert got is not None
    assert got.inventory == 1


async def test_idempotency_claims(store: SqlMarketplaceStore) -> None:
    assert await store.claim_idempotency("bob", "key-1", "h1", 1) is None
    seen = await store.claim_idempotency("bob", "key-1", "h1", 2)
    assert seen is not None
    assert (seen.request_hash, seen.status, seen.body) == ("h1", None, None)
    await store.finish_idempotency("bob", "key-1", 201, '{"id": 1}')
    seen = await store.claim_idempotency("bob", "key-1", "h2", 3)
    assert seen is not None
    assert (seen.request_hash, seen.status, seen.body) == ("h1", 201, '{"id": 1}')
    # keys are per principal
    assert await store.claim_idempotency("alice", "key-1", "h2", 3) is None
    # a dropped claim can be claimed again; a finished one is never dropped
    await store.drop_idempotency("alice", "key-1")
    assert await store.claim_idempotency("alice", "key-1", "h3", 4) is None
    await store.drop_idempotency("bob", "key-1")
    assert await store.claim_idempotency("bob", "key-1", "h1", 5) is not None
    # a claim left without a response is taken over once stale, by the same request only,
    # and by one of concurrent retries
    assert await store.claim_idempotency("zed", "k", "h", 100) is None
    assert (await store.claim_idempotency("zed", "k", "h", 200, stale_before_us=99)) is not None
    assert (
        await store.claim_idempotency("zed", "k", "other", 200, stale_before_us=100)
    ) is not None
    retries = await asyncio.gather(
        *(store.claim_idempotency("zed", "k", "h", 300, stale_before_us=100) for _ in range(4))
    )
    assert sum(r is None for r in retries) == 1
    await store.finish_idempotency("zed", "k", 201, "{}")
    done = await store.claim_idempotency("zed", "k", "h", 10**9, stale_before_us=10**9)
    assert done is not None
    assert done.status == 201
    # concurrent claims: exactly one wins
    results = await asyncio.gather(*(store.claim_idempotency("eve", "k", "h", 6) for _ in range(5)))
    assert sum(r is None for r in results) == 1
