"""The marketplace's background worker: advances purchases the parties do not move.

Design:
- ``tick()`` is one pass; ``run()`` repeats it every ``marketplace.worker_interval_secs``
  until cancelled (started by ``server.run_node`` with the node's other background tasks).
  A pass never raises: a failing database or chain is logged, counted
  (``dchat_errors_total{component="marketplace"}``) and tried again next pass.
- Order of a pass: (1) payment checks of purchases with a submitted transaction whose next
  check is due: ``payment_pending``/``paid`` (is it mined, final, valid?), ``confirmed``
  (is its block still canonical?) and ``expired`` (a late payment, until the escrow timeout
  has passed after the deadline); (2) expiries: ``created``/``payment_pending``/``paid``
  past their deadline, giving the unit back to the listing; (3) automatic release of a
  ``delivered`` purchase not disputed within ``escrow_timeout_secs``, and refund of a
  ``confirmed`` purchase the creator did not deliver within it. Checks run before
  expiries, so a payment final before the deadline is not expired by the same pass.
- What a check's observation does (``PaymentVerifier.check``): CONFIRMED -> ``paid`` then
  ``confirmed`` (one transaction, two events); on an expired purchase ->
  ``refund_pending`` (the money is held, never lost). PENDING in a block -> ``paid``;
  PENDING without a block, or NOT_FOUND, on a ``paid`` purchase -> ``payment_pending`` (a
  reorg took it out). INVALID -> back to ``created`` with the reason in ``last_error`` and
  the transaction released (it may be another purchase's payment). A ``confirmed``
  purchase whose block is no longer canonical -> ``payment_pending`` (ledger: reversed).
- ``ChainUnavailable`` (or any other error of the verifier) leaves the state alone, writes
  ``last_error`` and ``check_failures`` on the purchase, counts
  ``marketplace_chain_errors_total``, and backs off that purchase: next check after
  ``interval * 2^failures`` seconds, at most 300 s.
- Every transition is compare-and-set: a party moving the purchase meanwhile wins and the
  worker looks again next pass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dchat_node.marketplace.payments import (
    ChainUnavailable,
    PaymentObservation,
    PaymentRequest,
    PaymentState,
)
from dchat_node.marketplace.service import US, MarketplaceService
from dchat_node.marketplace.states import Actor, State
from dchat_node.marketplace.store import Move, PurchaseRecord
from dchat_node.observability.metrics import NodeMetrics

log = logging.getLogger("dchat_node.marketplace.worker")

MAX_BACKOFF_SECS = 300.0
NEVER = 2**62  # a next check that never comes
BATCH = 100
WATCHED = (State.PAYMENT_PENDING, State.PAID, State.CONFIRMED, State.EXPIRED)
EXPIRABLE = (State.CREATED, State.PAYMENT_PENDING, State.PAID)
_CLEAR_BLOCK: dict[str, Any] = {"block_number": None, "block_hash": None, "payer": None}


class MarketplaceWorker:
    def __init__(
        self, service: MarketplaceService, node_metrics: NodeMetrics | None = None
    ) -> None:
        self.service = service
        self.store = service.store
        self.node_metrics = node_metrics
        self.interval = service.config.worker_interval_secs

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> dict[str, int]:
        """One pass; returns how many purchases each step moved (for tests and logs)."""
        done = {"checked": 0, "expired": 0, "released": 0, "refunded": 0}
        for step, name in (
            (self._check_payments, "checked"),
            (self._expire, "expired"),
            (self._release, "released"),
            (self._refund_undelivered, "refunded"),
        ):
            try:
                done[name] = await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("marketplace worker: %s step failed", name)
                if self.node_metrics is not None:
                    self.node_metrics.errors.labels(component="marketplace").inc()
        return done

    # -- payment checks --------------------------------------------------------------------
    async def _check_payments(self) -> int:
        if self.service.verifier is None:
            return 0
        now = self.service.now_us()
        moved = 0
        for rec in await self.store.due_purchases(WATCHED, now, BATCH):
            if await self._check(rec):
                moved += 1
        return moved

    def _backoff_us(self, failures: int) -> int:
        return int(min(self.interval * 2**failures, MAX_BACKOFF_SECS) * US)

    async def _check(self, rec: PurchaseRecord) -> bool:
        verifier = self.service.verifier
        assert verifier is not None
        assert rec.tx_hash is not None
        now = self.service.now_us()
        try:
            if rec.state == State.CONFIRMED:
                assert rec.block_number is not None
                assert rec.block_hash is not None
                canonical = await verifier.still_canonical(rec.block_number, rec.block_hash)
                obs = None
            else:
                obs = await verifier.check(
                    PaymentRequest(
                        tx_hash=rec.tx_hash,
                        chain_id=rec.chain_id,
                        pay_to=rec.pay_to,
                        min_value=rec.amount,
                        token=rec.token,
                        reference=self.service.reference(rec),
                    )
                )
                canonical = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(rec, exc, now)
            return False
        next_check = now + self._backoff_us(0)
        if obs is None:
            if canonical:
                await self.store.annotate(rec, {"next_check_at": next_check, **_ok()}, now)
                return False
            return await self._moves(
                rec,
                [Move(State.PAYMENT_PENDING, Actor.SYSTEM, "payment's block reorged away",
                      {**_CLEAR_BLOCK, "confirmed_at": None, "next_check_at": now, **_ok()})],
                "reorged",
            )  # fmt: skip
        return await self._observed(rec, obs, now, next_check)

    async def _observed(
        self, rec: PurchaseRecord, obs: PaymentObservation, now: int, next_check: int
    ) -> bool:
        base = {"next_check_at": next_check, **_ok()}
        if obs.state == PaymentState.CONFIRMED:
            return await self._confirmed(rec, obs, now, base)
        if obs.state == PaymentState.INVALID:
            return await self._invalid(rec, obs, now, next_check)
        mined = obs.state == PaymentState.PENDING and obs.block_number is not None
        if rec.state == State.PAYMENT_PENDING and mined:
            seen = Move(
                State.PAID, Actor.SYSTEM, "payment seen in a block", {**_block(obs), **base}
            )
            return await self._moves(rec, [seen], None)
        if rec.state == State.PAID and not mined:
            why = (
                "payment dropped from the chain (reorg)"
                if obs.state == PaymentState.NOT_FOUND
                else "payment back in the mempool (reorg)"
            )
            back = Move(State.PAYMENT_PENDING, Actor.SYSTEM, why, {**_CLEAR_BLOCK, **base})
            return await self._moves(rec, [back], "reorged")
        updates: dict[str, Any] = dict(base)
        late_limit = rec.expires_at_us + self.service.config.escrow_timeout_secs * US
        if rec.state == State.EXPIRED and now > late_limit:
            # stop watching for a late payment that never came
            updates = {
                "next_check_at": NEVER,
                "last_error": "stopped watching: no payment after expiry",
            }
        elif mined and rec.state == State.PAID and obs.block_hash != rec.block_hash:
            updates.update(_block(obs))  # re-mined in another block
        await self.store.annotate(rec, updates, now)
        return False

    async def _confirmed(
        self, rec: PurchaseRecord, obs: PaymentObservation, now: int, base: dict[str, Any]
    ) -> bool:
        done = {**_block(obs), **base, "confirmed_at": now}
        if rec.state == State.EXPIRED:
            late = Move(State.REFUND_PENDING, Actor.SYSTEM, "payment confirmed after expiry", done)
            return await self._moves(rec, [late], None)
        moves = []
        if rec.state == State.PAYMENT_PENDING:
            moves.append(
                Move(State.PAID, Actor.SYSTEM, "payment seen in a block", {**_block(obs), **base})
            )
        moves.append(Move(State.CONFIRMED, Actor.SYSTEM, "payment final", done))
        out = await self._moves(rec, moves, None)
        if out:
            self.service.metrics.confirmation_seconds.observe((now - rec.created_at_us) / US)
        return out

    async def _invalid(
        self, rec: PurchaseRecord, obs: PaymentObservation, now: int, next_check: int
    ) -> bool:
        reason = f"payment rejected: {obs.reason}"[:500]
        if rec.state == State.EXPIRED:
            await self.store.annotate(rec, {"tx_hash": None, "last_error": reason}, now)
            return False
        clear = {
            **_CLEAR_BLOCK,
            "tx_hash": None,
            "next_check_at": next_check,
            "check_failures": 0,
            "last_error": reason,
        }
        moves = [Move(State.CREATED, Actor.SYSTEM, reason, clear)]
        if rec.state == State.PAID:
            moves.insert(0, Move(State.PAYMENT_PENDING, Actor.SYSTEM, "payment no longer valid"))
        return await self._moves(rec, moves, "rejected")

    async def _failed(self, rec: PurchaseRecord, exc: Exception, now: int) -> None:
        failures = rec.check_failures + 1
        if isinstance(exc, ChainUnavailable):
            error = f"currency chain unavailable, retrying: {exc}"
        else:
            log.warning("payment check of purchase %d failed: %r", rec.id, exc)
            error = f"payment check failed, retrying: {type(exc).__name__}"
        self.service.metrics.chain_errors.inc()
        await self.store.annotate(
            rec,
            {
                "last_error": error[:500],
                "check_failures": failures,
                "next_check_at": now + self._backoff_us(failures),
            },
            now,
        )

    async def _moves(self, rec: PurchaseRecord, moves: list[Move], outcome: str | None) -> bool:
        out = await self.store.transition(rec, moves, self.service.now_us())
        if out is None:
            return False
        for move in moves:
            self.service.count(move.target)
        if outcome is not None:
            self.service.metrics.purchases.labels(outcome=outcome).inc()
        return True

    # -- deadlines -------------------------------------------------------------------------
    async def _expire(self) -> int:
        now = self.service.now_us()
        moved = 0
        for rec in await self.store.overdue(EXPIRABLE, "expires_at", now, BATCH):
            out = await self.store.transition(
                rec,
                [Move(State.EXPIRED, Actor.SYSTEM, "no confirmed payment before the deadline",
                      {"next_check_at": now})],
                now,
                restock=True,
            )  # fmt: skip
            if out is not None:
                self.service.cache.drop(rec.listing_id)
                self.service.count(State.EXPIRED)
                moved += 1
        return moved

    async def _timeout(self, state: State, column: str, target: State, reason: str) -> int:
        now = self.service.now_us()
        deadline = now - self.service.config.escrow_timeout_secs * US
        moved = 0
        for rec in await self.store.overdue((state,), column, deadline, BATCH):
            if await self.store.transition(rec, [Move(target, Actor.SYSTEM, reason)], now):
                self.service.count(target)
                moved += 1
        return moved

    async def _release(self) -> int:
        return await self._timeout(
            State.DELIVERED, "delivered_at", State.RELEASED, "escrow timeout without a dispute"
        )

    async def _refund_undelivered(self) -> int:
        return await self._timeout(
            State.CONFIRMED,
            "confirmed_at",
            State.REFUNDED,
            "not delivered within the escrow timeout",
        )


def _block(obs: PaymentObservation) -> dict[str, Any]:
    return {"block_number": obs.block_number, "block_hash": obs.block_hash, "payer": obs.payer}


def _ok() -> dict[str, Any]:
    return {"last_error": None, "check_failures": 0}
