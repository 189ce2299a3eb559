"""Marketplace integrity check (``dchat verify``; the guide's ``dchat-verify-marketplace``).

Reads every purchase with its event log and escrow ledger entries, in batches, and reports:
- a purchase whose events do not replay to its stored state (``states.replay``: the first
  event creates it, sequence numbers without gaps, each event starts where the last ended,
  only transitions the machine has);
- ledger entries that differ from what the events imply (``states.ledger_effect``: entry,
  sequence number, the purchase's amount and currency);
- per currency, escrow that does not balance: held = paid - reversed - released - refunded
  must equal the sum of the amounts of purchases in a holding state (``states.HELD``), and
  nothing may be negative;
- a transaction whose ``paid`` entries belong to more than one purchase.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dchat_node.marketplace.states import HELD, Entry, Step, ledger_effect, replay
from dchat_node.marketplace.store import MarketplaceStore, PurchaseRecord, currency_of

BATCH = 500


@dataclass
class Report:
    purchases: int = 0
    problems: list[str] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)


async def verify_marketplace(store: MarketplaceStore) -> Report:
    report = Report()
    ledger_sum: dict[str, int] = defaultdict(int)
    held_sum: dict[str, int] = defaultdict(int)
    after = 0
    while batch := await store.all_purchases(after, BATCH):
        after = batch[-1].id
        await _check_batch(store, batch, report, ledger_sum, held_sum)
    for currency in sorted(set(ledger_sum) | set(held_sum)):
        booked, held = ledger_sum[currency], held_sum[currency]
        if booked != held:
            report.problems.append(
                f"escrow {currency}: paid - released - refunded = {booked}, but purchases "
                f"holding funds add up to {held}"
            )
        if booked < 0:
            report.problems.append(f"escrow {currency}: negative balance {booked}")
        report.held[currency] = held
    for chain_id, tx_hash, count in await store.reused_payments():
        report.problems.append(
            f"payment {tx_hash} on chain {chain_id} is booked for {count} purchases"
        )
    return report


async def _check_batch(
    store: MarketplaceStore,
    batch: list[PurchaseRecord],
    report: Report,
    ledger_sum: dict[str, int],
    held_sum: dict[str, int],
) -> None:
    ids = [p.id for p in batch]
    events: dict[int, list[Step]] = defaultdict(list)
    for e in await store.events_of(ids):
        events[e.purchase_id].append(Step(e.seq, e.source, e.target))
    ledger: dict[int, list[tuple[int, Entry, int, str]]] = defaultdict(list)
    for entry in await store.ledger_of(ids):
        ledger[entry.purchase_id].append((entry.seq, entry.entry, entry.amount, entry.currency))
        sign = 1 if entry.entry == Entry.PAID else -1
        ledger_sum[entry.currency] += sign * entry.amount
    for p in batch:
        report.purchases += 1
        steps = events[p.id]
        state, problems = replay(steps)
        report.problems += [f"purchase {p.id}: {msg}" for msg in problems]
        if state != p.state:
            report.problems.append(
                f"purchase {p.id}: events replay to {state}, the purchase says {p.state}"
            )
        currency = currency_of(p.chain_id, p.token)
        expected = [
            (s.seq, effect, p.amount, currency)
            for s in steps
            if s.source is not None and (effect := ledger_effect(s.source, s.target))
        ]
        if ledger[p.id] != expected:
            report.problems.append(
                f"purchase {p.id}: escrow ledger {_fmt(ledger[p.id])} does not match its "
                f"events, which imply {_fmt(expected)}"
            )
        if p.state in HELD:
            held_sum[currency] += p.amount


def _fmt(entries: list[tuple[int, Entry, int, str]]) -> str:
    return "[" + ", ".join(f"#{s} {e.value} {a}" for s, e, a, _ in entries) + "]"
