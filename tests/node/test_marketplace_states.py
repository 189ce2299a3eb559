"""The purchase state machine alone: every (source, target, actor) triple is allowed exactly
when the table says so, the ledger effects, and event replay."""

from __future__ import annotations

import itertools

import pytest

from dchat_node.marketplace.states import (
    FINAL,
    HELD,
    TRANSITIONS,
    Actor,
    Entry,
    State,
    Step,
    TransitionError,
    check,
    ledger_effect,
    replay,
)

pytestmark = pytest.mark.unit

S, A = State, Actor

# the issue's lifecycle, written out independently of the module's table
EXPECTED: dict[tuple[State, State], set[Actor]] = {
    (S.CREATED, S.PAYMENT_PENDING): {A.BUYER},
    (S.PAYMENT_PENDING, S.CREATED): {A.SYSTEM},
    (S.PAYMENT_PENDING, S.PAID): {A.SYSTEM},
    (S.PAID, S.CONFIRMED): {A.SYSTEM},
    (S.PAID, S.PAYMENT_PENDING): {A.SYSTEM},
    (S.CONFIRMED, S.PAYMENT_PENDING): {A.SYSTEM},
    (S.CONFIRMED, S.DELIVERED): {A.CREATOR},
    (S.DELIVERED, S.RELEASED): {A.BUYER, A.SYSTEM},
    (S.CONFIRMED, S.REFUNDED): {A.CREATOR, A.SYSTEM},
    (S.DELIVERED, S.REFUNDED): {A.CREATOR},
    (S.CONFIRMED, S.DISPUTED): {A.BUYER},
    (S.DELIVERED, S.DISPUTED): {A.BUYER},
    (S.DISPUTED, S.RELEASED): {A.ARBITER},
    (S.DISPUTED, S.REFUNDED): {A.ARBITER},
    (S.CREATED, S.EXPIRED): {A.SYSTEM},
    (S.PAYMENT_PENDING, S.EXPIRED): {A.SYSTEM},
    (S.PAID, S.EXPIRED): {A.SYSTEM},
    (S.EXPIRED, S.REFUND_PENDING): {A.SYSTEM},
    (S.REFUND_PENDING, S.REFUNDED): {A.ARBITER, A.CREATOR},
}

TRIPLES = list(itertools.product(State, State, Actor))


def test_the_table_is_the_lifecycle_of_the_issue() -> None:
    assert {k: set(v) for k, v in TRANSITIONS.items()} == EXPECTED


@pytest.mark.parametrize(("source", "target", "actor"), TRIPLES)
def test_every_transition_allowed_or_refused(source: State, target: State, actor: Actor) -> None:
    if actor in EXPECTED.get((source, target), set()):
        check(source, target, actor)
        return
    with pytest.raises(TransitionError) as info:
        check(source, target, actor)
    # a known transition by the wrong party says who may make it (403), any other says
    # the state forbids it (409)
    assert info.value.forbidden_actor == ((source, target) in EXPECTED)
    assert str(source) in info.value.message
    assert str(target) in info.value.message


def test_final_states_have_no_way_out() -> None:
    for source in FINAL:
        assert not [t for (s, t) in TRANSITIONS if s == source]


def test_expired_only_leads_to_refund_pending() -> None:
    assert [t for (s, t) in TRANSITIONS if s == S.EXPIRED] == [S.REFUND_PENDING]


@pytest.mark.parametrize(("source", "target"), list(EXPECTED))
def test_ledger_effects(source: State, target: State) -> None:
    effect = ledger_effect(source, target)
    if target in (S.CONFIRMED, S.REFUND_PENDING):
        assert effect == Entry.PAID
    elif source in HELD and target == S.PAYMENT_PENDING:
        assert effect == Entry.REVERSED
    elif source in HELD and target == S.RELEASED:
        assert effect == Entry.RELEASED
    elif source in HELD and target == S.REFUNDED:
        assert effect == Entry.REFUNDED
    else:
        assert effect is None
    # funds are held exactly between a paid entry and the entry that takes them out
    assert (effect == Entry.PAID) == (source not in HELD and target in HELD)


def test_replay_of_a_full_lifecycle() -> None:
    path = [S.CREATED, S.PAYMENT_PENDING, S.PAID, S.CONFIRMED, S.DELIVERED, S.RELEASED]
    steps = [Step(1, None, S.CREATED)] + [
        Step(i + 2, a, b) for i, (a, b) in enumerate(itertools.pairwise(path))
    ]
    assert replay(steps) == (S.RELEASED, [])


def test_replay_reports_gaps_wrong_sources_and_unknown_transitions() -> None:
    state, problems = replay(
        [
            Step(1, None, S.CREATED),
            Step(3, S.CREATED, S.PAYMENT_PENDING),  # gap
            Step(4, S.PAID, S.CONFIRMED),  # was payment_pending
            Step(5, S.CONFIRMED, S.CREATED),  # no such transition
        ]
    )
    assert state == S.CREATED
    assert problems == [
        "event 3: expected sequence number 2",
        "event 4: starts from paid, the state was payment_pending",
        "event 5: confirmed -> created is not a transition",
    ]
    assert replay([Step(1, S.CREATED, S.PAID)])[1] == [
        "event 1: the first event must create the purchase"
    ]
    assert replay([]) == (None, [])
