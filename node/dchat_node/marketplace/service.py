"""Marketplace rules: listings, escrowed purchases, idempotent purchase creation.

Design:
- ``MarketplaceService`` talks only to a ``MarketplaceStore`` and raises
  ``services.errors`` (404 unknown, 409 wrong state or lost race, 403 not yours, 503
  payments not configured); the API turns records into responses.
- Time comes from an injectable ``Clock`` (``now()``: seconds since the epoch), so tests
  drive the payment deadline and the escrow timeout without sleeping. Latency metrics use
  the process's monotonic clock.
- Listing reads by id go through an LRU cache of ``marketplace.cache_size`` records (0:
  off), dropped for a listing on every write to it through this service (update, delist,
  a purchase reserving a unit, an expiry giving it back). The cache is per process: another
  replica's writes are seen once this process writes the listing or evicts it; purchases
  never read inventory from it (the reservation is one conditional UPDATE in the database).
- Purchases: the buyer creates one (a unit of inventory is reserved, the amount, currency
  and parties are fixed, the payment deadline is now + ``payment_confirmation_timeout_secs``)
  and gets the escrow address and the purchase's 32-byte reference; the buyer sends a
  transaction carrying the reference, then submits its hash (``submit_payment``); the
  ``MarketplaceWorker`` (``worker.py``) polls the chain for it. Every state change is a
  compare-and-set transition (``store.transition``) checked against ``states.TRANSITIONS``
  for the acting party: the buyer, the listing's creator, an arbiter (token scope
  ``marketplace:arbiter``) or the node itself.
- Release and refund are transitions of the escrow ledger recorded in the database; paying
  the creator or the buyer out on chain is not part of this service.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from eth_utils.address import to_checksum_address

from dchat_node.config import ConfigProblem, MarketplaceConfig, NodeConfig
from dchat_node.marketplace.payments import PaymentVerifier, reference_for
from dchat_node.marketplace.states import Actor, State, TransitionError, check
from dchat_node.marketplace.store import (
    IdempotencyRow,
    ListingFilter,
    ListingRecord,
    MarketplaceStore,
    Move,
    NewPurchase,
    PurchaseRecord,
    ReserveFailed,
)
from dchat_node.observability.metrics import MarketplaceMetrics
from dchat_node.services.errors import AlreadyExists, DomainError, NotFound, Unavailable
from dchat_node.storage.errors import Conflict

log = logging.getLogger("dchat_node.marketplace")

US = 1_000_000
# a claimed Idempotency-Key without a response after this long belongs to a request whose
# process died: a retry of the same request takes it over (far above any request timeout)
IDEMPOTENCY_STALE_SECS = 600


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class WrongState(DomainError):
    status = 409
    code = "conflict"


class IdempotencyMismatch(DomainError):
    status = 422
    code = "idempotency_key_reused"


class IdempotencyInProgress(DomainError):
    status = 409
    code = "idempotency_key_in_progress"


@dataclass(frozen=True, slots=True)
class Party:
    """Who is asking: the token's subject, and whether it holds the arbiter scope."""

    subject: str
    arbiter: bool = False


class ListingCache:
    """A bounded LRU of listing records by id (``size`` 0 keeps nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, ListingRecord] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, listing_id: int) -> ListingRecord | None:
        rec = self._items.get(listing_id)
        if rec is None:
            self.misses += 1
            return None
        self._items.move_to_end(listing_id)
        self.hits += 1
        return rec

    def put(self, rec: ListingRecord) -> None:
        if self.size <= 0:
            return
        self._items[rec.id] = rec
        self._items.move_to_end(rec.id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, listing_id: int) -> None:
        self._items.pop(listing_id, None)

    def __len__(self) -> int:
        return len(self._items)


def check_marketplace(config: NodeConfig) -> list[ConfigProblem]:
    """Startup checks the config model cannot make alone: the escrow address's EIP-55
    checksum (a mixed-case address with a wrong checksum is a typo)."""
    from dchat_node.marketplace.models import checksummed

    address = config.marketplace.escrow_address
    if address is None:
        return []
    try:
        checksummed(address)
    except ValueError as exc:
        return [ConfigProblem("marketplace.escrow_address", f"{address} {exc}", "startup")]
    return []


def _us(seconds: float) -> int:
    return int(seconds * US)


class MarketplaceService:
    def __init__(
        self,
        store: MarketplaceStore,
        config: MarketplaceConfig,
        metrics: MarketplaceMetrics,
        *,
        clock: Clock | None = None,
        verifier: PaymentVerifier | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.clock: Clock = clock or SystemClock()
        self.verifier = verifier
        self.cache = ListingCache(config.cache_size)

    def now_us(self) -> int:
        return _us(self.clock.now())

    @property
    def payments_enabled(self) -> bool:
        c = self.config
        return self.verifier is not None and c.escrow_address is not None and c.chain_id is not None

    # -- listings ------------------------------------------------------------------------
    async def create_listing(self, creator: str, fields: dict[str, Any]) -> ListingRecord:
        rec = await self.store.create_listing(
            creator=creator,
            title=fields["title"],
            description=fields.get("description", ""),
            price=int(fields["price"]),
            token=fields.get("token"),
            payout_address=fields["payout_address"],
            inventory=fields.get("inventory"),
            status=fields.get("status", "active"),
            now_us=self.now_us(),
        )
        self.cache.put(rec)
        return rec

    async def get_listing(self, listing_id: int) -> ListingRecord:
        rec = self.cache.get(listing_id)
        if rec is None:
            rec = await self.store.get_listing(listing_id)
            if rec is None:
                raise NotFound(f"listing {listing_id} does not exist")
            self.cache.put(rec)
        return rec

    async def _own_listing(self, user: str, listing_id: int) -> ListingRecord:
        rec = await self.store.get_listing(listing_id)
        if rec is None:
            raise NotFound(f"listing {listing_id} does not exist")
        if rec.creator != user:
            raise Forbidden(f"listing {listing_id} belongs to another creator")
        if rec.status == "delisted":
            raise WrongState(f"listing {listing_id} is delisted and can no longer change")
        return rec

    async def update_listing(
        self, user: str, listing_id: int, changes: dict[str, Any]
    ) -> ListingRecord:
        await self._own_listing(user, listing_id)
        if "price" in changes and changes["price"] is not None:
            changes = {**changes, "price": int(changes["price"])}
        self.cache.drop(listing_id)
        rec = await self.store.update_listing(listing_id, changes, self.now_us())
        if rec is None:  # delisted meanwhile
            raise WrongState(f"listing {listing_id} is delisted and can no longer change")
        self.cache.put(rec)
        return rec

    async def delist(self, user: str, listing_id: int) -> ListingRecord:
        return await self.update_listing(user, listing_id, {"status": "delisted"})

    async def list_listings(
        self, flt: ListingFilter, after_id: int, limit: int
    ) -> tuple[list[ListingRecord], bool]:
        rows = await self.store.list_listings(flt, after_id, limit + 1)
        return rows[:limit], len(rows) > limit

    # -- purchases -----------------------------------------------------------------------
    def _timed(self, start: float) -> None:
        self.metrics.purchase_latency_ms.observe((time.perf_counter() - start) * 1000)

    def reference(self, purchase: PurchaseRecord) -> bytes:
        return reference_for(purchase.purchase_key)

    async def create_purchase(self, buyer: str, listing_id: int) -> PurchaseRecord:
        start = time.perf_counter()
        cfg = self.config
        if not self.payments_enabled or cfg.escrow_address is None or cfg.chain_id is None:
            raise Unavailable(
                "purchases are disabled on this node: payments need marketplace.escrow_address, "
                "marketplace.chain_id and chain.currency_chain_rpc"
            )
        now = self.now_us()
        listing = await self.get_listing(listing_id)
        if listing.creator == buyer:
            raise WrongState("you cannot buy your own listing")
        try:
            purchase = await self.store.create_purchase(
                NewPurchase(
                    purchase_key=uuid.uuid4().hex,
                    listing_id=listing_id,
                    buyer=buyer,
                    chain_id=cfg.chain_id,
                    pay_to=to_checksum_address(cfg.escrow_address),
                    expires_at_us=now + _us(cfg.payment_confirmation_timeout_secs),
                    now_us=now,
                )
            )
        except ReserveFailed as exc:
            self.cache.drop(listing_id)
            if exc.why == "missing":
                raise NotFound(f"listing {listing_id} does not exist") from None
            if exc.why == "inactive":
                raise WrongState(f"listing {listing_id} is not for sale (not active)") from None
            raise WrongState(f"listing {listing_id} is sold out") from None
        if listing.inventory is not None:
            self.cache.drop(listing_id)
        self.metrics.purchases.labels(outcome="created").inc()
        self._timed(start)
        return purchase

    async def get_purchase(self, party: Party, purchase_id: int) -> PurchaseRecord:
        rec = await self.store.get_purchase(purchase_id)
        # another user's purchase is as unknown as a missing one
        if rec is None or not (party.arbiter or party.subject in (rec.buyer, rec.creator)):
            raise NotFound(f"purchase {purchase_id} does not exist")
        return rec

    async def list_purchases(
        self, party: Party, after_id: int, limit: int
    ) -> tuple[list[PurchaseRecord], bool]:
        rows = await self.store.list_purchases(party.subject, after_id, limit + 1)
        return rows[:limit], len(rows) > limit

    async def submit_payment(self, party: Party, purchase_id: int, tx_hash: str) -> PurchaseRecord:
        """The buyer names the transaction that pays the purchase: ``created`` ->
        ``payment_pending`` (the worker checks it from now on). On an expired purchase the
        transaction is recorded and checked too: if it pays, the purchase goes to
        refund_pending. Submitting the same transaction again is a no-op."""
        start = time.perf_counter()
        rec = await self.get_purchase(party, purchase_id)
        if rec.buyer != party.subject:
            raise Forbidden("only the buyer submits the payment of a purchase")
        tx_hash = tx_hash.lower()
        if rec.tx_hash == tx_hash:
            return rec
        now = self.now_us()
        updates = {"tx_hash": tx_hash, "next_check_at": now, "last_error": None}
        try:
            if rec.state == State.EXPIRED and rec.tx_hash is None:
                out = await self.store.annotate(rec, updates, now)
            else:
                out = await self._move(
                    rec, State.PAYMENT_PENDING, Actor.BUYER, "payment submitted", updates
                )
        except Conflict:
            raise AlreadyExists(
                f"transaction {tx_hash} already pays for another purchase"
            ) from None
        if out is None:
            raise WrongState(f"purchase {purchase_id} changed meanwhile, retry")
        self._timed(start)
        return out

    async def _move(
        self,
        rec: PurchaseRecord,
        target: State,
        actor: Actor,
        reason: str,
        updates: dict[str, Any] | None = None,
    ) -> PurchaseRecord | None:
        try:
            check(rec.state, target, actor)
        except TransitionError as exc:
            raise (Forbidden if exc.forbidden_actor else WrongState)(exc.message) from None
        out = await self.store.transition(
            rec, [Move(target, actor, reason, updates or {})], self.now_us()
        )
        if out is not None:
            self.count(target)
        return out

    def count(self, target: State) -> None:
        if target in (State.RELEASED, State.REFUNDED, State.EXPIRED, State.REFUND_PENDING,
                      State.DISPUTED, State.CONFIRMED):  # fmt: skip
            self.metrics.purchases.labels(outcome=target.value).inc()

    async def _act(
        self,
        party: Party,
        purchase_id: int,
        target: State,
        reason: str,
        updates: Callable[[], dict[str, Any]] | None = None,
    ) -> PurchaseRecord:
        start = time.perf_counter()
        rec = await self.get_purchase(party, purchase_id)
        if party.arbiter and party.subject not in (rec.buyer, rec.creator):
            actor = Actor.ARBITER
        elif party.subject == rec.buyer:
            actor = Actor.BUYER
        else:
            actor = Actor.CREATOR
        if (
            party.arbiter
            and actor != Actor.ARBITER
            and (rec.state, target)
            in {(State.DISPUTED, State.RELEASED), (State.DISPUTED, State.REFUNDED)}
        ):
            raise Forbidden("an arbiter cannot resolve a dispute over their own purchase")
        out = await self._move(rec, target, actor, reason, updates() if updates else None)
        if out is None:
            raise WrongState(f"purchase {purchase_id} changed meanwhile, retry")
        self._timed(start)
        return out

    async def deliver(self, party: Party, purchase_id: int) -> PurchaseRecord:
        now = self.now_us()
        return await self._act(
            party, purchase_id, State.DELIVERED, "delivered", lambda: {"delivered_at": now}
        )

    async def release(self, party: Party, purchase_id: int) -> PurchaseRecord:
        return await self._act(party, purchase_id, State.RELEASED, "accepted by the buyer")

    async def dispute(self, party: Party, purchase_id: int, reason: str) -> PurchaseRecord:
        return await self._act(party, purchase_id, State.DISPUTED, reason)

    async def refund(self, party: Party, purchase_id: int) -> PurchaseRecord:
        return await self._act(party, purchase_id, State.REFUNDED, "refunded")

    async def resolve(
        self, party: Party, purchase_id: int, outcome: str, note: str
    ) -> PurchaseRecord:
        if not party.arbiter:
            raise Forbidden("resolving a dispute needs the marketplace:arbiter scope")
        rec = await self.get_purchase(party, purchase_id)
        if rec.state != State.DISPUTED:
            raise WrongState(f"purchase {purchase_id} is {rec.state}, not disputed")
        return await self._act(party, purchase_id, State(outcome), note or f"dispute {outcome}")

    async def events(self, party: Party, purchase_id: int) -> list[Any]:
        await self.get_purchase(party, purchase_id)
        return await self.store.events(purchase_id)

    # -- idempotency ---------------------------------------------------------------------
    async def idempotent(
        self,
        principal: str,
        key: str,
        request_hash: str,
        produce: Callable[[], Awaitable[tuple[int, str]]],
    ) -> tuple[int, str, bool]:
        """Run ``produce`` (-> status, JSON body) once per (principal, key): the key is
        claimed in the database before the work. The same key and body again returns the
        stored response (``True`` = replayed); a different body is 422; a request while
        the first is still running is 409 (after ``IDEMPOTENCY_STALE_SECS`` without a
        response, the same request takes the key over). A 4xx from ``produce`` (a
        ``DomainError``) is stored like a success; any other failure frees the key for a
        retry."""
        now = self.now_us()
        seen: IdempotencyRow | None = await self.store.claim_idempotency(
            principal, key, request_hash, now, now - IDEMPOTENCY_STALE_SECS * US
        )
        if seen is not None:
            if seen.request_hash != request_hash:
                raise IdempotencyMismatch(
                    "this Idempotency-Key was already used with a different request body"
                )
            if seen.status is None or seen.body is None:
                raise IdempotencyInProgress(
                    "a request with this Idempotency-Key is still in progress, retry later"
                )
            return seen.status, seen.body, True
        try:
            status, body = await produce()
        except DomainError as exc:
            if exc.status >= 500:
                await self.store.drop_idempotency(principal, key)
                raise
            import json

            body = json.dumps({"error": {"code": exc.code, "message": exc.message}})
            await self.store.finish_idempotency(principal, key, exc.status, body)
            raise
        except BaseException:
            await self.store.drop_idempotency(principal, key)
            raise
        await self.store.finish_idempotency(principal, key, status, body)
        return status, body, False
