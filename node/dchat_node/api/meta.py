"""Meta API: version."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag

from dchat_node import __version__
from dchat_node.api import json_response, services
from dchat_node.api.models import Version

bp = Blueprint("meta", __name__, url_prefix="/api/v1")


@bp.get("/version")
@tag(["meta"])
@document_response(Version)
async def version() -> Response:
    """Node version, API version, storage engine and schema version."""
    svc = services()
    return json_response(
        Version(
            name="dchat-node",
            version=__version__,
            api="v1",
            storage_engine=svc.storage.engine,
            schema_version=await svc.storage.schema_version(),
        )
    )
