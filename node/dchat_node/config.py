"""The node's configuration: the one contract between the node and the operator.

Design:
- One pydantic model per ``config.toml`` section of the deployment guide (4.2), every key
  with the guide's default and a description. The operator renders ``config.toml`` from
  these same classes (``render_toml``) and embeds them in the DchatCluster CRD schema, so
  the descriptions become ``kubectl explain`` text. Importing this module has no side
  effects.
- Precedence, lowest first: model defaults < the TOML file < the environment variables the
  guide names (section 4.1) < the general ``DCHAT_<SECTION>__<KEY>`` form. Any of those
  variables may instead be given as ``<NAME>_FILE`` holding a path whose content is the
  value, so Kubernetes Secrets can be mounted as files.
- Unknown keys are errors (``extra="forbid"``): a typo must not be silently ignored.
  ``load_config`` raises ``ConfigError`` carrying one ``ConfigProblem`` per problem, each
  naming ``section.key``, where the value came from (file or variable) and what was
  expected.
- Deviations from the guide's example values, on purpose: endpoints of other services
  (chain RPCs, relay bootstrap nodes, tracing, push gateway, TURN) default to unset, and TLS
  defaults to off, so that a node starts with no other service present; the guide's
  production values live in ``examples/config.toml`` and the operator's samples.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("/etc/dchat/config.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ServerConfig(_Section):
    """Listeners and request handling."""

    host: str = Field("0.0.0.0", description="Address the API and metrics servers bind to.")
    api_port: int = Field(9000, description="Port of the user-facing HTTP API.", ge=1, le=65535)
    metrics_port: int = Field(
        9001,
        description="Port of the ops server: /health, /ready, /metrics, /health/bridge.",
        ge=1,
        le=65535,
    )
    p2p_port: int = Field(7000, description="TCP port of the libp2p relay host.", ge=1, le=65535)
    worker_threads: int = Field(
        8,
        ge=1,
        le=256,
        description=(
            "Threads for blocking work (SQLite, hashing). The Rust original's tokio worker "
            "count; TOKIO_WORKER_THREADS maps here."
        ),
    )
    request_timeout_secs: float = Field(
        30, gt=0, le=3600, description="A request that takes longer is answered 504."
    )
    shutdown_grace_secs: float = Field(
        20,
        gt=0,
        le=300,
        description=(
            "On SIGTERM, how long in-flight requests may run before the servers close. Keep "
            "it below the pod's terminationGracePeriodSeconds (30 s by default)."
        ),
    )
    max_request_body_bytes: int = Field(
        1_048_576, ge=1024, description="Larger request bodies are refused with 413."
    )

    @model_validator(mode="after")
    def _ports_distinct(self) -> ServerConfig:
        ports = [self.api_port, self.metrics_port, self.p2p_port]
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"api_port, metrics_port and p2p_port must differ (got {ports[0]}, "
                f"{ports[1]}, {ports[2]})"
            )
        return self


class DatabaseConfig(_Section):
    """Storage. The URL scheme picks the engine: sqlite:// or postgresql://."""

    url: str = Field(
        "sqlite:////data/dchat.db",
        description=(
            "sqlite:////absolute/path.db (one replica, own volume) or "
            "postgresql://user@host:port/db. Give the password through DATABASE_URL from a "
            "Secret, never in this file."
        ),
    )
    max_connections: int = Field(20, ge=1, le=1000, description="PostgreSQL pool size.")
    statement_cache_size: int = Field(
        100, ge=0, description="Prepared statements cached per PostgreSQL connection."
    )
    connection_timeout_secs: float = Field(
        10, gt=0, description="Timeout for opening one database connection."
    )
    idle_timeout_secs: float = Field(
        300, gt=0, description="Idle pooled connections are closed after this long."
    )
    max_pending_queries: int = Field(
        128,
        ge=0,
        le=100_000,
        description=(
            "Load shedding: queries that may wait for the database beyond those running "
            "(SQLite runs 1 at a time, PostgreSQL max_connections). A query finding the "
            "queue full is refused at once: the API answers 503 with Retry-After. The "
            "longest wait is about this many queries' time; keep it well below "
            "server.request_timeout_secs."
        ),
    )

    @model_validator(mode="after")
    def _known_scheme(self) -> DatabaseConfig:
        if not self.url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(
                "url must start with sqlite:// or postgresql:// (got scheme "
                f"{self.url.split(':', 1)[0]!r})"
            )
        return self

    @property
    def engine(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.url.startswith("sqlite://") else "postgresql"


# A number of confirmations (1 to 9999) or a block tag; dchat_node.chain.finality parses it.
FINALITY_PATTERN = r"^(safe|finalized|[1-9][0-9]{0,3})$"


class ChainConfig(_Section):
    """EVM JSON-RPC endpoints of the chat and currency chains."""

    chat_chain_rpc: str | None = Field(
        None, description="JSON-RPC URL of the chat chain; unset disables chat-chain features."
    )
    currency_chain_rpc: str | None = Field(
        None,
        description="JSON-RPC URL of the currency chain; unset disables payments and bridge.",
    )
    rpc_timeout_secs: float = Field(30, gt=0, description="Timeout of one JSON-RPC call.")
    rpc_retries: int = Field(
        3,
        ge=0,
        le=10,
        description=(
            "Retries of a JSON-RPC call after a transport error or timeout, with exponential "
            "backoff (0.5 s, 1 s, 2 s, ... at most 8 s); then the chain counts as unavailable."
        ),
    )
    chat_chain_finality: str = Field(
        "12",
        pattern=FINALITY_PATTERN,
        max_length=9,
        description=(
            "When a chat-chain block counts as final: a number of confirmations (1 = the "
            "block itself), or the block tag safe or finalized."
        ),
    )
    currency_chain_finality: str = Field(
        "12",
        pattern=FINALITY_PATTERN,
        max_length=9,
        description=(
            "When a currency-chain block (a payment) counts as final: a number of "
            "confirmations (1 = the block itself), or the block tag safe or finalized."
        ),
    )

    @field_validator("chat_chain_finality", "currency_chain_finality", mode="before")
    @classmethod
    def _finality_number(cls, value: Any) -> Any:
        # TOML may give the number of confirmations as an integer
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"^{_LABEL}(\.{_LABEL})*\.?$"


class RelayConfig(_Section):
    """libp2p relay network (GossipSub) and the store-and-forward envelope relay."""

    enabled: bool = Field(
        True,
        description=(
            "Run the libp2p host on server.p2p_port and the envelope relay. Off: nothing "
            "listens on the P2P port and /health/relay answers disabled."
        ),
    )
    bootstrap_nodes: list[str] = Field(
        default_factory=list,
        description=(
            "Multiaddrs of peers dialled at start and redialled when they drop, with the "
            "peer id, e.g. /dns/relay1/tcp/7000/p2p/12D3KooW... (/ip4, /ip6, /dns, /dns4, "
            "/dns6 + /tcp)."
        ),
    )
    external_addresses: list[str] = Field(
        default_factory=list,
        description=(
            "Multiaddrs this node announces to peers instead of its listen addresses "
            "(e.g. /ip4/203.0.113.7/tcp/7000)."
        ),
    )
    bootstrap_dns: str | None = Field(
        None,
        max_length=253,
        pattern=_HOSTNAME,
        description=(
            "DNS name whose A/AAAA records are peer nodes (in Kubernetes: the headless P2P "
            "Service of the cluster). Each address's peer id is read from GET "
            "http://<address>:<server.metrics_port>/p2p/info and the peer dialled on "
            "server.p2p_port; this node's own address is skipped. Re-resolved every "
            "bootstrap_dns_interval_secs."
        ),
    )
    bootstrap_dns_interval_secs: float = Field(
        15, gt=0, le=3600, description="How often bootstrap_dns is resolved again."
    )
    identity_key_path: str | None = Field(
        None,
        max_length=4096,
        description=(
            "File holding the node's libp2p Ed25519 key (created with mode 0600 when "
            "missing), so a restarted node keeps its peer id. Unset: p2p/identity.key next "
            "to the SQLite file, or /data/p2p/identity.key with PostgreSQL."
        ),
    )
    gossip_degree: int = Field(6, ge=1, le=64, description="GossipSub mesh degree D.")
    gossip_degree_low: int = Field(4, ge=1, le=64, description="GossipSub D_low.")
    gossip_degree_high: int = Field(12, ge=1, le=128, description="GossipSub D_high.")
    gossip_heartbeat_secs: int = Field(
        1, ge=1, le=60, description="GossipSub heartbeat (mesh maintenance, gossip)."
    )
    gossip_max_messages_per_peer_per_sec: int = Field(
        5000,
        ge=10,
        le=1_000_000,
        description=(
            "Messages per second a peer may send on one topic before GossipSub drops the "
            "excess (py-libp2p's default, 10, loses ordinary traffic)."
        ),
    )
    max_envelope_bytes: int = Field(
        65536,
        ge=256,
        le=524288,
        description="Largest ciphertext of one envelope; larger posts are refused with 413.",
    )
    max_ttl_secs: int = Field(
        604800,
        ge=60,
        le=2_592_000,
        description="Longest lifetime an envelope may ask for; expired envelopes are purged.",
    )
    sender_rate_per_sec: float = Field(
        20,
        gt=0,
        le=100_000,
        description="Envelopes per second one sender key may post (token bucket; 429 beyond).",
    )
    sender_burst: int = Field(
        100, ge=1, le=1_000_000, description="Token bucket size of the per-sender limit."
    )
    nat_upnp: bool = Field(False, description="Try UPnP port mapping (off in Kubernetes).")
    nat_turn_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN servers for NAT traversal."
    )

    @model_validator(mode="after")
    def _multiaddrs(self) -> RelayConfig:
        for field in ("bootstrap_nodes", "external_addresses"):
            for addr in getattr(self, field):
                if not addr.startswith("/"):
                    raise ValueError(f"{field}: {addr!r} is not a multiaddr (must start with /)")
        if not self.gossip_degree_low <= self.gossip_degree <= self.gossip_degree_high:
            raise ValueError(
                "gossip_degree_low <= gossip_degree <= gossip_degree_high must hold (got "
                f"{self.gossip_degree_low}, {self.gossip_degree}, {self.gossip_degree_high})"
            )
        return self


class ObservabilityConfig(_Section):
    """Tracing, metrics push and health checks."""

    jaeger_endpoint: str | None = Field(
        None,
        description=(
            "Trace collector. Traces are exported with OTLP over HTTP; a Jaeger agent URL "
            "(port 6831, deprecated UDP) is mapped to the collector's OTLP port 4318."
        ),
    )
    jaeger_sample_rate: float = Field(
        0.1, ge=0, le=1, description="Fraction of traces sampled (parent-based ratio)."
    )
    prometheus_pushgateway: str | None = Field(
        None, description="Push gateway URL; unset disables pushing (scraping always works)."
    )
    prometheus_push_interval_secs: float = Field(
        60, gt=0, description="Interval between pushes to the gateway."
    )
    health_check_interval_secs: float = Field(
        30, gt=0, description="Interval of the background dependency health checks."
    )


class MarketplaceConfig(_Section):
    """Marketplace service."""

    cache_size: int = Field(10000, ge=0, description="Listings kept in the in-memory cache.")
    escrow_timeout_secs: int = Field(
        86400, gt=0, description="An escrow not released in this time can be refunded."
    )
    payment_confirmation_timeout_secs: int = Field(
        300, gt=0, description="How long to wait for a payment to confirm on chain."
    )
    escrow_address: str | None = Field(
        None,
        max_length=42,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description=(
            "Currency-chain address buyers pay into (0x + 40 hex digits; EIP-55 checksum "
            "when mixed case). Unset: purchases are refused (503), listings still work."
        ),
    )
    chain_id: int | None = Field(
        None,
        ge=1,
        le=2**53 - 1,
        description="Chain id of the currency chain payments must be made on.",
    )
    worker_interval_secs: float = Field(
        5,
        gt=0,
        le=3600,
        description=(
            "How often the marketplace worker checks payments, expiries and automatic "
            "releases; a failing chain RPC is retried with backoff from this up to 300 s."
        ),
    )


ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class BridgeConfig(_Section):
    """Cross-chain bridge service."""

    transaction_timeout_secs: int = Field(
        300, gt=0, description="A bridge transaction not confirmed in this time fails."
    )
    finality_proof_timeout_secs: int = Field(
        600, gt=0, description="A finality proof not gathered in this time counts a timeout."
    )
    validator_quorum: int = Field(2, ge=1, description="Validator signatures needed (2-of-3).")
    state_snapshot_interval: int = Field(
        1000,
        ge=1,
        description=(
            "Settled transfers between bridge state snapshots (sequence, last nonce per chain, "
            "Merkle root of transfer states, previous snapshot's hash; signed by validators)."
        ),
    )
    paused: bool = Field(
        False,
        description=(
            "Pause the bridge: it keeps observing both chains but signs and submits nothing "
            "(shown in /health/bridge)."
        ),
    )
    pause_flag_path: str | None = Field(
        None,
        max_length=4096,
        description=(
            "A file whose content true/1 pauses the bridge at run time (read every poll, so "
            "a mounted ConfigMap key pauses or resumes without a restart); paused wins."
        ),
    )
    chat_vault_address: str | None = Field(
        None,
        pattern=ADDRESS_PATTERN,
        max_length=42,
        description="BridgeVault contract on the chat chain; both vaults set enable the bridge.",
    )
    currency_vault_address: str | None = Field(
        None,
        pattern=ADDRESS_PATTERN,
        max_length=42,
        description="BridgeVault contract on the currency chain.",
    )
    validators: list[Annotated[str, Field(pattern=ADDRESS_PATTERN, max_length=42)]] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Addresses of the registered validators (the vaults' validator set); "
            "signatures of anyone else are ignored."
        ),
    )
    roles: list[Literal["validator", "relayer"]] = Field(
        default_factory=list,
        max_length=2,
        description=(
            "What this node does besides observing: validator (signs attestations with "
            "validator_key_path), relayer (aggregates signatures and submits releases and "
            "refunds from the account of relayer_key_path)."
        ),
    )
    validator_key_path: str | None = Field(
        None,
        max_length=4096,
        description="File holding the validator's secp256k1 key (hex); mount it from a Secret.",
    )
    relayer_key_path: str | None = Field(
        None,
        max_length=4096,
        description="File holding the relayer account's key (hex; pays gas); from a Secret.",
    )
    poll_interval_secs: float = Field(
        2.0, gt=0, le=60, description="How often the bridge reads both chains."
    )
    gossip_topic: str = Field(
        "dchat/bridge/1",
        min_length=1,
        max_length=200,
        description="libp2p pubsub topic of the validators' attestations.",
    )

    @model_validator(mode="after")
    def _roles_have_keys(self) -> BridgeConfig:
        if "validator" in self.roles and not self.validator_key_path:
            raise ValueError("bridge.validator_key_path is required for the validator role")
        if "relayer" in self.roles and not self.relayer_key_path:
            raise ValueError("bridge.relayer_key_path is required for the relayer role")
        lowered = [v.lower() for v in self.validators]
        if len(set(lowered)) != len(lowered):
            raise ValueError("bridge.validators lists an address twice")
        if self.validators and self.validator_quorum > len(self.validators):
            raise ValueError(
                f"bridge.validator_quorum ({self.validator_quorum}) exceeds the "
                f"{len(self.validators)} bridge.validators"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.chat_vault_address and self.currency_vault_address)


class AccessibilityConfig(_Section):
    """Accessibility validation."""

    wcag_strict_mode: bool = Field(True, description="Validate against WCAG 2.2 AAA, not AA.")
    keyboard_shortcut_conflict_check: bool = Field(
        True, description="Reject keyboard shortcut sets with conflicts."
    )


class LogFormat(StrEnum):
    json = "json"
    text = "text"


class LogOutput(StrEnum):
    stdout = "stdout"
    file = "file"


class LoggingConfig(_Section):
    """Logging. Default JSON to stdout; a file only when asked (needs a writable volume)."""

    level: Literal["trace", "debug", "info", "warning", "warn", "error", "critical"] = Field(
        "info", description="Minimum level. RUST_LOG maps here."
    )
    format: LogFormat = Field(LogFormat.json, description="json or text.")
    output: LogOutput = Field(LogOutput.stdout, description="stdout or file.")
    file_path: str = Field("/var/log/dchat/dchat.log", description="Log file when output = file.")
    max_file_size_mb: int = Field(100, ge=1, description="Rotate the file at this size.")
    max_backups: int = Field(10, ge=0, description="Rotated files kept.")


class SecurityConfig(_Section):
    """TLS, authentication, CORS and rate limiting."""

    tls_enabled: bool = Field(False, description="Serve the API over TLS.")
    tls_cert_path: str = Field("/etc/tls/certs/tls.crt", description="PEM certificate chain.")
    tls_key_path: str = Field("/etc/tls/certs/tls.key", description="PEM private key.")
    cors_allowed_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty allows none."
    )
    rate_limit_enabled: bool = Field(True, description="Limit requests per client.")
    rate_limit_requests_per_sec: int = Field(
        1000,
        ge=1,
        description=(
            "Requests per second per client address and route (an IPv6 client counts by its /64)."
        ),
    )
    rate_limit_writes_per_user_per_sec: int = Field(
        20,
        ge=1,
        le=1_000_000,
        description=(
            "Writes (POST/PUT/PATCH/DELETE) per second per authenticated user (the token's "
            "sub), across routes, in addition to the per-address limit."
        ),
    )
    trusted_proxies: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "CIDRs of the proxies in front of the node (e.g. the Ingress controller's pod "
            "network). Only a request whose TCP peer is in one of them has its client "
            "address taken from X-Forwarded-For; empty: the peer address is the client."
        ),
    )
    trusted_proxy_hops: int = Field(
        1,
        ge=1,
        le=16,
        description=(
            "Trusted proxies a request passes on its way in (an Ingress alone: 1; a cloud "
            "load balancer, then the Ingress: 2). The client is that many entries from the "
            "right of X-Forwarded-For."
        ),
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 key for bearer tokens; give it as JWT_SECRET or JWT_SECRET_FILE.",
    )
    jwt_public_key_path: str | None = Field(
        None, description="PEM public key; when set, RS256 tokens are accepted."
    )
    jwt_issuer: str = Field("dchat", description="Required iss claim.")
    jwt_audience: str | None = Field(
        None,
        description=(
            "Required aud claim (required with jwt_public_key_path); when unset, tokens "
            "carrying an aud are refused."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return _check_cidrs(value)


def _check_cidrs(cidrs: list[str]) -> list[str]:
    from ipaddress import ip_network

    for cidr in cidrs:
        try:
            ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(
                f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8, 2001:db8::/32)"
            ) from None
    return cidrs


class NodeConfig(_Section):
    """The whole config.toml."""

    env: Literal["development", "staging", "production", "test"] = Field(
        "production", description="Deployment environment (DCHAT_ENV)."
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    chain: ChainConfig = Field(default_factory=ChainConfig)
    relay: RelayConfig = Field(default_factory=RelayConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    marketplace: MarketplaceConfig = Field(default_factory=MarketplaceConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    accessibility: AccessibilityConfig = Field(default_factory=AccessibilityConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)


SECRET_KEYS: frozenset[tuple[str, str]] = frozenset({("security", "jwt_secret")})
"""Keys that never go into a rendered config.toml (they come from Secrets)."""

# The guide's variables (4.1): name -> (section, key, kind). kind "list" = comma-separated.
ENV_VARS: Mapping[str, tuple[str | None, str, str]] = {
    "DCHAT_ENV": (None, "env", "str"),
    "DCHAT_HOST": ("server", "host", "str"),
    "DCHAT_API_PORT": ("server", "api_port", "str"),
    "DCHAT_METRICS_PORT": ("server", "metrics_port", "str"),
    "DCHAT_P2P_PORT": ("server", "p2p_port", "str"),
    "TOKIO_WORKER_THREADS": ("server", "worker_threads", "str"),
    "DATABASE_URL": ("database", "url", "str"),
    "DATABASE_MAX_CONNECTIONS": ("database", "max_connections", "str"),
    "DATABASE_STATEMENT_CACHE_SIZE": ("database", "statement_cache_size", "str"),
    "DATABASE_MAX_PENDING_QUERIES": ("database", "max_pending_queries", "str"),
    "CHAT_CHAIN_RPC": ("chain", "chat_chain_rpc", "str"),
    "CURRENCY_CHAIN_RPC": ("chain", "currency_chain_rpc", "str"),
    "RELAY_BOOTSTRAP_NODES": ("relay", "bootstrap_nodes", "list"),
    "RELAY_EXTERNAL_ADDRESSES": ("relay", "external_addresses", "list"),
    "RELAY_BOOTSTRAP_DNS": ("relay", "bootstrap_dns", "str"),
    "JAEGER_ENDPOINT": ("observability", "jaeger_endpoint", "str"),
    "PROMETHEUS_PUSHGATEWAY": ("observability", "prometheus_pushgateway", "str"),
    "RUST_LOG": ("logging", "level", "rust_log"),
    "TLS_CERT_PATH": ("security", "tls_cert_path", "str"),
    "TLS_KEY_PATH": ("security", "tls_key_path", "str"),
    "JWT_SECRET": ("security", "jwt_secret", "str"),
    "CORS_ALLOWED_ORIGINS": ("security", "cors_allowed_origins", "list"),
    "MARKETPLACE_CACHE_SIZE": ("marketplace", "cache_size", "str"),
    "BRIDGE_TX_TIMEOUT_SECS": ("bridge", "transaction_timeout_secs", "str"),
}
GENERIC_PREFIX = "DCHAT_"
_LIST_FIELDS = {
    (section, name)
    for section, model in NodeConfig.model_fields.items()
    if isinstance(model.annotation, type) and issubclass(model.annotation, BaseModel)
    for name, f in model.annotation.model_fields.items()
    if get_origin(f.annotation) is list
}


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration."""

    key: str  # "section.key" (or "section" / "<file>")
    message: str
    source: str  # the file path or the variable name

    def __str__(self) -> str:
        return f"{self.key}: {self.message} (from {self.source})"


class ConfigError(Exception):
    """Configuration is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def _rust_log_level(value: str) -> str:
    # RUST_LOG may be "info" or "dchat=debug,hyper=warn": take the dchat (or first bare) level.
    level = value
    for part in value.split(","):
        target, _, lvl = part.partition("=")
        if not lvl:
            level = target
        elif target.strip() in ("dchat", "dchat_node"):
            level = lvl
            break
    return level.strip().lower()


class _EnvOverrides:
    """Overrides read from the environment, nested as in config.toml, and the variable each
    key came from (for error messages)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[tuple[str | None, str], str] = {}

    def put(self, section: str | None, key: str, raw: Any, origin: str) -> None:
        if section is None:
            self.values[key] = raw
        else:
            self.values.setdefault(section, {})[key] = raw
        self.origins[(section, key)] = origin


def _env_value(environ: Mapping[str, str], name: str, problems: list[ConfigProblem]) -> str | None:
    """``name``'s value: the content of the file ``<name>_FILE`` names when that is set,
    else the variable itself; None when neither is given or the file cannot be read."""
    file_var = f"{name}_FILE"
    if file_var in environ:
        path = environ[file_var]
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(ConfigProblem(name, f"cannot read {path}: {exc.strerror}", file_var))
            return None
    return environ.get(name)


def _split_list(raw: str) -> list[str]:
    """A comma-separated value; blank items are dropped."""
    return [p.strip() for p in raw.split(",") if p.strip()]


def _read_guide_vars(
    environ: Mapping[str, str], problems: list[ConfigProblem], found: _EnvOverrides
) -> None:
    """The variables the guide names (``ENV_VARS``)."""
    for name, (section, key, kind) in ENV_VARS.items():
        raw = _env_value(environ, name, problems)
        if raw is None:
            continue
        if kind == "list":
            found.put(section, key, _split_list(raw), name)
        elif kind == "rust_log":
            found.put(section, key, _rust_log_level(raw), name)
        else:
            found.put(section, key, raw, name)


def _read_generic_vars(
    environ: Mapping[str, str], problems: list[ConfigProblem], found: _EnvOverrides
) -> None:
    """The general ``DCHAT_<SECTION>__<KEY>`` variables, in name order."""
    sections = set(NodeConfig.model_fields) - {"env"}
    names = {n.removesuffix("_FILE") for n in environ if n.startswith(GENERIC_PREFIX)}
    for name in sorted(names):
        rest = name[len(GENERIC_PREFIX) :]
        if "__" not in rest:
            continue  # DCHAT_ENV, DCHAT_HOST, ...: handled by _read_guide_vars
        section, _, key = rest.lower().partition("__")
        if section not in sections:
            problems.append(ConfigProblem(section, "unknown section", name))
            continue
        raw = _env_value(environ, name, problems)
        if raw is None:
            continue
        if (section, key) in _LIST_FIELDS:
            found.put(section, key, _split_list(raw), name)
        else:
            found.put(section, key, raw, name)


def _read_env(
    environ: Mapping[str, str], problems: list[ConfigProblem]
) -> tuple[dict[str, Any], dict[tuple[str | None, str], str]]:
    """Collect overrides from the environment; returns (overrides, origin of each key)."""
    found = _EnvOverrides()
    _read_guide_vars(environ, problems, found)
    _read_generic_vars(environ, problems, found)
    return found.values, found.origins


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        return "unknown key (typo?)"
    if err["type"] == "missing":
        return "required"
    if "input" in err and err["type"] not in ("model_type",):
        shown = err["input"]
        if isinstance(shown, str):
            shown = redact_url(shown)
        if isinstance(shown, str | int | float | bool) and len(repr(shown)) < 80:
            return f"{msg} (got {shown!r})"
    return msg


def parse_config(
    data: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    source: str = "<config>",
) -> NodeConfig:
    """Validate a config mapping plus environment overrides; raise ConfigError."""
    problems: list[ConfigProblem] = []
    overrides, origins = _read_env(environ if environ is not None else {}, problems)
    merged = _merge(dict(data), overrides)
    try:
        config = NodeConfig.model_validate(merged)
    except ValidationError as exc:
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            section = loc[0] if len(loc) > 1 else None
            key = loc[1] if len(loc) > 1 else (loc[0] if loc else "")
            origin = origins.get((section, key), source)
            secret = (section, key) in SECRET_KEYS or key.endswith("url")
            message = str(err["msg"]) if secret else _describe(err)
            problems.append(ConfigProblem(".".join(loc) or "<root>", message, origin))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_config(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Load ``path`` (default /etc/dchat/config.toml) and apply the environment.

    A missing file at the default path means "defaults only"; a missing file that was asked
    for explicitly is an error.
    """
    env = os.environ if environ is None else environ
    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit:
            raise ConfigError([ConfigProblem("<file>", "file not found", str(file))]) from None
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem("<file>", f"cannot read: {exc.strerror}", str(file))]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("<file>", f"not valid TOML: {exc}", str(file))]) from None
    return parse_config(data, environ=env, source=str(file))


# scheme://user:password@ (also several hosts: postgresql://u:p@h1,h2/db): keep the user
_URL_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")
# query or fragment parameters whose name says they carry a credential
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&#;](?:[^=&#;]*?(?:key|token|secret|pass|pwd|auth|sig|credential)"
    r"[^=&#;]*)=)(?P<value>[^&#;]*)",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_url(value: str) -> str:
    """``value`` with credentials masked: the password of ``scheme://user:password@`` and
    the values of query parameters named like keys or tokens (``apikey``, ``token``,
    ``key``, ``sslpassword``, ``X-Amz-Signature``, ...). Other text is returned as is."""
    match = _URL_USERINFO.match(value)
    if match is not None:
        user, colon, password = match["userinfo"].partition(":")
        if colon and password:
            value = f"{match['head']}{user}:{REDACTED}@{value[match.end() :]}"
    if "=" in value:
        value = _SECRET_PARAM.sub(lambda m: f"{m['name']}{REDACTED}", value)
    return value


def _redact_values(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _redact_values(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_redact_values(value) for value in data]
    if isinstance(data, str):
        return redact_url(data)
    return data


def render_shown_toml(config: NodeConfig) -> str:
    """What ``dchat check-config --show`` prints: ``render_toml`` (so no secret keys) with
    credentials masked in every string value (``redact_url``): database and chain URLs,
    the trace collector, the push gateway, anything a future key holds."""
    data = config.model_dump(mode="json", exclude_none=True)
    for section, key in SECRET_KEYS:
        data.get(section, {}).pop(key, None)
    return tomli_w.dumps(_redact_values(data))


def secret_values(config: NodeConfig) -> list[str]:
    """Every credential in ``config`` (the JWT secret; passwords and key-like query values
    of URL-valued keys), for the log redaction filter."""
    out: list[str] = []
    if config.security.jwt_secret is not None and config.security.jwt_secret.get_secret_value():
        out.append(config.security.jwt_secret.get_secret_value())

    def walk(data: Any) -> None:
        if isinstance(data, dict):
            for value in data.values():
                walk(value)
        elif isinstance(data, list):
            for value in data:
                walk(value)
        elif isinstance(data, str):
            match = _URL_USERINFO.match(data)
            if match is not None:
                password = match["userinfo"].partition(":")[2]
                if password:
                    out.append(password)
            out.extend(m["value"] for m in _SECRET_PARAM.finditer(data) if m["value"])

    walk(config.model_dump(mode="json", exclude={"security": {"jwt_secret"}}))
    return out


def render_toml(config: NodeConfig, *, changed_only: bool = False) -> str:
    """Render ``config.toml`` for the node. Secrets and unset values are left out; with
    ``changed_only`` so is every value equal to its default (what the operator renders: a
    key added in a later version never reaches an older node image, which would refuse it
    as unknown, and a new default rolls no pods)."""
    data = config.model_dump(mode="json", exclude_none=True, exclude_defaults=changed_only)
    for section, key in SECRET_KEYS:
        data.get(section, {}).pop(key, None)
    return tomli_w.dumps(data)
