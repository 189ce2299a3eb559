"""HTTP API blueprints, one per domain, plus shared request/response models."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Response, current_app

from dchat_node.security.auth import Authenticator
from dchat_node.services import Services

EXTENSION_KEY = "dchat"


def services() -> Services:
    svc: Services = current_app.extensions[EXTENSION_KEY]
    return svc


def authenticator() -> Authenticator:
    return services().auth


def json_response(model: BaseModel, status: int = 200) -> Response:
    """Serialise a response model with pydantic-core (the model is documented on the route
    with ``document_response``; building it from typed records is the validation)."""
    return Response(model.model_dump_json(), status=status, content_type="application/json")
