"""Output helpers: tables, ages, health marks, JSON, and the progress line of long waits.

Design: pure formatting (strings in, strings out) so the unit tests render recorded objects;
the only side effects are in ``Progress`` (stderr) and ``emit_json`` (stdout). Data goes to
stdout, progress and notes to stderr, so ``-o json | jq`` stays clean. The progress line
redraws in place on a terminal and prints one line per change otherwise (CI logs).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

OK = "ok"
WARN = "warn"
FAIL = "fail"
MARKS = {OK: "✓", WARN: "!", FAIL: "✗"}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_time(value: Any) -> dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def age(value: Any, at: dt.datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d; "-" for no time."""
    then = parse_time(value)
    if then is None:
        return "-"
    seconds = max(0, int((at - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def size(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl get."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        lines.append("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return "\n".join(lines) + "\n"


def err(message: str) -> None:
    """One ``error:`` line on stderr."""
    print(f"error: {message}", file=sys.stderr)


def emit_json(data: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, sort_keys=False) + "\n")


class Progress:
    """One status line on stderr while waiting: spinner, elapsed seconds, the current state."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.last = ""
        self.frame = 0

    def update(self, state: str) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            self.frame = (self.frame + 1) % len(self.FRAMES)
            line = f"{self.FRAMES[self.frame]} {self.what}: {state} ({elapsed:.0f}s)"
            self.stream.write("\r\x1b[K" + line)
            self.stream.flush()
        elif state != self.last:
            self.stream.write(f"[{elapsed:5.1f}s] {self.what}: {state}\n")
            self.stream.flush()
        self.last = state

    def done(self, state: str) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"{self.what}: {state} after {elapsed:.1f}s\n")
        self.stream.flush()
