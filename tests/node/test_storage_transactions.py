"""``SqlDatabase.transaction()`` on both engines: commit, rollback on error and on
cancellation, isolation from other tasks' statements (SQLite's one connection), and
compare-and-set transitions under concurrency (what domain stores build state machines on)."""

from __future__ import annotations

import asyncio

import pytest

from dchat_node.storage import Conflict, Storage, StorageError
from tests.node.test_storage_contract import db, db_config, fresh  # noqa: F401 (fixtures)

TABLE = "CREATE TABLE tx_probe (id INTEGER PRIMARY KEY, state TEXT NOT NULL, n INTEGER NOT NULL)"


async def _table(db: Storage) -> Storage:  # noqa: F811
    await db.execute(TABLE)
    await db.execute("INSERT INTO tx_probe (id, state, n) VALUES (?, ?, ?)", 1, "new", 0)
    return db


async def _row(db: Storage) -> tuple[str, int]:  # noqa: F811
    row = await db.fetchrow("SELECT state, n FROM tx_probe WHERE id = ?", 1)
    assert row is not None
    return str(row[0]), int(row[1])


async def test_commit_makes_every_statement_visible(db: Storage) -> None:  # noqa: F811
    await _table(db)
    async with db.transaction() as tx:
        await tx.execute("UPDATE tx_probe SET state = ? WHERE id = ?", "paid", 1)
        await tx.execute("INSERT INTO tx_probe (id, state, n) VALUES (?, ?, ?)", 2, "x", 7)
        row = await tx.fetchrow("SELECT n FROM tx_probe WHERE id = ?", 2)
        assert row is not None
        assert row[0] == 7
    assert await _row(db) == ("paid", 0)
    assert len(await db.fetch("SELECT id FROM tx_probe")) == 2


async def test_an_error_rolls_every_statement_back(db: Storage) -> None:  # noqa: F811
    await _table(db)

    async def duplicate() -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE tx_probe SET state = ? WHERE id = ?", "paid", 1)
            await tx.execute("INSERT INTO tx_probe (id, state, n) VALUES (?, ?, ?)", 1, "d", 0)

    with pytest.raises(Conflict):
        await duplicate()
    assert await _row(db) == ("new", 0)
    # the engine is usable afterwards, in and out of transactions
    async with db.transaction() as tx:
        await tx.execute("UPDATE tx_probe SET n = n + 1 WHERE id = ?", 1)
    assert await _row(db) == ("new", 1)


async def test_a_caller_exception_rolls_back(db: Storage) -> None:  # noqa: F811
    await _table(db)

    class Boom(Exception):
        pass

    async def fail() -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE tx_probe SET state = ? WHERE id = ?", "gone", 1)
            raise Boom

    with pytest.raises(Boom):
        await fail()
    assert await _row(db) == ("new", 0)


async def test_a_cancelled_transaction_rolls_back(db: Storage) -> None:  # noqa: F811
    await _table(db)
    entered = asyncio.Event()

    async def hold() -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE tx_probe SET state = ? WHERE id = ?", "held", 1)
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _row(db) == ("new", 0)
    async with db.transaction() as tx:
        await tx.execute("UPDATE tx_probe SET n = 5 WHERE id = ?", 1)
    assert await _row(db) == ("new", 5)


async def test_other_tasks_never_see_or_join_an_open_transaction(
    db: Storage,  # noqa: F811
) -> None:
    await _table(db)
    inside = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await tx.execute("UPDATE tx_probe SET state = ? WHERE id = ?", "uncommitted", 1)
            inside.set()
            await release.wait()
            raise RuntimeError("roll it back")

    task = asyncio.create_task(writer())
    await asyncio.wait_for(inside.wait(), 5)
    # another task's write: must not be rolled back with the transaction
    other = asyncio.create_task(db.execute("UPDATE tx_probe SET n = n + 10 WHERE id = ?", 1))
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(RuntimeError, match="roll it back"):
        await asyncio.wait_for(task, 10)
    await asyncio.wait_for(other, 10)
    assert await _row(db) == ("new", 10)


async def test_compare_and_set_lets_exactly_one_transition_win(
    db: Storage,  # noqa: F811
) -> None:
    await _table(db)

    async def transition(to: str) -> bool:
        async with db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE tx_probe SET state = ?, n = n + 1 WHERE id = ? AND state = ? RETURNING n",
                to,
                1,
                "new",
            )
            if rows:
                await tx.execute("INSERT INTO tx_probe (id, state, n) VALUES (?, ?, ?)", 100, to, 0)
            return bool(rows)

    results = await asyncio.gather(*(transition(s) for s in ("paid", "expired", "refunded")))
    assert sum(results) == 1
    state, n = await _row(db)
    assert n == 1
    assert state == ("paid", "expired", "refunded")[results.index(True)]
    assert len(await db.fetch("SELECT id FROM tx_probe")) == 2


async def test_nested_transaction_in_one_task_is_refused_on_sqlite(
    db: Storage,  # noqa: F811
) -> None:
    if db.engine != "sqlite":
        pytest.skip("asyncpg nests with savepoints on its own connection; SQLite refuses")

    async def nested() -> None:
        async with db.transaction(), db.transaction():
            pass

    with pytest.raises(StorageError, match="already open"):
        await nested()
    async with db.transaction() as tx:  # the outer one was rolled back and released
        await tx.execute("SELECT 1")
