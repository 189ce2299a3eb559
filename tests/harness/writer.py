"""Continuous writes through a dchat node's API, for failover tests: every acknowledged write
is remembered, so a test can check that none was lost and measure the outage.

``Writer(api, headers).start()`` creates a channel and posts numbered messages to it from a
thread (at most ``rate`` a second, bounded by ``limit_s``) until ``stop()``. A 201 is an
acknowledged write; anything else (a 503 during a failover, a refused connection) is a
failed attempt. ``outage()`` is the longest run of failed attempts: from the first failed
attempt to the first acknowledged one after it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Writer:
    api: str
    headers: dict[str, str]
    rate: float = 20.0
    limit_s: float = 180.0
    channel: str = ""
    acked: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time of the 201, message body) of every acknowledged write."""
    failures: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, what came back) of every failed attempt."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        r = httpx.post(
            f"{self.api}/api/v1/channels", json={"name": "failover"}, headers=self.headers
        )
        r.raise_for_status()
        self.channel = str(r.json()["id"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit_s
        n = 0
        with httpx.Client(timeout=5, headers=self.headers) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                n += 1
                body = f"m{n}"
                try:
                    r = client.post(
                        f"{self.api}/api/v1/channels/{self.channel}/messages", json={"body": body}
                    )
                    outcome = str(r.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                if outcome == "201":
                    self.acked.append((time.monotonic(), body))
                else:
                    self.failures.append((time.monotonic(), outcome))
                time.sleep(1 / self.rate)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait_acked(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` more writes than now were acknowledged."""
        want = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while len(self.acked) < want:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} writes not acknowledged in {timeout} s: {self}")
            time.sleep(0.05)

    def first_ack_after(self, moment: float) -> float | None:
        return next((t for t, _ in self.acked if t > moment), None)

    def bodies(self) -> list[str]:
        """Every message body in the channel, read back through the API (all pages)."""
        out: list[str] = []
        cursor: str | None = None
        with httpx.Client(timeout=10, headers=self.headers) as client:
            while True:
                params: dict[str, Any] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                r = client.get(f"{self.api}/api/v1/channels/{self.channel}/messages", params=params)
                r.raise_for_status()
                page = r.json()
                out += [m["body"] for m in page["items"]]
                cursor = page.get("next_cursor")
                if not cursor or not page["items"]:
                    return out

    def __repr__(self) -> str:
        return f"Writer(acked={len(self.acked)}, failures={self.failures[-5:]})"
