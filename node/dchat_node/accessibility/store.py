"""Storage of the accessibility domain: per-user preferences (migration 0004).

``PreferencesStore`` is the interface the service uses; ``SqlPreferencesStore`` its one
implementation, written once against ``SqlDatabase`` (``?`` placeholders; both engines run
it). Booleans are stored as 0/1 and the row is replaced with one upsert
(``INSERT ... ON CONFLICT (user_id) DO UPDATE``, SQLite 3.24+ and PostgreSQL alike).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from dchat_node.storage.base import Row, SqlDatabase


@dataclass(frozen=True, slots=True)
class PreferencesRecord:
    user_id: str
    font_scale: float
    high_contrast: bool
    reduced_motion: bool
    screen_reader_hints: bool
    updated_at_us: int


class PreferencesStore(Protocol):
    async def get(self, user_id: str) -> PreferencesRecord | None: ...
    async def put(
        self,
        user_id: str,
        *,
        font_scale: float,
        high_contrast: bool,
        reduced_motion: bool,
        screen_reader_hints: bool,
    ) -> PreferencesRecord: ...


_COLUMNS = "user_id, font_scale, high_contrast, reduced_motion, screen_reader_hints, updated_at"


def _record(row: Row) -> PreferencesRecord:
    return PreferencesRecord(
        str(row[0]), float(row[1]), bool(row[2]), bool(row[3]), bool(row[4]), int(row[5])
    )


class SqlPreferencesStore:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def get(self, user_id: str) -> PreferencesRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM accessibility_preferences WHERE user_id = ?",  # noqa: S608
            user_id,
        )
        return None if row is None else _record(row)

    async def put(
        self,
        user_id: str,
        *,
        font_scale: float,
        high_contrast: bool,
        reduced_motion: bool,
        screen_reader_hints: bool,
    ) -> PreferencesRecord:
        row = await self._db.fetchrow(
            f"INSERT INTO accessibility_preferences ({_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
            "font_scale = excluded.font_scale, high_contrast = excluded.high_contrast, "
            "reduced_motion = excluded.reduced_motion, "
            "screen_reader_hints = excluded.screen_reader_hints, "
            f"updated_at = excluded.updated_at RETURNING {_COLUMNS}",
            user_id,
            float(font_scale),
            int(high_contrast),
            int(reduced_motion),
            int(screen_reader_hints),
            time.time_ns() // 1000,
        )
        assert row is not None  # RETURNING always yields the row
        return _record(row)
