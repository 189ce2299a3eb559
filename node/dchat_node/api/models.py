"""Pydantic models of the platform's API (version, error bodies); each domain has its own
(``dchat_node.<domain>.models``). They generate ``/openapi.json``."""

from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, ConfigDict

MAX_ID = 2**63 - 1
"""Ids are engine-generated 64-bit integers."""


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
