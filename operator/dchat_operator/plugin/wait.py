"""Waiting for the operator's answer: poll one object, show progress, stop at a deadline.

Design: commands that change something and then wait (``--wait``) poll the object every
``interval`` seconds (a GET is cheap and survives apiserver restarts, where a watch would need
re-establishing) and hand each version to ``judge``, which says whether it is finished, whether
that is a success, and what to show on the progress line: a state, and the fraction done when
the object tells it (pods ready of desired), which a terminal shows as a bar. A deadline
(``--timeout``) ends the wait with a failure that says what was last seen. ``follow`` is what
every ``--wait`` command ends with: poll its object by kind and name unless ``--no-wait``, and
turn the verdict into the exit code.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dchat_operator.api.kinds import Kind
from dchat_operator.plugin.kube import Kube
from dchat_operator.plugin.output import Progress

Obj = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    done: bool
    ok: bool
    state: str
    fraction: float | None = None  # 0..1 when known: a bar on a terminal, else a spinner


def ready_fraction(ready: int, desired: int) -> float | None:
    """Pods ready of desired, while scaling up or rolling out (ready at most desired); None
    when no fraction is meaningful: scaling to 0, or surplus pods still going away."""
    if desired <= 0 or ready > desired:
        return None
    return ready / desired


def wait_for(
    fetch: Callable[[], Obj | None],
    judge: Callable[[Obj | None], Verdict],
    *,
    what: str,
    limit: float,
    interval: float = 1.0,
    live: bool = True,
) -> Verdict:
    """Poll until ``judge`` says done or ``limit`` seconds passed (then not ok). ``live``
    False: plain progress lines even on a terminal."""
    progress = Progress(what, live=live)
    deadline = time.monotonic() + limit
    verdict = Verdict(False, False, "waiting")
    while True:
        verdict = judge(fetch())
        if verdict.done:
            progress.done(verdict.state)
            return verdict
        progress.update(verdict.state, verdict.fraction)
        if time.monotonic() >= deadline:
            result = Verdict(True, False, f"timed out after {limit:.0f}s (last: {verdict.state})")
            progress.done(result.state)
            return result
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))


def follow(
    kube: Kube,
    kind: Kind,
    name: str,
    judge: Callable[[Obj | None], Verdict],
    *,
    what: str,
    args: argparse.Namespace,
) -> int:
    """The exit code of a command that waits (``args.wait``, ``args.timeout``) for object
    ``name`` of ``kind`` in the current namespace: 0 without ``--wait`` or when ``judge``
    ends ok, else 1. With ``-o json`` (no waiting command has it today) the progress is
    never drawn in place."""
    if not args.wait:
        return 0
    live = getattr(args, "output", "text") != "json"
    verdict = wait_for(
        lambda: kube.get(kind, name), judge, what=what, limit=args.timeout, live=live
    )
    return 0 if verdict.ok else 1
