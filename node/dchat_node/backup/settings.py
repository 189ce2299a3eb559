"""The S3 target and transfer tuning of the backup commands, read from the environment.

The operator sets these on the backup Job / sidecar (see the package docstring for the
contract). Parsing is a pydantic model whose aliases are the variable names, so every
problem is reported as ``VARIABLE: what is wrong`` (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dchat_node.backup.errors import SettingsError

DEFAULT_CREDENTIALS_DIR = Path("/etc/dchat/secrets/s3")
TERMINATION_LOG = Path("/dev/termination-log")
MIB = 1024 * 1024

# S3 bucket names (the DNS-compatible rules: 3-63 lowercase letters, digits, dots, hyphens)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A backup name becomes one path segment of the S3 key: the DchatBackup name rules (a DNS
# subdomain) plus upper case and underscores for names given by hand.
_BACKUP_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


class BackupSettings(BaseModel):
    """What ``DCHAT_BACKUP_*`` say. Field aliases are the variable names."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    bucket: str = Field(alias="DCHAT_BACKUP_BUCKET")
    prefix: str = Field("", alias="DCHAT_BACKUP_PREFIX")
    region: str = Field("us-east-1", alias="DCHAT_BACKUP_REGION", min_length=1)
    endpoint: str | None = Field(None, alias="DCHAT_BACKUP_ENDPOINT")
    sse: Literal["AES256", "aws:kms"] | None = Field(None, alias="DCHAT_BACKUP_SSE")
    kms_key_id: str | None = Field(None, alias="DCHAT_BACKUP_KMS_KEY_ID")
    cluster: str = Field("dchat", alias="DCHAT_BACKUP_CLUSTER", min_length=1, max_length=253)
    credentials_dir: Path = Field(DEFAULT_CREDENTIALS_DIR, alias="DCHAT_BACKUP_CREDENTIALS_DIR")
    part_size_mib: int = Field(16, ge=5, le=5120, alias="DCHAT_BACKUP_PART_SIZE_MIB")
    concurrency: int = Field(4, ge=1, le=64, alias="DCHAT_BACKUP_CONCURRENCY")
    abort_timeout_secs: float = Field(30, ge=0, le=3600, alias="DCHAT_BACKUP_ABORT_TIMEOUT_SECS")
    termination_log: Path = Field(TERMINATION_LOG, alias="DCHAT_TERMINATION_LOG")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.match(value) or ".." in value:
            raise ValueError("not an S3 bucket name (3-63 lowercase letters, digits, . and -)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/"):
            raise ValueError("must not start with '/'")
        if value and not value.endswith("/"):
            raise ValueError(
                "must end with '/' (the operator passes <prefix><namespace>/<cluster>/)"
            )
        if "//" in value or any(ord(c) < 32 for c in value):
            raise ValueError("must not contain '//' or control characters")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _kms(self) -> BackupSettings:
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("DCHAT_BACKUP_KMS_KEY_ID is set but DCHAT_BACKUP_SSE is not aws:kms")
        return self

    def location(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}{'/' if name else ''}"


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


def _alias_of(field: object) -> str:
    for name, info in BackupSettings.model_fields.items():
        if name == field:
            return info.alias or name
    return str(field)


def load_settings(environ: Mapping[str, str] | None = None) -> BackupSettings:
    """Parse ``DCHAT_BACKUP_*`` (and ``DCHAT_TERMINATION_LOG``); empty values count as unset.
    Raises ``SettingsError`` naming each bad variable."""
    env = os.environ if environ is None else environ
    aliases = {info.alias for info in BackupSettings.model_fields.values() if info.alias}
    data = {k: v for k, v in env.items() if k in aliases and v.strip() != ""}
    try:
        return BackupSettings.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            where = _alias_of(err["loc"][0]) if err["loc"] else "DCHAT_BACKUP_*"
            what = (
                "required" if err["type"] == "missing" else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{where}: {what}" if err["loc"] else what)
        raise SettingsError(problems) from None


def read_credentials(directory: Path) -> Credentials | None:
    """The mounted Secret's keys, or None when the directory is absent (then boto3's
    default chain applies). A present directory without both keys is a settings error."""
    if not directory.is_dir():
        return None
    values: dict[str, str] = {}
    problems: list[str] = []
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        path = directory / key
        try:
            values[key] = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if key != "AWS_SESSION_TOKEN":
                problems.append(f"DCHAT_BACKUP_CREDENTIALS_DIR: {path} is missing")
        except OSError as exc:
            problems.append(f"DCHAT_BACKUP_CREDENTIALS_DIR: cannot read {path}: {exc.strerror}")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if key in values and not values[key]:
            problems.append(f"DCHAT_BACKUP_CREDENTIALS_DIR: {directory / key} is empty")
    if problems:
        raise SettingsError(problems)
    return Credentials(
        values["AWS_ACCESS_KEY_ID"],
        values["AWS_SECRET_ACCESS_KEY"],
        values.get("AWS_SESSION_TOKEN") or None,
    )


def check_backup_name(name: str) -> str:
    if not _BACKUP_NAME.match(name) or ".." in name:
        raise SettingsError(
            [
                f"--name: {name!r} is not a backup name (1-253 letters, digits, '.', '_', '-', "
                "starting and ending with a letter or digit)"
            ]
        )
    return name
