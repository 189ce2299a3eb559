"""Bridge API (``/api/v1/bridge``): public (on-chain data only), no keys of users.

``GET /transfers/<transfer_id>`` one transfer (400 for a malformed id, 404 for one this node
has not observed); ``GET /transfers`` a page, oldest first, filtered by ``account``
(depositor or recipient) and ``state``, with opaque cursor pagination (``next_cursor``).
``GET /snapshots/latest`` and ``GET /snapshots/<seq>``: a state snapshot with its validator
signatures; ``GET /snapshots/<seq>/proofs/<transfer_id>``: the transfer's Merkle proof (404
when not included). ``POST /initiate``: the unsigned ``BridgeVault.deposit`` transaction
(chain id, to, value, data) a wallet signs and sends; the node holds no user funds or keys.
"""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_request

from dchat_node.api import json_response, services
from dchat_node.api.models import encode_cursor
from dchat_node.api.validation import validate_querystring
from dchat_node.bridge.models import (
    BridgeSnapshot,
    BridgeTransfer,
    InclusionProof,
    InitiateTransfer,
    TransferPage,
    TransferQuery,
    UnsignedDeposit,
)
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


async def _snapshot(seq: int | None) -> Response:
    svc = bridge()
    rec, sigs = await svc.snapshot(seq)
    return json_response(BridgeSnapshot.of(rec, sigs, svc.quorum))


@bp.get("/snapshots/latest")
@tag(["bridge"])
@document_response(BridgeSnapshot)
async def latest_snapshot() -> Response:
    """The latest state snapshot this node verified, with the validators' signatures."""
    return await _snapshot(None)


@bp.get("/snapshots/<int:seq>")
@tag(["bridge"])
@document_response(BridgeSnapshot)
async def get_snapshot(seq: int) -> Response:
    """A state snapshot by sequence number (from 1), with the validators' signatures."""
    return await _snapshot(seq)


@bp.get("/snapshots/<int:seq>/proofs/<transfer_id>")
@tag(["bridge"])
@document_response(InclusionProof)
async def snapshot_proof(seq: int, transfer_id: str) -> Response:
    """The Merkle proof that a transfer (in its final state) is in snapshot ``seq``."""
    state, leaf, proof = await bridge().proof(seq, transfer_id)
    rec, _ = await bridge().snapshot(seq)
    return json_response(
        InclusionProof(
            seq=seq,
            transfer_id=transfer_id.lower(),
            state=state,
            leaf="0x" + leaf.hex(),
            proof=["0x" + p.hex() for p in proof],
            root=rec.root,
        )
    )


@bp.post("/initiate")
@tag(["bridge"])
@validate_request(InitiateTransfer)
@document_response(UnsignedDeposit)
async def initiate(data: InitiateTransfer) -> Response:
    """The unsigned deposit transaction for a transfer to ``dst_chain_id``: send it from the
    depositor's wallet on ``chain_id`` (the node never holds user keys)."""
    chain_id, vault, calldata = bridge().initiate(
        data.dst_chain_id, data.recipient, int(data.amount)
    )
    return json_response(
        UnsignedDeposit(chain_id=chain_id, to=vault, value=data.amount, data="0x" + calldata.hex())
    )
