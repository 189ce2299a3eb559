"""The reconcile engine on its own: coalescing, reruns, requeue, backoff, timeouts, forget."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

import pytest

from dchat_operator.controllers.engine import Attempt, Backoff, Engine, Key, Outcome

pytestmark = pytest.mark.unit


@dataclass
class Probe:
    """A reconciler that records its runs and does what the test says."""

    kind: str = "Probe"
    runs: list[tuple[Key, frozenset[str], int]] = field(default_factory=list)
    outcomes: dict[Key, list[Outcome]] = field(default_factory=dict)
    gates: dict[Key, asyncio.Event] = field(default_factory=dict)
    started: dict[Key, asyncio.Event] = field(default_factory=dict)
    raise_for: set[Key] = field(default_factory=set)

    def new_state(self) -> dict[str, int]:
        return {}

    async def reconcile(self, key: Key, state: dict[str, int], attempt: Attempt) -> Outcome:
        self.runs.append((key, attempt.reasons, attempt.failures))
        state["runs"] = state.get("runs", 0) + 1
        self.started.setdefault(key, asyncio.Event()).set()
        gate = self.gates.get(key)
        if gate is not None:
            await gate.wait()
        if key in self.raise_for:
            raise RuntimeError("boom")
        queue = self.outcomes.get(key)
        return queue.pop(0) if queue else Outcome()

    def count(self, key: Key) -> int:
        return sum(1 for k, _, _ in self.runs if k == key)


A, B, AB = ("ns", "a"), ("ns", "b"), ("ns", "a-b")


def _engine(probe: Probe, **kwargs: object) -> Engine[dict[str, int]]:
    engine: Engine[dict[str, int]] = Engine(probe, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
    engine.start()
    return engine


async def test_triggers_of_a_queued_key_coalesce_into_one_run() -> None:
    probe = Probe()
    engine = _engine(probe, workers=1)
    for reason in ("spec", "deployment", "resync", "deployment"):
        engine.trigger(A, reason)
    await engine.wait_idle()
    assert probe.count(A) == 1
    assert probe.runs[0][1] == {"spec", "deployment", "resync"}
    await engine.stop()


async def test_a_trigger_that_arrives_while_the_key_runs_is_not_lost() -> None:
    probe = Probe(gates={A: asyncio.Event()})
    engine = _engine(probe)
    engine.trigger(A, "spec")
    await probe.started.setdefault(A, asyncio.Event()).wait()
    engine.trigger(A, "deployment")  # e.g. the Deployment turned Ready meanwhile
    engine.trigger(A, "deployment")
    probe.gates[A].set()
    await engine.wait_idle()
    assert probe.count(A) == 2
    assert probe.runs[1][1] == {"deployment"}
    await engine.stop()


async def test_requeue_after_runs_the_key_again_later() -> None:
    probe = Probe(outcomes={A: [Outcome(requeue_after=0.05)]})
    engine = _engine(probe)
    engine.trigger(A, "spec")
    await asyncio.sleep(0.2)
    await engine.wait_idle()
    assert probe.count(A) == 2
    assert probe.runs[1][1] == {"requeue"}
    await engine.stop()


async def test_failures_back_off_exponentially_with_jitter_and_reset_on_success() -> None:
    backoff = Backoff(base=0.02, cap=0.08, jitter=0.2)
    probe = Probe(outcomes={A: [Outcome(failed=True)] * 4 + [Outcome()]})
    engine = _engine(probe, backoff=backoff)
    engine.trigger(A, "spec")
    loop = asyncio.get_running_loop()
    times: list[float] = []
    while probe.count(A) < 5:
        before = probe.count(A)
        await asyncio.sleep(0.002)
        if probe.count(A) != before:
            times.append(loop.time())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.02, 0.04, 0.08 (cap) ... each within +-20 % jitter (and scheduling slack)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.02, 0.04, 0.08, 0.08]
    assert gaps[0] < gaps[-1]
    assert [f for _, _, f in probe.runs] == [0, 1, 2, 3, 4]
    await engine.wait_idle()
    assert engine.keys[A].failures == 0
    await engine.stop()


async def test_resync_and_child_events_wait_for_the_backoff_but_a_new_spec_does_not() -> None:
    probe = Probe(outcomes={A: [Outcome(failed=True)]})
    engine = _engine(probe, backoff=Backoff(base=30, cap=30))
    engine.trigger(A, "spec")
    await engine.wait_idle()
    assert engine.in_backoff(A)
    engine.resync()
    engine.trigger(A, "deployment")
    await asyncio.sleep(0.05)
    await engine.wait_idle()
    assert probe.count(A) == 1
    engine.trigger(A, "spec", urgent=True)
    await engine.wait_idle()
    assert probe.count(A) == 2
    assert probe.runs[1][1] == {"resync", "deployment", "spec"}
    assert probe.runs[1][2] == 0  # the author changed the spec: the failure count starts over
    await engine.stop()


async def test_an_exception_or_a_timeout_is_a_failure_with_backoff() -> None:
    probe = Probe(raise_for={A}, gates={B: asyncio.Event()})
    engine = _engine(probe, reconcile_timeout=0.05, backoff=Backoff(base=30))
    engine.trigger(A, "spec")
    engine.trigger(B, "spec")  # hangs past the deadline
    await asyncio.sleep(0.15)
    await engine.wait_idle()
    assert engine.keys[A].failures == 1
    assert engine.keys[B].failures == 1
    assert engine.healthy()
    await engine.stop()


async def test_one_hung_key_does_not_delay_the_others() -> None:
    probe = Probe(gates={A: asyncio.Event()})
    engine = _engine(probe, workers=2)
    engine.trigger(A, "spec")
    for i in range(20):
        engine.trigger(("ns", f"c{i}"), "spec")
    for _ in range(100):
        await asyncio.sleep(0.005)
        if sum(probe.count(("ns", f"c{i}")) for i in range(20)) == 20:
            break
    assert sum(probe.count(("ns", f"c{i}")) for i in range(20)) == 20
    probe.gates[A].set()
    await engine.wait_idle()
    await engine.stop()


async def test_forget_drops_exactly_that_key() -> None:
    probe = Probe()
    engine = _engine(probe)
    for key in (A, AB, B):
        engine.trigger(key, "spec")
    await engine.wait_idle()
    engine.forget(A)
    assert set(engine.keys) == {AB, B}
    assert engine.state(AB) == {"runs": 1}
    await engine.stop()


async def test_a_forget_outcome_drops_the_key() -> None:
    probe = Probe(outcomes={A: [Outcome(forget=True)]})
    engine = _engine(probe)
    engine.trigger(A, "resync")
    await engine.wait_idle()
    assert A not in engine.keys
    await engine.stop()


async def test_a_paused_engine_collects_triggers_and_runs_them_on_resume() -> None:
    probe = Probe()
    engine = _engine(probe)
    engine.pause()
    engine.trigger(A, "spec")
    engine.trigger(B, "spec")
    await asyncio.sleep(0.05)
    assert probe.runs == []
    engine.resume()
    await asyncio.sleep(0.01)
    await engine.wait_idle()
    assert {k for k, _, _ in probe.runs} == {A, B}
    await engine.stop()


def _keys(n: int) -> list[Key]:
    return [("ns", f"c{i:03d}") for i in range(n)]


async def test_an_event_runs_before_a_queued_resync_pass_and_only_once() -> None:
    """The N=500 tail: a Deployment event must not wait behind a resync pass of every key."""
    keys = _keys(50)
    probe = Probe(gates={keys[0]: asyncio.Event()})
    engine = _engine(probe, workers=1)
    engine.trigger_many(keys[1:], "spec")
    await engine.wait_idle()
    probe.runs.clear()
    engine.trigger(keys[0], "spec")  # holds the only worker
    await probe.started.setdefault(keys[0], asyncio.Event()).wait()
    engine.resync()  # keys[1:] queued in the resync lane (keys[0] runs: marked dirty)
    engine.trigger(keys[40], "deployment")  # promoted to the event lane
    engine.trigger(B, "spec")  # a new key, after the resync was queued
    probe.gates[keys[0]].set()
    await engine.wait_idle()
    order = [k for k, _, _ in probe.runs]
    assert order[:3] == [keys[0], keys[40], B]
    assert probe.runs[1][1] == {"resync", "deployment"}
    assert order[3:] == [*keys[1:40], *keys[41:], keys[0]]  # FIFO; keys[0]'s rerun is last
    assert probe.count(keys[40]) == 1
    assert engine.keys[keys[40]].queued is False
    await engine.stop()


async def test_a_rerun_waits_in_the_lane_of_what_came_in_while_it_ran() -> None:
    probe = Probe(gates={A: asyncio.Event()})
    engine = _engine(probe, workers=1)
    engine.trigger(A, "spec")
    await probe.started.setdefault(A, asyncio.Event()).wait()
    engine.trigger(A, "resync")  # A's rerun: resync lane
    engine.trigger(B, "child")
    probe.gates[A].set()
    await engine.wait_idle()
    assert [k for k, _, _ in probe.runs] == [A, B, A]

    probe.runs.clear()
    probe.gates[A] = asyncio.Event()
    probe.started[A] = asyncio.Event()
    engine.trigger(A, "spec")
    await probe.started[A].wait()
    engine.trigger(A, "resync")
    engine.trigger(A, "deployment")  # the best lane of the two: the event lane
    engine.trigger(B, "resync")
    probe.gates[A].set()
    await engine.wait_idle()
    assert [k for k, _, _ in probe.runs] == [A, A, B]
    assert probe.runs[1][1] == {"resync", "deployment"}
    await engine.stop()


async def test_a_requeue_that_comes_due_moves_a_key_out_of_the_resync_lane() -> None:
    keys = _keys(20)
    probe = Probe(outcomes={A: [Outcome(requeue_after=0.02)]}, gates={keys[0]: asyncio.Event()})
    engine = _engine(probe, workers=1)
    engine.trigger_many(keys[1:], "spec")
    engine.trigger(A, "spec")
    await engine.wait_idle()
    probe.runs.clear()
    engine.trigger(keys[0], "spec")
    await probe.started.setdefault(keys[0], asyncio.Event()).wait()
    engine.resync()  # A and keys[1:] in the resync lane
    await asyncio.sleep(0.05)  # A's requeue comes due while it waits there
    probe.gates[keys[0]].set()
    await engine.wait_idle()
    order = [k for k, _, _ in probe.runs]
    assert order[:2] == [keys[0], A]
    assert probe.runs[1][1] == {"resync", "requeue"}
    assert probe.count(A) == 1
    assert order[2:] == [*keys[1:], keys[0]]
    await engine.stop()


async def test_a_quarter_of_the_workers_stay_free_for_events_during_a_resync_pass() -> None:
    keys = _keys(12)
    gate = asyncio.Event()
    probe = Probe(gates=dict.fromkeys(keys, gate))
    engine = _engine(probe, workers=4)  # at most 3 run resync keys
    for key in keys:
        engine.ensure(key)
    engine.resync()
    await asyncio.sleep(0.05)
    assert len(probe.runs) == 3  # the 4th worker does not take a resync key
    engine.trigger(A, "child")
    await probe.started.setdefault(A, asyncio.Event()).wait()  # runs now, on the free worker
    assert [k for k, _, _ in probe.runs] == [*keys[:3], A]
    gate.set()
    await engine.wait_idle()
    assert sorted(k for k, _, _ in probe.runs) == sorted([*keys, A])
    await engine.stop()


async def test_one_worker_still_runs_the_resync_lane() -> None:
    probe = Probe()
    engine = _engine(probe, workers=1)
    engine.ensure(A)
    engine.ensure(B)
    engine.resync()
    await engine.wait_idle()
    assert [k for k, _, _ in probe.runs] == [A, B]
    await engine.stop()


async def test_a_requeue_asked_by_a_run_that_a_resync_made_dirty_stays_armed() -> None:
    keys = _keys(10)
    probe = Probe(outcomes={A: [Outcome(), Outcome(requeue_after=0.05)]})
    engine = _engine(probe, workers=2)  # one resync slot
    engine.trigger_many(keys, "spec")
    engine.trigger(A, "spec")
    await engine.wait_idle()
    probe.runs.clear()
    probe.started.clear()
    probe.gates[A], probe.gates[keys[0]] = asyncio.Event(), asyncio.Event()
    engine.trigger(A, "child")
    await probe.started.setdefault(A, asyncio.Event()).wait()
    engine.resync()  # A runs: marked dirty; keys[0] takes the resync slot and is held
    await probe.started.setdefault(keys[0], asyncio.Event()).wait()
    probe.gates[A].set()  # A ends asking for a requeue in 0.05 s; its rerun waits in the lane
    await asyncio.sleep(0.2)
    assert [k for k, _, _ in probe.runs] == [A, keys[0], A]  # the requeue moved it ahead
    assert probe.runs[2][1] == {"resync", "requeue"}
    probe.gates[keys[0]].set()
    await engine.wait_idle()
    assert probe.count(A) == 2
    await engine.stop()


async def test_a_stream_of_events_does_not_starve_the_resync_lane() -> None:
    now = [0.0]
    probe = Probe()
    engine: Engine[dict[str, int]] = Engine(
        probe,  # type: ignore[arg-type]
        workers=1,
        clock=lambda: now[0],
        resync_max_wait=30.0,
    )
    keys = _keys(3)
    for key in keys:
        engine.ensure(key)
    engine.resync()  # queued at t=0
    engine.trigger(A, "child")
    engine.trigger(B, "child")
    engine.start()
    await engine.wait_idle()
    assert [k for k, _, _ in probe.runs] == [A, B, *keys]  # events first while fresh

    probe.runs.clear()
    engine.resync()  # queued at t=0
    now[0] = 31.0  # ... and overdue by the time the events come
    engine.trigger(A, "child")
    await engine.wait_idle()
    # the overdue resync lane first (A's resync entry was replaced by its event)
    assert [k for k, _, _ in probe.runs] == [*keys, B, A]
    await engine.stop()
