"""The API app's request envelope (``dchat_node.app``): one deadline over handling and
sending, the request metrics, and Quart's per-request bookkeeping made cheaper
(``_Request.blueprints``, ``NodeQuart.ensure_async``) without changing what it does.

Deadline tests drive the app through its ASGI interface with a hand-made receive/send, so
they see every ``http.response.body`` message (the test client would wait for the end).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from quart import Blueprint, Response, request
from quart.helpers import _split_blueprint_path

from dchat_node.app import _ASYNC_CACHE_MAX, NodeQuart, _blueprint_chain, create_api_app
from dchat_node.services import Services, build_services
from dchat_node.storage import Storage, open_storage
from tests.node.conftest import config_for

pytestmark = pytest.mark.unit


async def exchange(app: Any, path: str) -> list[dict[str, Any]]:
    """One GET through ``app``'s ASGI interface; every message the app sent."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(60)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "headers": [(b"host", b"node")],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 9000),
    }  # fmt: skip
    await app(scope, receive, send)
    return sent


async def stalls() -> AsyncIterator[bytes]:
    yield b"first"
    await asyncio.sleep(30)
    yield b"never"


MakeApp = Callable[..., Awaitable[tuple[NodeQuart, Services]]]


@pytest.fixture
async def storage_at(tmp_path: Path) -> AsyncIterator[MakeApp]:
    opened: list[Storage] = []

    async def make(**server: Any) -> tuple[NodeQuart, Services]:
        cfg = config_for(tmp_path, server=server)
        storage = await open_storage(cfg.database)
        await storage.migrate()
        opened.append(storage)
        services = build_services(cfg, storage)
        app = create_api_app(services)
        assert isinstance(app, NodeQuart)
        return app, services

    yield make
    for storage in opened:
        await storage.close()


def count(services: Services, route: str, status: int) -> float:
    value = services.metrics.registry.get_sample_value(
        "dchat_http_requests_total", {"method": "GET", "route": route, "status": str(status)}
    )
    return float(value or 0.0)


async def test_request_timeout_is_504_counted_once(storage_at: MakeApp) -> None:
    app, services = await storage_at(request_timeout_secs=0.2)

    @app.get("/api/v1/_test_slow")
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    started = time.monotonic()
    r = await app.test_client().get("/api/v1/_test_slow")
    assert r.status_code == 504
    assert time.monotonic() - started < 2
    assert (await r.get_json())["error"]["code"] == "timeout"
    assert count(services, "/api/v1/_test_slow", 504) == 1
    assert count(services, "/api/v1/_test_slow", 200) == 0
    assert services.metrics.in_flight == 0


async def test_stalled_response_is_abandoned_at_the_request_deadline(storage_at: MakeApp) -> None:
    """A response whose body stalls is abandoned when the request's deadline passes (the
    deadline covers handling and sending); an ordinary response is sent whole."""
    app, services = await storage_at(request_timeout_secs=0.3)

    @app.get("/api/v1/_test_stall")
    async def stall() -> Response:
        return Response(stalls(), content_type="text/plain")

    started = time.monotonic()
    sent = await asyncio.wait_for(exchange(app, "/api/v1/_test_stall"), 10)
    assert time.monotonic() - started < 5
    assert sent[0]["status"] == 200
    bodies = [m.get("body") for m in sent[1:]]
    assert b"first" in bodies
    assert b"never" not in bodies
    assert not any(m.get("more_body") is False for m in sent[1:])  # never finished
    # counted once, as the 200 it started as; nothing left in flight
    assert count(services, "/api/v1/_test_stall", 200) == 1
    assert services.metrics.in_flight == 0

    sent = await asyncio.wait_for(exchange(app, "/api/v1/version"), 10)
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_response_with_its_own_timeout_is_sent_under_it(storage_at: MakeApp) -> None:
    """Quart's per-response ``timeout`` replaces the request deadline for the send: a
    shorter one abandons a stalled body sooner than the 30 s request deadline would."""
    app, _ = await storage_at(request_timeout_secs=30)

    @app.get("/api/v1/_test_own")
    async def own() -> Response:
        resp = Response(stalls(), content_type="text/plain")
        resp.timeout = 0.2
        return resp

    started = time.monotonic()
    sent = await asyncio.wait_for(exchange(app, "/api/v1/_test_own"), 10)
    assert time.monotonic() - started < 5
    assert sent[0]["status"] == 200
    assert b"never" not in [m.get("body") for m in sent[1:]]


def test_blueprint_chain_is_quarts() -> None:
    for name in ("chat", "api.chat", "a.b.c.d"):
        assert list(_blueprint_chain(name)) == _split_blueprint_path(name)


async def test_nested_blueprint_hooks_and_sync_views_still_run(storage_at: MakeApp) -> None:
    """The cached blueprint chain still reaches every level's hooks; a plain (sync) view
    still runs off the event loop (``ensure_async`` only remembers coroutine functions)."""
    app, _ = await storage_at()
    seen: list[str] = []
    outer = Blueprint("outer", __name__, url_prefix="/outer")
    inner = Blueprint("inner", __name__, url_prefix="/inner")

    @outer.before_request
    async def outer_hook() -> None:
        seen.append(f"outer:{request.blueprints}")

    @inner.before_request
    async def inner_hook() -> None:
        seen.append(f"inner:{request.blueprints}")

    @inner.get("/sync")
    def sync_view() -> str:
        return "ran on " + (
            "loop" if threading.current_thread() is threading.main_thread() else "worker"
        )

    outer.register_blueprint(inner)
    app.register_blueprint(outer)
    client = app.test_client()
    for _ in range(2):  # the second time from the caches
        r = await client.get("/outer/inner/sync")
        assert r.status_code == 200
        assert await r.get_data(as_text=True) == "ran on worker"
    chain = "['outer.inner', 'outer']"
    assert seen == [f"outer:{chain}", f"inner:{chain}"] * 2


def test_ensure_async_remembers_a_bounded_set_of_coroutine_functions() -> None:
    app = NodeQuart("t", static_folder=None)

    async def coro() -> None:
        return None

    def plain() -> None:
        return None

    assert app.ensure_async(coro) is coro
    assert app.ensure_async(coro) is coro
    wrapped: Any = app.ensure_async(plain)
    assert wrapped is not plain
    assert asyncio.iscoroutinefunction(wrapped)
    for _ in range(_ASYNC_CACHE_MAX + 50):

        async def one_off() -> None:
            return None

        assert app.ensure_async(one_off) is one_off
    assert len(app._coroutine_functions) == _ASYNC_CACHE_MAX
