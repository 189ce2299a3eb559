"""Chat API: channels and messages.

Reads are public; creating a channel or posting a message needs a bearer token with the
``chat:write`` scope. Lists use opaque cursor pagination (``next_cursor``).
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import (
    security_scheme,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from dchat_node.api import authenticator, services
from dchat_node.api.models import (
    Channel,
    ChannelPage,
    CreateChannel,
    Message,
    MessagePage,
    PageQuery,
    PostMessage,
    encode_cursor,
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
@validate_response(Channel, 201)
async def create_channel(data: CreateChannel) -> tuple[Channel, int]:
    """Create a channel (needs chat:write)."""
    rec = await services().chat.create_channel(current_principal().subject, data.name, data.topic)
    return Channel.of(rec), 201


@bp.get("/channels")
@tag(["chat"])
@validate_querystring(PageQuery)
@validate_response(ChannelPage)
async def list_channels(query_args: PageQuery) -> ChannelPage:
    """List channels, oldest first."""
    page = await services().chat.list_channels(query_args.after_id(), query_args.limit)
    return ChannelPage(
        items=[Channel.of(r) for r in page.items], next_cursor=encode_cursor(page.last_id)
    )


@bp.get(f"/channels/<{ID}:channel_id>")
@tag(["chat"])
@validate_response(Channel)
async def get_channel(channel_id: int) -> Channel:
    """One channel."""
    return Channel.of(await services().chat.get_channel(channel_id))


@bp.post(f"/channels/<{ID}:channel_id>/messages")
@tag(["chat"])
@security_scheme(BEARER)
@require_auth(authenticator, SCOPE_CHAT_WRITE)
@validate_request(PostMessage)
@validate_response(Message, 201)
async def post_message(channel_id: int, data: PostMessage) -> tuple[Message, int]:
    """Post a message to a channel (needs chat:write)."""
    rec = await services().chat.post_message(current_principal().subject, channel_id, data.body)
    return Message.of(rec), 201


@bp.get(f"/channels/<{ID}:channel_id>/messages")
@tag(["chat"])
@validate_querystring(PageQuery)
@validate_response(MessagePage)
async def list_messages(channel_id: int, query_args: PageQuery) -> MessagePage:
    """A channel's messages, oldest first, cursor-paginated."""
    page = await services().chat.list_messages(channel_id, query_args.after_id(), query_args.limit)
    return MessagePage(
        items=[Message.of(r) for r in page.items], next_cursor=encode_cursor(page.last_id)
    )


@bp.get(f"/channels/<{ID}:channel_id>/messages/<{ID}:message_id>")
@tag(["chat"])
@validate_response(Message)
async def get_message(channel_id: int, message_id: int) -> Message:
    """One message."""
    return Message.of(await services().chat.get_message(channel_id, message_id))
