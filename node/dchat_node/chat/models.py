"""Pydantic models of the chat API: every request body and query string is validated with
these (through quart-schema), and they generate its part of ``/openapi.json``."""

from __future__ import annotations

from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import Generic, Self, TypeVar

from pydantic import Field, field_validator
from pydantic_core import to_json

from dchat_node.api.models import RequestModel, ResponseModel, decode_cursor, encode_cursor
from dchat_node.chat.store import ChannelRecord, MessageRecord
from dchat_node.storage.base import JsonPage


class PageQuery(RequestModel):
    limit: int = Field(50, ge=1, le=200, description="Items per page.")
    cursor: str | None = Field(
        None, max_length=64, description="next_cursor from the previous page."
    )

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value

    def after_id(self) -> int:
        return 0 if self.cursor is None else decode_cursor(self.cursor)


class CreateChannel(RequestModel):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Lowercase letters, digits, - and _.",
    )
    topic: str = Field("", max_length=256)


class PostMessage(RequestModel):
    body: str = Field(min_length=1, max_length=4000)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(us: int) -> datetime:
    """Microseconds since the epoch -> UTC ``datetime``, exact (integer arithmetic)."""
    return _EPOCH_UTC + timedelta(microseconds=us)


def page_json(page: JsonPage) -> bytes:
    """The body of a ``ChannelPage`` or ``MessagePage`` from the page's JSON documents as
    the database wrote them (``ChatStore.*_page_json``: the keys and formats of ``Channel``
    and ``Message``, which the storage contract tests check against these models byte for
    byte). The route still documents the page model."""
    cursor = encode_cursor(page.last_id if page.more else None)
    tail = b"null" if cursor is None else to_json(cursor)
    return b'{"items":[' + page.items_json.encode() + b'],"next_cursor":' + tail + b"}"


R = TypeVar("R", ChannelRecord, MessageRecord)


class _FromRecord(ResponseModel, Generic[R]):
    """A response model whose fields are its storage record's: the same names, except
    ``created_at_us`` (microseconds) which becomes the UTC datetime ``created_at``."""

    @staticmethod
    def fields_of(rec: R) -> dict[str, object]:
        out: dict[str, object] = {f.name: getattr(rec, f.name) for f in dataclass_fields(rec)}
        out["created_at"] = _ts(rec.created_at_us)
        del out["created_at_us"]
        return out

    @classmethod
    def of(cls, rec: R) -> Self:
        return cls.model_validate(cls.fields_of(rec))


class Channel(_FromRecord[ChannelRecord]):
    id: int
    name: str
    topic: str
    created_by: str
    created_at: datetime


class Message(_FromRecord[MessageRecord]):
    id: int
    channel_id: int
    author: str
    body: str
    created_at: datetime


class ChannelPage(ResponseModel):
    items: list[Channel]
    next_cursor: str | None


class MessagePage(ResponseModel):
    items: list[Message]
    next_cursor: str | None
