"""Pydantic models of the platform's API (version, error bodies); each domain has its own
(``dchat_node.<domain>.models``). They generate ``/openapi.json``."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict, field_validator

MAX_ID = 2**63 - 1
"""Ids are engine-generated 64-bit integers."""


class RequestModel(BaseModel):
    """Base of every domain's request bodies and query strings: unknown fields refused, and
    no string may hold NUL (PostgreSQL text cannot; refused for both engines alike)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class ResponseModel(BaseModel):
    """Base of every domain's response documents."""

    model_config = ConfigDict(frozen=True)


def encode_cursor(last_id: int | None) -> str | None:
    """The opaque ``next_cursor`` of a page ending at ``last_id`` (every domain's lists)."""
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


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


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
