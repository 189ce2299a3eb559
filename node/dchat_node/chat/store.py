"""Storage of the chat domain: users, channels, messages (migrations 0001-0003).

``ChatStore`` is the interface the chat service uses; ``SqlChatStore`` its one
implementation, written once with ``?`` placeholders against ``ChatDatabase``: the
``SqlDatabase`` surface plus the engine's JSON page builder (``json_page_sql`` /
``json_page``, see ``storage.base``), which both engines supply.

Design (moved here unchanged from ``storage.base``'s former ``SqlStorage`` chat queries;
the SQL text is the same):
- Records crossing the interface are frozen dataclasses; ids are engine-generated 64-bit
  integers, so message ids give a stable order for cursor pagination. Timestamps are
  BIGINT microseconds since the Unix epoch, and rows carry ``created_at_text`` (the RFC
  3339 UTC text of ``created_at``, ``rfc3339_utc``) written with the row.
- List reads of the API (``channel_page_json``, ``message_page_json``) return a
  ``JsonPage`` built by the database in one statement (see ``storage.base``); the page
  statements are built once per store from the engine's fragments.
- Engine exceptions come out as ``storage.errors`` (``Conflict`` for a duplicate channel
  name, ``ReferenceMissing`` for a message to a channel that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dchat_node.storage.base import JsonPage, JsonPages, Row, now_us, rfc3339_utc


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    id: int
    name: str
    topic: str
    created_by: str
    created_at_us: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    channel_id: int
    author: str
    body: str
    created_at_us: int


CHANNEL_DOC_KEYS = ("id", "name", "topic", "created_by", "created_at")
MESSAGE_DOC_KEYS = ("id", "channel_id", "author", "body", "created_at")


class ChatDatabase(JsonPages, Protocol):
    """What the chat store needs from the engine (``Storage`` provides it)."""


class ChatStore(Protocol):
    async def ensure_user(self, user_id: str) -> None: ...
    async def create_channel(self, name: str, topic: str, created_by: str) -> ChannelRecord: ...
    async def get_channel(self, channel_id: int) -> ChannelRecord | None: ...
    async def list_channels(self, after_id: int, limit: int) -> list[ChannelRecord]: ...
    async def create_message(self, channel_id: int, author: str, body: str) -> MessageRecord: ...
    async def get_message(self, channel_id: int, message_id: int) -> MessageRecord | None: ...
    async def list_messages(
        self, channel_id: int, after_id: int, limit: int
    ) -> list[MessageRecord]: ...
    async def channel_page_json(self, after_id: int, limit: int) -> JsonPage: ...
    async def message_page_json(self, channel_id: int, after_id: int, limit: int) -> JsonPage: ...


def _channel(row: Row) -> ChannelRecord:
    return ChannelRecord(*row)  # columns in field order; both drivers return ints for BIGINT


def _message(row: Row) -> MessageRecord:
    return MessageRecord(*row)


class SqlChatStore:
    """The chat queries, shared by the SQLite and PostgreSQL engines."""

    def __init__(self, db: ChatDatabase) -> None:
        self._db = db
        self._channel_page_sql = db.json_page_sql(
            CHANNEL_DOC_KEYS,
            "FROM channels WHERE id > ? ORDER BY id LIMIT ?",
            "FROM channels WHERE id > last_id",
        )
        self._message_page_sql = db.json_page_sql(
            MESSAGE_DOC_KEYS,
            "FROM messages WHERE channel_id = ? AND id > ? ORDER BY id LIMIT ?",
            "FROM messages WHERE channel_id = ? AND id > last_id",
        )

    async def ensure_user(self, user_id: str) -> None:
        await self._db.execute(
            "INSERT INTO users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            user_id,
            now_us(),
        )

    async def create_channel(self, name: str, topic: str, created_by: str) -> ChannelRecord:
        now = now_us()
        row = await self._db.fetchrow(
            "INSERT INTO channels (name, topic, created_by, created_at, created_at_text) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id, name, topic, created_by, created_at",
            name,
            topic,
            created_by,
            now,
            rfc3339_utc(now),
        )
        assert row is not None  # RETURNING always yields the row
        return _channel(row)

    async def get_channel(self, channel_id: int) -> ChannelRecord | None:
        row = await self._db.fetchrow(
            "SELECT id, name, topic, created_by, created_at FROM channels WHERE id = ?",
            channel_id,
        )
        return None if row is None else _channel(row)

    async def list_channels(self, after_id: int, limit: int) -> list[ChannelRecord]:
        rows = await self._db.fetch(
            "SELECT id, name, topic, created_by, created_at FROM channels "
            "WHERE id > ? ORDER BY id LIMIT ?",
            after_id,
            limit,
        )
        return [_channel(r) for r in rows]

    async def create_message(self, channel_id: int, author: str, body: str) -> MessageRecord:
        now = now_us()
        row = await self._db.fetchrow(
            "INSERT INTO messages (channel_id, author, body, created_at, created_at_text) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id, channel_id, author, body, created_at",
            channel_id,
            author,
            body,
            now,
            rfc3339_utc(now),
        )
        assert row is not None
        return _message(row)

    async def get_message(self, channel_id: int, message_id: int) -> MessageRecord | None:
        row = await self._db.fetchrow(
            "SELECT id, channel_id, author, body, created_at FROM messages "
            "WHERE channel_id = ? AND id = ?",
            channel_id,
            message_id,
        )
        return None if row is None else _message(row)

    async def list_messages(
        self, channel_id: int, after_id: int, limit: int
    ) -> list[MessageRecord]:
        rows = await self._db.fetch(
            "SELECT id, channel_id, author, body, created_at FROM messages "
            "WHERE channel_id = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            channel_id,
            after_id,
            limit,
        )
        return [_message(r) for r in rows]

    async def channel_page_json(self, after_id: int, limit: int) -> JsonPage:
        return await self._db.json_page(self._channel_page_sql, after_id, limit)

    async def message_page_json(self, channel_id: int, after_id: int, limit: int) -> JsonPage:
        return await self._db.json_page(
            self._message_page_sql, channel_id, after_id, limit, channel_id
        )
