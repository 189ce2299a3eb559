"""Relay API: post envelopes, fetch them with a signed challenge, live WebSocket.

No bearer token: the keys are the identities. A sender is identified by its envelope
signature (and rate limited per key); a recipient proves its key with a signature over a
challenge the node issued (``envelope`` module for the exact bytes).

- ``POST /api/v1/relay/envelopes``: store and relay an envelope -> 201 ``{id, expires_at,
  duplicate, gossiped}`` (200 when the node already held it). 400 bad envelope (signature,
  clock, ttl), 413 too large, 429 sender over its rate.
- ``POST /api/v1/relay/challenges``: ``{recipient}`` -> ``{challenge, expires_at}``.
- ``POST /api/v1/relay/envelopes/fetch``: ``{recipient, challenge, signature, after,
  limit}`` -> ``{envelopes, next_after}``; 401 unknown/used/expired challenge, 403 bad
  signature.
- ``WS /api/v1/relay/ws?recipient=&challenge=&signature=``: after the same proof, every
  new envelope for the key as a JSON text frame. Refused with the HTTP status (401/403/
  400) before the upgrade; closed with 1013 when the client falls behind (fetch, then
  reconnect).
- Ops app: ``GET /p2p/info`` -> ``{peerId, addrs}`` (what DNS discovery reads; 404 when
  the relay is disabled).
"""

from __future__ import annotations

import json

from quart import Blueprint, Response, websocket
from quart_schema import document_response, tag, validate_request

from dchat_node.api import json_response, services
from dchat_node.relay.models import (
    ChallengeIn,
    ChallengeOut,
    EnvelopeIn,
    EnvelopePage,
    FetchIn,
    P2PInfo,
    PostResult,
)
from dchat_node.relay.service import RelayService
from dchat_node.services.errors import DomainError

bp = Blueprint("relay", __name__, url_prefix="/api/v1/relay")
ops_bp = Blueprint("relay_ops", __name__)


def _service() -> RelayService:
    return services().relay


@bp.post("/envelopes")
@tag(["relay"])
@validate_request(EnvelopeIn)
@document_response(PostResult, 201)
async def post_envelope(data: EnvelopeIn) -> Response:
    """Store an end-to-end encrypted envelope and relay it to the other nodes."""
    result = await _service().post(data)
    return json_response(result, 200 if result.duplicate else 201)


@bp.post("/challenges")
@tag(["relay"])
@validate_request(ChallengeIn)
@document_response(ChallengeOut, 201)
async def new_challenge(data: ChallengeIn) -> Response:
    """A single-use challenge for the recipient key to sign (fetch or WebSocket)."""
    return json_response(await _service().challenge(data.recipient), 201)


@bp.post("/envelopes/fetch")
@tag(["relay"])
@validate_request(FetchIn)
@document_response(EnvelopePage)
async def fetch_envelopes(data: FetchIn) -> Response:
    """The recipient's envelopes after a cursor, proven by a signed challenge."""
    return json_response(await _service().fetch(data))


def _refusal(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status=status, content_type="application/json")


@bp.websocket("/ws")
async def live() -> Response | None:
    """Live delivery of new envelopes for a recipient key (see the module doc)."""
    service = _service()
    args = websocket.args
    recipient = args.get("recipient", "")
    try:
        await service.authenticate(recipient, args.get("challenge", ""), args.get("signature", ""))
        listener = service.listen(recipient)
    except DomainError as exc:
        return _refusal(exc.status, exc.code, exc.message)
    try:
        await websocket.accept()
        while True:
            item = await listener.queue.get()
            if item is None:
                await websocket.close(1013, "listener fell behind: fetch, then reconnect")
                return None
            await websocket.send(item.model_dump_json())
            service.delivered_live()
    finally:
        service.unlisten(listener)


@ops_bp.get("/p2p/info")
async def p2p_info() -> Response:
    """This node's libp2p peer id and addresses (for discovery by its peers)."""
    info = _service().p2p_info()
    if info is None:
        return _refusal(404, "not_found", "the relay (libp2p host) is disabled on this node")
    return json_response(info)


__all__ = ["P2PInfo", "bp", "ops_bp"]
