"""The private Quart (and quart-schema, quart-rate-limiter, werkzeug) interfaces that the
node overrides, checked on the installed versions (issue 18, section 7).

``node/dchat_node/app.py`` replaces Quart's ASGI HTTP connection (``asgi_http_class``,
``ASGIHTTPConnection.handle_request``/``_send_response``, ``quart.asgi._handle_exception``),
caches ``Request.blueprints``, short-cuts ``Quart.ensure_async``, hands out one
``NullSession`` from a ``SecureCookieSessionInterface`` subclass, wraps the instance's
``make_response``, and subclasses quart-schema's ``OpenAPIProvider``;
``security/ratelimit.py`` subclasses quart-rate-limiter's ``RateLimiter`` (its private
``_get_limits_for_view_function``, ``_before_serving``, ``_after_serving``) and
``MemoryStore`` (its ``_tats`` dict). None of that is public API, so pyproject.toml pins
Quart, quart-schema and quart-rate-limiter to the minor series checked here. When an
upgrade changes one of these shapes this test fails, naming what moved: adapt the node,
then widen the range.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import inspect
import tomllib
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import quart.app
import quart.asgi
import quart.ctx
import quart_rate_limiter
import quart_schema
import quart_schema.validation
from packaging.requirements import Requirement
from quart import Quart, Response
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.wrappers import Request
from quart.wrappers.base import BaseRequestWebsocket
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import MemoryStore
from quart_schema.openapi import OpenAPIProvider
from werkzeug.routing import Map
from werkzeug.routing.converters import IntegerConverter

from dchat_node import app as node_app
from tests.packaging.support import REPO

pytestmark = pytest.mark.unit

PINNED = ("quart", "quart-schema", "quart-rate-limiter")


def params(func: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(func).parameters)


def source(obj: Any) -> str:
    return inspect.getsource(obj)


def test_installed_versions_are_inside_the_pinned_ranges() -> None:
    """The ranges in pyproject.toml are upper-bounded (private interfaces), and the venv
    the rest of this file checks is inside them."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    node = {
        Requirement(r).name: Requirement(r)
        for r in pyproject["project"]["optional-dependencies"]["node"]
    }
    for name in PINNED:
        spec = node[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} needs an upper bound: {spec}"
        assert spec.contains(md.version(name)), (name, md.version(name), str(spec))


# ── Quart: the ASGI HTTP connection (node_app._HTTPConnection) ──────────────────────────


def test_quart_builds_its_http_connection_from_asgi_http_class() -> None:
    assert Quart.asgi_http_class is quart.asgi.ASGIHTTPConnection
    assert "self.asgi_http_class(self, scope)" in source(Quart.asgi_app)
    assert node_app.NodeQuart.asgi_http_class is node_app._HTTPConnection
    assert issubclass(node_app._HTTPConnection, quart.asgi.ASGIHTTPConnection)


def test_asgi_http_connection_handle_request_send_response_and_handle_exception() -> None:
    conn = quart.asgi.ASGIHTTPConnection
    assert params(conn.handle_request) == ["self", "request", "send"]
    assert inspect.iscoroutinefunction(conn.handle_request)
    # Quart calls handle_request with exactly these; the node's override replaces it whole
    assert "self.handle_request(request, send)" in source(conn)
    assert params(conn._send_response) == ["self", "send", "response"]
    assert inspect.iscoroutinefunction(conn._send_response)
    assert params(quart.asgi._handle_exception) == ["app", "error"]
    assert inspect.iscoroutinefunction(quart.asgi._handle_exception)
    # what the node's envelope re-implements: the per-response timeout with Ellipsis as
    # "not set", RESPONSE_TIMEOUT otherwise, app.handle_request(request) for the response
    original = source(conn.handle_request)
    assert "response.timeout != Ellipsis" in original
    assert 'self.app.config["RESPONSE_TIMEOUT"]' in original
    assert "await self.app.handle_request(request)" in original
    assert "_handle_exception(self.app, error)" in original
    assert Response("").timeout is Ellipsis
    assert "RESPONSE_TIMEOUT" in Quart.default_config


# ── Quart: request class and blueprints (node_app._Request) ────────────────────────────


def test_request_blueprints_is_a_property_that_quart_reads() -> None:
    assert Quart.request_class is Request
    assert node_app.NodeQuart.request_class is node_app._Request
    assert isinstance(inspect.getattr_static(BaseRequestWebsocket, "blueprints"), property)
    assert isinstance(inspect.getattr_static(BaseRequestWebsocket, "blueprint"), property)
    assert "request.blueprints" in source(quart.app)


@pytest.mark.parametrize("name", [None, "chat", "api.chat", "a.b.c.d"])
def test_cached_blueprint_chain_equals_quarts(name: str | None) -> None:
    quarts = inspect.getattr_static(BaseRequestWebsocket, "blueprints").fget
    ours = inspect.getattr_static(node_app._Request, "blueprints").fget
    fake = SimpleNamespace(blueprint=name)
    assert ours(fake) == quarts(fake)


# ── Quart: ensure_async (NodeQuart.ensure_async) ────────────────────────────────────────


def test_ensure_async_returns_coroutine_functions_unchanged_and_wraps_the_rest() -> None:
    """NodeQuart caches a function only when Quart returned it as-is (`result is func`)."""
    assert params(Quart.ensure_async) == ["self", "func"]
    app = Quart(__name__)

    async def coro() -> int:
        return 1

    def sync() -> int:
        return 1

    assert app.ensure_async(coro) is coro
    wrapped = app.ensure_async(sync)
    assert wrapped is not sync  # type: ignore[comparison-overlap]
    assert inspect.iscoroutinefunction(wrapped)
    # Quart routes hooks, views and handlers through it on every call
    assert source(quart.app).count("self.ensure_async(") >= 5


# ── Quart: sessions (node_app._NoSessions) and make_response ──────────────────────────


def test_session_interface_shape() -> None:
    base = SecureCookieSessionInterface
    assert params(base.open_session) == ["self", "app", "request"]
    assert params(base.make_null_session) == ["self", "app"]
    assert inspect.iscoroutinefunction(base.open_session)
    assert inspect.iscoroutinefunction(base.make_null_session)
    # no session opened -> Quart asks the interface for its null session
    assert "session_interface.make_null_session(self.app)" in source(quart.ctx)
    assert isinstance(NullSession(), NullSession)
    assert asyncio.run(node_app._NoSessions().open_session(Quart(__name__), None)) is None  # type: ignore[arg-type]


def test_quart_finalizes_through_the_instance_make_response() -> None:
    """create_api_app replaces app.make_response on the instance; Quart must call it."""
    assert inspect.iscoroutinefunction(Quart.make_response)
    assert "await self.make_response(" in source(quart.app)


# ── quart-schema and werkzeug (node_app._Provider) ─────────────────────────────────────


def test_quart_schema_provider_and_options() -> None:
    assert params(OpenAPIProvider.build_path_parameter) == ["self", "name", "converter"]
    init = params(quart_schema.QuartSchema.__init__)
    for option in (
        "info",
        "openapi_path",
        "swagger_ui_path",
        "redoc_ui_path",
        "scalar_ui_path",
        "security_schemes",
        "openapi_provider_class",
    ):
        assert option in init, option
    assert hasattr(quart_schema.validation, "QuerystringValidationError")
    assert "validation_error" in params(quart_schema.RequestSchemaValidationError.__init__)
    converter = IntegerConverter(Map(), max=7)
    assert converter.max == 7


# ── quart-rate-limiter (security/ratelimit.py) ─────────────────────────────────────────


def test_rate_limiter_private_hooks_and_store() -> None:
    assert params(RateLimiter._get_limits_for_view_function) == ["self", "view_func", "blueprint"]
    for hook in ("_before_serving", "_after_serving", "_before_request"):
        assert inspect.iscoroutinefunction(getattr(RateLimiter, hook)), hook
    init_app = source(RateLimiter.init_app)
    assert "QUART_RATE_LIMITER_ENABLED" in init_app
    assert isinstance(MemoryStore()._tats, dict)
    limit = RateLimit(10, timedelta(seconds=1))
    assert isinstance(limit.key, str)
    assert limit.inverse == pytest.approx(0.1)
    assert params(RateLimitExceeded.__init__) == ["self", "retry_after"]
    # the node's precomputed store keys follow the library's format
    assert 'f"{app_name}-{endpoint}-{rate_limit.key}-{key}"' in source(quart_rate_limiter)
