"""The manifest (``manifest.json``, written last) and the command results.

Both are pydantic models whose JSON names are camelCase. A manifest of another
``formatVersion`` is refused with a message saying so, never half-read.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer
from pydantic.alias_generators import to_camel

from dchat_node.backup.errors import BackupError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION: Literal[1] = 1

BackupEngine = Literal["postgres", "sqlite"]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``2026-11-30T12:00:00.123456Z`` (UTC)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ManifestObject(_Model):
    """One data object of a backup. ``key`` is relative to the backup's folder
    (``<prefix><name>/``), so a backup copied under another prefix stays valid."""

    key: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    size: int = Field(ge=0)
    sha256: Sha256Hex
    compression: Literal["zstd"] = "zstd"
    content: Literal["pg_dump-custom", "sqlite-database"]


class Manifest(_Model):
    format_version: Literal[1] = FORMAT_VERSION
    cluster: str
    name: str
    engine: BackupEngine
    server_version: str
    schema_version: int = Field(ge=0)
    created_at: datetime
    completed_at: datetime
    objects: list[ManifestObject] = Field(min_length=1)
    row_counts: dict[str, int]
    tool: str

    @field_serializer("created_at", "completed_at")
    def _times(self, value: datetime) -> str:
        return rfc3339(value)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def sha256(self) -> str:
        """The data object's SHA-256, or that of the objects' hex digests concatenated."""
        if len(self.objects) == 1:
            return self.objects[0].sha256
        joined = "".join(o.sha256 for o in self.objects)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            raw: Any = json.loads(data)
        except ValueError:
            raise BackupError(f"manifest {where} is not JSON") from None
        if isinstance(raw, dict) and raw.get("formatVersion") not in (None, FORMAT_VERSION):
            raise BackupError(
                f"manifest {where} has formatVersion {raw.get('formatVersion')!r}; this node "
                f"reads formatVersion {FORMAT_VERSION}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise BackupError(f"manifest {where} is invalid: {loc}: {first['msg']}") from None

    def summary(self, location: str) -> dict[str, Any]:
        """The fields of a command result that describe this backup."""
        return {
            "name": self.name,
            "location": location,
            "size": self.size,
            "sha256": self.sha256,
            "engine": self.engine,
            "serverVersion": self.server_version,
            "schemaVersion": self.schema_version,
            "startedAt": rfc3339(self.created_at),
            "completedAt": rfc3339(self.completed_at),
            "rowCounts": dict(self.row_counts),
        }
