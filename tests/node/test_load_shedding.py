"""Load shedding (``dchat_node.storage.admission``): a bounded queue of queries in front of
each engine. A full queue refuses at once (503 + Retry-After through the API), a query
whose caller was cancelled is not run, the queue is visible in the metrics, and
``database.max_pending_queries`` is validated. Contract tests run on SQLite and on the
harness's real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dchat_node.app import create_api_app
from dchat_node.chat.store import SqlChatStore
from dchat_node.config import ConfigError, DatabaseConfig, parse_config
from dchat_node.services import build_services
from dchat_node.storage import Storage, StorageBusy, create_storage, open_storage
from dchat_node.storage.sqlite import SqliteStorage
from tests.node.conftest import bearer, config_for

ENGINES = [
    pytest.param("sqlite", marks=pytest.mark.unit),
    pytest.param("postgresql", marks=pytest.mark.integration),
]

Hold = Callable[[], Awaitable[Any]]


@pytest.fixture(params=ENGINES)
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shed.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def release() -> threading.Event:
    return threading.Event()


async def opened(url: str, max_pending: int, release: threading.Event) -> tuple[Storage, Hold]:
    """A migrated storage of capacity 1 (SQLite by nature, PostgreSQL with one pooled
    connection) and ``hold()``: a query that occupies that capacity until ``release``."""
    storage = create_storage(
        DatabaseConfig(url=url, max_connections=1, max_pending_queries=max_pending)
    )
    await storage.open()
    await storage.migrate()
    if isinstance(storage, SqliteStorage):
        assert storage._conn is not None
        await storage._conn.create_function("hold", 0, lambda: release.wait(10) and 1)

        async def hold() -> Any:
            return await storage._fetch("SELECT hold()")
    else:

        async def hold() -> Any:
            # one statement keeps the pool's one connection busy (tests need < 0.3 s of it)
            return await storage._fetch("SELECT pg_sleep(0.6)")

    return storage, hold


async def started(hold: Hold) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(hold())
    await asyncio.sleep(0.1)  # it is now running on the thread / the one connection
    return task


async def test_a_full_queue_refuses_at_once(engine_url: str, release: threading.Event) -> None:
    storage, hold = await opened(engine_url, 0, release)
    try:
        holder = await started(hold)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(StorageBusy):
            await SqlChatStore(storage).get_channel(1)
        assert loop.time() - t0 < 0.05
        stats = storage.queue_stats()
        assert (stats.depth, stats.limit, stats.shed_total) == (1, 1, 1)
        await storage.ping()  # readiness is not shed
        release.set()
        await holder
        assert await SqlChatStore(storage).get_channel(1) is None  # room again
        assert storage.queue_stats().depth == 0
    finally:
        release.set()
        await storage.close()


async def test_a_cancelled_query_is_not_run(engine_url: str, release: threading.Event) -> None:
    storage, hold = await opened(engine_url, 8, release)
    try:
        await SqlChatStore(storage).ensure_user("alice")
        holder = await started(hold)
        # queued behind the held capacity: SQLite in aiosqlite's queue, PostgreSQL
        # waiting for the pool's one connection
        doomed = asyncio.ensure_future(SqlChatStore(storage).create_channel("never", "", "alice"))
        await asyncio.sleep(0.1)
        assert storage.queue_stats().depth == 2
        doomed.cancel()
        await asyncio.sleep(0)
        assert storage.queue_stats().depth == 1  # it left the queue at once
        release.set()
        await holder
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await SqlChatStore(storage).create_channel("after", "", "alice")
        names = [c.name for c in await SqlChatStore(storage).list_channels(0, 10)]
        assert names == ["after"]  # "never" was not written
    finally:
        release.set()
        await storage.close()


@pytest.fixture
async def blocked_app(tmp_path: Path) -> AsyncIterator[tuple[Any, SqliteStorage, threading.Event]]:
    cfg = config_for(
        tmp_path, database={"max_pending_queries": 0}, server={"request_timeout_secs": 0.5}
    )
    storage = await open_storage(cfg.database)
    await storage.migrate()
    assert isinstance(storage, SqliteStorage)
    assert storage._conn is not None
    gate = threading.Event()
    await storage._conn.create_function("hold", 0, lambda: gate.wait(10) and 1)
    app = create_api_app(build_services(cfg, storage))
    try:
        yield app, storage, gate
    finally:
        gate.set()
        await storage.close()


@pytest.mark.unit
async def test_api_answers_503_with_retry_after_when_the_queue_is_full(
    blocked_app: tuple[Any, SqliteStorage, threading.Event],
) -> None:
    app, storage, gate = blocked_app
    client = app.test_client()
    holder = await started(lambda: storage._fetch("SELECT hold()"))
    r = await client.get("/api/v1/channels/1")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert (await r.get_json())["error"]["code"] == "overloaded"
    r = await client.post("/api/v1/channels", json={"name": "shed"}, headers=bearer())
    assert r.status_code == 503
    gate.set()
    await holder
    assert (await client.get("/api/v1/channels/1")).status_code == 404  # served again
    registry = app.services.metrics.registry
    assert registry.get_sample_value("dchat_database_queries_shed_total") == 2
    assert registry.get_sample_value("dchat_database_queue_limit") == 1
    assert registry.get_sample_value("dchat_database_queue_depth") == 0


@pytest.mark.unit
async def test_a_request_past_its_deadline_does_not_write(tmp_path: Path) -> None:
    cfg = config_for(tmp_path, server={"request_timeout_secs": 0.3})
    storage = await open_storage(cfg.database)
    await storage.migrate()
    assert isinstance(storage, SqliteStorage)
    assert storage._conn is not None
    gate = threading.Event()
    await storage._conn.create_function("hold", 0, lambda: gate.wait(10) and 1)
    try:
        client = create_api_app(build_services(cfg, storage)).test_client()
        holder = await started(lambda: storage._fetch("SELECT hold()"))
        r = await client.post("/api/v1/channels", json={"name": "late"}, headers=bearer())
        assert r.status_code == 504
        gate.set()
        await holder
        page = await (await client.get("/api/v1/channels")).get_json()
        assert page["items"] == []  # the abandoned request's INSERTs never ran
        assert await SqlChatStore(storage).get_channel(1) is None
    finally:
        gate.set()
        await storage.close()


@pytest.mark.unit
@pytest.mark.parametrize("value", ["-1", "100001", "many"])
def test_max_pending_queries_is_validated(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({}, environ={"DATABASE_MAX_PENDING_QUERIES": value})
    (problem,) = exc.value.problems
    assert problem.key == "database.max_pending_queries"
    assert problem.source == "DATABASE_MAX_PENDING_QUERIES"


@pytest.mark.unit
def test_max_pending_queries_default_and_overrides() -> None:
    assert parse_config({}, environ={}).database.max_pending_queries == 128
    env = {"DATABASE_MAX_PENDING_QUERIES": "7"}
    assert parse_config({}, environ=env).database.max_pending_queries == 7
    env["DCHAT_DATABASE__MAX_PENDING_QUERIES"] = "9"
    assert parse_config({}, environ=env).database.max_pending_queries == 9
