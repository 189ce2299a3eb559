"""Pydantic models of the DchatBackup and DchatRestore custom resources, and of the result a
backup pod reports (the contract with the node's ``dchat backup`` commands).

Design: the same pattern as ``api.models``: camelCase CR models with descriptions that become
the CRD schema (``api.crd``), CEL rules next to the model checks. ``BackupResult`` parses the
one JSON object a ``dchat backup`` pod writes to its termination message; anything else
(missing, garbled, not an object) is ``None`` and the controller says "the backup pod
reported no result".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic import model_validator as _model_validator

from dchat_operator.api.models import (
    DNS1035_LABEL_PATTERN,
    MODEL_CONFIG,
    Condition,
    CRModel,
    DnsName,
    cel,
    matching,
    validations,
)

MSG_CLUSTER_REF = (
    "must name a DchatCluster: a DNS-1035 label of at most 52 characters (lowercase letters, "
    "digits and '-', starting with a letter)"
)
if TYPE_CHECKING:
    ClusterName = str
else:
    ClusterName = matching(DNS1035_LABEL_PATTERN, MSG_CLUSTER_REF, max_length=52)
MSG_IMMUTABLE = "spec is immutable: create a new object instead"
MSG_RESTORE_SOURCE = "give exactly one of spec.backup, or spec.latest with spec.cluster"

BackupPhase = Literal["Pending", "Running", "Completed", "Failed"]


class DchatBackupSpec(CRModel):
    """One backup of a DchatCluster to the cluster's backup.s3 target."""

    model_config = ConfigDict(
        **MODEL_CONFIG, json_schema_extra=validations(cel("self == oldSelf", MSG_IMMUTABLE))
    )

    cluster: ClusterName = Field(description="Name of the DchatCluster, in this namespace.")
    method: Literal["logical", "snapshot"] | None = Field(
        None,
        description=(
            "logical (PostgreSQL: pg_dump) or snapshot (SQLite: a consistent copy of the "
            "file); unset picks the one of the cluster's database engine, and a method the "
            "engine does not have fails the backup."
        ),
    )
    verify: bool = Field(
        False,
        description=(
            "After the backup completed, run `dchat backup verify` on it in a second Job; the "
            "result is status.verified."
        ),
    )


class DchatBackupStatus(CRModel):
    """Observed state of one backup, written by the backup controller from the result the
    backup pod reported."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "frozen": False})

    observed_generation: int = Field(0, description="metadata.generation last acted on.")
    phase: BackupPhase = Field(
        "Pending",
        description=(
            "Pending (waiting for the cluster: missing backup.s3, not Ready, rolling out), "
            "Running (the Job runs), Completed or Failed."
        ),
    )
    job: str | None = Field(None, description="Name of the backup Job.")
    started_at: str | None = Field(None, description="When the backup started (RFC 3339).")
    completed_at: str | None = Field(None, description="When the backup completed (RFC 3339).")
    location: str | None = Field(None, description="s3:// location of the backup's objects.")
    size: int | None = Field(None, description="Bytes stored.")
    sha256: str | None = Field(None, description="SHA-256 of the backup, as the node reported.")
    engine: str | None = Field(None, description="Database engine (sqlite or postgres).")
    server_version: str | None = Field(None, description="Database server version.")
    schema_version: str | None = Field(None, description="dchat schema version of the data.")
    error: str | None = Field(None, description="Why the backup failed or waits.")
    verified: bool | None = Field(
        None, description="Result of `dchat backup verify` (unset when not verified)."
    )
    verify_detail: str | None = Field(None, description="What the verification reported.")
    verify_request: str | None = Field(
        None,
        description=(
            "The value of the annotation dchat.dev/verify-request the last verification "
            "answered (a new value verifies the backup again)."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Verified and DeleteFailed conditions."
    )


class DchatRestoreSpec(CRModel):
    """Restore a backup into an existing DchatCluster (scaled to 0, restored over what its
    database holds, scaled back)."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            cel("self == oldSelf", MSG_IMMUTABLE),
            cel(
                "has(self.backup) != (has(self.latest) && self.latest && has(self.cluster))",
                MSG_RESTORE_SOURCE,
            ),
        ),
    )

    backup: DnsName | None = Field(None, description="Name of the DchatBackup to restore.")
    latest: bool = Field(
        False, description="Restore the newest Completed DchatBackup of spec.cluster."
    )
    cluster: ClusterName | None = Field(
        None, description="Source cluster whose newest Completed backup latest picks."
    )
    target: ClusterName = Field(
        description=(
            "DchatCluster (this namespace) to restore into. Its data is REPLACED by the "
            "backup's, atomically (PostgreSQL: the tables of its schema dropped and restored "
            "in one transaction; SQLite: the checked file renamed over the old one); nothing "
            "is touched before every object's SHA-256 matched."
        )
    )

    @_model_validator(mode="after")
    def _one_source(self) -> DchatRestoreSpec:
        if (self.backup is not None) == (self.latest and self.cluster is not None):
            raise ValueError(MSG_RESTORE_SOURCE)
        return self


class DchatRestoreStatus(CRModel):
    """Observed state of one restore."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "frozen": False})

    observed_generation: int = Field(0, description="metadata.generation last acted on.")
    phase: Literal["Pending", "ScalingDown", "Restoring", "ScalingUp", "Completed", "Failed"] = (
        Field("Pending", description="Where the restore is.")
    )
    progress: str | None = Field(None, description="What the restore does now, in words.")
    backup: str | None = Field(None, description="The DchatBackup being restored.")
    source_cluster: str | None = Field(
        None, description="The cluster that made the backup (whose S3 prefix is read)."
    )
    job: str | None = Field(None, description="Name of the restore Job.")
    started_at: str | None = Field(None, description="When the restore started (RFC 3339).")
    completed_at: str | None = Field(None, description="When it finished (RFC 3339).")
    verified: bool | None = Field(None, description="The node's verification after restore.")
    error: str | None = Field(None, description="Why the restore failed or waits.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions.")


class BackupResult(BaseModel):
    """The JSON object a ``dchat backup`` pod writes to its termination message."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    ok: bool
    command: str = ""
    name: str = ""
    location: str | None = None
    size: int | None = None
    sha256: str | None = None
    engine: str | None = None
    server_version: str | None = Field(None, alias="serverVersion")
    # the node reports its migration number (an int); status shows it as a string
    schema_version: str | None = Field(None, alias="schemaVersion")

    @field_validator("schema_version", mode="before")
    @classmethod
    def _schema_version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    started_at: str | None = Field(None, alias="startedAt")
    completed_at: str | None = Field(None, alias="completedAt")
    row_counts: dict[str, int] | None = Field(None, alias="rowCounts")
    verified: bool | None = None
    detail: str | None = None
    error: str | None = None

    @classmethod
    def parse(cls, message: str | None) -> BackupResult | None:
        """The result in a termination message, or None when there is none to be read."""
        if not message:
            return None
        try:
            data: Any = json.loads(message)
            return cls.model_validate(data) if isinstance(data, dict) else None
        except (ValueError, ValidationError):
            return None


class _Meta(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: str | None = Field(None, alias="deletionTimestamp")
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")


class _Resource(BaseModel):
    """What DchatBackup and DchatRestore share: metadata, accessors, one parse."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    metadata: _Meta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @classmethod
    def parse(cls, body: Any) -> Self:
        data = dict(body)
        return cls.model_validate(
            {
                "metadata": dict(data.get("metadata") or {}),
                "spec": dict(data.get("spec") or {}),
                "status": dict(data.get("status") or {}),
            }
        )


class DchatBackup(_Resource):
    """A DchatBackup as the operator reads it."""

    spec: DchatBackupSpec
    status: DchatBackupStatus = Field(default_factory=DchatBackupStatus)


class DchatRestore(_Resource):
    """A DchatRestore as the operator reads it."""

    spec: DchatRestoreSpec
    status: DchatRestoreStatus = Field(default_factory=DchatRestoreStatus)
