"""Meta API: version."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import tag, validate_response

from dchat_node import __version__
from dchat_node.api import services
from dchat_node.api.models import Version

bp = Blueprint("meta", __name__, url_prefix="/api/v1")


@bp.get("/version")
@tag(["meta"])
@validate_response(Version)
async def version() -> Version:
    """Node version, API version, storage engine and schema version."""
    svc = services()
    return Version(
        name="dchat-node",
        version=__version__,
        api="v1",
        storage_engine=svc.storage.engine,
        schema_version=await svc.storage.schema_version(),
    )
