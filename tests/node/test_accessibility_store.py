"""The accessibility preferences store on both engines (SQLite unit, PostgreSQL
integration): absent user, upsert round trip, replace, users kept apart, concurrent
writers of one user end with one complete row."""

from __future__ import annotations

import asyncio

from dchat_node.accessibility.store import SqlPreferencesStore
from dchat_node.storage import Storage
from tests.node.test_storage_contract import db, db_config, fresh  # noqa: F401 (fixtures)


async def test_round_trip_and_replace(db: Storage) -> None:  # noqa: F811
    store = SqlPreferencesStore(db)
    assert await store.get("alice") is None
    first = await store.put(
        "alice", font_scale=1.75, high_contrast=True, reduced_motion=False, screen_reader_hints=True
    )
    assert (first.user_id, first.font_scale, first.high_contrast) == ("alice", 1.75, True)
    assert (first.reduced_motion, first.screen_reader_hints) == (False, True)
    assert await store.get("alice") == first
    second = await store.put(
        "alice", font_scale=0.5, high_contrast=False, reduced_motion=True, screen_reader_hints=False
    )
    assert second.updated_at_us >= first.updated_at_us
    assert await store.get("alice") == second
    assert (second.font_scale, second.high_contrast, second.reduced_motion) == (0.5, False, True)
    rows = await db.fetch("SELECT user_id FROM accessibility_preferences")
    assert [r[0] for r in rows] == ["alice"]  # replaced, not added


async def test_users_are_kept_apart_and_odd_ids_work(db: Storage) -> None:  # noqa: F811
    store = SqlPreferencesStore(db)
    ids = ["bob", "user@example.com", "ü'; DROP TABLE x; --", "x" * 200]
    for n, uid in enumerate(ids):
        await store.put(
            uid,
            font_scale=1.0 + n / 4,
            high_contrast=bool(n % 2),
            reduced_motion=False,
            screen_reader_hints=False,
        )
    for n, uid in enumerate(ids):
        rec = await store.get(uid)
        assert rec is not None
        assert (rec.user_id, rec.font_scale, rec.high_contrast) == (uid, 1.0 + n / 4, bool(n % 2))


async def test_concurrent_puts_leave_one_whole_row(db: Storage) -> None:  # noqa: F811
    store = SqlPreferencesStore(db)

    async def put(n: int) -> None:
        await store.put(
            "carol",
            font_scale=1.0 + n / 10,
            high_contrast=bool(n % 2),
            reduced_motion=bool(n % 2),
            screen_reader_hints=bool(n % 2),
        )

    await asyncio.gather(*(put(n) for n in range(10)))
    rec = await store.get("carol")
    assert rec is not None
    n = round((rec.font_scale - 1.0) * 10)
    # every column from the same write: never a mix of two
    assert (rec.high_contrast, rec.reduced_motion, rec.screen_reader_hints) == (bool(n % 2),) * 3
    assert len(await db.fetch("SELECT 1 FROM accessibility_preferences")) == 1
