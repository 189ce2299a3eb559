"""Chat API: channels and messages.

Reads are public; creating a channel or posting a message needs a bearer token with the
``chat:write`` scope. Lists use opaque cursor pagination (``next_cursor``).
"""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import (
    document_response,
    security_scheme,
    tag,
    validate_request,
)

from dchat_node.api import authenticator, json_response, services
from dchat_node.api.validation import validate_querystring
from dchat_node.chat.models import (
    Channel,
    ChannelPage,
    CreateChannel,
    Message,
    MessagePage,
    PageQuery,
    PostMessage,
    page_json,
)
from dchat_node.security.auth import SCOPE_CHAT_WRITE, current_principal, require_auth

bp = Blueprint("chat", __name__, url_prefix="/api/v1")

ID = "int(max=9223372036854775807)"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


@bp.post("/channels")
@tag(["chat"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_CHAT_WRITE)
@validate_request(CreateChannel)
@document_response(Channel, 201)
async def create_channel(data: CreateChannel) -> Response:
    """Create a channel (needs chat:write)."""
    rec = await services().chat.create_channel(current_principal().subject, data.name, data.topic)
    return json_response(Channel.of(rec), 201)


@bp.get("/channels")
@tag(["chat"])
@validate_querystring(PageQuery)
@document_response(ChannelPage)
async def list_channels(query_args: PageQuery) -> Response:
    """List channels, oldest first."""
    page = await services().chat.channel_page(query_args.after_id(), query_args.limit)
    # the channels' JSON documents as the database wrote them, in the documented page
    return Response(page_json(page), status=200, content_type="application/json")


@bp.get(f"/channels/<{ID}:channel_id>")
@tag(["chat"])
@document_response(Channel)
async def get_channel(channel_id: int) -> Response:
    """One channel."""
    return json_response(Channel.of(await services().chat.get_channel(channel_id)))


@bp.post(f"/channels/<{ID}:channel_id>/messages")
@tag(["chat"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_CHAT_WRITE)
@validate_request(PostMessage)
@document_response(Message, 201)
async def post_message(channel_id: int, data: PostMessage) -> Response:
    """Post a message to a channel (needs chat:write)."""
    rec = await services().chat.post_message(current_principal().subject, channel_id, data.body)
    return json_response(Message.of(rec), 201)


@bp.get(f"/channels/<{ID}:channel_id>/messages")
@tag(["chat"])
@validate_querystring(PageQuery)
@document_response(MessagePage)
async def list_messages(channel_id: int, query_args: PageQuery) -> Response:
    """A channel's messages, oldest first, cursor-paginated."""
    page = await services().chat.message_page(channel_id, query_args.after_id(), query_args.limit)
    # the messages' JSON documents as the database wrote them, in the documented page
    return Response(page_json(page), status=200, content_type="application/json")


@bp.get(f"/channels/<{ID}:channel_id>/messages/<{ID}:message_id>")
@tag(["chat"])
@document_response(Message)
async def get_message(channel_id: int, message_id: int) -> Response:
    """One message."""
    return json_response(Message.of(await services().chat.get_message(channel_id, message_id)))
