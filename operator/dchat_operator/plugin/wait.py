"""Waiting for the operator's answer: poll one object, show progress, stop at a deadline.

Design: commands that change something and then wait (``--wait``) poll the object every
``interval`` seconds (a GET is cheap and survives apiserver restarts, where a watch would need
re-establishing) and hand each version to ``judge``, which says whether it is finished, whether
that is a success, and what to show on the progress line. A deadline (``--timeout``) ends the
wait with a failure that says what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dchat_operator.plugin.output import Progress

Obj = dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    done: bool
    ok: bool
    state: str


def wait_for(
    fetch: Callable[[], Obj | None],
    judge: Callable[[Obj | None], Verdict],
    *,
    what: str,
    limit: float,
    interval: float = 1.0,
) -> Verdict:
    """Poll until ``judge`` says done or ``limit`` seconds passed (then not ok)."""
    progress = Progress(what)
    deadline = time.monotonic() + limit
    verdict = Verdict(False, False, "waiting")
    while True:
        verdict = judge(fetch())
        if verdict.done:
            progress.done(verdict.state)
            return verdict
        progress.update(verdict.state)
        if time.monotonic() >= deadline:
            result = Verdict(True, False, f"timed out after {limit:.0f}s (last: {verdict.state})")
            progress.done(result.state)
            return result
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))
