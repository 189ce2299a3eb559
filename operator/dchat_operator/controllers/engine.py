"""One reconcile engine for every kind: a work queue with per-key state, as controller-runtime's.

Design:
- A key (namespace, name) is in at most one of: idle, queued, running, waiting for its time
  (requeue or backoff). ``trigger`` while it runs marks it ``dirty`` and it runs again right
  after: a trigger is never lost, however it interleaves with a reconcile (the previous
  engine dropped the trigger of a Deployment status change that arrived while a reconcile of
  its cluster was running, and the cluster waited for the periodic resync).
- A fixed number of workers take queued keys, so one cluster whose API calls hang occupies one
  worker until its reconcile deadline (``reconcile_timeout``), and the others go on.
- The controller's ``reconcile`` returns an ``Outcome``: ``requeue_after`` (a soak window, the
  next cron time), ``failed`` (something it could not do: exponential backoff with jitter,
  capped), or ``forget`` (the object is gone). An exception or a timeout is a failure too.
- Backoff: a key that failed is not retried before its time by the periodic resync or by
  events of its children; a ``urgent`` trigger (a new generation: the author changed the spec)
  runs at once. Failures reset on success. Failures and delays are in metrics, and the
  controller sees them (``Attempt``) to put them in status.
- Per-key state is one small dataclass (``KeyState``) holding the engine's fields and the
  controller's own state object (``data``); ``forget`` drops exactly that key.
- ``pause``/``resume`` gate the workers (leader election): a paused engine keeps collecting
  triggers, and runs them when it resumes.
- Two lanes: keys triggered by an event (a spec change, a child's change, a requeue or retry
  at its time) are taken before keys queued only by the periodic resync, and a key waiting
  in the resync lane moves to the event lane when an event for it arrives (as
  controller-runtime's priority queue ranks its informers' resync below events). With one
  FIFO, a resync pass of 500 clusters put the Deployment event that makes a cluster Ready
  behind up to 500 full reconciles (seconds under load: the tail of the N=500 benchmark).
  A queue entry carries the key's ticket; an entry whose ticket is stale (the key moved
  lanes or already ran) is skipped. A quarter of the workers (at least one) never take a
  resync key, so an event finds a free worker even while a pass occupies the others. A
  resync key that has waited ``resync_max_wait`` goes before the events: a steady stream of
  events never starves the resync (the drift check of what no watch covers).
- The clock (``time.monotonic``) and the random source of the jitter are injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from dchat_operator.clients.metrics import (
    BACKOFF_SECONDS,
    QUEUE_DEPTH,
    RECONCILE_ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
    RETRIES,
)

log = logging.getLogger("dchat_operator.engine")

Key = tuple[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What one reconcile asks of the engine."""

    requeue_after: float | None = None
    failed: bool = False
    forget: bool = False
    result: str = "ok"


@dataclass(frozen=True)
class Attempt:
    """What the controller knows about this run of a key."""

    reasons: frozenset[str]
    failures: int
    """Consecutive failed runs before this one."""
    next_backoff: float
    """The delay the engine waits if this run fails too (before jitter)."""


class Reconciler(Protocol[T]):
    kind: str

    def new_state(self) -> T: ...

    async def reconcile(self, key: Key, state: T, attempt: Attempt) -> Outcome: ...


@dataclass
class KeyState(Generic[T]):
    data: T
    queued: bool = False
    running: bool = False
    dirty: bool = False
    urgent: bool = False
    failures: int = 0
    due: float | None = None
    reasons: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    lane: int = 0
    """While queued: ``EVENT_LANE`` or ``RESYNC_LANE``."""
    ticket: int = 0
    """Bumped at every enqueue: older queue entries of this key are stale."""


EVENT_LANE = 0
RESYNC_LANE = 1
BACKGROUND_REASONS = frozenset({"resync"})
"""Reasons that queue a key in the resync lane (every other reason is an event)."""


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        """Delay before retrying after ``failures`` consecutive failures (no jitter)."""
        if failures <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2 ** (failures - 1)))


class Engine(Generic[T]):
    """Runs one controller's reconciles."""

    def __init__(
        self,
        reconciler: Reconciler[T],
        *,
        workers: int = 16,
        reconcile_timeout: float = 60.0,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        resync_max_wait: float = 30.0,
    ) -> None:
        self.reconciler = reconciler
        self.kind = reconciler.kind
        self.keys: dict[Key, KeyState[T]] = {}
        # per lane, FIFO: (key, ticket, when queued)
        self._lanes: tuple[deque[tuple[Key, int, float]], ...] = (deque(), deque())
        self.resync_max_wait = resync_max_wait
        self._ready = asyncio.Event()
        self._resync_limit = max(1, workers - max(1, workers // 4))
        self._resync_running = 0
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._active = asyncio.Event()
        self._active.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self.reconcile_timeout = reconcile_timeout
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        # computed when scraped, not on every enqueue (counting backoffs is O(keys))
        QUEUE_DEPTH.labels(self.kind, "queued").set_function(
            lambda: sum(1 for s in list(self.keys.values()) if s.queued)
        )
        QUEUE_DEPTH.labels(self.kind, "backoff").set_function(
            lambda: sum(1 for s in list(self.keys.values()) if s.failures and s.due is not None)
        )
        QUEUE_DEPTH.labels(self.kind, "known").set_function(lambda: len(self.keys))

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._work(i), name=f"dchat-{self.kind}-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for state in self.keys.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None

    def healthy(self) -> bool:
        """All workers alive (a worker only ends by cancellation)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def pause(self) -> None:
        """Stop taking keys (running reconciles finish); triggers are still collected."""
        self._active.clear()

    def resume(self) -> None:
        self._active.set()

    @property
    def paused(self) -> bool:
        return not self._active.is_set()

    async def wait_idle(self) -> None:
        """Until nothing is queued or running (timers may still be pending). For tests."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._idle.is_set():
                return

    # --- keys -------------------------------------------------------------------------------

    def state(self, key: Key) -> T | None:
        found = self.keys.get(key)
        return None if found is None else found.data

    def ensure(self, key: Key) -> T:
        """The controller's state of ``key``, created when new."""
        found = self.keys.get(key)
        if found is None:
            found = self.keys[key] = KeyState(self.reconciler.new_state())
        return found.data

    def forget(self, key: Key) -> None:
        """Drop everything about ``key``; a reconcile of it that is running finishes first."""
        found = self.keys.pop(key, None)
        if found is not None and found.timer is not None:
            found.timer.cancel()

    def in_backoff(self, key: Key) -> bool:
        found = self.keys.get(key)
        return bool(found and found.failures and found.due is not None)

    # --- triggers ---------------------------------------------------------------------------

    def trigger(self, key: Key, reason: str, *, urgent: bool = False) -> None:
        """Reconcile ``key`` soon. While it is backing off only an urgent trigger runs it
        before its time; the reason is kept for that run either way."""
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = KeyState(self.reconciler.new_state())
        state.reasons.add(reason)
        lane = RESYNC_LANE if reason in BACKGROUND_REASONS else EVENT_LANE
        if state.running:
            _mark_dirty(state, lane)
            state.urgent = state.urgent or urgent
            return
        if state.queued:
            if lane < state.lane:  # an event for a key waiting behind a resync pass
                self._put(key, state, lane)
            return
        if state.failures and state.due is not None and not urgent:
            return  # runs at its backoff time, with this reason
        if urgent:
            state.failures = 0
        self._enqueue(key, state, lane)

    def trigger_many(self, keys: Iterable[Key], reason: str) -> int:
        count = 0
        for key in list(keys):
            self.trigger(key, reason)
            count += 1
        return count

    def resync(self) -> int:
        """Trigger every known key (keys in backoff keep their time)."""
        return self.trigger_many(self.keys, "resync")

    def _enqueue(self, key: Key, state: KeyState[T], lane: int = EVENT_LANE) -> None:
        if lane == EVENT_LANE:
            _cancel_timer(state)
        # else a requeue timer stays: if it comes due while the key waits behind the
        # resync pass, the key moves to the event lane (``_due``)
        state.queued = True
        self._idle.clear()
        self._put(key, state, lane)

    def _put(self, key: Key, state: KeyState[T], lane: int) -> None:
        state.lane = lane
        state.ticket += 1
        self._lanes[lane].append((key, state.ticket, self._clock()))
        self._ready.set()

    async def _take(self) -> tuple[int, Key, int]:
        """The next entry for a worker: the event lane first; the resync lane only while
        fewer than ``_resync_limit`` resync keys run."""
        while True:
            await self._active.wait()
            events, resyncs = self._lanes
            resync_ok = bool(resyncs) and self._resync_running < self._resync_limit
            overdue = resync_ok and self._clock() - resyncs[0][2] >= self.resync_max_wait
            if events and not overdue:
                key, ticket, _ = events.popleft()
                return EVENT_LANE, key, ticket
            if resync_ok:
                key, ticket, _ = resyncs.popleft()
                return RESYNC_LANE, key, ticket
            self._ready.clear()
            await self._ready.wait()

    def _schedule(self, key: Key, state: KeyState[T], delay: float) -> None:
        if state.timer is not None:
            state.timer.cancel()
        state.due = self._clock() + delay
        loop = asyncio.get_running_loop()
        state.timer = loop.call_later(max(0.0, delay), self._due, key)

    def _due(self, key: Key) -> None:
        state = self.keys.get(key)
        if state is None:
            return
        state.timer = None
        state.reasons.add("retry" if state.failures else "requeue")
        if state.queued:
            if state.lane != EVENT_LANE:
                self._put(key, state, EVENT_LANE)
            return
        if state.running:
            _mark_dirty(state, EVENT_LANE)
            return
        self._enqueue(key, state)

    # --- workers ----------------------------------------------------------------------------

    async def _work(self, index: int) -> None:
        while True:
            lane, key, ticket = await self._take()
            state = self.keys.get(key)
            if state is None or not state.queued or state.ticket != ticket:
                self._maybe_idle()
                continue
            _cancel_timer(state)  # this run is the requeue's too: it sets its own
            state.queued = False
            state.running = True
            state.dirty = False
            state.urgent = False
            reasons = frozenset(state.reasons)
            state.reasons.clear()
            self._running += 1
            if lane == RESYNC_LANE:
                self._resync_running += 1
            try:
                outcome = await self._run(key, state, reasons)
            finally:
                self._running -= 1
                if lane == RESYNC_LANE:
                    self._resync_running -= 1
                    self._ready.set()  # a resync slot is free
                state.running = False
            self._after(key, state, outcome)
            self._maybe_idle()

    async def _run(self, key: Key, state: KeyState[T], reasons: frozenset[str]) -> Outcome:
        attempt = Attempt(
            reasons=reasons,
            failures=state.failures,
            next_backoff=self.backoff.delay(state.failures + 1),
        )
        trigger = _main_reason(reasons)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.reconcile_timeout):
                outcome = await self.reconciler.reconcile(key, state.data, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "%s %s/%s: reconcile failed (attempt %d): %s",
                self.kind,
                *key,
                state.failures + 1,
                _describe(exc),
                exc_info=not isinstance(exc, TimeoutError),
            )
            RECONCILE_ERRORS.labels(self.kind, trigger).inc()
            outcome = Outcome(failed=True, result="error")
        finally:
            RECONCILE_SECONDS.labels(self.kind).observe(time.monotonic() - started)
        RECONCILES.labels(self.kind, trigger, outcome.result or "none").inc()
        return outcome

    def _after(self, key: Key, state: KeyState[T], outcome: Outcome) -> None:
        if outcome.forget and self.keys.get(key) is state and not state.dirty:
            self.forget(key)
            return
        if self.keys.get(key) is not state:  # forgotten while it ran
            return
        if state.urgent:  # the spec changed while it ran: run the new spec now
            state.failures = 0
            state.urgent = False
            self._enqueue(key, state)
            return
        if outcome.failed:
            state.failures += 1
            delay = self.backoff.delay(state.failures)
            delay *= 1 + self.backoff.jitter * (2 * self._rng.random() - 1)
            BACKOFF_SECONDS.labels(self.kind).observe(delay)
            RETRIES.labels(self.kind).inc()
            self._schedule(key, state, delay)
            state.dirty = False  # the retry carries the reasons that came in meanwhile
            return
        state.failures = 0
        if state.dirty:
            if state.lane == RESYNC_LANE and outcome.requeue_after is not None:
                # the rerun waits behind a resync pass: the requeue (a soak window, a cron
                # time) stays armed and moves it ahead when it comes due
                self._schedule(key, state, outcome.requeue_after)
            self._enqueue(key, state, state.lane)  # the lane of what came in while it ran
        elif outcome.requeue_after is not None:
            self._schedule(key, state, outcome.requeue_after)
        else:
            state.due = None

    def _maybe_idle(self) -> None:
        if self._running == 0 and not any(self._lanes):
            self._idle.set()


def _cancel_timer(state: KeyState[Any]) -> None:
    if state.timer is not None:
        state.timer.cancel()
        state.timer = None
    state.due = None


def _mark_dirty(state: KeyState[Any], lane: int) -> None:
    """Triggered while running: run again after, in the best lane of those triggers."""
    state.lane = min(state.lane, lane) if state.dirty else lane
    state.dirty = True


_PRIORITY = ("spec", "child", "deployment", "retry", "requeue", "resync")


def _main_reason(reasons: frozenset[str]) -> str:
    for reason in _PRIORITY:
        if reason in reasons:
            return reason
    return next(iter(sorted(reasons)), "none")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def plain(value: Any) -> Any:
    """A deep copy of a kopf Body (or any mapping/sequence) as plain dicts and lists."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of a watched object without what no controller reads."""
    out: dict[str, Any] = plain(body)
    meta = out.get("metadata") or {}
    meta.pop("managedFields", None)
    (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return out


def just_created(body: Mapping[str, Any], attempt: Attempt) -> bool:
    """Is this the first run of an object just created, so that its watched body is as good
    as a read? Triggered by its spec alone, not a retry, and no status yet: nothing but its
    author has written to it. (A stale one costs the caller a 409 on its status write.)"""
    return attempt.reasons == {"spec"} and not attempt.failures and not body.get("status")


def object_key(body: Mapping[str, Any]) -> Key:
    """The engine key (namespace, name) of a watched object."""
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))


def route_own_event(engine: Engine[Any], event_type: str, body: Mapping[str, Any]) -> None:
    """An event of the controller's own kind: DELETED forgets the key, anything else runs it."""
    key = object_key(body)
    if event_type == "DELETED":
        engine.forget(key)
    else:
        engine.trigger(key, "spec")


def route_child_event(engine: Engine[Any], body: Mapping[str, Any], owner: str | None) -> None:
    """A child changed: run its owner's key (``owner``: the owner's name, from a label)."""
    if owner:
        meta = body.get("metadata") or {}
        engine.trigger((str(meta.get("namespace") or "default"), str(owner)), "child")
