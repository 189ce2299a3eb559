"""HTTP API blueprints, one per domain, plus shared request/response models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel
from quart import Response, current_app

if TYPE_CHECKING:  # the container imports every domain; a domain's blueprint must not
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
    # the model's compiled serializer straight to bytes (what model_dump_json does, minus
    # its keyword handling and the str round trip)
    body = model.__pydantic_serializer__.to_json(model)
    return Response(body, status=status, content_type="application/json")
