"""SQLite engine (the default): one aiosqlite connection in WAL mode.

Design:
- One connection (aiosqlite runs it on its own thread), autocommit mode
  (``isolation_level=None``): a single statement is its own transaction. SQLite allows one
  writer at a time anyway; WAL lets readers (other processes such as ``dchat verify`` or a
  backup) proceed during writes.
- ``transaction()``: ``BEGIN IMMEDIATE`` .. ``COMMIT`` (``ROLLBACK`` on any exception,
  cancellation included) on that one connection, one transaction at a time (a lock). The
  task that opened it is marked in a context variable; while it is open, statements of
  other tasks wait (``_tx_idle``) instead of slipping into it (they would commit or roll
  back with it). A statement queued before ``BEGIN`` runs before it (aiosqlite's queue is
  FIFO). When no transaction is open the check is one attribute read.
- PRAGMAs on open: ``journal_mode=WAL``, ``foreign_keys=ON``, ``synchronous=NORMAL`` (durable
  in WAL mode except for the last transactions on power loss), ``busy_timeout`` from
  ``database.connection_timeout_secs``.
- Migrations run under ``BEGIN IMMEDIATE`` (the database write lock), re-reading the applied
  set inside the transaction, so two processes migrating at once do not race.
- The parent directory of the database file is created if missing.
- Load shedding (``storage.admission``): statements pass a ``QueryQueue`` of capacity 1 +
  ``database.max_pending_queries`` before they are queued on aiosqlite's thread; a full
  queue is ``StorageBusy`` at once. A statement whose caller was cancelled while it sat in
  aiosqlite's queue is skipped by the thread (``_statement`` checks its ``Ticket``). That
  check needs a function run on aiosqlite's thread: ``_on_thread`` uses
  ``Connection._execute``, the one entry point every public aiosqlite method goes through
  (aiosqlite is pinned in requirements.lock; ``test_a_cancelled_query_is_not_run`` fails
  if it changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any, cast

import aiosqlite

from dchat_node.config import DatabaseConfig
from dchat_node.storage.admission import QueryQueue, QueueStats, Ticket
from dchat_node.storage.base import PoolStats, Row, SqlSession, SqlStorage, now_us
from dchat_node.storage.errors import Conflict, ReferenceMissing, StorageError, StorageUnavailable
from dchat_node.storage.migrations import BOOTSTRAP_SQL, Engine, Migration

_IN_TX: ContextVar[object | None] = ContextVar("dchat_sqlite_transaction", default=None)
"""The storage whose transaction the current task holds (None: none)."""


def sqlite_path(url: str) -> str:
    """``sqlite:////abs/x.db`` -> ``/abs/x.db``; ``sqlite:///rel/x.db`` -> ``rel/x.db``."""
    if not url.startswith("sqlite://"):
        raise ValueError("not a sqlite:// URL")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    path = rest.split("?", 1)[0]
    if not path:
        raise ValueError("sqlite URL has no path")
    return path


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (uses SQLite's own completeness check)."""
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if stmt.rstrip(";").strip() and not _only_comments(stmt):
                out.append(stmt)
            buf = ""
    if buf.strip() and not _only_comments(buf):
        out.append(buf.strip())
    return out


def _only_comments(stmt: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("--") for ln in stmt.splitlines())


def _map_error(exc: sqlite3.Error) -> StorageError:
    text = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE" in text:
            return Conflict(text)
        if "FOREIGN KEY" in text:
            return ReferenceMissing(text)
    return StorageError(text)


def _statement(conn: aiosqlite.Connection, ticket: Ticket, sql: str, args: Any) -> list[Row]:
    """Run on aiosqlite's thread: the statement, unless its caller has given up."""
    if ticket.cancelled:
        return []  # nobody awaits the result
    rows: list[Row] = conn._conn.execute(sql, args).fetchall()
    return rows


def _on_thread(conn: aiosqlite.Connection, fn: Callable[[], list[Row]]) -> Awaitable[list[Row]]:
    """Queue ``fn`` on the connection's thread (aiosqlite's own mechanism)."""
    execute = cast("Callable[[Callable[[], list[Row]]], Awaitable[list[Row]]]", conn._execute)
    return execute(fn)


class SqliteStorage(SqlStorage):
    engine: Engine = "sqlite"

    def __init__(self, config: DatabaseConfig) -> None:
        self._config = config
        self.path = sqlite_path(config.url)
        self._conn: aiosqlite.Connection | None = None
        self._queue = QueryQueue(1, config.max_pending_queries)
        self._migrate_lock = asyncio.Lock()
        self._tx_lock = asyncio.Lock()
        self._tx_idle = asyncio.Event()
        self._tx_idle.set()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = await aiosqlite.connect(
                self.path, timeout=self._config.connection_timeout_secs, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        busy_ms = int(self._config.connection_timeout_secs * 1000)
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=NORMAL",
            f"PRAGMA busy_timeout={busy_ms}",
        ):
            await conn.execute(pragma)
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def _c(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageUnavailable("storage is not open")
        return self._conn

    def pool_stats(self) -> PoolStats:
        open_ = 1 if self._conn is not None else 0
        return PoolStats(size=open_, active=min(self._queue.depth, open_), max_size=1)

    def queue_stats(self) -> QueueStats:
        return self._queue.stats()

    async def ping(self) -> None:
        # not through the queue: readiness asks whether the database answers
        try:
            await self._c().execute_fetchall("SELECT 1")
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        if not self._tx_idle.is_set() and _IN_TX.get() is not self:
            while not self._tx_idle.is_set():
                await self._tx_idle.wait()
        conn = self._c()
        queue = self._queue
        queue.admit()
        ticket = Ticket()
        try:
            return await _on_thread(conn, partial(_statement, conn, ticket, sql, args))
        except asyncio.CancelledError:
            ticket.cancelled = True
            raise
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc
        finally:
            queue.done()

    async def _fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    async def _control(self, sql: str) -> None:
        """BEGIN/COMMIT/ROLLBACK: straight onto the connection's queue (never shed)."""
        try:
            await self._c().execute(sql)
        except sqlite3.Error as exc:
            raise _map_error(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSession]:
        if _IN_TX.get() is self:
            raise StorageError("a transaction is already open in this task")
        async with self._tx_lock:
            self._tx_idle.clear()
            token = _IN_TX.set(self)
            try:
                await self._control("BEGIN IMMEDIATE")
                try:
                    yield self
                    await self._control("COMMIT")
                except BaseException:
                    # shielded: a cancelled caller still leaves no transaction open
                    # (StorageError: nothing to roll back, the failed COMMIT ended it)
                    with contextlib.suppress(StorageError):
                        await asyncio.shield(self._control("ROLLBACK"))
                    raise
            finally:
                _IN_TX.reset(token)
                self._tx_idle.set()

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._fetch(sql, *args)

    # the public SqlDatabase surface is the primitives themselves: a domain store's
    # statement costs no forwarding coroutine over what the engine does
    fetch = _fetch
    fetchrow = _fetchrow
    execute = _execute

    def _iso_utc_sql(self, column: str) -> str:
        return (
            f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch') || "
            f"CASE WHEN {column} % 1000000 = 0 THEN 'Z' "
            f"ELSE printf('.%06dZ', {column} % 1000000) END"
        )

    def _json_docs_sql(self, columns: Sequence[tuple[str, str]], rest: str) -> str:
        pairs = ", ".join(f"'{key}', {expr}" for key, expr in columns)
        # columns and rest are constant fragments of SqlStorage; values are parameters
        return f"SELECT id, json_object({pairs}) {rest}"

    def _join_docs_sql(self) -> str:
        # SQLite before 3.44 has no ORDER BY inside an aggregate: group_concat joins the
        # rows in the order the page subquery (ORDER BY id LIMIT n, run as a co-routine,
        # never flattened into an aggregate) delivers them
        return "group_concat(doc, ',')"

    async def _table_exists(self, name: str) -> bool:
        rows = await self._fetch(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name
        )
        return bool(rows)

    async def _bootstrap(self) -> None:
        await self._execute(BOOTSTRAP_SQL)

    async def _run_migrations(self, migrations: list[Migration]) -> list[Migration]:
        conn = self._c()
        applied: list[Migration] = []
        async with self._migrate_lock:
            for mig in migrations:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = await conn.execute_fetchall(
                        "SELECT 1 FROM schema_migrations WHERE version = ?", (mig.version,)
                    )
                    if list(rows):
                        await conn.execute("COMMIT")
                        continue
                    for stmt in split_statements(mig.sql):
                        await conn.execute(stmt)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                        "VALUES (?, ?, ?, ?)",
                        (mig.version, mig.name, mig.checksum, now_us()),
                    )
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                applied.append(mig)
        return applied

    async def verify(self) -> list[str]:
        problems: list[str] = []
        rows = await self._fetch("PRAGMA integrity_check")
        results = [str(r[0]) for r in rows]
        if results != ["ok"]:
            problems.extend(f"integrity_check: {r}" for r in results)
        for r in await self._fetch("PRAGMA foreign_key_check"):
            problems.append(
                f"foreign_key_check: table {r[0]} rowid {r[1]} references missing {r[2]}"
            )
        problems.extend(await self._verify_schema())
        return problems
