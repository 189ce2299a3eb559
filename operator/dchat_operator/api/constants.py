"""Names shared by every layer: API coordinates, labels, annotations, ports, paths.

Design: plain constants only (no logic, no I/O), so builders, clients and tests agree on one
spelling of every name.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "dchat.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DchatCluster"
PLURAL: Final = "dchatclusters"
SINGULAR: Final = "dchatcluster"
SHORT_NAMES: Final = ("dchat",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "dchat-operator"
"""Field manager of every server-side apply the operator makes."""

APP_NAME: Final = "dchat"
COMPONENT: Final = "node"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_VERSION: Final = "app.kubernetes.io/version"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
MANAGED_BY: Final = "dchat-operator"

ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"
"""SHA-256 of the desired object as the operator built it (changes when the CR changes)."""
ANNOTATION_SECRETS_CHECKSUM: Final = f"{GROUP}/secrets-checksum"
"""On the pod template: digest of the referenced Secrets' resourceVersions; a rotated Secret
(a renewed certificate, a new database password) rolls the pods."""
ANNOTATION_CONFIG_CHECKSUM: Final = f"{GROUP}/config-checksum"
"""On the pod template: checksum of config.toml and the Secret references; a change rolls pods."""

CONTAINER_NAME: Final = "dchat"
CONFIG_DIR: Final = "/etc/dchat"
CONFIG_FILE: Final = "config.toml"
DATA_DIR: Final = "/data"
SQLITE_URL: Final = "sqlite:////data/dchat.db"
POSTGRES_URL_PLACEHOLDER: Final = "postgresql://set-by-DATABASE_URL_FILE"
DB_SECRET_DIR: Final = "/etc/dchat/secrets/database"  # noqa: S105 - a mount path
DB_URL_FILE: Final = "url"
JWT_DIR: Final = "/etc/dchat/secrets/jwt"
SECRETS_DIR: Final = "/etc/dchat/secrets"
"""Where Secret keys the node reads as files are mounted, one directory per volume."""
BRIDGE_KEY_FILE: Final = "key"
BRIDGE_KEY_ROLES: Final = ("validator", "relayer")
"""The bridge roles that hold a key: spec.bridge.<role>KeySecretRef, bridge.<role>_key_path."""


def bridge_key_dir(role: str) -> str:
    """Where the node container mounts the bridge key of ``role`` (its volume's name is the
    last part)."""
    return f"{SECRETS_DIR}/bridge-{role}-key"


JWT_FILE: Final = "jwt-secret"
TLS_DIR: Final = "/etc/tls/certs"
NODE_UID: Final = 1000

# Backups and restores
BACKUP_KIND: Final = "DchatBackup"
BACKUP_PLURAL: Final = "dchatbackups"
RESTORE_KIND: Final = "DchatRestore"
RESTORE_PLURAL: Final = "dchatrestores"
LABEL_CLUSTER: Final = f"{GROUP}/cluster"
"""On a DchatBackup: the DchatCluster it backs up (set by the schedule, added to on-demand ones)."""
LABEL_BACKUP_ORIGIN: Final = f"{GROUP}/origin"
"""On a DchatBackup: ``schedule`` when the schedule made it (retention applies only to those)."""
LABEL_BACKUP: Final = f"{GROUP}/backup"
"""On a Job: the DchatBackup it works for."""
LABEL_RESTORE: Final = f"{GROUP}/restore"
"""On a Job: the DchatRestore it works for."""
ANNOTATION_VERIFY_REQUEST: Final = f"{GROUP}/verify-request"
"""On a Completed DchatBackup: a new value verifies it (again) with a new verify Job."""
ANNOTATION_ROLLBACK_REQUEST: Final = f"{GROUP}/rollback-request"
"""On a DchatCluster: a new value rolls back to the previous good revision (once per value)."""
ANNOTATION_SWITCHOVER_REQUEST: Final = f"{GROUP}/switchover-request"
"""On a DchatCluster with database.postgres.patroni: the value names the Patroni member to
promote; the operator asks Patroni for that switchover (once per value: ``<member>@<anything>``
asks again for a member asked for before)."""


def switchover_member(request: str) -> str:
    """The member a switchover-request value names: the value itself, or what comes before
    an ``@`` (``pg-1@2``: a new value asking for a member asked for before; member names are
    DNS labels, so they never hold one)."""
    return request.split("@", 1)[0]


LABEL_BOOTSTRAP: Final = f"{GROUP}/bootstrap"
"""On a Job: the DchatCluster whose spec.bootstrap.fromBackup it restores."""
FINALIZER_BACKUP_OBJECTS: Final = f"{GROUP}/backup-objects"
"""On a DchatBackup: its S3 objects are deleted (a delete Job) before the object goes."""
BACKUP_CONTAINER: Final = "backup"
S3_SECRET_DIR: Final = "/etc/dchat/secrets/s3"  # noqa: S105 - a mount path
TERMINATION_LOG: Final = "/dev/termination-log"
LITESTREAM_CONFIG: Final = "litestream.yml"
SQLITE_PATH: Final = "/data/dchat.db"
POSTGRES_IMAGE: Final = "ghcr.io/dchat-dev/dchat-postgres:0.1.0"
"""Default image of managed PostgreSQL (Dockerfile.postgres; tagged with the project version)."""
POSTGRES_UID: Final = 999
"""The image's `postgres` user and group (numeric, for runAsUser under Pod Security restricted)."""
POSTGRES_CLUSTER_ROLE: Final = "dchat-postgres"
"""The ClusterRole (in the install bundle) with Patroni's rights; the operator binds it per
cluster to the members' ServiceAccount, and may bind nothing else."""
LITESTREAM_METRICS_PORT: Final = 9090
"""The Litestream sidecar's Prometheus endpoint (``addr`` in litestream.yml), port name
``litestream``: scraped next to the node's metrics, read by ``kubectl dchat doctor``."""
LITESTREAM_PORT_NAME: Final = "litestream"
