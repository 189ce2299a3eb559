"""Chat domain: channels and messages (the first domain; later ones follow its pattern).

A service holds the domain rules and talks only to the ``Storage`` interface; it returns
storage records (or, for list reads that become response bodies, the records' JSON
documents as the database wrote them) and raises ``services.errors`` (never HTTP
concepts). The API blueprint (``api/chat.py``) validates input with pydantic models and
renders records as responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from dchat_node.services.errors import AlreadyExists, NotFound
from dchat_node.storage import Conflict, ReferenceMissing, Storage
from dchat_node.storage.base import ChannelRecord, JsonDoc, MessageRecord


class _HasId(Protocol):
    @property
    def id(self) -> int: ...


T = TypeVar("T", bound=_HasId)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    last_id: int | None  # id to continue after, None when there are no more

    @classmethod
    def of(cls, rows: Sequence[T], limit: int) -> Page[T]:
        """The page from ``limit + 1`` rows read: the extra row only says "there is more"."""
        more = len(rows) > limit
        items = rows[:limit]
        return cls(items, items[-1].id if more and items else None)


class ChatService:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

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

    async def list_channels_json(self, after_id: int, limit: int) -> Page[JsonDoc]:
        """Channels after ``after_id``, oldest first, as their JSON documents."""
        return Page.of(await self._storage.list_channels_json(after_id, limit + 1), limit)

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

    async def list_messages_json(self, channel_id: int, after_id: int, limit: int) -> Page[JsonDoc]:
        """A channel's messages after ``after_id``, oldest first, as their JSON documents."""
        rows = await self._storage.list_messages_json(channel_id, after_id, limit + 1)
        # an empty page of a channel that does not exist is a 404, not an empty list
        if not rows and await self._storage.get_channel(channel_id) is None:
            raise NotFound(f"channel {channel_id} does not exist")
        return Page.of(rows, limit)
