"""HTTP API blueprints, one per domain, plus shared request/response models."""

from __future__ import annotations

from quart import current_app

from dchat_node.security.auth import Authenticator
from dchat_node.services import Services

EXTENSION_KEY = "dchat"


def services() -> Services:
    svc: Services = current_app.extensions[EXTENSION_KEY]
    return svc


def authenticator() -> Authenticator:
    return services().auth
