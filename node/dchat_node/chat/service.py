"""Chat domain: channels and messages (the first domain; later ones follow its pattern).

A service holds the domain rules and talks only to its store (``ChatStore``); it returns
store records (or, for list reads that become response bodies, pages of the records'
JSON documents as the database wrote them) and raises ``services.errors`` (never HTTP
concepts). The API blueprint (``chat/api.py``) validates input with pydantic models
(``chat/models.py``) and renders records as responses.
"""

from __future__ import annotations

from dchat_node.chat.store import ChannelRecord, ChatStore, MessageRecord
from dchat_node.services.errors import AlreadyExists, NotFound
from dchat_node.storage.base import JsonPage
from dchat_node.storage.errors import Conflict, ReferenceMissing


class ChatService:
    def __init__(self, store: ChatStore) -> None:
        self._storage = store

    async def create_channel(self, user: str, name: str, topic: str) -> ChannelRecord:
        await self._storage.ensure_user(user)
        try:
            return await self._storage.create_channel(name, topic, user)
        except Conflict:
            raise AlreadyExists(f"a channel named {name!r} already exists") from None

    async def get_channel(self, channel_id: int) -> ChannelRecord:
        channel = await self._storage.get_channel(channel_id)
        if channel is None:
            raise NotFound(f"channel {channel_id} does not exist")
        return channel

    async def channel_page(self, after_id: int, limit: int) -> JsonPage:
        """Channels after ``after_id``, oldest first, as their JSON documents."""
        return await self._storage.channel_page_json(after_id, limit)

    async def post_message(self, user: str, channel_id: int, body: str) -> MessageRecord:
        await self._storage.ensure_user(user)
        try:
            return await self._storage.create_message(channel_id, user, body)
        except ReferenceMissing:
            raise NotFound(f"channel {channel_id} does not exist") from None

    async def get_message(self, channel_id: int, message_id: int) -> MessageRecord:
        message = await self._storage.get_message(channel_id, message_id)
        if message is None:
            raise NotFound(f"message {message_id} does not exist in channel {channel_id}")
        return message

    async def message_page(self, channel_id: int, after_id: int, limit: int) -> JsonPage:
        """A channel's messages after ``after_id``, oldest first, as their JSON documents."""
        page = await self._storage.message_page_json(channel_id, after_id, limit)
        # an empty page of a channel that does not exist is a 404, not an empty list
        if not page.count and await self._storage.get_channel(channel_id) is None:
            raise NotFound(f"channel {channel_id} does not exist")
        return page
