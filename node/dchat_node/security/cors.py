"""CORS with quart-cors, restricted to ``security.cors_allowed_origins``.

An empty list allows no cross-origin caller (no ``Access-Control-Allow-Origin`` is ever
sent); ``"*"`` must be listed explicitly to allow any origin. Credentials are not allowed
(bearer tokens travel in the Authorization header, which is allowed).
"""

from __future__ import annotations

from quart import Quart
from quart_cors import cors

from dchat_node.config import SecurityConfig

ALLOWED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
ALLOWED_HEADERS = ["Authorization", "Content-Type"]


def apply_cors(app: Quart, config: SecurityConfig) -> Quart:
    origins = list(config.cors_allowed_origins)
    app.config["QUART_CORS_ALLOW_ORIGIN"] = origins
    return cors(
        app,
        allow_origin=origins,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
