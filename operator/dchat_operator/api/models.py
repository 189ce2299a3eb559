"""Pydantic models of the DchatCluster custom resource: the one source of truth.

Design:
- The operator parses every CR once into ``DchatCluster`` and works on the model; the CRD's
  OpenAPI schema is generated from the same classes (``dchat_operator.api.crd``), so field
  descriptions, defaults and constraints cannot drift from what the code accepts.
- The node's config sections (``dchat_node.config``) are mirrored into camelCase CR models
  (``mirror``): same field types, defaults, constraints and descriptions, minus secrets and
  minus the keys the operator owns (ports of mounted files, the database URL). ``to_node_config``
  turns the spec back into the node's own ``NodeConfig``, so an invalid combination is caught
  at parse time with the node's own validators.
- Cross-field rules live twice, on purpose: as pydantic validators (exact, with croniter) and
  as CEL ``x-kubernetes-validations`` attached through ``json_schema_extra`` (so the apiserver
  rejects the CR before the operator ever sees it). Both carry the same human message.
- Unknown fields are errors (``extra="forbid"``), matching the structural schema.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic import model_validator as _model_validator

from dchat_node.config import (
    AccessibilityConfig,
    BridgeConfig,
    ChainConfig,
    DatabaseConfig,
    LoggingConfig,
    MarketplaceConfig,
    NodeConfig,
    ObservabilityConfig,
    RelayConfig,
    SecurityConfig,
    ServerConfig,
)
from dchat_operator.api import constants as c

CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    r"([0-9*,/?LW#A-Za-z-]+\s+){4}[0-9*,/?LW#A-Za-z-]+)$"
)
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def camel(name: str) -> str:
    """snake_case -> camelCase; ``p2p_port`` -> ``p2pPort``."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


MODEL_CONFIG = ConfigDict(
    extra="forbid",
    alias_generator=camel,
    populate_by_name=True,
    validate_default=True,
    frozen=True,
)


class CRModel(BaseModel):
    """Base of every CR model: camelCase on the wire, unknown fields forbidden."""

    model_config = MODEL_CONFIG


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def mirror(
    source: type[BaseModel],
    name: str,
    *,
    exclude: frozenset[str] = frozenset(),
    doc: str | None = None,
    extra_schema: dict[str, Any] | None = None,
) -> type[CRModel]:
    """A camelCase CR model with the fields of a node config section (minus ``exclude``)."""
    fields: dict[str, Any] = {
        field_name: (info.annotation, info)
        for field_name, info in source.model_fields.items()
        if field_name not in exclude
    }
    model: type[CRModel] = create_model(
        name,
        __base__=CRModel,
        __doc__=doc or source.__doc__,
        **fields,
    )
    if extra_schema:
        model.model_config["json_schema_extra"] = extra_schema
        model.model_rebuild(force=True)
    return model


# --- the node's config sections, mirrored --------------------------------------------------
# For the type checker the mirrors are the node's classes (same snake_case attributes); at run
# time they are camelCase copies without the excluded keys.

if TYPE_CHECKING:
    ServerSpec = ServerConfig
    ChainSpec = ChainConfig
    RelaySpec = RelayConfig
    ObservabilitySpec = ObservabilityConfig
    MarketplaceSpec = MarketplaceConfig
    BridgeSpec = BridgeConfig
    AccessibilitySpec = AccessibilityConfig
    LoggingSpec = LoggingConfig

    class _DatabasePool(CRModel):
        max_connections: int = 20
        statement_cache_size: int = 100
        connection_timeout_secs: float = 10
        idle_timeout_secs: float = 300

    _SecurityBase = SecurityConfig
else:
    ServerSpec = mirror(
        ServerConfig,
        "ServerSpec",
        extra_schema={
            "x-kubernetes-validations": [
                cel(
                    "self.apiPort != self.metricsPort && self.apiPort != self.p2pPort && "
                    "self.metricsPort != self.p2pPort",
                    "server.apiPort, server.metricsPort and server.p2pPort must be distinct",
                )
            ]
        },
    )
    ChainSpec = mirror(ChainConfig, "ChainSpec")
    RelaySpec = mirror(RelayConfig, "RelaySpec")
    ObservabilitySpec = mirror(ObservabilityConfig, "ObservabilitySpec")
    MarketplaceSpec = mirror(MarketplaceConfig, "MarketplaceSpec")
    BridgeSpec = mirror(
        BridgeConfig,
        "BridgeSpec",
        doc="Cross-chain bridge service. Set paused: true to stop accepting new transfers.",
    )
    AccessibilitySpec = mirror(AccessibilityConfig, "AccessibilitySpec")
    LoggingSpec = mirror(
        LoggingConfig,
        "LoggingSpec",
        doc=(
            "Logging. JSON to stdout by default (kubectl logs); output: file writes to a "
            "writable emptyDir mounted at the file's directory."
        ),
    )
    _DatabasePool = mirror(DatabaseConfig, "DatabasePool", exclude=frozenset({"url"}))
    _SecurityBase = mirror(
        SecurityConfig,
        "SecurityBase",
        exclude=frozenset({"jwt_secret", "tls_cert_path", "tls_key_path"}),
    )


# --- references ----------------------------------------------------------------------------


class SecretKeyRef(CRModel):
    """A key in a Secret in the DchatCluster's namespace."""

    name: str = Field(
        description="Name of the Secret (same namespace as the DchatCluster).",
        min_length=1,
        max_length=253,
    )
    key: str = Field(description="Key inside the Secret.", min_length=1, max_length=253)


class SecretRef(CRModel):
    """A whole Secret in the DchatCluster's namespace."""

    name: str = Field(
        description="Name of the Secret (same namespace as the DchatCluster).",
        min_length=1,
        max_length=253,
    )


# --- database ------------------------------------------------------------------------------


class DatabaseEngine(StrEnum):
    sqlite = "sqlite"
    postgres = "postgres"


class SqliteSpec(CRModel):
    """SQLite storage: one replica with its own ReadWriteOnce volume mounted at /data."""

    storage_size: str = Field(
        "10Gi",
        description="Size of the PersistentVolumeClaim holding /data/dchat.db.",
        pattern=QUANTITY_PATTERN,
    )
    storage_class_name: str | None = Field(
        None, description="StorageClass of the claim; unset uses the cluster default."
    )
    retain_on_delete: bool = Field(
        True,
        description=(
            "Keep the PersistentVolumeClaim when the DchatCluster is deleted (it carries no "
            "owner reference), so data is never lost by accident. Set false to let "
            "Kubernetes garbage-collect it with the cluster."
        ),
    )


class PostgresSpec(CRModel):
    """PostgreSQL: credentials only through Secrets, never in the spec or the ConfigMap."""

    primary: SecretKeyRef = Field(
        description=(
            "Secret key holding the full primary URL, "
            "postgresql://<user>:<password>@<host>:5432/<db>; "
            "it is mounted as a file and reaches the node as DATABASE_URL_FILE."
        )
    )
    standbys: list[SecretKeyRef] = Field(
        default_factory=list,
        description="Secret keys holding the URLs of streaming-replication standbys (failover).",
        max_length=8,
    )
    port: int = Field(
        5432, ge=1, le=65535, description="TCP port the NetworkPolicy allows towards PostgreSQL."
    )


class DatabaseSpec(_DatabasePool):
    """Storage engine and connection pool. engine picks SQLite (one replica) or PostgreSQL."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.engine != 'postgres' || has(self.postgres)",
                    "PostgreSQL mode needs database.postgres.primary, a reference to the "
                    "Secret holding the database URL",
                ),
            ]
        },
    )

    engine: DatabaseEngine = Field(
        DatabaseEngine.sqlite,
        description="sqlite (one replica, own volume) or postgres (any number of replicas).",
    )
    sqlite: SqliteSpec = Field(
        default_factory=SqliteSpec, description="Settings of SQLite mode (engine: sqlite)."
    )
    postgres: PostgresSpec | None = Field(
        None, description="Settings of PostgreSQL mode (engine: postgres); required there."
    )

    @_model_validator(mode="after")
    def _postgres_needs_secret(self) -> DatabaseSpec:
        if self.engine == DatabaseEngine.postgres and self.postgres is None:
            raise ValueError(
                "PostgreSQL mode needs database.postgres.primary, a reference to the Secret "
                "holding the database URL"
            )
        return self


class SecuritySpec(_SecurityBase):
    """TLS, authentication, CORS and rate limiting. Key material comes from Secrets only."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.tlsEnabled || has(self.tlsSecretRef)",
                    "security.tlsEnabled needs security.tlsSecretRef (a kubernetes.io/tls Secret)",
                ),
            ]
        },
    )

    jwt_secret_ref: SecretKeyRef | None = Field(
        None,
        description=(
            "Secret key with the HS256 signing key; mounted as a file and passed as "
            "JWT_SECRET_FILE."
        ),
    )
    tls_secret_ref: SecretRef | None = Field(
        None,
        description="kubernetes.io/tls Secret (tls.crt, tls.key) mounted at /etc/tls/certs.",
    )

    @_model_validator(mode="after")
    def _tls_needs_secret(self) -> SecuritySpec:
        if self.tls_enabled and self.tls_secret_ref is None:
            raise ValueError(
                "security.tlsEnabled needs security.tlsSecretRef (a kubernetes.io/tls Secret)"
            )
        return self


# --- workload ------------------------------------------------------------------------------


class ImageSpec(CRModel):
    """Container image of the node. The tag is spec.version."""

    repository: str = Field(
        "ghcr.io/dchat-dev/dchat",
        description="Image repository; the image is <repository>:<spec.version>.",
        min_length=1,
    )
    digest: str | None = Field(
        None,
        description=(
            "Pin the image by content: sha256:<64 hex>. The image becomes "
            "<repository>:<version>@<digest>."
        ),
        pattern=r"^sha256:[a-f0-9]{64}$",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None,
        description=(
            "imagePullPolicy of the node container. Unset: Always for a tag (a moved tag "
            "is picked up), IfNotPresent when a digest pins the image."
        ),
    )

    @property
    def effective_pull_policy(self) -> str:
        if self.pull_policy is not None:
            return self.pull_policy
        return "IfNotPresent" if self.digest else "Always"

    pull_secrets: list[str] = Field(
        default_factory=list, description="Names of imagePullSecrets for private registries."
    )


class ResourceList(CRModel):
    """CPU and memory quantities."""

    cpu: str | None = Field(None, description="CPU, e.g. 500m or 2.", pattern=QUANTITY_PATTERN)
    memory: str | None = Field(
        None, description="Memory, e.g. 512Mi or 2Gi.", pattern=QUANTITY_PATTERN
    )


class ResourcesSpec(CRModel):
    """Requests and limits of the node container (the guide's values by default)."""

    requests: ResourceList = Field(
        default=ResourceList(cpu="1", memory="1Gi"),
        description="Guaranteed resources; the scheduler places pods by these.",
    )
    limits: ResourceList = Field(
        default=ResourceList(cpu="2", memory="2Gi"),
        description="Upper bounds; memory over the limit kills the container.",
    )


class P2PServiceType(StrEnum):
    cluster_ip = "ClusterIP"
    node_port = "NodePort"
    load_balancer = "LoadBalancer"
    none = "None"


class P2PSpec(CRModel):
    """How the libp2p port (server.p2pPort) is exposed."""

    service_type: P2PServiceType = Field(
        P2PServiceType.cluster_ip,
        description=(
            "Type of the <name>-p2p Service: ClusterIP (in-cluster peers), NodePort or "
            "LoadBalancer (reachable from outside), None (no Service)."
        ),
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the P2P Service (e.g. cloud load balancer settings).",
    )


class IngressSpec(CRModel):
    """HTTPS entry to the API port through an Ingress controller."""

    enabled: bool = Field(False, description="Create an Ingress for the API.")
    host: str | None = Field(None, description="Public host name, e.g. api.dchat.dev.")
    class_name: str | None = Field(
        None, description="ingressClassName, e.g. nginx; unset uses the cluster default."
    )
    tls_secret_name: str | None = Field(
        None,
        description=(
            "Secret holding the certificate for host; with clusterIssuer set, cert-manager "
            "creates it. Defaults to <name>-ingress-tls."
        ),
    )
    cluster_issuer: str | None = Field(
        None, description="cert-manager ClusterIssuer that issues the certificate."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations for the Ingress controller."
    )


class S3Target(CRModel):
    """An S3 (or S3-compatible) location."""

    bucket: str = Field(description="Bucket name.", min_length=3, max_length=63)
    prefix: str = Field("dchat/", description="Key prefix under which backups are written.")
    region: str = Field("us-east-1", description="Bucket region.")
    endpoint: str | None = Field(
        None, description="Endpoint URL of an S3-compatible service; unset uses AWS."
    )
    credentials_secret_ref: SecretRef = Field(
        description=("Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the bucket.")
    )


class RetentionSpec(CRModel):
    """How many backups are kept."""

    keep_last: int = Field(7, ge=1, le=1000, description="Keep at least this many backups.")
    max_age_days: int = Field(
        30, ge=1, le=3650, description="Delete backups older than this (beyond keepLast)."
    )


class BackupSpec(CRModel):
    """Scheduled backups to S3 (carried out by a later release; the fields are final)."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.enabled || has(self.s3)",
                    "backup.enabled needs backup.s3 (bucket and credentials Secret)",
                ),
            ]
        },
    )

    enabled: bool = Field(False, description="Take backups on schedule.")
    schedule: str = Field(
        "0 3 * * *",
        description="Cron expression (5 fields, or @daily/@hourly/...) in UTC.",
        pattern=CRON_PATTERN,
        max_length=100,
    )
    s3: S3Target | None = Field(None, description="Where backups go.")
    retention: RetentionSpec = Field(
        default_factory=RetentionSpec, description="How many backups are kept."
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"schedule {value!r} is not a valid cron expression")
        return value

    @_model_validator(mode="after")
    def _enabled_needs_target(self) -> BackupSpec:
        if self.enabled and self.s3 is None:
            raise ValueError("backup.enabled needs backup.s3 (bucket and credentials Secret)")
        return self


class RolloutSpec(CRModel):
    """How a new version or config reaches the pods (PostgreSQL mode; SQLite uses Recreate)."""

    max_surge: int | str = Field(
        1, description="Extra pods allowed during a rolling update (number or percent)."
    )
    max_unavailable: int | str = Field(
        0, description="Pods that may be unavailable during a rolling update (number or percent)."
    )
    progress_deadline_seconds: int = Field(
        600, ge=10, description="A rollout with no progress for this long is reported Degraded."
    )
    min_ready_seconds: int = Field(
        0, ge=0, description="A new pod must be Ready this long before it counts as available."
    )


class MonitoringSpec(CRModel):
    """Prometheus integration."""

    scrape_annotations: bool = Field(
        True, description="Put prometheus.io/scrape, port and path annotations on the pods."
    )
    service_monitor: bool = Field(
        True,
        description=(
            "Create a ServiceMonitor (only when the monitoring.coreos.com CRDs exist in the "
            "cluster)."
        ),
    )
    prometheus_rule: bool = Field(
        True,
        description=(
            "Create a PrometheusRule with dchat's alerts (only when the monitoring.coreos.com "
            "CRDs exist in the cluster)."
        ),
    )
    scrape_interval: str = Field(
        "15s", description="ServiceMonitor scrape interval.", pattern=r"^[0-9]+(ms|s|m|h)$"
    )


class SchedulingSpec(CRModel):
    """Where pods run. Fields take the Kubernetes Pod spec types verbatim."""

    affinity: dict[str, Any] | None = Field(
        None,
        description=(
            "Pod affinity (core/v1 Affinity). Unset: prefer spreading pods across nodes "
            "(anti-affinity on kubernetes.io/hostname)."
        ),
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Pod tolerations (core/v1 Toleration)."
    )
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "Pod topology spread constraints (core/v1); labelSelector defaults to the pods of "
            "this cluster when omitted."
        ),
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    priority_class_name: str | None = Field(None, description="Pod priorityClassName.")


class DisruptionSpec(CRModel):
    """PodDisruptionBudget (created when replicas > 1)."""

    enabled: bool = Field(True, description="Create a PodDisruptionBudget when replicas > 1.")
    max_unavailable: int = Field(
        1, ge=1, description="Pods a voluntary disruption (drain) may take down at once."
    )


class NetworkPolicySpec(CRModel):
    """A NetworkPolicy that denies everything except the flows dchat needs."""

    enabled: bool = Field(True, description="Create the NetworkPolicy.")
    extra_egress_ports: list[int] = Field(
        default_factory=list,
        description="Extra TCP ports the pods may connect to (anywhere).",
    )
    metrics_from_namespaces: list[str] = Field(
        default_factory=list,
        description=("Namespaces allowed to scrape the metrics port; empty allows any namespace."),
    )


# --- the resource ----------------------------------------------------------------------------


class DchatClusterSpec(CRModel):
    """Desired state of a dchat deployment."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.database.engine != 'sqlite' || self.replicas <= 1",
                    "SQLite mode allows at most 1 replica (one ReadWriteOnce volume); use "
                    "database.engine: postgres for more",
                    ".replicas",
                ),
                cel(
                    "!self.ingress.enabled || has(self.ingress.host)",
                    "ingress.enabled needs ingress.host",
                ),
            ]
        },
    )

    version: str = Field(
        "0.1.0",
        description="dchat version to run; the image tag.",
        pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$",
    )
    image: ImageSpec = Field(default_factory=ImageSpec, description="Container image.")
    replicas: int = Field(
        1,
        ge=0,
        le=100,
        description="Number of node pods. SQLite mode allows 0 or 1. Scalable (kubectl scale).",
    )
    env: Literal["development", "staging", "production", "test"] = Field(
        "production", description="Deployment environment (DCHAT_ENV)."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Requests and limits of the node container."
    )
    database: DatabaseSpec = Field(
        default_factory=DatabaseSpec, description="Storage engine and connection pool."
    )
    server: ServerSpec = Field(
        default_factory=ServerSpec, description="Ports and request handling of the node."
    )
    chain: ChainSpec = Field(default_factory=ChainSpec, description="Chain JSON-RPC endpoints.")
    relay: RelaySpec = Field(default_factory=RelaySpec, description="libp2p relay network.")
    observability: ObservabilitySpec = Field(
        default_factory=ObservabilitySpec, description="Tracing, metrics push, health checks."
    )
    marketplace: MarketplaceSpec = Field(
        default_factory=MarketplaceSpec, description="Marketplace service."
    )
    bridge: BridgeSpec = Field(
        default_factory=BridgeSpec, description="Bridge service and its pause switch."
    )
    accessibility: AccessibilitySpec = Field(
        default_factory=AccessibilitySpec, description="Accessibility validation."
    )
    logging: LoggingSpec = Field(default_factory=LoggingSpec, description="Log level and format.")
    security: SecuritySpec = Field(
        default_factory=SecuritySpec, description="TLS, JWT, CORS, rate limiting."
    )
    p2p: P2PSpec = Field(default_factory=P2PSpec, description="Exposure of the P2P port.")
    ingress: IngressSpec = Field(default_factory=IngressSpec, description="HTTPS Ingress.")
    backup: BackupSpec = Field(default_factory=BackupSpec, description="Backups to S3.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rollout policy.")
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Prometheus integration."
    )
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Pod placement.")
    disruption: DisruptionSpec = Field(
        default_factory=DisruptionSpec, description="PodDisruptionBudget."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="NetworkPolicy."
    )

    @_model_validator(mode="after")
    def _cross_field(self) -> DchatClusterSpec:
        if self.database.engine == DatabaseEngine.sqlite and self.replicas > 1:
            raise ValueError(
                "SQLite mode allows at most 1 replica (one ReadWriteOnce volume); use "
                "database.engine: postgres for more"
            )
        if self.ingress.enabled and not self.ingress.host:
            raise ValueError("ingress.enabled needs ingress.host")
        try:
            self.to_node_config()
        except ValidationError as exc:
            raise ValueError(f"node configuration is invalid: {exc}") from None
        return self

    def to_node_config(self) -> NodeConfig:
        """The node's own config model for this spec (secrets are never part of it)."""
        database: dict[str, Any] = self.database.model_dump(
            exclude={"engine", "sqlite", "postgres"}
        )
        database["url"] = (
            c.SQLITE_URL
            if self.database.engine == DatabaseEngine.sqlite
            else c.POSTGRES_URL_PLACEHOLDER
        )
        security: dict[str, Any] = self.security.model_dump(
            exclude={"jwt_secret_ref", "tls_secret_ref"}
        )
        security["tls_cert_path"] = f"{c.TLS_DIR}/tls.crt"
        security["tls_key_path"] = f"{c.TLS_DIR}/tls.key"
        return NodeConfig.model_validate(
            {
                "env": self.env,
                "server": self.server.model_dump(),
                "database": database,
                "chain": self.chain.model_dump(),
                "relay": self.relay.model_dump(),
                "observability": self.observability.model_dump(),
                "marketplace": self.marketplace.model_dump(),
                "bridge": self.bridge.model_dump(),
                "accessibility": self.accessibility.model_dump(),
                "logging": self.logging.model_dump(),
                "security": security,
            }
        )


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(max_length=52)
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)


class Condition(CRModel):
    """A status condition (Kubernetes metav1.Condition shape)."""

    type: str = Field(description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="metadata.generation this is based on.")


class LastBackup(CRModel):
    """The most recent backup (filled by the backup controller)."""

    name: str = Field(description="Backup name.")
    time: str = Field(description="Completion time (RFC 3339).")
    location: str = Field("", description="s3://bucket/key of the backup.")


class DchatClusterStatus(CRModel):
    """Observed state, written by the operator only."""

    model_config = ConfigDict(**{**MODEL_CONFIG, "frozen": False})

    observed_generation: int = Field(
        0, description="metadata.generation the operator last reconciled."
    )
    phase: Literal["Pending", "Progressing", "Ready", "Degraded"] = Field(
        "Pending", description="Pending, Progressing, Ready or Degraded: a summary of conditions."
    )
    replicas: int = Field(0, description="Pods of the current Deployment (scale subresource).")
    ready_replicas: int = Field(0, description="Pods that are Ready.")
    updated_replicas: int = Field(0, description="Pods running the current template.")
    selector: str = Field("", description="Label selector of the pods (scale subresource).")
    current_version: str | None = Field(
        None, description="Version all pods run once a rollout completed."
    )
    config_checksum: str | None = Field(None, description="Checksum of the config the pods run.")
    last_backup: LastBackup | None = Field(None, description="The most recent backup.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing and Degraded conditions."
    )


class DchatCluster(BaseModel):
    """A DchatCluster as the operator sees it: metadata plus a validated spec."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: str = Field(c.API_VERSION, alias="apiVersion")
    kind: str = c.KIND
    metadata: ObjectMeta
    spec: DchatClusterSpec = Field(default_factory=DchatClusterSpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def image(self) -> str:
        ref = f"{self.spec.image.repository}:{self.spec.version}"
        return f"{ref}@{self.spec.image.digest}" if self.spec.image.digest else ref

    @classmethod
    def parse(cls, body: Any) -> DchatCluster:
        """Parse a CR body (dict or kopf Body) once; raises pydantic.ValidationError."""
        data = dict(body)
        return cls.model_validate(
            {
                "apiVersion": data.get("apiVersion", c.API_VERSION),
                "kind": data.get("kind", c.KIND),
                "metadata": dict(data.get("metadata") or {}),
                "spec": dict(data.get("spec") or {}),
            }
        )
