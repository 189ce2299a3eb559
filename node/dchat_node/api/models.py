"""Pydantic models of the API: every request body and query string is validated with these
(through quart-schema), and they generate ``/openapi.json``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_json

from dchat_node.storage.base import ChannelRecord, MessageRecord

MAX_ID = 2**63 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL; refuse it for both engines alike.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


def encode_cursor(last_id: int | None) -> str | None:
    if last_id is None:
        return None
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor returned by this API") from None
    prefix, _, number = raw.partition(":")
    if prefix != "id" or not number.isdigit() or int(number) > MAX_ID:
        raise ValueError("not a cursor returned by this API")
    return int(number)


class PageQuery(_In):
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


class CreateChannel(_In):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Lowercase letters, digits, - and _.",
    )
    topic: str = Field("", max_length=256)


class PostMessage(_In):
    body: str = Field(min_length=1, max_length=4000)

    @field_validator("body")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def _ts(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


_EPOCH = datetime(1970, 1, 1)
_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


@lru_cache(maxsize=1024)
def _day_prefix(days: int) -> str:
    # a date string per day since the epoch (a formatting memo, not a response cache)
    return (_EPOCH + timedelta(days=days)).date().isoformat() + "T"


def iso_utc(us: int) -> str:
    """Microseconds since the epoch -> the exact string pydantic writes for the UTC
    ``datetime`` ``_ts(us)``: ``2026-11-26T21:51:39.123456Z``, no fraction when it is zero.
    Integer arithmetic only, so exact for every year (``_ts`` goes through a float, exact to
    the microsecond for today's timestamps; both are tested against pydantic)."""
    seconds, micro = divmod(us, 1_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    hours, rest = divmod(second_of_day, 3_600)
    minutes, secs = divmod(rest, 60)
    two = _TWO_DIGITS
    if micro:
        return f"{_day_prefix(days)}{two[hours]}:{two[minutes]}:{two[secs]}.{micro:06d}Z"
    return f"{_day_prefix(days)}{two[hours]}:{two[minutes]}:{two[secs]}Z"


def message_page_json(items: Sequence[MessageRecord], next_cursor: str | None) -> bytes:
    """The body of a ``MessagePage`` straight from storage records (what
    ``MessagePage.model_validate(...)`` then its JSON serializer produce, byte for byte,
    without building 20 ``datetime`` objects, validating them and serialising the models).
    The records are typed by the storage layer; the route still documents ``MessagePage``."""
    return to_json(
        {
            "items": [
                {
                    "id": r.id,
                    "channel_id": r.channel_id,
                    "author": r.author,
                    "body": r.body,
                    "created_at": iso_utc(r.created_at_us),
                }
                for r in items
            ],
            "next_cursor": next_cursor,
        }
    )


def channel_page_json(items: Sequence[ChannelRecord], next_cursor: str | None) -> bytes:
    """The body of a ``ChannelPage`` straight from storage records (see
    ``message_page_json``)."""
    return to_json(
        {
            "items": [
                {
                    "id": r.id,
                    "name": r.name,
                    "topic": r.topic,
                    "created_by": r.created_by,
                    "created_at": iso_utc(r.created_at_us),
                }
                for r in items
            ],
            "next_cursor": next_cursor,
        }
    )


class Channel(_Out):
    id: int
    name: str
    topic: str
    created_by: str
    created_at: datetime

    @staticmethod
    def fields_of(rec: ChannelRecord) -> dict[str, object]:
        return {
            "id": rec.id,
            "name": rec.name,
            "topic": rec.topic,
            "created_by": rec.created_by,
            "created_at": _ts(rec.created_at_us),
        }

    @classmethod
    def of(cls, rec: ChannelRecord) -> Channel:
        return cls.model_validate(cls.fields_of(rec))


class Message(_Out):
    id: int
    channel_id: int
    author: str
    body: str
    created_at: datetime

    @staticmethod
    def fields_of(rec: MessageRecord) -> dict[str, object]:
        return {
            "id": rec.id,
            "channel_id": rec.channel_id,
            "author": rec.author,
            "body": rec.body,
            "created_at": _ts(rec.created_at_us),
        }

    @classmethod
    def of(cls, rec: MessageRecord) -> Message:
        return cls.model_validate(cls.fields_of(rec))


class ChannelPage(_Out):
    items: list[Channel]
    next_cursor: str | None


class MessagePage(_Out):
    items: list[Message]
    next_cursor: str | None


class Version(_Out):
    name: str
    version: str
    api: str
    storage_engine: str
    schema_version: int


class FieldError(_Out):
    field: str
    message: str


class ErrorDetail(_Out):
    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(_Out):
    error: ErrorDetail
