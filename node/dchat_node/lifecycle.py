"""Process lifecycle state shared by the server and the ops app.

``draining`` flips to True on SIGTERM (``/ready`` answers 503 from then on);
``loop_heartbeat`` is refreshed by a small task in the ops app, so ``/health`` can tell a
responsive event loop from a blocked one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_STALE_AFTER = 5.0


@dataclass
class NodeState:
    draining: bool = False
    migrations_checked: bool = False
    started_at: float = field(default_factory=time.time)
    loop_heartbeat: float = field(default_factory=time.monotonic)
    loop_lag: float = 0.0

    def begin_drain(self) -> None:
        self.draining = True

    def loop_responsive(self) -> bool:
        return time.monotonic() - self.loop_heartbeat < HEARTBEAT_STALE_AFTER


async def heartbeat(state: NodeState) -> None:
    """Record how late the loop wakes us; stops on cancellation."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        now = time.monotonic()
        state.loop_lag = max(0.0, now - before - HEARTBEAT_INTERVAL)
        state.loop_heartbeat = now
