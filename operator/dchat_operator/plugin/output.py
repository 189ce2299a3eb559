"""Output helpers: tables, ages, health marks, JSON, and the progress line of long waits.

Design: pure formatting (strings in, strings out) so the unit tests render recorded objects;
the only side effects are in ``Progress`` (stderr) and ``emit_json`` (stdout). Data goes to
stdout, progress and notes to stderr, so ``-o json | jq`` stays clean. The progress line
redraws in place on a terminal (stderr a TTY, ``TERM`` not ``dumb``): a bar with a percentage
when the wait knows a fraction (pods ready of desired), else a spinner with the elapsed time;
the line is cut to the terminal's width so it never wraps (a wrapped line cannot be redrawn).
Not on a terminal, or ``live=False``, it prints one line per change of state, no bar and no
escape sequences (CI logs, pipes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
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


BAR_WIDTH = 20


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[██████░░░░░░░░░░░░░░]  30%``: ``fraction`` clamped to 0..1, floored, so 100 % is
    shown only when complete."""
    part = min(1.0, max(0.0, fraction))
    filled = int(part * width)
    return f"[{'█' * filled}{'░' * (width - filled)}] {int(part * 100):3d}%"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return 80


class Progress:
    """One status line on stderr while waiting: a bar when the fraction done is known, else
    a spinner; elapsed seconds and the current state."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(
        self,
        what: str,
        stream: TextIO | None = None,
        *,
        live: bool = True,
        columns: int | None = None,
    ) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = live and _is_terminal(self.stream)
        self.columns = columns
        self.start = time.monotonic()
        self.last = ""
        self.frame = 0

    def line(self, state: str, fraction: float | None, elapsed: float) -> str:
        """The in-place line: bar or spinner, cut to the terminal's width."""
        if fraction is None:
            self.frame = (self.frame + 1) % len(self.FRAMES)
            text = f"{self.FRAMES[self.frame]} {self.what}: {state} ({elapsed:.0f}s)"
        else:
            text = f"{self.what}: {bar(fraction)} {state} ({elapsed:.0f}s)"
        width = (self.columns or _columns(self.stream)) - 1
        return text if len(text) <= width else text[: max(0, width - 1)] + "…"

    def update(self, state: str, fraction: float | None = None) -> None:
        elapsed = time.monotonic() - self.start
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(state, fraction, elapsed))
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
