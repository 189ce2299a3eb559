"""The escrowed purchase state machine (pure: no I/O, no clock).

States and who may move a purchase between them::

    created --payment submitted (buyer)--> payment_pending
    payment_pending --payment rejected (system: INVALID on chain)--> created
    payment_pending --payment seen in a block (system)--> paid
    paid --finality reached (system)--> confirmed
    paid | confirmed --block reorged away (system)--> payment_pending
    confirmed --delivered (creator)--> delivered
    delivered --accepted (buyer) | escrow timeout (system)--> released
    confirmed --not delivered within the escrow timeout (system), or cancelled
              by the creator--> refunded
    delivered --refunded by the creator--> refunded
    confirmed | delivered --dispute opened (buyer)--> disputed
    disputed --resolved (arbiter)--> released | refunded
    created | payment_pending | paid --no confirmed payment in time (system)--> expired
    expired --a payment confirmed after expiry (system)--> refund_pending
    refund_pending --refund paid out (arbiter | creator)--> refunded

``released``, ``refunded`` are final; ``expired`` is final unless a payment arrives late
(then ``refund_pending``: a late payment is never lost).

The escrow ledger follows the states: funds are *held* from ``confirmed`` (or
``refund_pending``) until ``released``/``refunded``; ``LEDGER_EFFECTS`` says which
transition writes which ledger entry. ``dchat verify`` replays events with ``replay``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    CREATED = "created"
    PAYMENT_PENDING = "payment_pending"
    PAID = "paid"
    CONFIRMED = "confirmed"
    DELIVERED = "delivered"
    RELEASED = "released"
    EXPIRED = "expired"
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"
    DISPUTED = "disputed"


class Actor(StrEnum):
    BUYER = "buyer"
    CREATOR = "creator"
    ARBITER = "arbiter"
    SYSTEM = "system"


class Entry(StrEnum):
    """Escrow ledger entries: ``paid`` adds to the held balance, the others take from it."""

    PAID = "paid"
    REVERSED = "reversed"  # a confirmed payment removed by a reorg
    RELEASED = "released"
    REFUNDED = "refunded"


S = State
A = Actor

TRANSITIONS: dict[tuple[State, State], frozenset[Actor]] = {
    (S.CREATED, S.PAYMENT_PENDING): frozenset({A.BUYER}),
    (S.PAYMENT_PENDING, S.CREATED): frozenset({A.SYSTEM}),
    (S.PAYMENT_PENDING, S.PAID): frozenset({A.SYSTEM}),
    (S.PAID, S.CONFIRMED): frozenset({A.SYSTEM}),
    (S.PAID, S.PAYMENT_PENDING): frozenset({A.SYSTEM}),
    (S.CONFIRMED, S.PAYMENT_PENDING): frozenset({A.SYSTEM}),
    (S.CONFIRMED, S.DELIVERED): frozenset({A.CREATOR}),
    (S.DELIVERED, S.RELEASED): frozenset({A.BUYER, A.SYSTEM}),
    (S.CONFIRMED, S.REFUNDED): frozenset({A.CREATOR, A.SYSTEM}),
    (S.DELIVERED, S.REFUNDED): frozenset({A.CREATOR}),
    (S.CONFIRMED, S.DISPUTED): frozenset({A.BUYER}),
    (S.DELIVERED, S.DISPUTED): frozenset({A.BUYER}),
    (S.DISPUTED, S.RELEASED): frozenset({A.ARBITER}),
    (S.DISPUTED, S.REFUNDED): frozenset({A.ARBITER}),
    (S.CREATED, S.EXPIRED): frozenset({A.SYSTEM}),
    (S.PAYMENT_PENDING, S.EXPIRED): frozenset({A.SYSTEM}),
    (S.PAID, S.EXPIRED): frozenset({A.SYSTEM}),
    (S.EXPIRED, S.REFUND_PENDING): frozenset({A.SYSTEM}),
    (S.REFUND_PENDING, S.REFUNDED): frozenset({A.ARBITER, A.CREATOR}),
}

FINAL: frozenset[State] = frozenset({S.RELEASED, S.REFUNDED})
HELD: frozenset[State] = frozenset({S.CONFIRMED, S.DELIVERED, S.DISPUTED, S.REFUND_PENDING})
"""States in which the purchase's amount sits in escrow."""


def ledger_effect(source: State, target: State) -> Entry | None:
    """The escrow ledger entry a transition writes (None: none)."""
    if target in (S.CONFIRMED, S.REFUND_PENDING):
        return Entry.PAID
    if source in HELD and target == S.PAYMENT_PENDING:
        return Entry.REVERSED
    if source in HELD and target == S.RELEASED:
        return Entry.RELEASED
    if source in HELD and target == S.REFUNDED:
        return Entry.REFUNDED
    return None


class TransitionError(Exception):
    """A transition the machine does not have (``allowed`` False) or one this actor may not
    make (``allowed`` True, ``actor_ok`` False)."""

    def __init__(self, source: State, target: State, actor: Actor, *, actor_ok: bool) -> None:
        self.source = source
        self.target = target
        self.actor = actor
        self.forbidden_actor = not actor_ok and (source, target) in TRANSITIONS
        if self.forbidden_actor:
            who = ", ".join(sorted(TRANSITIONS[(source, target)]))
            msg = f"only the {who} may move a purchase from {source} to {target}"
        else:
            msg = f"a purchase in state {source} cannot move to {target}"
        super().__init__(msg)
        self.message = msg


def check(source: State, target: State, actor: Actor) -> None:
    """Raise ``TransitionError`` unless ``actor`` may move a purchase ``source -> target``."""
    actors = TRANSITIONS.get((source, target))
    if actors is None or actor not in actors:
        raise TransitionError(source, target, actor, actor_ok=False)


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a purchase's log: ``source`` is None for the creation event."""

    seq: int
    source: State | None
    target: State


def replay(steps: Iterable[Step]) -> tuple[State | None, list[str]]:
    """Fold a purchase's events: the state they lead to and every inconsistency (a first
    event that is not the creation, a gap in ``seq``, an event whose ``source`` is not the
    state before it, a transition the machine does not have)."""
    problems: list[str] = []
    state: State | None = None
    expected_seq = 1
    for step in steps:
        if step.seq != expected_seq:
            problems.append(f"event {step.seq}: expected sequence number {expected_seq}")
        expected_seq = step.seq + 1
        if state is None:
            if step.source is not None or step.target != S.CREATED:
                problems.append(f"event {step.seq}: the first event must create the purchase")
        elif step.source != state:
            problems.append(f"event {step.seq}: starts from {step.source}, the state was {state}")
        elif (step.source, step.target) not in TRANSITIONS:
            problems.append(f"event {step.seq}: {step.source} -> {step.target} is not a transition")
        state = step.target
    return state, problems
