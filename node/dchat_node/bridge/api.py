"""Bridge API (``/api/v1/bridge``): read transfers, public (on-chain data only).

``GET /transfers/<transfer_id>`` one transfer (400 for a malformed id, 404 for one this node
has not observed); ``GET /transfers`` a page, oldest first, filtered by ``account``
(depositor or recipient) and ``state``, with opaque cursor pagination (``next_cursor``).
Deposits are made on chain (``BridgeVault.deposit``); the node holds no user funds or keys.
"""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag

from dchat_node.api import json_response, services
from dchat_node.api.models import encode_cursor
from dchat_node.api.validation import validate_querystring
from dchat_node.bridge.models import BridgeTransfer, TransferPage, TransferQuery
from dchat_node.bridge.service import BridgeService

bp = Blueprint("bridge", __name__, url_prefix="/api/v1/bridge")


def bridge() -> BridgeService:
    svc: BridgeService = services().bridge
    return svc


@bp.get("/transfers")
@tag(["bridge"])
@validate_querystring(TransferQuery)
@document_response(TransferPage)
async def list_transfers(query_args: TransferQuery) -> Response:
    """Transfers this node observed, oldest first."""
    q = query_args
    rows, more = await bridge().list(q.account, q.state, q.after_id(), q.limit)
    cursor = encode_cursor(rows[-1].id) if more and rows else None
    return json_response(
        TransferPage(items=[BridgeTransfer.of(r) for r in rows], next_cursor=cursor)
    )


@bp.get("/transfers/<transfer_id>")
@tag(["bridge"])
@document_response(BridgeTransfer)
async def get_transfer(transfer_id: str) -> Response:
    """One transfer by id (``0x`` + 64 hex digits)."""
    return json_response(BridgeTransfer.of(await bridge().get(transfer_id)))
