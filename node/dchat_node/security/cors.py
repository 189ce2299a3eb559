"""CORS with quart-cors, restricted to ``security.cors_allowed_origins``.

An empty list allows no cross-origin caller (no ``Access-Control-Allow-Origin`` is ever
sent); ``"*"`` must be listed explicitly to allow any origin. Credentials are not allowed
(bearer tokens travel in the Authorization header, which is allowed).

quart-cors's after-request handler does the CORS work; it is only invoked for requests
that carry an ``Origin`` header (the only ones CORS concerns). Requests without one get
exactly what quart-cors would give them (``Vary: Origin`` and nothing else) without paying
for its per-request option parsing, which is measurable on the hot read path. WebSockets:
quart-cors's origin check runs for those that carry an ``Origin`` (browsers); a WebSocket
without one (a native client, e.g. the relay's live delivery) is not refused for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from quart import Quart, Response, request, websocket
from quart_cors import cors

from dchat_node.config import SecurityConfig

ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ALLOWED_HEADERS = ["Authorization", "Content-Type"]

AfterRequest = Callable[[Response], Awaitable[Response]]


class _Capture:
    """Collects the hooks ``quart_cors.cors`` registers, so they can be installed wrapped."""

    def __init__(self) -> None:
        self.after: list[AfterRequest] = []
        self.before_websocket_funcs: list[Callable[[], Awaitable[Any]]] = []

    def after_request(self, func: AfterRequest) -> AfterRequest:
        self.after.append(func)
        return func

    def before_websocket(self, func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        self.before_websocket_funcs.append(func)
        return func


def _has_origin(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    # the raw ASGI header list (names lower-cased by the server): a few tuple compares,
    # where werkzeug's ``"Origin" in request.headers`` raises and catches a KeyError
    return any(name == b"origin" for name, _ in headers)


def _only_cross_origin(inner: AfterRequest) -> AfterRequest:
    async def after(response: Response) -> Response:
        if not _has_origin(request.scope["headers"]):
            if response.headers.getlist("Vary"):
                response.vary.add("Origin")
            else:
                response.headers.add("Vary", "Origin")
            return response
        return await inner(response)

    return after


def apply_cors(app: Quart, config: SecurityConfig) -> Quart:
    origins = list(config.cors_allowed_origins)
    app.config["QUART_CORS_ALLOW_ORIGIN"] = origins
    capture = _Capture()
    cors(  # type: ignore[type-var]
        capture,
        allow_origin=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
    for func in capture.after:
        app.after_request(_only_cross_origin(func))
    for ws in capture.before_websocket_funcs:
        app.before_websocket(_only_cross_origin_websocket(ws))
    return app


def _only_cross_origin_websocket(
    inner: Callable[[], Awaitable[Any]],
) -> Callable[[], Awaitable[Any]]:
    """quart-cors refuses (400) every WebSocket whose Origin is not allowed, including
    those without one; only browsers send Origin (and a cross-site page's socket is what
    the check is for), so a WebSocket without it (a native client) is let through."""

    async def before() -> Any:
        if _has_origin(websocket.scope["headers"]):
            return await inner()
        return None

    return before
