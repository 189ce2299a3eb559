"""PostgreSQL engine: an asyncpg pool.

Design:
- Pool sized by ``database.max_connections`` (min 1), ``statement_cache_size`` per
  connection, ``connection_timeout_secs`` for connecting and for waiting on a pooled
  connection, ``idle_timeout_secs`` as asyncpg's ``max_inactive_connection_lifetime``.
- Queries are written once with ``?`` placeholders (see ``SqlStorage``) and translated to
  ``$1..$n`` here (cached).
- Migrations: each in its own transaction holding ``pg_advisory_xact_lock``, re-reading the
  applied set inside it, so replicas starting together apply each migration exactly once.
- ``pool_stats().active`` = connections checked out of the pool (what the
  ``DatabaseConnectionPoolExhausted`` alert watches through ``database_connections_active``).
- Load shedding (``storage.admission``): queries pass a ``QueryQueue`` of capacity
  ``max_connections`` + ``database.max_pending_queries`` before they wait for a pooled
  connection; a full queue is ``StorageBusy`` at once. A caller cancelled while waiting
  for a connection never gets one (asyncpg's acquire is cancellable), and one cancelled
  while its query runs has it cancelled on the server. ``ping`` bypasses the queue.
- High availability (Patroni or any primary/standby pair): ``database.url`` may name several
  hosts (``postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write``); asyncpg
  tries them in order and keeps the writable one. After a failover the pooled connections to
  the old primary are broken (or, if it came back as a standby, read-only): a connection
  error, a read-only transaction, an admin shutdown or "cannot connect now" expires every
  pooled connection, so the next query connects afresh and finds the new primary; a query
  that failed this way is answered 503 (``StorageUnavailable``), and a read (``SELECT``) is
  retried once on a fresh connection first. ``ping`` (``/ready``) fails while the connected
  server is a standby: no traffic while no primary is writable. No restart needed.
- ``transaction()``: one pooled connection for its duration (one slot of the queue),
  asyncpg's transaction on it; statements on the yielded session are mapped like the
  others; a failover error inside it expires the pool and is ``StorageUnavailable`` (never
  retried: the caller decides whether the whole transaction is repeated).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from dchat_node.config import DatabaseConfig
from dchat_node.storage.admission import QueryQueue, QueueStats
from dchat_node.storage.base import PoolStats, Row, SqlSession, SqlStorage, now_us
from dchat_node.storage.errors import (
    Conflict,
    NotPrimary,
    ReferenceMissing,
    StorageError,
    StorageUnavailable,
)
from dchat_node.storage.migrations import BOOTSTRAP_SQL, Engine, Migration

_MIGRATION_LOCK_KEY = 0x64636861  # "dcha"
_PLACEHOLDER = re.compile(r"\?")


def to_dollar_params(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


_FAILOVER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection broke
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a standby now
    asyncpg.AdminShutdownError,  # 57P01: the server is shutting down
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03: starting or shutting down
    asyncpg.TargetServerAttributeNotMatched,  # no host is a writable primary
    asyncpg.exceptions.ProtocolError,  # a message cut off by a server going away
)
"""Errors that mean "this server is gone or no longer the primary": reconnect, do not blame
the query."""


def _is_read(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _map_error(exc: BaseException) -> StorageError:
    if isinstance(exc, _FAILOVER_ERRORS):
        return StorageUnavailable(f"database unavailable: {type(exc).__name__}")
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(str(exc))
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return ReferenceMissing(str(exc))
    if isinstance(exc, asyncpg.PostgresError):
        return StorageError(f"{type(exc).__name__}: {exc}")
    # connection-level failures: keep the message free of the DSN
    return StorageUnavailable(f"database unavailable: {type(exc).__name__}")


class PostgresStorage(SqlStorage):
    engine: Engine = "postgresql"

    def __init__(self, config: DatabaseConfig) -> None:
        self._config = config
        self._pool: asyncpg.Pool | None = None
        self._sql_cache: dict[str, str] = {}
        self._queue = QueryQueue(config.max_connections, config.max_pending_queries)

    async def open(self) -> None:
        c = self._config
        dsn = c.url.replace("postgresql://", "postgres://", 1)
        try:
            self._pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=c.max_connections,
                statement_cache_size=c.statement_cache_size,
                timeout=c.connection_timeout_secs,
                max_inactive_connection_lifetime=c.idle_timeout_secs,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL: {type(exc).__name__}: {_safe(exc, c.url)}"
            ) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        return self._pool

    def pool_stats(self) -> PoolStats:
        if self._pool is None:
            return PoolStats(0, 0, self._config.max_connections)
        size = self._pool.get_size()
        return PoolStats(size, size - self._pool.get_idle_size(), self._pool.get_max_size())

    def _sql(self, sql: str) -> str:
        out = self._sql_cache.get(sql)
        if out is None:
            out = self._sql_cache[sql] = to_dollar_params(sql)
        return out

    def queue_stats(self) -> QueueStats:
        return self._queue.stats()

    async def ping(self) -> None:
        # not through the queue: readiness asks whether the database answers, as a primary
        rows = await self._query("SELECT pg_is_in_recovery()")
        if rows and rows[0][0]:
            self._expire()
            raise NotPrimary("database unavailable: connected to a standby, not a primary")

    def _expire(self) -> None:
        """Drop every pooled connection at its next use (after a failover)."""
        if self._pool is not None:
            self._pool.expire_connections()

    async def _fetch(self, sql: str, *args: Any) -> list[Row]:
        queue = self._queue
        queue.admit()
        try:
            return await self._query(sql, *args)
        finally:
            queue.done()

    async def _query(self, sql: str, *args: Any) -> list[Row]:
        tries = 2 if _is_read(sql) else 1
        for attempt in range(tries):
            closed = False
            try:
                async with self._p().acquire(timeout=self._config.connection_timeout_secs) as conn:
                    try:
                        return list(await conn.fetch(self._sql(sql), *args))
                    finally:
                        closed = conn.is_closed()
            except StorageError:
                raise
            except (*_FAILOVER_ERRORS, asyncpg.PostgresError, asyncpg.InternalClientError) as exc:
                # any error on a connection the server closed is the server going away
                if not (closed or isinstance(exc, _FAILOVER_ERRORS)):
                    raise _map_error(exc) from exc
                self._expire()
                if attempt + 1 < tries:
                    continue
                raise StorageUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        raise StorageUnavailable("database unavailable")  # not reached: the loop returns

    async def _fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    def _failed(self, exc: BaseException, conn: asyncpg.Connection) -> StorageError:
        """Map an error of a statement in a transaction (a closed connection: failover)."""
        if isinstance(exc, _FAILOVER_ERRORS) or conn.is_closed():
            self._expire()
            return StorageUnavailable(f"database unavailable: {type(exc).__name__}")
        return _map_error(exc)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSession]:
        queue = self._queue
        queue.admit()
        try:
            pool = self._p()
            try:
                conn = await pool.acquire(timeout=self._config.connection_timeout_secs)
            except (*_FAILOVER_ERRORS, asyncpg.PostgresError) as exc:
                self._expire()
                raise StorageUnavailable(f"database unavailable: {type(exc).__name__}") from exc
            try:
                tx = conn.transaction()
                try:
                    await tx.start()
                except (*_FAILOVER_ERRORS, asyncpg.PostgresError) as exc:
                    raise self._failed(exc, conn) from exc
                try:
                    yield _PgSession(self, conn)
                except BaseException:
                    if not conn.is_closed():
                        try:
                            await asyncio.shield(tx.rollback())
                        except (*_FAILOVER_ERRORS, asyncpg.PostgresError):
                            self._expire()
                    raise
                try:
                    await tx.commit()
                except (*_FAILOVER_ERRORS, asyncpg.PostgresError) as exc:
                    raise self._failed(exc, conn) from exc
            finally:
                await pool.release(conn)
        finally:
            queue.done()

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._fetch(sql, *args)

    # the public SqlDatabase surface is the primitives themselves: a domain store's
    # statement costs no forwarding coroutine over what the engine does
    fetch = _fetch
    fetchrow = _fetchrow
    execute = _execute

    def _iso_utc_sql(self, column: str) -> str:
        return (
            f"to_char(to_timestamp({column} / 1000000) AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS') || "
            f"CASE WHEN {column} % 1000000 = 0 THEN 'Z' "
            f"ELSE '.' || lpad(({column} % 1000000)::text, 6, '0') || 'Z' END"
        )

    def _json_docs_sql(self, columns: Sequence[tuple[str, str]], rest: str) -> str:
        select = ", ".join(f"{expr} AS {key}" for key, expr in columns)
        # row_to_json: compact JSON, the columns as keys in order. columns and rest are
        # constant fragments of SqlStorage; values are parameters
        return f"SELECT d.id, row_to_json(d)::text FROM (SELECT {select} {rest}) AS d ORDER BY d.id"  # noqa: S608

    def _join_docs_sql(self) -> str:
        return "string_agg(doc, ',' ORDER BY id)"

    async def _table_exists(self, name: str) -> bool:
        row = await self._fetchrow("SELECT to_regclass(?) IS NOT NULL", name)
        return bool(row and row[0])

    async def _bootstrap(self) -> None:
        pool = self._p()
        async with (
            pool.acquire(timeout=self._config.connection_timeout_secs) as conn,
            conn.transaction(),
        ):
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await conn.execute(BOOTSTRAP_SQL)

    async def _run_migrations(self, migrations: list[Migration]) -> list[Migration]:
        applied: list[Migration] = []
        async with self._p().acquire(timeout=self._config.connection_timeout_secs) as conn:
            for mig in migrations:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
                    done = await conn.fetchval(
                        "SELECT count(*) FROM schema_migrations WHERE version = $1", mig.version
                    )
                    if done:
                        continue
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                        "VALUES ($1, $2, $3, $4)",
                        mig.version,
                        mig.name,
                        mig.checksum,
                        now_us(),
                    )
                applied.append(mig)
        return applied

    async def verify(self) -> list[str]:
        problems: list[str] = []
        for r in await self._fetch(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
        ):
            problems.append(f"invalid index: {r[0]}")
        for r in await self._fetch(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE contype = 'f' AND NOT convalidated"
        ):
            problems.append(f"foreign key not validated: {r[0]}.{r[1]}")
        problems.extend(await self._verify_schema())
        return problems


class _PgSession:
    """Statements on the one connection of an open transaction."""

    __slots__ = ("_conn", "_storage")

    def __init__(self, storage: PostgresStorage, conn: asyncpg.Connection) -> None:
        self._storage = storage
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return list(await self._conn.fetch(self._storage._sql(sql), *args))
        except (*_FAILOVER_ERRORS, asyncpg.PostgresError) as exc:
            raise self._storage._failed(exc, self._conn) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)


def _safe(exc: BaseException, url: str) -> str:
    """The exception text with any password from ``url`` removed."""
    text = str(exc)
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***")
    return text
