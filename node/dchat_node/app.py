"""App factories: the user-facing API app and the ops app (two Quart apps, two ports).

Design:
- ``create_api_app(services)``: blueprints per domain (``api/``), quart-schema (pydantic
  validation of every body and query string, ``/openapi.json``), JWT auth on mutating routes,
  CORS, rate limiting, body cap (``server.max_request_body_bytes`` -> 413), per-request
  timeout (``server.request_timeout_secs`` -> 504), JSON errors everywhere (404/405/413/422/
  429/5xx; 503 ``overloaded`` with ``Retry-After`` when the database queue is full, see
  ``storage.admission``), request metrics by route template, and a server span per
  request when tracing is on. All of that lives in ``NodeQuart.handle_request`` and error
  handlers, not in views.
- ``create_ops_app(services, state)``: ``/p2p/info`` (the relay's peer id, for discovery),
  ``/health`` (alive + loop responsive), ``/ready``
  (not draining, database reachable, migrations applied), ``/metrics`` (Prometheus text),
  ``/health/<component>`` (``/health/bridge``: the bridge component's real state, or 503
  ``disabled`` while no bridge is registered).
- Error bodies never carry exception text, tokens, keys or connection strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from array import array
from collections.abc import Awaitable, Callable
from functools import lru_cache
from itertools import accumulate
from typing import Any, ParamSpec, TypeVar, cast, overload

from hypercorn.typing import ASGISendCallable
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError
from quart import Quart, Response, has_request_context, request
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.sessions import NullSession, SecureCookieSessionInterface, SessionMixin
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import BaseRequestWebsocket, Request
from quart_schema import HttpSecurityScheme, Info, QuartSchema, RequestSchemaValidationError
from quart_schema.openapi import OpenAPIProvider
from werkzeug.exceptions import BadRequest, HTTPException
from werkzeug.routing.converters import BaseConverter, IntegerConverter

from dchat_node import __version__
from dchat_node.api import EXTENSION_KEY
from dchat_node.api.validation import AsciiIntegerConverter
from dchat_node.lifecycle import NodeState, heartbeat
from dchat_node.security.auth import AuthError
from dchat_node.security.cors import apply_cors
from dchat_node.security.ratelimit import apply_rate_limit
from dchat_node.services import Services
from dchat_node.services.errors import DomainError
from dchat_node.storage import NotPrimary, StorageBusy, StorageError, StorageUnavailable

log = logging.getLogger("dchat_node.app")

P = ParamSpec("P")
T = TypeVar("T")

UNMATCHED_ROUTE = "<unmatched>"
# any other method token a client sends is counted as OTHER: labels stay bounded
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OPTIONAL_COMPONENTS = frozenset({"bridge", "relay", "marketplace", "accessibility"})
SHED_RETRY_AFTER_SECS = 1
_HEADERS_KEPT = ("Retry-After", "Allow", "WWW-Authenticate")
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code or _HTTP_CODES.get(status, "error"), "message": message}
    if fields is not None:
        body["fields"] = fields
    resp = Response(json.dumps({"error": body}), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def _validation_fields(exc: BaseException | None) -> list[dict[str, str]]:
    if isinstance(exc, ValidationError):
        return [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "<body>",
                "message": str(err["msg"]),
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
    return [{"field": "<body>", "message": "body must be a JSON object matching the schema"}]


class _HTTPConnection(ASGIHTTPConnection):
    """Quart's ASGI HTTP connection with the node's per-request envelope around it.

    One deadline (``server.request_timeout_secs``, one ``asyncio.timeout`` timer) bounds
    the whole exchange: handling the request and then sending the response. A request
    still being handled at the deadline gets a 504 (sent under Quart's
    ``RESPONSE_TIMEOUT``); a response still being sent at the deadline is abandoned
    silently, as Quart abandons a send that outlives ``RESPONSE_TIMEOUT``. A response
    with its own ``timeout`` (Quart's per-response setting, e.g. a long stream) is sent
    under that instead. The request's metrics (count, latency to the response, in-flight
    gauge) and its server span are recorded here too, so every response the app makes,
    error pages included, is counted once.
    """

    app: NodeQuart

    async def handle_request(self, request: Request, send: ASGISendCallable) -> None:
        app = self.app
        metrics = app.services.metrics
        start = time.perf_counter()
        metrics.in_flight += 1
        span_cm = None
        span: trace.Span | None = None
        if app.tracer is not None:
            ctx = propagate.extract(request.headers)
            span_cm = app.tracer.start_as_current_span(
                f"{request.method}", context=ctx, kind=trace.SpanKind.SERVER
            )
            span = span_cm.__enter__()
        sending = False
        try:
            async with asyncio.timeout(app.request_timeout) as deadline:
                response = await self._response(request)
                self._observe(request, response, start, span)
                if isinstance(response, Response) and response.timeout != Ellipsis:
                    own = cast("float | None", response.timeout)
                    when = None if own is None else asyncio.get_running_loop().time() + own
                    deadline.reschedule(when)
                sending = True
                await self._send_response(send, response)
        except TimeoutError:
            if not sending:
                response = error_response(504, "the request took too long and was abandoned")
                self._observe(request, response, start, span)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(app.config["RESPONSE_TIMEOUT"]):
                        await self._send_response(send, response)
            # else: the client stalled the response; abandoned, as Quart abandons a send
        finally:
            metrics.in_flight -= 1
            if span_cm is not None:
                span_cm.__exit__(None, None, None)

    async def _response(self, request: Request) -> ResponseTypes:
        try:
            return await self.app.handle_request(request)
        except Exception as error:
            return await _handle_exception(self.app, error)

    def _observe(
        self, request: Request, response: ResponseTypes, start: float, span: trace.Span | None
    ) -> None:
        status: int = getattr(response, "status_code", 500)
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in _KNOWN_METHODS else "OTHER"
        self.app.services.metrics.observe_request(
            method, route, status, time.perf_counter() - start
        )
        if span is not None:
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))


@lru_cache(maxsize=256)
def _blueprint_chain(name: str) -> tuple[str, ...]:
    """``"a.b"`` -> ``("a.b", "a")``: a nested blueprint's name, then its parents'."""
    chain = [name]
    while "." in chain[-1]:
        chain.append(chain[-1].rpartition(".")[0])
    return tuple(chain)


MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects an API body may have (the API's own documents
nest 4 levels at most)."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count). In C-speed steps: a body with at most ``limit`` opening brackets
    cannot be too deep (one count); else strings are cut out, brackets mapped to +1/-1 and
    the running sum's maximum taken."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", body).translate(_DEPTH_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", brackets)), default=0) > limit


class _Request(Request):
    """Quart's request, with ``blueprints`` (read three times per request, for the hooks
    and error handlers of the matched endpoint's blueprints) from a cache per blueprint
    name instead of an import and a split on every read, and a 400 for a body that is not
    JSON saying why (Quart's says nothing outside debug mode)."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if force or self.is_json:
            # checked before parsing: the C parser's own guard is the interpreter's recursion
            # limit, which an import can raise (web3's py_ecc sets 100000) until a body like
            # [[[[...]]]] overflows the C stack and the process dies (seen: a segfault)
            body = await self.get_data(cache=True)
            if isinstance(body, bytes) and json_too_deep(body):
                if silent:
                    return None
                raise BadRequest("the JSON body is nested too deeply")
        try:
            return await super().get_json(force, silent, cache)
        except RecursionError:
            if silent:
                return None
            raise BadRequest("the JSON body is nested too deeply") from None

    def on_json_loading_failed(self, error: Exception) -> Any:
        if isinstance(error, json.JSONDecodeError):
            raise BadRequest(f"the body is not valid JSON ({error.msg} at position {error.pos})")
        raise BadRequest("the body is not valid JSON")

    @property
    def blueprints(self) -> list[str]:
        name = self.blueprint
        return [] if name is None else list(_blueprint_chain(name))


_ASYNC_CACHE_MAX = 1024


class NodeQuart(Quart):
    """Quart with the node's request envelope (``_HTTPConnection``) and two per-request
    savings: cached blueprint chains (``_Request``) and coroutine functions recognised
    once (``ensure_async``: Quart inspects every hook and view on every call)."""

    asgi_http_class = _HTTPConnection
    request_class = _Request
    services: Services
    tracer: trace.Tracer | None = None
    request_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coroutine_functions: set[Callable[..., Any]] = set()

    @overload
    def ensure_async(self, func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]: ...

    @overload
    def ensure_async(self, func: Callable[P, T]) -> Callable[P, Awaitable[T]]: ...

    def ensure_async(
        self, func: Callable[P, Awaitable[T]] | Callable[P, T]
    ) -> Callable[P, Awaitable[T]]:
        known = self._coroutine_functions
        try:
            if func in known:
                return cast("Callable[P, Awaitable[T]]", func)
        except TypeError:  # an unhashable callable: Quart's own check
            return cast("Callable[P, Awaitable[T]]", super().ensure_async(func))
        result: Callable[P, Awaitable[T]] = super().ensure_async(func)
        # hooks, views and handlers are few and live as long as the app; the bound keeps
        # one-off callables (background tasks) from growing the set
        if result is func and len(known) < _ASYNC_CACHE_MAX:
            known.add(func)
        return result


class _NoSessions(SecureCookieSessionInterface):
    """The API is stateless (bearer tokens, no cookies): every request gets the same
    read-only ``NullSession`` (what Quart gives when no secret key is set, which is the
    case here), without Quart looking for a session cookie and building a new one per
    request."""

    def __init__(self) -> None:
        self._null = NullSession()

    async def open_session(  # type: ignore[override]
        self, app: Quart, request: BaseRequestWebsocket
    ) -> SessionMixin | None:
        return None

    async def make_null_session(self, app: Quart) -> NullSession:
        return self._null


def _responses_as_is(
    make_response: Any,
) -> Any:
    """Routes and error handlers of the API return finished ``Response`` objects: pass them
    through instead of letting quart-schema's response conversion inspect them (it would
    return them unchanged); anything else still goes through quart-schema and Quart."""

    async def fast(result: ResponseReturnValue | HTTPException) -> ResponseTypes:
        if type(result) is Response:
            return result
        return await make_response(result)  # type: ignore[no-any-return]

    return fast


class _Provider(OpenAPIProvider):
    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        obj = super().build_path_parameter(name, converter)
        if isinstance(converter, IntegerConverter):
            obj["schema"] = {"type": "integer", "minimum": 0}
            if converter.max is not None:
                obj["schema"]["maximum"] = converter.max
        return obj


def _register_api_errors(app: Quart) -> None:
    """JSON error bodies for every failure, registered in this order: the client's
    mistakes, then the database's state, then everything else."""
    _register_client_errors(app)
    _register_storage_errors(app)
    _register_fallback_errors(app)


def _register_client_errors(app: Quart) -> None:
    """Schema, encoding, auth and domain errors: the request is at fault (4xx)."""

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError) -> Response:
        return error_response(
            422,
            "the request does not match the schema",
            fields=_validation_fields(exc.validation_error),
        )

    @app.errorhandler(UnicodeDecodeError)
    async def _not_utf8(exc: UnicodeDecodeError) -> Response:
        # Quart decodes JSON bodies as UTF-8 before parsing; bad bytes are the client's fault
        return error_response(400, "malformed request: the body is not valid UTF-8")

    @app.errorhandler(AuthError)
    async def _auth(exc: AuthError) -> Response:
        return error_response(exc.status, exc.message, code=exc.code, headers=exc.headers())

    @app.errorhandler(DomainError)
    async def _domain(exc: DomainError) -> Response:
        return error_response(exc.status, exc.message, code=exc.code)


def _register_storage_errors(app: Quart) -> None:
    """A full database queue (503 ``overloaded``) or an unreachable database (503)."""

    @app.errorhandler(StorageBusy)
    async def _shed(exc: StorageBusy) -> Response:
        # load shedding, not a failure: no log line per request (counted in
        # dchat_database_queries_shed_total), the client retries after a second
        return error_response(
            503,
            "the node is overloaded, retry shortly",
            code="overloaded",
            headers={"Retry-After": str(SHED_RETRY_AFTER_SECS)},
        )

    @app.errorhandler(StorageUnavailable)
    async def _db_down(exc: StorageUnavailable) -> Response:
        log.error("database unavailable: %s", exc)
        app.services.metrics.errors.labels(component="storage").inc()  # type: ignore[attr-defined]
        return error_response(503, "the database is unavailable", headers={"Retry-After": "5"})


def _register_fallback_errors(app: Quart) -> None:
    """HTTP errors raised by Quart/werkzeug, and any other exception (500 with a request
    id, logged with its traceback)."""

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k in _HEADERS_KEPT}
        message = {
            404: "no such resource",
            # a WebSocket's errors come here too, outside a request context
            405: f"method {request.method if has_request_context() else 'GET'} is not allowed here",
            413: "request body too large",
            429: "too many requests, slow down",
        }.get(status, exc.name)
        if status == 400 and exc.description:
            message = "malformed request: " + str(exc.description)[:200]
        return error_response(status, message, headers=headers)

    @app.errorhandler(Exception)
    async def _unhandled(exc: Exception) -> Response:
        request_id = uuid.uuid4().hex
        component = "storage" if isinstance(exc, StorageError) else "api"
        if component == "storage":
            app.services.metrics.errors.labels(component="storage").inc()  # type: ignore[attr-defined]
        log.error(
            "unhandled error in %s %s",
            request.method,
            request.url_rule.rule if request.url_rule else UNMATCHED_ROUTE,
            exc_info=exc,
            extra={"request_id": request_id},
        )
        return error_response(500, f"internal error (request id {request_id})")


def create_api_app(services: Services, tracer_provider: TracerProvider | None = None) -> Quart:
    """The user-facing app (port ``server.api_port``)."""
    cfg = services.config
    app = NodeQuart("dchat_node.api", static_folder=None)
    # before any route is added: rules bind their converters when registered
    app.url_map.converters["int"] = AsciiIntegerConverter
    app.session_interface = _NoSessions()
    app.services = services
    app.tracer = tracer_provider.get_tracer("dchat_node") if tracer_provider else None
    app.request_timeout = cfg.server.request_timeout_secs
    app.extensions[EXTENSION_KEY] = services
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.server.max_request_body_bytes,
        BODY_TIMEOUT=cfg.server.request_timeout_secs,
        RESPONSE_TIMEOUT=cfg.server.request_timeout_secs,
        PROVIDE_AUTOMATIC_OPTIONS=True,
    )
    QuartSchema(
        app,
        info=Info(title="dchat node API", version=__version__),
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        security_schemes={"bearerAuth": HttpSecurityScheme(scheme="bearer", bearer_format="JWT")},
        openapi_provider_class=_Provider,
    )
    app.make_response = _responses_as_is(app.make_response)  # type: ignore[method-assign]
    from dchat_node.accessibility.api import bp as accessibility_bp
    from dchat_node.api.meta import bp as meta_bp
    from dchat_node.bridge.api import bp as bridge_bp
    from dchat_node.chat.api import bp as chat_bp
    from dchat_node.marketplace.api import bp as marketplace_bp
    from dchat_node.relay.api import bp as relay_bp

    app.register_blueprint(meta_bp)
    app.register_blueprint(chat_bp)
    app.register_blueprint(accessibility_bp)
    app.register_blueprint(marketplace_bp)
    app.register_blueprint(bridge_bp)
    app.register_blueprint(relay_bp)
    _register_api_errors(app)
    apply_rate_limit(app, cfg.security)
    apply_cors(app, cfg.security)
    return app


def create_ops_app(services: Services, state: NodeState) -> Quart:
    """The ops app (port ``server.metrics_port``): health, readiness, metrics."""
    app = Quart("dchat_node.ops")
    app.extensions[EXTENSION_KEY] = services
    from dchat_node.relay.api import ops_bp as relay_ops_bp

    app.register_blueprint(relay_ops_bp)
    _run_heartbeat(app, state)
    _add_ops_routes(app, services, state)

    @app.errorhandler(HTTPException)
    async def _http(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.name)

    return app


def _run_heartbeat(app: Quart, state: NodeState) -> None:
    """The loop heartbeat behind ``/health`` runs while ``app`` serves."""
    beat: dict[str, asyncio.Task[None]] = {}

    @app.before_serving
    async def _start() -> None:
        beat["task"] = asyncio.get_running_loop().create_task(heartbeat(state))

    @app.after_serving
    async def _stop() -> None:
        task = beat.pop("task", None)
        if task is not None:
            task.cancel()


def _add_ops_routes(app: Quart, services: Services, state: NodeState) -> None:
    """``/health``, ``/ready``, ``/metrics`` and ``/health/<component>``."""

    @app.get("/health")
    async def health() -> tuple[dict[str, Any], int]:
        ok = state.loop_responsive()
        return (
            {
                "status": "ok" if ok else "unresponsive",
                "loop_lag_seconds": round(state.loop_lag, 4),
                "uptime_seconds": round(time.time() - state.started_at, 1),
                "version": __version__,
            },
            200 if ok else 503,
        )

    @app.get("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        checks = await _readiness_problems(services, state)
        if checks:
            return {"status": "not_ready", "problems": checks}, 503
        return {"status": "ready", "storage_engine": services.storage.engine}, 200

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = services.metrics.render()
        return Response(body, status=200, content_type=content_type)

    @app.get("/health/<name>")
    async def component_health(name: str) -> tuple[dict[str, Any], int]:
        return await _component_health(services, name)


async def _readiness_problems(services: Services, state: NodeState) -> dict[str, str]:
    """Why the node is not ready, by check (empty: ready). Once no migration is pending,
    ``state.migrations_checked`` is set and the schema is not read again."""
    checks: dict[str, str] = {}
    if state.draining:
        checks["draining"] = "node is shutting down"
    try:
        await asyncio.wait_for(services.storage.ping(), timeout=2)
        checks_db = "ok"
    except NotPrimary:
        checks_db = checks["database"] = "not writable: connected to a standby, not a primary"
    except (StorageError, TimeoutError, OSError) as exc:
        checks_db = f"unreachable ({type(exc).__name__})"
        checks["database"] = checks_db
    if checks_db == "ok" and not state.migrations_checked:
        try:
            pending = await services.storage.pending_migrations()
        except StorageError as exc:
            checks["migrations"] = f"cannot read schema version ({type(exc).__name__})"
        else:
            if pending:
                checks["migrations"] = f"{len(pending)} pending (run `dchat migrate`)"
            else:
                state.migrations_checked = True
    return checks


async def _component_health(services: Services, name: str) -> tuple[dict[str, Any], int]:
    """``/health/<name>``: the component's own status, ``disabled`` (503) for an optional
    component this node does not run, 404 for any other name."""
    component = services.components.get(name)
    if component is None:
        if name in OPTIONAL_COMPONENTS:
            return {
                "status": "disabled",
                "component": name,
                "message": f"{name} disabled: no {name} component runs in this node",
            }, 503
        return {"error": {"code": "not_found", "message": "no such component"}}, 404
    try:
        st = await asyncio.wait_for(component.status(), timeout=5)
    except Exception as exc:
        services.metrics.errors.labels(component=name).inc()
        return {"status": "error", "component": name, "message": type(exc).__name__}, 503
    return (
        {
            "status": st.state,
            "component": name,
            "healthy": st.healthy,
            "details": dict(st.details),
        },
        200 if st.healthy else 503,
    )
