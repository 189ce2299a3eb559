"""The storage interface and the engine-neutral part of its SQL implementation.

Design:
- ``Storage`` is the engine interface the server and the domain stores use (a Protocol):
  open/close/ping, pool and queue stats, migrations and ``verify``, single statements and
  transactions (``SqlDatabase``), and the JSON page builder (``JsonPages``). Engine
  exceptions are mapped to ``storage.errors``.
- ``SqlStorage`` is the engine-neutral part of the two engines; each engine supplies the
  primitives (``_fetch``, ``_fetchrow``, ``_execute``, ``_run_migrations``, ...) and
  translates placeholders if its driver needs it (asyncpg: ``$1``).
- Domain queries live in their domain's package (``dchat_node.chat.store``,
  ``dchat_node.accessibility.store``, ...), each a store written once against
  ``SqlDatabase`` (``fetch``/``fetchrow``/``execute`` and ``transaction()``, public on both
  engines; the engines bind the public names to their primitives, no forwarding frame),
  with its tables as a new migration here.
- Timestamps are stored as BIGINT microseconds since the Unix epoch (same type in both
  engines); ids are engine-generated 64-bit integers, so message ids give a stable order for
  cursor pagination. Rows also carry ``created_at_text``, the RFC 3339 UTC text of
  ``created_at`` (``rfc3339_utc``: what pydantic writes for that UTC datetime), written with
  the row: the value never changes, and formatting dates was the largest part of building
  list documents in the database. Rows without it (written before migration 0003, or by an
  older node during a rolling upgrade) get it computed on read (``COALESCE``).
- List reads of the API (the chat store's ``channel_page_json``, ``message_page_json``)
  return a ``JsonPage``: the page's records as their public JSON documents (the keys and
  formats of the API's ``Channel``/``Message`` models, timestamps as RFC 3339 UTC strings with
  microseconds, exactly what pydantic writes), already joined with commas, plus the last
  id and whether more records follow. The database builds all of it in one statement
  and returns it as one row (SQLite ``json_object`` + ``group_concat``, PostgreSQL
  ``row_to_json`` + ``string_agg``), in C: building 20 records, dicts and timestamp
  strings in Python cost more than the query itself on the hottest read path, and so did
  fetching 21 rows and making a tuple of each (measured: one row per page is ~3% less CPU
  per request over HTTP). The
  engines supply three SQL fragments (``_iso_utc_sql``, ``_json_docs_sql``,
  ``_join_docs_sql``), ``json_page_sql`` builds a page statement from them once per
  store, and ``json_page`` runs it; the contract tests check the pages against the
  pydantic models, edge timestamps and awkward strings included, and that they page exactly like the
  record-returning list reads.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from dchat_node.storage.admission import QueueStats
from dchat_node.storage.errors import StorageError
from dchat_node.storage.migrations import (
    AppliedMigration,
    Engine,
    Migration,
    check_applied,
    load_migrations,
)

Row = Sequence[Any]


@dataclass(frozen=True, slots=True)
class JsonPage:
    """Up to ``limit`` records (id order) as their public JSON documents, built by the
    database: ``items_json`` is the documents joined with commas (the inside of the page's
    ``items`` array, empty for no records), ``last_id`` the id of the last one (None for
    no records), ``more`` whether records follow it."""

    items_json: str
    count: int
    last_id: int | None
    more: bool


@dataclass(frozen=True)
class PoolStats:
    size: int  # connections open
    active: int  # connections in use
    max_size: int


class SqlSession(Protocol):
    """Statements on one engine, written with ``?`` placeholders (the engine translates
    them), rows as sequences. Engine errors come out as ``storage.errors``."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


class SqlDatabase(SqlSession, Protocol):
    """What a domain's store needs from the engine: single statements (each its own
    transaction) and ``transaction()`` for several statements that commit or roll back
    together. Inside ``async with db.transaction() as tx`` use ``tx`` (or ``db``: the same
    task's statements join the open transaction on SQLite); other tasks' statements wait
    until it ends (SQLite: one connection) or run on other connections (PostgreSQL). The
    first statement takes the write lock on SQLite (``BEGIN IMMEDIATE``); on PostgreSQL use
    ``SELECT ... FOR UPDATE`` or compare-and-set ``UPDATE ... WHERE state = ?`` for the rows
    a transition depends on. Keep transactions short: no network calls inside."""

    engine: Engine

    def transaction(self) -> AbstractAsyncContextManager[SqlSession]: ...


class JsonPages(SqlDatabase, Protocol):
    """``SqlDatabase`` plus pages of JSON documents built by the database (see the module
    docstring): ``json_page_sql`` makes the statement (once, at a store's start),
    ``json_page`` runs it."""

    def json_page_sql(self, keys: Sequence[str], rest: str, after_last: str) -> str: ...
    async def json_page(self, sql: str, *args: Any) -> JsonPage: ...


class Storage(JsonPages, Protocol):
    """What the server and the domain stores need from a database."""

    engine: Engine

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    def pool_stats(self) -> PoolStats: ...
    def queue_stats(self) -> QueueStats: ...

    async def migrate(self) -> list[Migration]: ...
    async def schema_version(self) -> int: ...
    async def pending_migrations(self) -> list[Migration]: ...
    async def verify(self) -> list[str]: ...


def now_us() -> int:
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1)
_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


@lru_cache(maxsize=1024)
def _day_prefix(days: int) -> str:
    # a date string per day since the epoch (a formatting memo, not a data cache)
    return (_EPOCH + timedelta(days=days)).date().isoformat() + "T"


def rfc3339_utc(us: int) -> str:
    """Microseconds since the epoch -> the exact string pydantic writes for that UTC
    ``datetime``: ``2026-11-26T21:51:39.123456Z``, no fraction when it is zero. Integer
    arithmetic, exact for every year 1..9999."""
    seconds, micro = divmod(us, 1_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    hours, rest = divmod(second_of_day, 3_600)
    minutes, secs = divmod(rest, 60)
    two = _TWO_DIGITS
    if micro:
        return f"{_day_prefix(days)}{two[hours]}:{two[minutes]}:{two[secs]}.{micro:06d}Z"
    return f"{_day_prefix(days)}{two[hours]}:{two[minutes]}:{two[secs]}Z"


class SqlStorage(ABC):
    """The engine-neutral part of the SQLite and PostgreSQL engines."""

    engine: Engine

    # -- the public SqlDatabase surface (domain stores use these; the engines bind these
    # names to their primitives) ------------------------------------------------------
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._execute(sql, *args)

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[SqlSession]:
        """Several statements that commit together or not at all (see ``SqlDatabase``)."""

    # -- engine primitives -------------------------------------------------------------
    @abstractmethod
    async def _fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abstractmethod
    async def _fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    @abstractmethod
    async def _execute(self, sql: str, *args: Any) -> None: ...

    @abstractmethod
    async def _table_exists(self, name: str) -> bool: ...

    @abstractmethod
    async def _bootstrap(self) -> None:
        """Create schema_migrations if it does not exist."""

    @abstractmethod
    async def _run_migrations(self, migrations: list[Migration]) -> list[Migration]:
        """Apply the not-yet-applied ones of ``migrations`` (each in a transaction, under a
        lock so concurrent starters do not race); return those applied."""

    @abstractmethod
    def _iso_utc_sql(self, column: str) -> str:
        """An SQL expression: BIGINT microseconds since the epoch in ``column`` (>= 0: the
        node's clock writes them) as ``YYYY-MM-DDTHH:MM:SS``, then ``.ffffff`` unless the
        microseconds are 0, then ``Z`` (what pydantic writes for a UTC datetime)."""

    @abstractmethod
    def _json_docs_sql(self, columns: Sequence[tuple[str, str]], rest: str) -> str:
        """SQL returning ``(id, json)`` per row of ``SELECT ... <rest>`` in id order,
        ``json`` being an object of ``columns`` (key, SQL expression) in that order."""

    @abstractmethod
    def _join_docs_sql(self) -> str:
        """An aggregate over ``page(id, doc)`` (rows in id order): the ``doc`` texts joined
        with ``,`` in id order."""

    # -- migrations --------------------------------------------------------------------
    def migrations(self) -> list[Migration]:
        return load_migrations(self.engine)

    async def applied_migrations(self) -> list[AppliedMigration]:
        # read-only: only migrate() creates schema_migrations
        if not await self._table_exists("schema_migrations"):
            return []
        rows = await self._fetch(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        )
        return [AppliedMigration(int(r[0]), r[1], r[2]) for r in rows]

    async def migrate(self) -> list[Migration]:
        await self._bootstrap()
        return await self._run_migrations(self.migrations())

    async def schema_version(self) -> int:
        applied = await self.applied_migrations()
        return max((m.version for m in applied), default=0)

    async def pending_migrations(self) -> list[Migration]:
        done = {m.version for m in await self.applied_migrations()}
        return [m for m in self.migrations() if m.version not in done]

    async def _verify_schema(self) -> list[str]:
        known = self.migrations()
        applied = await self.applied_migrations()
        problems = check_applied(known, applied)
        pending = [m.version for m in known if m.version not in {a.version for a in applied}]
        if pending:
            problems.append(f"migrations not applied: {pending} (run `dchat migrate`)")
        return problems

    # -- documents -----------------------------------------------------------------------
    def json_page_sql(self, keys: Sequence[str], rest: str, after_last: str) -> str:
        """One statement, one row: ``(count, last id, joined documents, more)`` of the
        records ``SELECT ... <rest>`` selects (in id order, with its own LIMIT), ``more``
        being whether ``SELECT 1 <after_last>`` finds a row (``last_id`` names the last id).
        ``keys``, ``rest`` and ``after_last`` are constant SQL of the calling store, never
        values (values are ``?`` parameters of ``json_page``)."""
        # every key is a column of the same name; created_at becomes its RFC 3339 string,
        # stored with the row or (rows from before migration 0003) computed here
        stamp = f"COALESCE(created_at_text, {self._iso_utc_sql('created_at')})"
        columns = [(k, stamp if k == "created_at" else k) for k in keys]
        docs = self._json_docs_sql(columns, rest)
        # fragments are constants of the engine and the store; values are parameters
        return (
            f"WITH page(id, doc) AS ({docs}) "  # noqa: S608
            f"SELECT n, last_id, docs, EXISTS (SELECT 1 {after_last}) FROM ("
            f"SELECT count(*) AS n, max(id) AS last_id, {self._join_docs_sql()} AS docs "
            "FROM page) AS agg"
        )

    async def json_page(self, sql: str, *args: Any) -> JsonPage:
        """Run a statement of ``json_page_sql`` with ``args``."""
        row = await self._fetchrow(sql, *args)
        if row is None:  # an aggregate always returns a row
            raise StorageError("page query returned no row")
        count, last_id, items_json, more = row
        return JsonPage(items_json or "", count, last_id, bool(more))
