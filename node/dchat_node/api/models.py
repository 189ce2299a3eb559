"""Pydantic models of the platform's API (version, error bodies); each domain has its own
(``dchat_node.<domain>.models``). They generate ``/openapi.json``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
