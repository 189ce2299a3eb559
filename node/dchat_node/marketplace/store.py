"""Marketplace storage: the ``MarketplaceStore`` Protocol and its one SQL implementation.

Design:
- Written once against ``SqlDatabase`` (``?`` placeholders, ``transaction()``); both engines
  run the same statements (tables: migration 0005).
- Amounts (prices, purchase amounts, ledger amounts) are uint256 values: stored as decimal
  TEXT zero-padded to 78 digits, so ``<``/``>``/``ORDER BY`` on the text are numeric on both
  engines (SQLite's INTEGER and PostgreSQL's BIGINT stop at 2^63, less than 10 ETH in wei).
- Inventory: ``reserve`` decrements it with one conditional ``UPDATE ... WHERE inventory >
  0`` inside the purchase-creating transaction, so it never goes below zero (a CHECK backs
  that up); NULL is unlimited.
- Purchase transitions are compare-and-set: ``UPDATE ... WHERE id = ? AND state = ? AND
  version = ?``; the event (``seq`` = the next number of the purchase's log) and the escrow
  ledger entry the transition implies are written in the same transaction. A lost race
  returns None and writes nothing. The event log and the ledger are append-only: no
  statement here updates or deletes their rows.
- ``(chain_id, tx_hash)`` is UNIQUE on purchases: a second purchase naming a transaction
  already used is ``storage.Conflict``.
- Idempotency keys: ``claim_idempotency`` inserts the key's row (``ON CONFLICT DO NOTHING``)
  in its own statement before the work, and returns the row already there when another
  request claimed it first; ``finish_idempotency`` stores the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dchat_node.marketplace.states import Actor, Entry, State, ledger_effect
from dchat_node.storage.base import Row, SqlDatabase, SqlSession

AMOUNT_DIGITS = 78  # 2**256 - 1 has 78 digits


def pad(amount: int) -> str:
    return f"{amount:0{AMOUNT_DIGITS}d}"


def currency_of(chain_id: int, token: str | None) -> str:
    """``<chain id>:native`` or ``<chain id>:<token address>``: the ledger's currency key."""
    return f"{chain_id}:{token or 'native'}"


@dataclass(frozen=True, slots=True)
class ListingRecord:
    id: int
    creator: str
    title: str
    description: str
    price: int
    token: str | None
    payout_address: str
    inventory: int | None
    status: str
    version: int
    created_at_us: int
    updated_at_us: int


_LISTING_COLS = (
    "id, creator, title, description, price, token, payout_address, inventory, status, "
    "version, created_at, updated_at"
)


def _listing(row: Row) -> ListingRecord:
    r = list(row)
    r[4] = int(r[4])
    return ListingRecord(*r)


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    id: int
    purchase_key: str
    listing_id: int
    buyer: str
    creator: str
    payout_address: str
    amount: int
    token: str | None
    chain_id: int
    pay_to: str
    state: State
    version: int
    tx_hash: str | None
    payer: str | None
    block_number: int | None
    block_hash: str | None
    last_error: str | None
    check_failures: int
    next_check_at_us: int
    expires_at_us: int
    confirmed_at_us: int | None
    delivered_at_us: int | None
    created_at_us: int
    updated_at_us: int


_PURCHASE_COLS = (
    "id, purchase_key, listing_id, buyer, creator, payout_address, amount, token, chain_id, "
    "pay_to, state, version, tx_hash, payer, block_number, block_hash, last_error, "
    "check_failures, next_check_at, expires_at, confirmed_at, delivered_at, created_at, "
    "updated_at"
)
# columns a transition may set besides the state (never the amount, parties or key)
UPDATABLE = frozenset(
    {
        "tx_hash",
        "payer",
        "block_number",
        "block_hash",
        "last_error",
        "check_failures",
        "next_check_at",
        "confirmed_at",
        "delivered_at",
    }
)


_DEADLINES = frozenset({"expires_at", "confirmed_at", "delivered_at"})


def _purchase(row: Row) -> PurchaseRecord:
    r = list(row)
    r[6] = int(r[6])
    r[10] = State(r[10])
    return PurchaseRecord(*r)


@dataclass(frozen=True, slots=True)
class EventRecord:
    purchase_id: int
    seq: int
    source: State | None
    target: State
    actor: str
    reason: str
    tx_hash: str | None
    created_at_us: int


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    purchase_id: int
    seq: int
    currency: str
    entry: Entry
    amount: int
    chain_id: int
    tx_hash: str


@dataclass(frozen=True, slots=True)
class ListingFilter:
    creator: str | None = None
    status: str | None = None
    token: str | None = None  # an address, or "native"
    min_price: int | None = None
    max_price: int | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class NewPurchase:
    purchase_key: str
    listing_id: int
    buyer: str
    chain_id: int
    pay_to: str
    expires_at_us: int
    now_us: int


@dataclass(frozen=True, slots=True)
class Move:
    """One transition of a purchase: the target, who makes it, why, the columns it sets."""

    target: State
    actor: Actor
    reason: str
    updates: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    request_hash: str
    status: int | None  # None: claimed, no response yet
    body: str | None


class ReserveFailed(Exception):
    """The listing could not be reserved: ``why`` is ``missing``, ``inactive`` or
    ``sold_out``."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class MarketplaceStore(Protocol):
    async def create_listing(
        self,
        *,
        creator: str,
        title: str,
        description: str,
        price: int,
        token: str | None,
        payout_address: str,
        inventory: int | None,
        status: str,
        now_us: int,
    ) -> ListingRecord: ...
    async def get_listing(self, listing_id: int) -> ListingRecord | None: ...
    async def update_listing(
        self, listing_id: int, changes: dict[str, Any], now_us: int
    ) -> ListingRecord | None: ...
    async def list_listings(
        self, flt: ListingFilter, after_id: int, limit: int
    ) -> list[ListingRecord]: ...
    async def create_purchase(self, new: NewPurchase) -> PurchaseRecord: ...
    async def get_purchase(self, purchase_id: int) -> PurchaseRecord | None: ...
    async def list_purchases(
        self, party: str, after_id: int, limit: int
    ) -> list[PurchaseRecord]: ...
    async def transition(
        self,
        purchase: PurchaseRecord,
        moves: Sequence[Move],
        now_us: int,
        *,
        restock: bool = False,
    ) -> PurchaseRecord | None: ...
    async def annotate(
        self, purchase: PurchaseRecord, updates: dict[str, Any], now_us: int
    ) -> PurchaseRecord | None: ...
    async def due_purchases(
        self, states: Sequence[State], now_us: int, limit: int
    ) -> list[PurchaseRecord]: ...
    async def overdue(
        self, states: Sequence[State], column: str, deadline_us: int, limit: int
    ) -> list[PurchaseRecord]: ...
    async def events(self, purchase_id: int) -> list[EventRecord]: ...
    async def all_purchases(self, after_id: int, limit: int) -> list[PurchaseRecord]: ...
    async def events_of(self, purchase_ids: Sequence[int]) -> list[EventRecord]: ...
    async def ledger_of(self, purchase_ids: Sequence[int]) -> list[LedgerRecord]: ...
    async def reused_payments(self) -> list[tuple[int, str, int]]: ...
    async def claim_idempotency(
        self,
        principal: str,
        key: str,
        request_hash: str,
        now_us: int,
        stale_before_us: int | None = None,
    ) -> IdempotencyRow | None: ...
    async def finish_idempotency(
        self, principal: str, key: str, status: int, body: str
    ) -> None: ...
    async def drop_idempotency(self, principal: str, key: str) -> None: ...


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


Condition = tuple[str, Sequence[Any]]
"""A WHERE clause with ``?`` placeholders and its arguments (``SqlMarketplaceStore._page``)."""


def _listing_conditions(flt: ListingFilter) -> list[Condition]:
    """The listing filter as page conditions (creator, status, token, price range, text)."""
    where: list[Condition] = []
    if flt.creator is not None:
        where.append(("creator = ?", [flt.creator]))
    if flt.status is not None:
        where.append(("status = ?", [flt.status]))
    if flt.token == "native":  # noqa: S105 (a currency, not a secret)
        where.append(("token IS NULL", []))
    elif flt.token is not None:
        where.append(("token = ?", [flt.token]))
    if flt.min_price is not None:
        where.append(("price >= ?", [pad(flt.min_price)]))
    if flt.max_price is not None:
        where.append(("price <= ?", [pad(flt.max_price)]))
    if flt.text:
        pattern = _like_pattern(flt.text)
        where.append(
            (
                "(lower(title) LIKE ? ESCAPE '\\' OR lower(description) LIKE ? ESCAPE '\\')",
                [pattern, pattern],
            )
        )
    return where


class SqlMarketplaceStore:
    """``MarketplaceStore`` on either engine."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    # -- listings ------------------------------------------------------------------------
    async def create_listing(
        self,
        *,
        creator: str,
        title: str,
        description: str,
        price: int,
        token: str | None,
        payout_address: str,
        inventory: int | None,
        status: str,
        now_us: int,
    ) -> ListingRecord:
        row = await self._db.fetchrow(
            "INSERT INTO market_listings (creator, title, description, price, token, "  # noqa: S608
            "payout_address, inventory, status, version, created_at, updated_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING {_LISTING_COLS}",
            creator,
            title,
            description,
            pad(price),
            token,
            payout_address,
            inventory,
            status,
            now_us,
            now_us,
        )
        assert row is not None
        return _listing(row)

    async def get_listing(self, listing_id: int) -> ListingRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_LISTING_COLS} FROM market_listings WHERE id = ?",  # noqa: S608
            listing_id,
        )
        return None if row is None else _listing(row)

    async def update_listing(
        self, listing_id: int, changes: dict[str, Any], now_us: int
    ) -> ListingRecord | None:
        """Apply ``changes`` (column -> value) unless the listing is delisted; None when
        there is no such listing or it is delisted."""
        allowed = {
            "title",
            "description",
            "price",
            "token",
            "payout_address",
            "inventory",
            "status",
        }
        cols = [c for c in changes if c in allowed]
        values = [pad(changes[c]) if c == "price" else changes[c] for c in cols]
        sets = "".join(f"{c} = ?, " for c in cols)
        row = await self._db.fetchrow(
            f"UPDATE market_listings SET {sets}version = version + 1, updated_at = ? "  # noqa: S608
            f"WHERE id = ? AND status <> 'delisted' RETURNING {_LISTING_COLS}",
            *values,
            now_us,
            listing_id,
        )
        return None if row is None else _listing(row)

    async def _page(
        self, table: str, cols: str, after_id: int, limit: int, where: Sequence[Condition] = ()
    ) -> list[Row]:
        """One keyset page: the rows of ``table`` with ``id > after_id`` that meet every
        condition (ANDed, in order), by id, at most ``limit``."""
        clauses = ["id > ?", *(clause for clause, _ in where)]
        args = [after_id, *(arg for _, values in where for arg in values)]
        return await self._db.fetch(
            f"SELECT {cols} FROM {table} WHERE "  # noqa: S608 - fixed table/columns, ? args
            + " AND ".join(clauses)
            + " ORDER BY id LIMIT ?",
            *args,
            limit,
        )

    async def list_listings(
        self, flt: ListingFilter, after_id: int, limit: int
    ) -> list[ListingRecord]:
        rows = await self._page(
            "market_listings", _LISTING_COLS, after_id, limit, _listing_conditions(flt)
        )
        return [_listing(r) for r in rows]

    # -- purchases -----------------------------------------------------------------------
    async def create_purchase(self, new: NewPurchase) -> PurchaseRecord:
        """Reserve one unit of the listing and create the purchase (state ``created``) with
        its creation event, in one transaction; ``ReserveFailed`` when the listing is
        missing, not active or sold out."""
        async with self._db.transaction() as tx:
            reserved = await tx.fetchrow(
                "UPDATE market_listings SET inventory = inventory - 1, version = version + 1 "
                "WHERE id = ? AND status = 'active' AND inventory > 0 "
                "RETURNING creator, payout_address, price, token",
                new.listing_id,
            ) or await tx.fetchrow(
                "SELECT creator, payout_address, price, token FROM market_listings "
                "WHERE id = ? AND status = 'active' AND inventory IS NULL",
                new.listing_id,
            )
            if reserved is None:
                state = await tx.fetchrow(
                    "SELECT status, inventory FROM market_listings WHERE id = ?", new.listing_id
                )
                if state is None:
                    raise ReserveFailed("missing")
                raise ReserveFailed("inactive" if state[0] != "active" else "sold_out")
            creator, payout, price, token = reserved
            row = await tx.fetchrow(
                "INSERT INTO market_purchases (purchase_key, listing_id, buyer, creator, "  # noqa: S608
                "payout_address, amount, token, chain_id, pay_to, state, version, "
                "next_check_at, expires_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) "
                f"RETURNING {_PURCHASE_COLS}",
                new.purchase_key,
                new.listing_id,
                new.buyer,
                creator,
                payout,
                price,
                token,
                new.chain_id,
                new.pay_to,
                State.CREATED.value,
                new.now_us,
                new.expires_at_us,
                new.now_us,
                new.now_us,
            )
            assert row is not None
            purchase = _purchase(row)
            await self._event(
                tx, purchase.id, 1, None, State.CREATED, Actor.BUYER, "", None, new.now_us
            )
            return purchase

    async def get_purchase(self, purchase_id: int) -> PurchaseRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_PURCHASE_COLS} FROM market_purchases WHERE id = ?",  # noqa: S608
            purchase_id,
        )
        return None if row is None else _purchase(row)

    async def list_purchases(self, party: str, after_id: int, limit: int) -> list[PurchaseRecord]:
        party_of = ("(buyer = ? OR creator = ?)", (party, party))
        rows = await self._page("market_purchases", _PURCHASE_COLS, after_id, limit, [party_of])
        return [_purchase(r) for r in rows]

    @staticmethod
    async def _event(
        tx: SqlSession,
        purchase_id: int,
        seq: int,
        source: State | None,
        target: State,
        actor: Actor,
        reason: str,
        tx_hash: str | None,
        now_us: int,
    ) -> None:
        await tx.execute(
            "INSERT INTO market_purchase_events (purchase_id, seq, from_state, to_state, "
            "actor, reason, tx_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            purchase_id,
            seq,
            None if source is None else source.value,
            target.value,
            actor.value,
            reason,
            tx_hash,
            now_us,
        )

    async def transition(
        self,
        purchase: PurchaseRecord,
        moves: Sequence[Move],
        now_us: int,
        *,
        restock: bool = False,
    ) -> PurchaseRecord | None:
        """Apply ``moves`` in order, in one transaction, if the purchase is still at
        ``purchase.state``/``purchase.version`` (compare-and-set); None (nothing written)
        when another writer moved it first. ``restock`` gives the reserved unit back to
        the listing's inventory (an expiry without payment)."""
        async with self._db.transaction() as tx:
            current = purchase
            seq_row = await tx.fetchrow(
                "SELECT COALESCE(MAX(seq), 0) FROM market_purchase_events WHERE purchase_id = ?",
                purchase.id,
            )
            seq = int(seq_row[0]) if seq_row else 0
            for move in moves:
                cols = [c for c in move.updates if c in UPDATABLE]
                sets = "".join(f"{c} = ?, " for c in cols)
                row = await tx.fetchrow(
                    f"UPDATE market_purchases SET {sets}state = ?, version = version + 1, "  # noqa: S608
                    "updated_at = ? WHERE id = ? AND state = ? AND version = ? "
                    f"RETURNING {_PURCHASE_COLS}",
                    *(move.updates[c] for c in cols),
                    move.target.value,
                    now_us,
                    current.id,
                    current.state.value,
                    current.version,
                )
                if row is None:
                    if current is purchase:
                        return None  # lost the race: nothing written yet
                    raise AssertionError("purchase changed inside its own transaction")
                after = _purchase(row)
                seq += 1
                await self._event(
                    tx, after.id, seq, current.state, move.target, move.actor, move.reason,
                    after.tx_hash, now_us,
                )  # fmt: skip
                entry = ledger_effect(current.state, move.target)
                if entry is not None:
                    # the payment the funds came with: the transaction on the row before a
                    # reorg clears it
                    paid_by = after.tx_hash or current.tx_hash or ""
                    await tx.execute(
                        "INSERT INTO market_escrow_ledger (purchase_id, seq, currency, entry, "
                        "amount, chain_id, tx_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        after.id,
                        seq,
                        currency_of(after.chain_id, after.token),
                        entry.value,
                        pad(after.amount),
                        after.chain_id,
                        paid_by,
                        now_us,
                    )
                current = after
            if restock:
                await tx.execute(
                    "UPDATE market_listings SET inventory = inventory + 1, version = version + 1 "
                    "WHERE id = ? AND inventory IS NOT NULL",
                    current.listing_id,
                )
            return current

    async def annotate(
        self, purchase: PurchaseRecord, updates: dict[str, Any], now_us: int
    ) -> PurchaseRecord | None:
        """Set columns without a state change (last error, next check, a late payment's
        transaction), compare-and-set on the version; None when it changed meanwhile."""
        cols = [c for c in updates if c in UPDATABLE]
        sets = "".join(f"{c} = ?, " for c in cols)
        row = await self._db.fetchrow(
            f"UPDATE market_purchases SET {sets}version = version + 1, updated_at = ? "  # noqa: S608
            f"WHERE id = ? AND version = ? RETURNING {_PURCHASE_COLS}",
            *(updates[c] for c in cols),
            now_us,
            purchase.id,
            purchase.version,
        )
        return None if row is None else _purchase(row)

    async def due_purchases(
        self, states: Sequence[State], now_us: int, limit: int
    ) -> list[PurchaseRecord]:
        """Purchases in ``states`` with a transaction to check whose next check is due."""
        marks = ", ".join("?" for _ in states)
        rows = await self._db.fetch(
            f"SELECT {_PURCHASE_COLS} FROM market_purchases "  # noqa: S608
            f"WHERE state IN ({marks}) AND tx_hash IS NOT NULL AND next_check_at <= ? "
            "ORDER BY next_check_at, id LIMIT ?",
            *(s.value for s in states),
            now_us,
            limit,
        )
        return [_purchase(r) for r in rows]

    async def overdue(
        self, states: Sequence[State], column: str, deadline_us: int, limit: int
    ) -> list[PurchaseRecord]:
        """Purchases in ``states`` whose ``column`` (``expires_at``, ``confirmed_at`` or
        ``delivered_at``) is at or before ``deadline_us``."""
        if column not in _DEADLINES:
            raise ValueError(f"not a deadline column: {column}")
        marks = ", ".join("?" for _ in states)
        rows = await self._db.fetch(
            f"SELECT {_PURCHASE_COLS} FROM market_purchases "  # noqa: S608
            f"WHERE state IN ({marks}) AND {column} <= ? ORDER BY {column}, id LIMIT ?",
            *(s.value for s in states),
            deadline_us,
            limit,
        )
        return [_purchase(r) for r in rows]

    async def events(self, purchase_id: int) -> list[EventRecord]:
        return await self.events_of([purchase_id])

    async def all_purchases(self, after_id: int, limit: int) -> list[PurchaseRecord]:
        rows = await self._page("market_purchases", _PURCHASE_COLS, after_id, limit)
        return [_purchase(r) for r in rows]

    async def events_of(self, purchase_ids: Sequence[int]) -> list[EventRecord]:
        if not purchase_ids:
            return []
        marks = ", ".join("?" for _ in purchase_ids)
        rows = await self._db.fetch(
            "SELECT purchase_id, seq, from_state, to_state, actor, reason, tx_hash, created_at "  # noqa: S608
            f"FROM market_purchase_events WHERE purchase_id IN ({marks}) "
            "ORDER BY purchase_id, seq",
            *purchase_ids,
        )
        return [
            EventRecord(r[0], r[1], None if r[2] is None else State(r[2]), State(r[3]), *r[4:])
            for r in rows
        ]

    async def ledger_of(self, purchase_ids: Sequence[int]) -> list[LedgerRecord]:
        if not purchase_ids:
            return []
        marks = ", ".join("?" for _ in purchase_ids)
        rows = await self._db.fetch(
            "SELECT purchase_id, seq, currency, entry, amount, chain_id, tx_hash "  # noqa: S608
            f"FROM market_escrow_ledger WHERE purchase_id IN ({marks}) ORDER BY purchase_id, seq",
            *purchase_ids,
        )
        return [LedgerRecord(r[0], r[1], r[2], Entry(r[3]), int(r[4]), r[5], r[6]) for r in rows]

    async def reused_payments(self) -> list[tuple[int, str, int]]:
        """(chain id, transaction, purchases) for every transaction whose ``paid`` ledger
        entries belong to more than one purchase (the unique index keeps the purchases
        themselves apart; this checks the money)."""
        rows = await self._db.fetch(
            "SELECT chain_id, tx_hash, COUNT(DISTINCT purchase_id) FROM market_escrow_ledger "
            "WHERE entry = 'paid' GROUP BY chain_id, tx_hash "
            "HAVING COUNT(DISTINCT purchase_id) > 1"
        )
        return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]

    # -- idempotency ---------------------------------------------------------------------
    async def claim_idempotency(
        self,
        principal: str,
        key: str,
        request_hash: str,
        now_us: int,
        stale_before_us: int | None = None,
    ) -> IdempotencyRow | None:
        """Claim ``key`` for ``principal`` (None: claimed now) or return the row of the
        request that claimed it first. A claim of the same request still without a
        response and made at or before ``stale_before_us`` (its process died mid-request)
        is taken over, compare-and-set on its time, so only one retry wins it."""
        claimed = await self._db.fetchrow(
            "INSERT INTO market_idempotency (principal, idem_key, request_hash, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (principal, idem_key) DO NOTHING "
            "RETURNING principal",
            principal,
            key,
            request_hash,
            now_us,
        )
        if claimed is not None:
            return None
        row = await self._db.fetchrow(
            "SELECT request_hash, status, body, created_at FROM market_idempotency "
            "WHERE principal = ? AND idem_key = ?",
            principal,
            key,
        )
        if row is None:  # dropped between the two statements: the caller may retry
            return IdempotencyRow(request_hash, None, None)
        seen = IdempotencyRow(row[0], None if row[1] is None else int(row[1]), row[2])
        stale = stale_before_us is not None and int(row[3]) <= stale_before_us
        if seen.status is None and seen.request_hash == request_hash and stale:
            taken = await self._db.fetchrow(
                "UPDATE market_idempotency SET created_at = ? WHERE principal = ? "
                "AND idem_key = ? AND status IS NULL AND created_at = ? RETURNING principal",
                now_us,
                principal,
                key,
                row[3],
            )
            if taken is not None:
                return None
        return seen

    async def finish_idempotency(self, principal: str, key: str, status: int, body: str) -> None:
        await self._db.execute(
            "UPDATE market_idempotency SET status = ?, body = ? "
            "WHERE principal = ? AND idem_key = ?",
            status,
            body,
            principal,
            key,
        )

    async def drop_idempotency(self, principal: str, key: str) -> None:
        await self._db.execute(
            "DELETE FROM market_idempotency WHERE principal = ? AND idem_key = ? "
            "AND status IS NULL",
            principal,
            key,
        )
