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
- Admission refuses what reconcile would fail on: names and references have their Kubernetes
  formats (``matching``: a CEL ``matches`` rule and the same regex in the model), and every
  string, list, map and large number is bounded. Bounds matter twice: a CR cannot carry
  megabytes, and CEL rules stay within the apiserver's cost budget. The node's mirrored
  sections get the CR's bounds through ``mirror(types=...)``. Note the apiserver runs CEL only
  on an object that passed the OpenAPI checks, so an over-long value reports its length first.
- A field the operator and the node do not act on yet says so in its description ("Not acted
  on yet: ..."), so ``kubectl explain`` is honest.
- Unknown fields are errors (``extra="forbid"``), matching the structural schema.
"""

from __future__ import annotations

import posixpath
import re
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)
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

# Formats checked at admission by CEL ``matches`` and in the model by ``re``: RE2 and Python
# agree on these (no look-arounds, no backslashes, no quotes, so they embed in CEL literals).
_LABEL = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_LABEL_PATTERN = f"^{_LABEL}$"
DNS1035_LABEL_PATTERN = "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = f"^{_LABEL}([.]{_LABEL})*$"
DNS_LABEL_PATTERN = DNS1123_LABEL_PATTERN
SECRET_KEY_PATTERN = "^[.]?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"  # noqa: S105 - a format
LABEL_VALUE_PATTERN = "^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
HOST_PATTERN = f"^([*][.])?{_LABEL}([.]{_LABEL})*$"
IPV4_PATTERN = "^[0-9]+([.][0-9]+){3}$"
QUALIFIED_NAME_PATTERN = (
    f"^({_LABEL}([.]{_LABEL})*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
)
_BAD_PORT = (
    "[^/]*[^0-9/][^/]*|0[0-9]*|[0-9]{6,}|6553[6-9]|655[4-9][0-9]|65[6-9][0-9]{2}|"
    "6[6-9][0-9]{3}|[7-9][0-9]{4}"
)
MULTIADDR_BAD_PORT = f"/(tcp|udp)(/({_BAD_PORT})?)?$|/(tcp|udp)/({_BAD_PORT})?/"
"""Found anywhere in a multiaddr: a /tcp/ or /udp/ component without a port 1-65535."""

MSG_DNS1123_NAME = (
    "must be a DNS-1123 name: lowercase letters, digits, '-' and '.', starting and ending "
    "with a letter or digit (a name in this namespace, not a path)"
)
MSG_DNS1123_LABEL = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and "
    "ending with a letter or digit"
)
MSG_CLUSTER_NAME = (
    "metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting with "
    "a letter and ending with a letter or digit (it names Services)"
)
MSG_CLUSTER_NAME_LENGTH = (
    "metadata.name must be at most 52 characters (child objects append suffixes such as -metrics)"
)
MSG_SECRET_KEY = "must be a Secret key: letters, digits, '-', '_' and '.', not starting with '..'"  # noqa: S105
MSG_LABEL_VALUE = (
    "must be a valid label value: at most 63 letters, digits, '-', '_' and '.', starting and "
    "ending with a letter or digit"
)
MSG_MULTIADDR = "must be a multiaddr, starting with / (e.g. /dns/relay1.dchat.dev/tcp/7000)"
MSG_MULTIADDR_PORT = "the port after /tcp/ or /udp/ must be a number from 1 to 65535"
MSG_HOST = (
    "must be a lowercase RFC 1123 host name (e.g. api.dchat.dev), optionally with a leading "
    "'*.' wildcard label; not an IP address"
)
MSG_ANNOTATION_KEY = "annotation keys must be qualified names ([prefix/]name)"
MSG_SNIPPET = (
    "annotations whose key ends in -snippet are refused (they inject configuration into the "
    "shared Ingress controller)"
)
MSG_LOG_PATH = (
    "logging.filePath must be an absolute path of plain components (letters, digits, '.', '_', "
    "'-'; no '.' or '..' components)"
)


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


def validations(*entries: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules."""
    return {"x-kubernetes-validations": list(entries)}


def matching(pattern: str, message: str, *, max_length: int, min_length: int = 1) -> Any:
    """A string type that must match ``pattern``: a CEL rule with ``message`` at admission, the
    same regex with the same message in the model. Bounded, so CEL's cost estimate is too."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(message)
        return value

    return Annotated[
        str,
        Field(
            min_length=min_length,
            max_length=max_length,
            json_schema_extra=validations(cel(f"self.matches('{pattern}')", message)),
        ),
        AfterValidator(check),
    ]


def bounded(max_length: int, *, min_length: int = 0) -> Any:
    """A string type of bounded length (no format)."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length)]


def _multiaddr(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(MSG_MULTIADDR)
    if re.search(MULTIADDR_BAD_PORT, value):
        raise ValueError(MSG_MULTIADDR_PORT)
    return value


def _host(value: str) -> str:
    if not re.fullmatch(HOST_PATTERN, value) or re.fullmatch(IPV4_PATTERN, value):
        raise ValueError(MSG_HOST)
    return value


LOG_PATH_PATTERN = "^(/[-._A-Za-z0-9]+)+$"
_DOT_COMPONENT = "/[.][.]?(/|$)"
MOUNTED_DIRS = (c.CONFIG_DIR, c.DATA_DIR, c.TLS_DIR, "/tmp")  # noqa: S108 - pod mount paths
"""Directories the node container mounts; the log directory (a writable volume) must not be
one of them, inside one of them, or a parent of one of them."""
MSG_LOG_DIR = (
    "logging.filePath must be in a directory of its own: not /, and neither inside nor a "
    f"parent of {', '.join(MOUNTED_DIRS)} (the file's directory becomes a writable volume)"
)
_LOG_DIR_EXPR = "self.substring(0, self.lastIndexOf('/'))"


def _log_path(value: str) -> str:
    if not re.fullmatch(LOG_PATH_PATTERN, value) or re.search(_DOT_COMPONENT, value):
        raise ValueError(MSG_LOG_PATH)
    directory = posixpath.dirname(value)
    if directory == "/" or any(
        f"{mounted}/".startswith(f"{directory}/") or f"{directory}/".startswith(f"{mounted}/")
        for mounted in MOUNTED_DIRS
    ):
        raise ValueError(MSG_LOG_DIR)
    return value


if TYPE_CHECKING:
    DnsName = str
    DnsLabel = str
    SecretKey = str
    LabelValue = str
    HostName = str
    Multiaddr = str
    LogFilePath = str
    Url = str
    Port = int
else:
    DnsName = matching(DNS1123_SUBDOMAIN_PATTERN, MSG_DNS1123_NAME, max_length=253)
    DnsLabel = matching(DNS1123_LABEL_PATTERN, MSG_DNS1123_LABEL, max_length=63)
    SecretKey = matching(SECRET_KEY_PATTERN, MSG_SECRET_KEY, max_length=253)
    LabelValue = matching(LABEL_VALUE_PATTERN, MSG_LABEL_VALUE, max_length=63)
    HostName = Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            json_schema_extra=validations(
                cel(
                    f"self.matches('{HOST_PATTERN}') && !self.matches('{IPV4_PATTERN}')",
                    MSG_HOST,
                )
            ),
        ),
        AfterValidator(_host),
    ]
    Multiaddr = Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            json_schema_extra=validations(
                cel("self.startsWith('/')", MSG_MULTIADDR),
                cel(f"!self.matches('{MULTIADDR_BAD_PORT}')", MSG_MULTIADDR_PORT),
            ),
        ),
        AfterValidator(_multiaddr),
    ]
    LogFilePath = Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            json_schema_extra=validations(
                cel(
                    f"self.matches('{LOG_PATH_PATTERN}') && !self.matches('{_DOT_COMPONENT}')",
                    MSG_LOG_PATH,
                ),
                cel(
                    f"self.lastIndexOf('/') > 0 && {list(MOUNTED_DIRS)!r}.all(m, "
                    f"!(m + '/').startsWith({_LOG_DIR_EXPR} + '/') && "
                    f"!({_LOG_DIR_EXPR} + '/').startsWith(m + '/'))",
                    MSG_LOG_DIR,
                ),
            ),
        ),
        AfterValidator(_log_path),
    ]
    Url = bounded(2048, min_length=1)
    Port = Annotated[int, Field(ge=1, le=65535)]


def _annotation_keys(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if len(key) > 317 or not re.fullmatch(QUALIFIED_NAME_PATTERN, key):
            raise ValueError(f"{MSG_ANNOTATION_KEY} (got {key[:80]!r})")
    return value


if TYPE_CHECKING:
    Annotations = dict[str, str]
    NodeSelector = dict[str, str]
else:
    Annotations = Annotated[
        dict[str, bounded(4096)],
        Field(
            max_length=64,
            json_schema_extra=validations(
                cel(
                    f"self.all(k, k.size() <= 317 && k.matches('{QUALIFIED_NAME_PATTERN}'))",
                    MSG_ANNOTATION_KEY,
                )
            ),
        ),
        AfterValidator(_annotation_keys),
    ]
    NodeSelector = Annotated[
        dict[str, bounded(63)],
        Field(
            max_length=32,
            json_schema_extra=validations(
                cel(
                    f"self.all(k, k.size() <= 317 && k.matches('{QUALIFIED_NAME_PATTERN}'))",
                    "nodeSelector keys must be qualified names ([prefix/]name)",
                )
            ),
        ),
    ]


_QUANTITY_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(10) ** (3 * i) for i, s in enumerate("kMGTPE", start=1)},
    **{f"{s}i": Decimal(2) ** (10 * i) for i, s in enumerate("KMGTPE", start=1)},
}


def quantity(value: str) -> Decimal:
    """A Kubernetes quantity in QUANTITY_PATTERN's form as a number (``500m`` -> 0.5)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", value)
    if match is None or match.group(2) not in _QUANTITY_SUFFIX:
        raise ValueError(f"{value!r} is not a quantity")
    return Decimal(match.group(1)) * _QUANTITY_SUFFIX[match.group(2)]


def mirror(
    source: type[BaseModel],
    name: str,
    *,
    exclude: frozenset[str] = frozenset(),
    doc: str | None = None,
    extra_schema: dict[str, Any] | None = None,
    types: dict[str, Any] | None = None,
    note: str | None = None,
) -> type[CRModel]:
    """A camelCase CR model with the fields of a node config section (minus ``exclude``).

    ``types`` replaces a field's type by a stricter one (bounds the CR adds to the node's: the
    apiserver needs every string, list and number bounded); ``note`` is appended to every
    field's description (what the operator does not act on yet)."""
    fields: dict[str, Any] = {}
    for field_name, info in source.model_fields.items():
        if field_name in exclude:
            continue
        annotation = (types or {}).get(field_name, info.annotation)
        if info.metadata:  # the node's constraints (ge, le, ...) stay
            annotation = Annotated[annotation, *info.metadata]
        # A fresh Field from the source's arguments, so that constraints and CEL rules carried
        # by a replacement ``Annotated`` type are merged in rather than shadowed.
        kwargs = {k: v for k, v in info._attributes_set.items() if k != "annotation"}
        if note:
            kwargs["description"] = f"{info.description} {note}"
        fields[field_name] = (annotation, Field(**kwargs))
    unknown = set(types or {}) - set(fields)
    if unknown:
        raise ValueError(f"mirror {name}: no such fields {sorted(unknown)}")
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


# --- references ----------------------------------------------------------------------------


class SecretKeyRef(CRModel):
    """A key in a Secret in the DchatCluster's namespace."""

    name: DnsName = Field(description="Name of the Secret (same namespace as the DchatCluster).")
    key: SecretKey = Field(description="Key inside the Secret.")


class SecretRef(CRModel):
    """A whole Secret in the DchatCluster's namespace."""

    name: DnsName = Field(description="Name of the Secret (same namespace as the DchatCluster).")


def _url_secret_doc(what: str, field: str, env: str) -> str:
    return (
        f"Secret key holding {what} (for a URL that carries an API key), instead of {field}; "
        f"mounted as a file and passed to the node as {env}_FILE. The operator cannot read the "
        "URL, so the NetworkPolicy does not open its port: list it in "
        "networkPolicy.extraEgressPorts (e.g. 443)."
    )


def _exclusive(field: str) -> dict[str, Any]:
    return cel(
        f"!has(self.{field}) || !has(self.{field}SecretRef)",
        f"{field} and {field}SecretRef are mutually exclusive: give the URL in one place",
    )


# --- the node's config sections, mirrored --------------------------------------------------
# For the type checker the mirrors are the node's classes (same snake_case attributes); at run
# time they are camelCase copies without the excluded keys, with the bounds the CR adds.

MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
MAX_RATE_LIMIT = 1_000_000
DAY = 86_400


def _le(bound: int | float, annotation: Any = int) -> Any:
    return Annotated[annotation, Field(le=bound)]


if TYPE_CHECKING:
    ServerSpec = ServerConfig
    RelaySpec = RelayConfig
    MarketplaceSpec = MarketplaceConfig
    _BridgeBase = BridgeConfig
    AccessibilitySpec = AccessibilityConfig
    LoggingSpec = LoggingConfig

    class _DatabasePool(CRModel):
        max_connections: int = 20
        statement_cache_size: int = 100
        connection_timeout_secs: float = 10
        idle_timeout_secs: float = 300

    _SecurityBase = SecurityConfig
    _ChainBase = ChainConfig
    _ObservabilityBase = ObservabilityConfig
else:
    ServerSpec = mirror(
        ServerConfig,
        "ServerSpec",
        extra_schema=validations(
            cel(
                "self.apiPort != self.metricsPort && self.apiPort != self.p2pPort && "
                "self.metricsPort != self.p2pPort",
                "server.apiPort, server.metricsPort and server.p2pPort must be distinct",
            )
        ),
        types={
            "host": bounded(253, min_length=1),
            "max_request_body_bytes": _le(MAX_REQUEST_BODY_BYTES),
        },
    )
    _ChainBase = mirror(
        ChainConfig,
        "ChainBase",
        types={
            "chat_chain_rpc": Url | None,
            "currency_chain_rpc": Url | None,
            "rpc_timeout_secs": _le(3600, float),
        },
        note=(
            "The currency chain is where the node's marketplace verifies payments; the bridge "
            "(when configured) moves funds between the two. The operator opens NetworkPolicy "
            "egress to each URL's port."
        ),
    )
    RelaySpec = mirror(
        RelayConfig,
        "RelaySpec",
        types={
            "bootstrap_nodes": Annotated[list[Multiaddr], Field(max_length=32)],
            "external_addresses": Annotated[list[Multiaddr], Field(max_length=32)],
            "nat_turn_servers": Annotated[list[bounded(512, min_length=1)], Field(max_length=16)],
        },
        note=(
            "The node runs a libp2p host on server.p2pPort (GossipSub, Noise, yamux) and the "
            "store-and-forward envelope relay (docs/relay.md). Unless bootstrapDns is given, "
            "the operator sets it to the headless Service <cluster>-p2p-peers, so the pods "
            "of a cluster find each other; NetworkPolicy egress opens the bootstrap ports. "
            "natUpnp and natTurnServers are accepted but not acted on."
        ),
    )
    _ObservabilityBase = mirror(
        ObservabilityConfig,
        "ObservabilityBase",
        types={
            "jaeger_endpoint": Url | None,
            "prometheus_pushgateway": Url | None,
            "prometheus_push_interval_secs": _le(DAY, float),
            "health_check_interval_secs": _le(DAY, float),
        },
    )
    MarketplaceSpec = mirror(
        MarketplaceConfig,
        "MarketplaceSpec",
        types={
            "cache_size": _le(10_000_000),
            "escrow_timeout_secs": _le(365 * DAY),
            "payment_confirmation_timeout_secs": _le(DAY),
        },
        doc=(
            "The node's marketplace: listings and escrowed purchases paid on the currency "
            "chain (purchases need chain.currencyChainRpc, escrowAddress and chainId)."
        ),
    )
    _BridgeBase = mirror(
        BridgeConfig,
        "BridgeBase",
        exclude=frozenset({"validator_key_path", "relayer_key_path"}),
        types={
            "transaction_timeout_secs": _le(DAY),
            "finality_proof_timeout_secs": _le(DAY),
            "validator_quorum": _le(100),
            "state_snapshot_interval": _le(1_000_000),
        },
    )
    AccessibilitySpec = mirror(
        AccessibilityConfig,
        "AccessibilitySpec",
        doc=(
            "Accessibility validation served by the node's /api/v1/accessibility routes "
            "(WCAG 2.2 contrast of theme colour pairs, keyboard shortcut conflicts, per-user "
            "preferences)."
        ),
    )
    LoggingSpec = mirror(
        LoggingConfig,
        "LoggingSpec",
        doc=(
            "Logging. JSON to stdout by default (kubectl logs); output: file writes to a "
            "writable emptyDir mounted at the file's directory."
        ),
        types={
            "file_path": LogFilePath,
            "max_file_size_mb": _le(10_240),
            "max_backups": _le(1000),
        },
    )
    _DatabasePool = mirror(
        DatabaseConfig,
        "DatabasePool",
        exclude=frozenset({"url"}),
        types={
            "statement_cache_size": _le(10_000),
            "connection_timeout_secs": _le(3600, float),
            "idle_timeout_secs": _le(DAY, float),
        },
    )
    _SecurityBase = mirror(
        SecurityConfig,
        "SecurityBase",
        exclude=frozenset({"jwt_secret", "tls_cert_path", "tls_key_path"}),
        types={
            "cors_allowed_origins": Annotated[
                list[bounded(512, min_length=1)], Field(max_length=64)
            ],
            "rate_limit_requests_per_sec": _le(MAX_RATE_LIMIT),
            "jwt_public_key_path": bounded(512, min_length=1) | None,
            "jwt_issuer": bounded(512),
            "jwt_audience": bounded(512) | None,
        },
    )


class ChainSpec(_ChainBase):
    """EVM JSON-RPC endpoints; a URL that carries an API key can come from a Secret instead."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(_exclusive("chatChainRpc"), _exclusive("currencyChainRpc")),
    )

    chat_chain_rpc_secret_ref: SecretKeyRef | None = Field(
        None,
        description=_url_secret_doc(
            "the chat chain's JSON-RPC URL", "chatChainRpc", "CHAT_CHAIN_RPC"
        ),
    )
    currency_chain_rpc_secret_ref: SecretKeyRef | None = Field(
        None,
        description=_url_secret_doc(
            "the currency chain's JSON-RPC URL", "currencyChainRpc", "CURRENCY_CHAIN_RPC"
        ),
    )

    @_model_validator(mode="after")
    def _one_source(self) -> ChainSpec:
        _check_exclusive(self, "chat_chain_rpc", "chatChainRpc")
        _check_exclusive(self, "currency_chain_rpc", "currencyChainRpc")
        return self


class ObservabilitySpec(_ObservabilityBase):
    """Tracing, metrics push and health checks; the push gateway URL can come from a Secret."""

    model_config = ConfigDict(
        **MODEL_CONFIG, json_schema_extra=validations(_exclusive("prometheusPushgateway"))
    )

    prometheus_pushgateway_secret_ref: SecretKeyRef | None = Field(
        None,
        description=_url_secret_doc(
            "the push gateway URL", "prometheusPushgateway", "PROMETHEUS_PUSHGATEWAY"
        ),
    )

    @_model_validator(mode="after")
    def _one_source(self) -> ObservabilitySpec:
        _check_exclusive(self, "prometheus_pushgateway", "prometheusPushgateway")
        return self


def _role_key_rule(role: str) -> dict[str, Any]:
    return cel(
        f"!has(self.roles) || !('{role}' in self.roles) || has(self.{role}KeySecretRef)",
        f"bridge.roles has {role}: give bridge.{role}KeySecretRef (the {role} key's Secret)",
    )


def _key_ref_doc(role: str, use: str) -> str:
    return (
        f"Secret key holding the {role}'s private key (64 hex digits, 0x optional; {use}). "
        f"Mounted read-only in the node container only, at "
        f"/etc/dchat/secrets/bridge-{role}-key/key, and named by bridge.{role}_key_path in "
        "config.toml; rotating the Secret rolls the pods. Required when roles has "
        f"{role}. Every pod of the cluster uses this one key: the cluster is one {role} "
        "(two pods sign identical attestations, RFC 6979; the contract counts a signer once)."
    )


class BridgeSpec(_BridgeBase):
    """Cross-chain bridge service (docs/bridge.md). Set paused: true to stop signing and
    submitting (it reaches the pods as a ConfigMap key, without a restart). The node's bridge
    runs when both vault addresses and the validators are set; its keys come from Secrets."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(_role_key_rule("validator"), _role_key_rule("relayer")),
    )

    validator_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description=_key_ref_doc(
            "validator",
            "it signs attestations and snapshots, its address must be listed in validators",
        ),
    )
    relayer_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description=_key_ref_doc("relayer", "it pays the gas of releases and refunds"),
    )

    @_model_validator(mode="after")
    def _roles_have_keys(self) -> BridgeSpec:
        for role in c.BRIDGE_KEY_ROLES:
            if role in self.roles and getattr(self, f"{role}_key_secret_ref") is None:
                raise ValueError(
                    f"bridge.roles has {role}: give bridge.{role}KeySecretRef "
                    f"(the {role} key's Secret)"
                )
        return self

    def node_keys(self) -> dict[str, str]:
        """bridge.<role>_key_path for each key Secret given (where the pod mounts it)."""
        return {
            f"{role}_key_path": f"{c.bridge_key_dir(role)}/{c.BRIDGE_KEY_FILE}"
            for role in c.BRIDGE_KEY_ROLES
            if getattr(self, f"{role}_key_secret_ref") is not None
        }


def _check_exclusive(model: BaseModel, field: str, wire: str) -> None:
    if getattr(model, field) is not None and getattr(model, f"{field}_secret_ref") is not None:
        raise ValueError(
            f"{wire} and {wire}SecretRef are mutually exclusive: give the URL in one place"
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
        max_length=32,
    )
    storage_class_name: DnsName | None = Field(
        None, description="StorageClass of the claim; unset uses the cluster default."
    )
    failover_delay_seconds: int = Field(
        60,
        ge=5,
        le=3600,
        description=(
            "The single SQLite pod on a node that has not reported Ready for this long is "
            "fenced: force-deleted (its kubelet cannot confirm anything any more), so the "
            "Deployment starts the replacement on a healthy node instead of waiting forever "
            "for the old pod to finish. Never while the node reports Ready. A claim on a "
            "volume pinned to that node (local storage) is deleted too when backups are on "
            "(Litestream replicates /data continuously): the new, empty claim's pod restores "
            "from the replica before it serves. Without a replica the claim is kept and the "
            "pod waits for the node (a VolumeLost Event)."
        ),
    )
    retain_on_delete: bool = Field(
        True,
        description=(
            "Keep the PersistentVolumeClaim when the DchatCluster is deleted (it carries no "
            "owner reference), so data is never lost by accident. Set false to let "
            "Kubernetes garbage-collect it with the cluster."
        ),
    )


class PatroniRef(CRModel):
    """A Patroni cluster that keeps the database highly available (Kubernetes DCS)."""

    scope: str = Field(
        min_length=1,
        max_length=50,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "Patroni's scope (cluster name). Its DCS objects live in this namespace as "
            "ConfigMaps (Patroni's kubernetes.use_endpoints false): the operator reads the "
            "leader from <scope>-leader into status.currentPrimary (every 5 s and on each "
            "reconcile) and emits a PrimaryChanged Event when it changes. The operator never "
            "promotes, demotes or writes Patroni's objects: failover is Patroni's."
        ),
    )


class ManagedPostgresSpec(CRModel):
    """A PostgreSQL cluster the operator runs itself: Patroni keeps it highly available."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            cel(
                "self.loopWaitSeconds + 2 * self.retryTimeoutSeconds <= self.ttlSeconds",
                "managed postgres: loopWaitSeconds + 2 * retryTimeoutSeconds must not exceed "
                "ttlSeconds (Patroni's rule: the leader must renew its lock before it expires)",
            ),
            cel(
                "!self.synchronous || self.instances >= 2",
                "managed postgres: synchronous mode needs at least 2 instances",
            ),
        ),
    )

    instances: int = Field(
        2,
        ge=1,
        le=9,
        description=(
            "PostgreSQL instances (a StatefulSet <cluster>-postgres): one primary, the rest "
            "streaming replicas Patroni promotes when the primary is lost."
        ),
    )
    image: str = Field(
        c.POSTGRES_IMAGE,
        description=(
            "Image with Debian's PostgreSQL 15 and Patroni (Dockerfile.postgres); runs "
            "`patroni /etc/patroni/patroni.yml` as uid 999."
        ),
        min_length=1,
        max_length=512,
        pattern=r"^[^\s]+$",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "Always",
        description="imagePullPolicy of the PostgreSQL containers (Always: a moved tag is seen).",
    )
    storage_size: str = Field(
        "10Gi",
        description="Size of each instance's PersistentVolumeClaim (data-<cluster>-postgres-N).",
        pattern=QUANTITY_PATTERN,
        max_length=32,
    )
    storage_class_name: DnsName | None = Field(
        None, description="StorageClass of the claims; unset uses the cluster default."
    )
    synchronous: bool = Field(
        False,
        description=(
            "Patroni's synchronous_mode: a commit is acknowledged only once a replica has it, "
            "so a failover loses no acknowledged write (RPO 0); writes wait while no replica "
            "is in sync. Off: asynchronous replication, a failover may lose the last writes."
        ),
    )
    ttl_seconds: int = Field(
        20,
        ge=20,
        le=300,
        description=(
            "Patroni's leader lock TTL (bootstrap.dcs.ttl; Patroni's minimum is 20): a "
            "primary that stops renewing its lock is replaced about this long after."
        ),
    )
    loop_wait_seconds: int = Field(
        2, ge=1, le=60, description="Patroni's HA loop interval (bootstrap.dcs.loop_wait)."
    )
    retry_timeout_seconds: int = Field(
        5,
        ge=1,
        le=120,
        description="Patroni's timeout for DCS and PostgreSQL operations (retry_timeout).",
    )
    resources: ResourcesSpec = Field(
        default_factory=lambda: ResourcesSpec(
            requests=ResourceList(cpu="250m", memory="256Mi"),
            limits=ResourceList(cpu="2", memory="1Gi"),
        ),
        description="Requests and limits of each PostgreSQL container.",
    )
    retain_on_delete: bool = Field(
        True,
        description=(
            "Keep the instances' claims and the generated <cluster>-postgres Secret (the "
            "passwords that open them) when the DchatCluster is deleted. False: both go "
            "with the cluster."
        ),
    )

    @_model_validator(mode="after")
    def _patroni_rules(self) -> ManagedPostgresSpec:
        if self.loop_wait_seconds + 2 * self.retry_timeout_seconds > self.ttl_seconds:
            raise ValueError(
                "managed postgres: loopWaitSeconds + 2 * retryTimeoutSeconds must not exceed "
                "ttlSeconds (Patroni's rule: the leader must renew its lock before it expires)"
            )
        if self.synchronous and self.instances < 2:
            raise ValueError("managed postgres: synchronous mode needs at least 2 instances")
        return self


class PostgresSpec(CRModel):
    """PostgreSQL: credentials only through Secrets, never in the spec or the ConfigMap."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            cel(
                "has(self.primary) != has(self.managed)",
                "database.postgres needs exactly one of primary (your own PostgreSQL, its URL "
                "in a Secret) or managed (the operator runs PostgreSQL with Patroni)",
            ),
            cel(
                "!has(self.managed) || !has(self.patroni)",
                "database.postgres.patroni names an external Patroni cluster; a managed one "
                "is found by the operator (scope <cluster>-postgres)",
            ),
        ),
    )

    primary: SecretKeyRef | None = Field(
        None,
        description=(
            "Your own PostgreSQL: the Secret key holding the full primary URL, "
            "postgresql://<user>:<password>@<host>:5432/<db>; "
            "it is mounted as a file and reaches the node as DATABASE_URL_FILE. For a highly "
            "available database name every host and ask for the writable one: "
            "postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write; the node "
            "then follows a promotion without a restart. Exactly one of primary and managed."
        ),
    )
    managed: ManagedPostgresSpec | None = Field(
        None,
        description=(
            "Run PostgreSQL in this namespace: a StatefulSet of Patroni members (Kubernetes "
            "API as Patroni's store), Services <cluster>-postgres-rw (the primary) and "
            "-ro (replicas), and a generated Secret <cluster>-postgres with the passwords "
            "and the node's URL. status.currentPrimary follows Patroni's leader."
        ),
    )
    patroni: PatroniRef | None = Field(
        None, description="The Patroni cluster behind the database, for status.currentPrimary."
    )
    standbys: list[SecretKeyRef] = Field(
        default_factory=list,
        description=(
            "Secret keys holding the URLs of streaming-replication standbys (failover). Not "
            "acted on yet: the operator checks that the Secrets exist, but does not give them "
            "to the pods (failover is a later release)."
        ),
        max_length=8,
    )
    port: int = Field(
        5432, ge=1, le=65535, description="TCP port the NetworkPolicy allows towards PostgreSQL."
    )

    @_model_validator(mode="after")
    def _one_source(self) -> PostgresSpec:
        if (self.primary is None) == (self.managed is None):
            raise ValueError(
                "database.postgres needs exactly one of primary (your own PostgreSQL, its URL "
                "in a Secret) or managed (the operator runs PostgreSQL with Patroni)"
            )
        if self.managed is not None and self.patroni is not None:
            raise ValueError(
                "database.postgres.patroni names an external Patroni cluster; a managed one "
                "is found by the operator (scope <cluster>-postgres)"
            )
        return self


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
        max_length=512,
        pattern=r"^[^\s]+$",
    )
    digest: str | None = Field(
        None,
        description=(
            "Pin the image by content: sha256:<64 hex>. The image becomes "
            "<repository>:<version>@<digest>."
        ),
        pattern=r"^sha256:[a-f0-9]{64}$",
        max_length=71,
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

    pull_secrets: list[DnsName] = Field(
        default_factory=list,
        description="Names of imagePullSecrets for private registries.",
        max_length=16,
    )


class ResourceList(CRModel):
    """CPU and memory quantities."""

    cpu: str | None = Field(
        None, description="CPU, e.g. 500m or 2.", pattern=QUANTITY_PATTERN, max_length=32
    )
    memory: str | None = Field(
        None, description="Memory, e.g. 512Mi or 2Gi.", pattern=QUANTITY_PATTERN, max_length=32
    )


def _not_above(kind: str) -> dict[str, Any]:
    return cel(
        f"!has(self.requests.{kind}) || !has(self.limits.{kind}) || "
        f"quantity(self.requests.{kind}).compareTo(quantity(self.limits.{kind})) <= 0",
        f"resources.requests.{kind} must not be above resources.limits.{kind}",
    )


class ResourcesSpec(CRModel):
    """Requests and limits of the node container (the guide's values by default)."""

    model_config = ConfigDict(
        **MODEL_CONFIG, json_schema_extra=validations(_not_above("cpu"), _not_above("memory"))
    )

    requests: ResourceList = Field(
        default=ResourceList(cpu="1", memory="1Gi"),
        description="Guaranteed resources; the scheduler places pods by these.",
    )
    limits: ResourceList = Field(
        default=ResourceList(cpu="2", memory="2Gi"),
        description="Upper bounds; memory over the limit kills the container.",
    )

    @_model_validator(mode="after")
    def _requests_within_limits(self) -> ResourcesSpec:
        for kind in ("cpu", "memory"):
            request = getattr(self.requests, kind)
            limit = getattr(self.limits, kind)
            if request is not None and limit is not None and quantity(request) > quantity(limit):
                raise ValueError(
                    f"resources.requests.{kind} must not be above resources.limits.{kind}"
                )
        return self


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
    annotations: Annotations = Field(
        default_factory=dict,
        description=(
            "Annotations of the P2P Service (e.g. cloud load balancer settings); at most 64, "
            "values up to 4096 characters."
        ),
    )


class IngressSpec(CRModel):
    """HTTPS entry to the API port through an Ingress controller."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            cel(
                "!has(self.annotations) || self.annotations.all(k, !k.endsWith('-snippet'))",
                MSG_SNIPPET,
                ".annotations",
            )
        ),
    )

    enabled: bool = Field(False, description="Create an Ingress for the API.")
    host: HostName | None = Field(
        None,
        description=(
            "Public host name, e.g. api.dchat.dev (RFC 1123, lowercase); a wildcard only as a "
            "whole first label, *.dchat.dev, and then the certificate needs an issuer that "
            "can solve DNS-01."
        ),
    )
    class_name: DnsName | None = Field(
        None, description="ingressClassName, e.g. nginx; unset uses the cluster default."
    )
    tls_secret_name: DnsName | None = Field(
        None,
        description=(
            "Secret holding the certificate for host; with clusterIssuer set, cert-manager "
            "creates it. Defaults to <name>-ingress-tls."
        ),
    )
    cluster_issuer: DnsName | None = Field(
        None, description="cert-manager ClusterIssuer that issues the certificate."
    )
    annotations: Annotations = Field(
        default_factory=dict,
        description=(
            "Extra annotations for the Ingress controller; at most 64, values up to 4096 "
            "characters; keys ending in -snippet (configuration snippets) are refused."
        ),
    )

    @field_validator("annotations")
    @classmethod
    def _no_snippets(cls, value: dict[str, str]) -> dict[str, str]:
        if any(key.endswith("-snippet") for key in value):
            raise ValueError(MSG_SNIPPET)
        return value


MSG_KMS_KEY = "backup.s3.kmsKeyId needs backup.s3.sse: aws:kms"


class S3Target(CRModel):
    """An S3 (or S3-compatible) location. The operator never reads the credentials: the pods
    that back up (Jobs, the Litestream sidecar) get them from the Secret."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            cel("!has(self.kmsKeyId) || (has(self.sse) && self.sse == 'aws:kms')", MSG_KMS_KEY)
        ),
    )

    bucket: str = Field(description="Bucket name.", min_length=3, max_length=63)
    prefix: str = Field(
        "dchat/",
        description=(
            "Key prefix; a cluster's backups are written under <prefix><namespace>/<cluster>/ "
            "(Litestream's replica under <prefix><namespace>/<cluster>/litestream)."
        ),
        max_length=1024,
    )
    region: str = Field("us-east-1", description="Bucket region.", max_length=64)
    endpoint: Url | None = Field(
        None,
        description=(
            "Endpoint URL of an S3-compatible service; unset uses AWS. When set, Litestream "
            "uses path-style addressing."
        ),
    )
    credentials_secret_ref: SecretRef = Field(
        description=(
            "Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the bucket: "
            "mounted as files into backup Jobs, and given as environment variables to the "
            "Litestream sidecar (SQLite)."
        )
    )
    sse: Literal["AES256", "aws:kms"] | None = Field(
        None,
        description=(
            "Server-side encryption of backup objects written by backup Jobs "
            "(DCHAT_BACKUP_SSE); unset leaves the bucket's default."
        ),
    )
    kms_key_id: str | None = Field(
        None,
        description="KMS key for sse: aws:kms (DCHAT_BACKUP_KMS_KEY_ID); unset uses the AWS key.",
        min_length=1,
        max_length=2048,
    )

    @_model_validator(mode="after")
    def _kms_needs_sse(self) -> S3Target:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError(MSG_KMS_KEY)
        return self


class RetentionSpec(CRModel):
    """Which scheduled backups are kept. Applied after each scheduled backup finishes (and on
    every schedule reconcile) to the DchatBackups the schedule made; on-demand backups are
    never deleted by retention. The newest Completed backup is never deleted."""

    keep_last: int = Field(
        7,
        ge=1,
        le=1000,
        description=(
            "Keep the newest keepLast finished scheduled backups; older ones are deleted "
            "(their S3 objects first)."
        ),
    )
    max_age_days: int = Field(
        30,
        ge=1,
        le=3650,
        description=(
            "Delete finished scheduled backups created more than this many days ago, even "
            "within keepLast."
        ),
    )


class BackupSpec(CRModel):
    """Backups to S3: a DchatBackup on every cron time of the schedule (made and watched by
    the operator), retention, and for SQLite continuous replication by a Litestream sidecar."""

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

    enabled: bool = Field(
        False,
        description=(
            "Take scheduled backups (a DchatBackup named <cluster>-<yyyymmddhhmmss> at each "
            "cron time) and, for SQLite, run the Litestream sidecar; opens NetworkPolicy "
            "egress to the S3 endpoint."
        ),
    )
    suspend: bool = Field(
        False,
        description=(
            "Stop creating scheduled backups (retention and status still run; the Litestream "
            "sidecar keeps replicating)."
        ),
    )
    schedule: str = Field(
        "0 3 * * *",
        description=(
            "Cron expression (5 fields, or @daily/@hourly/...) in UTC. After operator "
            "downtime that missed several times, one backup is taken, not one per time."
        ),
        pattern=CRON_PATTERN,
        max_length=100,
    )
    s3: S3Target | None = Field(
        None,
        description=(
            "Where backups go; also needed for on-demand DchatBackups of this cluster and "
            "restores from its backups."
        ),
    )
    retention: RetentionSpec = Field(
        default_factory=RetentionSpec, description="Which scheduled backups are kept."
    )
    verify_every: int = Field(
        1,
        ge=0,
        le=1000,
        description=(
            "Every verifyEvery-th scheduled backup is verified after it completes (a verify "
            "Job: `dchat backup verify`); 1 verifies each one, 0 none."
        ),
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


MSG_BOOTSTRAP_S3 = "bootstrap.fromBackup needs backup.s3 (where the backup is read from)"
MSG_BOOTSTRAP_IMMUTABLE = "spec.bootstrap cannot change after the cluster is created"


class FromBackup(CRModel):
    """The backup a new cluster starts from."""

    name: DnsName = Field(
        description=(
            "Name of the backup (a DchatBackup in this namespace, which must be Completed when "
            "it exists); its objects are read with this cluster's backup.s3 settings (same "
            "bucket and credentials)."
        )
    )
    cluster: DnsLabel | None = Field(
        None,
        description=(
            "The cluster that made the backup (its objects are under "
            "<s3.prefix><namespace>/<cluster>/); default: the DchatBackup's spec.cluster. "
            "Needed when no DchatBackup of that name exists here (restoring into another "
            "Kubernetes cluster from the same bucket)."
        ),
    )


class BootstrapSpec(CRModel):
    """How a new cluster's database starts."""

    from_backup: FromBackup | None = Field(
        None,
        description=(
            "Restore this backup before the node pods start: the Deployment stays at 0 "
            "replicas until a restore Job (`dchat backup restore`) succeeded into the empty "
            "database (PostgreSQL) or the new volume (SQLite); status.bootstrap says where it "
            "is. Set at creation only."
        ),
    )


MAX_SURGE_PERCENT = "^(0|[1-9][0-9]{0,2})%$"
MAX_UNAVAILABLE_PERCENT = "^(0|[1-9][0-9]?|100)%$"
MSG_MAX_SURGE = "rollout.maxSurge must be a number from 0 to 1000 or a percentage such as 25%"
MSG_MAX_UNAVAILABLE = (
    "rollout.maxUnavailable must be a number from 0 to 1000 or a percentage from 0% to 100%"
)
MSG_ROLLOUT_ZERO = (
    "rollout.maxSurge and rollout.maxUnavailable cannot both be 0: the rollout could never "
    "replace a pod"
)
MSG_PROGRESS_DEADLINE = "rollout.progressDeadlineSeconds must be above rollout.minReadySeconds"


def _int_or_percent(field: str, percent: str, message: str) -> dict[str, Any]:
    return cel(
        f"type(self.{field}) == int ? (self.{field} >= 0 && self.{field} <= 1000) : "
        f"string(self.{field}).matches('{percent}')",
        message,
        f".{field}",
    )


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class RolloutAnalysis(CRModel):
    """The soak window after a rollout: the operator reads the new pods' own /metrics."""

    soak_seconds: int = Field(
        0,
        ge=0,
        le=DAY,
        description=(
            "After every replica of a new revision is updated and available, the operator "
            "reads each pod's /metrics (the metrics port, by pod IP; no Prometheus needed) "
            "every intervalSeconds for this long, and records the revision as "
            "status.lastGoodRevision only when the window passes. failureLimit failed checks "
            "roll it back to the last good revision (Degraded/RolledBack). 0 (the default) "
            "turns the soak off: a revision is good once its pods are available. A change of "
            "replicas alone is never soaked. The metrics port must admit the operator "
            "(networkPolicy.metricsFromNamespaces lists its namespace when set)."
        ),
    )
    interval_seconds: int = Field(
        30, ge=2, le=3600, description="Time between two checks of the soak window."
    )
    max_error_ratio: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "A check fails when more than this fraction of the API requests the new pods "
            "served since the previous check answered 5xx (dchat_http_requests_total)."
        ),
    )
    max_p99_latency_ms: int = Field(
        500,
        ge=1,
        le=600_000,
        description=(
            "A check fails when the p99 latency of those requests "
            "(dchat_http_request_duration_seconds) is above this."
        ),
    )
    min_requests: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description=(
            "A check with fewer requests than this judges neither ratio nor latency (too few "
            "to tell); it passes unless a pod's metrics could not be read."
        ),
    )
    failure_limit: int = Field(
        2,
        ge=1,
        le=100,
        description="Failed checks (not necessarily in a row) that roll the revision back.",
    )


class RolloutSpec(CRModel):
    """How a new version or config reaches the pods (PostgreSQL mode; SQLite uses Recreate)."""

    model_config = ConfigDict(
        **MODEL_CONFIG,
        json_schema_extra=validations(
            _int_or_percent("maxSurge", MAX_SURGE_PERCENT, MSG_MAX_SURGE),
            _int_or_percent("maxUnavailable", MAX_UNAVAILABLE_PERCENT, MSG_MAX_UNAVAILABLE),
            cel(
                "!(string(self.maxSurge) in ['0', '0%'] && "
                "string(self.maxUnavailable) in ['0', '0%'])",
                MSG_ROLLOUT_ZERO,
            ),
            cel(
                "self.progressDeadlineSeconds > self.minReadySeconds",
                MSG_PROGRESS_DEADLINE,
                ".progressDeadlineSeconds",
            ),
        ),
    )

    max_surge: int | str = Field(
        1,
        description=(
            "Extra pods allowed during a rolling update: a number (0-1000) or a percentage "
            "(25%). maxSurge and maxUnavailable cannot both be 0."
        ),
    )
    max_unavailable: int | str = Field(
        0,
        description=(
            "Pods that may be unavailable during a rolling update: a number (0-1000) or a "
            "percentage (0%-100%)."
        ),
    )
    progress_deadline_seconds: int = Field(
        600,
        ge=10,
        le=DAY,
        description=(
            "A rollout with no progress for this long (pods that never turn Ready or keep "
            "crashing) is rolled back by the operator to status.lastGoodRevision "
            "(Degraded/RolledBack until the spec changes), or reported Degraded/RolloutStalled "
            "when there is no earlier good revision; above minReadySeconds."
        ),
    )
    min_ready_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="A new pod must be Ready this long before it counts as available.",
    )

    paused: bool = Field(
        False,
        description=(
            "Hold rollouts: spec changes are applied to the Deployment but its pods are not "
            "replaced until this is false again (the Deployment's own pause, as `kubectl "
            "rollout pause`). The progress deadline and the soak window do not run meanwhile."
        ),
    )
    analysis: RolloutAnalysis = Field(
        default_factory=RolloutAnalysis,
        description="The soak window that checks a new revision's error ratio and latency.",
    )

    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number or a percentage, not a boolean")
        return value

    @_model_validator(mode="after")
    def _valid_rollout(self) -> RolloutSpec:
        for value, percent, message in (
            (self.max_surge, MAX_SURGE_PERCENT, MSG_MAX_SURGE),
            (self.max_unavailable, MAX_UNAVAILABLE_PERCENT, MSG_MAX_UNAVAILABLE),
        ):
            valid = 0 <= value <= 1000 if isinstance(value, int) else re.fullmatch(percent, value)
            if not valid:
                raise ValueError(message)
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            raise ValueError(MSG_ROLLOUT_ZERO)
        if self.progress_deadline_seconds <= self.min_ready_seconds:
            raise ValueError(MSG_PROGRESS_DEADLINE)
        return self


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
        "15s",
        description="ServiceMonitor scrape interval.",
        pattern=r"^[0-9]+(ms|s|m|h)$",
        max_length=16,
    )


class SchedulingSpec(CRModel):
    """Where pods run. Fields take the Kubernetes Pod spec types verbatim."""

    affinity: dict[str, Any] | None = Field(
        None,
        description=(
            "Pod affinity (core/v1 Affinity). Unset: prefer spreading pods across nodes "
            "(anti-affinity on kubernetes.io/hostname)."
        ),
        max_length=3,
    )
    tolerations: list[Annotated[dict[str, Any], Field(max_length=5)]] = Field(
        default_factory=list,
        description="Pod tolerations (core/v1 Toleration); at most 32.",
        max_length=32,
    )
    topology_spread_constraints: list[Annotated[dict[str, Any], Field(max_length=16)]] = Field(
        default_factory=list,
        description=(
            "Pod topology spread constraints (core/v1); labelSelector defaults to the pods of "
            "this cluster when omitted. At most 8."
        ),
        max_length=8,
    )
    node_selector: NodeSelector = Field(
        default_factory=dict, description="Pod nodeSelector; at most 32 labels."
    )
    priority_class_name: DnsName | None = Field(None, description="Pod priorityClassName.")
    node_lost_toleration_seconds: int = Field(
        30,
        ge=0,
        le=3600,
        description=(
            "How long a pod stays bound to a node that went NotReady or unreachable before "
            "Kubernetes evicts it and the Deployment replaces it on a healthy node: the "
            "tolerationSeconds of the node.kubernetes.io/not-ready and /unreachable NoExecute "
            "taints (Kubernetes' own default is 300). A lost node's pods are replaced after "
            "the node-monitor grace period (40-50 s) plus this. Tolerations of those keys in "
            "scheduling.tolerations win."
        ),
    )


class DisruptionSpec(CRModel):
    """PodDisruptionBudget (created when replicas > 1)."""

    enabled: bool = Field(True, description="Create a PodDisruptionBudget when replicas > 1.")
    max_unavailable: int = Field(
        1, ge=1, le=100, description="Pods a voluntary disruption (drain) may take down at once."
    )


class NetworkPolicySpec(CRModel):
    """A NetworkPolicy that denies everything except the flows dchat needs."""

    enabled: bool = Field(True, description="Create the NetworkPolicy.")
    extra_egress_ports: list[Port] = Field(
        default_factory=list,
        description=(
            "Extra TCP ports (1-65535) the pods may connect to (anywhere). Needed for an "
            "endpoint whose URL comes from a Secret (chain.*SecretRef, "
            "observability.prometheusPushgatewaySecretRef): the operator cannot derive its port."
        ),
        max_length=32,
    )
    metrics_from_namespaces: list[DnsLabel] = Field(
        default_factory=list,
        description="Namespaces allowed to scrape the metrics port; empty allows any namespace.",
        max_length=32,
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
                cel(
                    "!has(self.bootstrap.fromBackup) || has(self.backup.s3)",
                    MSG_BOOTSTRAP_S3,
                    ".bootstrap.fromBackup",
                ),
                cel("self.bootstrap == oldSelf.bootstrap", MSG_BOOTSTRAP_IMMUTABLE, ".bootstrap"),
            ]
        },
    )

    version: LabelValue = Field(
        "0.1.0",
        description=(
            "dchat version to run; the image tag and the app.kubernetes.io/version label, so "
            "a valid label value (at most 63 characters, alphanumeric at both ends)."
        ),
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
    chain: ChainSpec = Field(
        default_factory=ChainSpec,
        description=(
            "Chain JSON-RPC endpoints: the currency chain verifies marketplace payments; both "
            "are the bridge's chains when it is configured. The URLs open NetworkPolicy egress."
        ),
    )
    relay: RelaySpec = Field(
        default_factory=RelaySpec,
        description=(
            "libp2p relay network and the envelope relay (the node's /api/v1/relay routes)."
        ),
    )
    observability: ObservabilitySpec = Field(
        default_factory=ObservabilitySpec, description="Tracing, metrics push, health checks."
    )
    marketplace: MarketplaceSpec = Field(
        default_factory=MarketplaceSpec,
        description=(
            "Marketplace service: listings and escrowed purchases paid on the currency chain."
        ),
    )
    bridge: BridgeSpec = Field(
        default_factory=BridgeSpec,
        description=(
            "Bridge service, its keys and its pause switch (docs/bridge.md). The node's "
            "bridge runs when its vault addresses and validators are configured; the "
            "validator and relayer keys come from Secrets (validatorKeySecretRef, "
            "relayerKeySecretRef) mounted in the node container."
        ),
    )
    accessibility: AccessibilitySpec = Field(
        default_factory=AccessibilitySpec,
        description=(
            "Accessibility validation: WCAG 2.2 contrast checks (AA, or AAA in strict mode), "
            "keyboard shortcut conflict checks, per-user preferences (the node's "
            "/api/v1/accessibility routes)."
        ),
    )
    logging: LoggingSpec = Field(default_factory=LoggingSpec, description="Log level and format.")
    security: SecuritySpec = Field(
        default_factory=SecuritySpec, description="TLS, JWT, CORS, rate limiting."
    )
    p2p: P2PSpec = Field(default_factory=P2PSpec, description="Exposure of the P2P port.")
    ingress: IngressSpec = Field(default_factory=IngressSpec, description="HTTPS Ingress.")
    backup: BackupSpec = Field(
        default_factory=BackupSpec,
        description=(
            "Backups to S3: schedule, target, retention, verification; for SQLite, "
            "continuous replication (Litestream)."
        ),
    )
    bootstrap: BootstrapSpec = Field(
        default_factory=BootstrapSpec,
        description="How the database of a new cluster starts (empty, or from a backup).",
    )
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
        if self.bootstrap.from_backup is not None and self.backup.s3 is None:
            raise ValueError(MSG_BOOTSTRAP_S3)
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
        chain: dict[str, Any] = self.chain.model_dump(
            exclude={"chat_chain_rpc_secret_ref", "currency_chain_rpc_secret_ref"}
        )
        observability: dict[str, Any] = self.observability.model_dump(
            exclude={"prometheus_pushgateway_secret_ref"}
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
                "chain": chain,
                "relay": self.relay.model_dump(),
                "observability": observability,
                "marketplace": self.marketplace.model_dump(),
                "bridge": {
                    **self.bridge.model_dump(
                        exclude={"validator_key_secret_ref", "relayer_key_secret_ref"}
                    ),
                    **self.bridge.node_keys(),
                },
                "accessibility": self.accessibility.model_dump(),
                "logging": self.logging.model_dump(),
                "security": security,
            }
        )


ROOT_VALIDATIONS: list[dict[str, Any]] = [
    cel("self.metadata.name.size() <= 52", MSG_CLUSTER_NAME_LENGTH),
    cel(f"self.metadata.name.matches('{DNS1035_LABEL_PATTERN}')", MSG_CLUSTER_NAME),
]
"""CEL rules on the whole object (the cluster's name), for the root of the CRD's schema;
``ObjectMeta`` checks the same in the model."""


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(max_length=52)
    namespace: str = "default"

    @field_validator("name")
    @classmethod
    def _dns1035(cls, value: str) -> str:
        if not re.fullmatch(DNS1035_LABEL_PATTERN, value):
            raise ValueError(MSG_CLUSTER_NAME)
        return value

    uid: str = ""
    generation: int = 0
    resource_version: str = Field("", alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)


class Condition(CRModel):
    """A status condition (Kubernetes metav1.Condition shape)."""

    type: str = Field(description="Condition type (e.g. Ready, BackupHealthy).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(0, description="metadata.generation this is based on.")


class LastBackup(CRModel):
    """A DchatBackup of this cluster, as the backup schedule controller last saw it."""

    name: str = Field(description="DchatBackup name.")
    phase: str = Field("", description="Its phase: Pending, Running, Completed or Failed.")
    time: str = Field(
        description="When it completed (RFC 3339); its start or creation time before that."
    )
    location: str = Field("", description="s3:// location of the backup, once known.")


class BackupScheduleStatus(CRModel):
    """Bookkeeping of the backup schedule (written by the backup schedule controller)."""

    schedule: str = Field("", description="The cron expression the times below were computed from.")
    since: str = Field("", description="When the operator started following this schedule.")
    last_schedule_time: str | None = Field(
        None, description="Cron time of the last scheduled backup created."
    )
    next_schedule_time: str | None = Field(
        None, description="Cron time at which the next scheduled backup will be created."
    )
    scheduled: int = Field(
        0, description="Scheduled backups created so far (verifyEvery counts these)."
    )


class RestoreHold(CRModel):
    """A restore that holds the cluster at 0 replicas (written by the restore controller)."""

    name: str = Field(description="The DchatRestore.")
    since: str = Field("", description="When the hold started (RFC 3339).")


class BootstrapStatus(CRModel):
    """Progress of spec.bootstrap.fromBackup (written by the restore controller)."""

    phase: Literal["Pending", "Restoring", "Completed", "Failed"] = Field(
        "Pending", description="Completed releases the pods; Failed keeps them at 0."
    )
    backup: str = Field("", description="The DchatBackup restored.")
    job: str | None = Field(None, description="The restore Job.")
    error: str | None = Field(None, description="Why it failed or waits.")
    verified: bool | None = Field(None, description="The node's verification after restore.")
    completed_at: str | None = Field(None, description="When the restore completed.")


class GoodRevision(CRModel):
    """The newest spec whose rollout completed with every replica Ready (cluster controller)."""

    version: str = Field(description="spec.version of that revision.")
    generation: int = Field(description="metadata.generation of that revision.")
    completed_at: str = Field("", description="When its rollout completed (RFC 3339).")
    spec: str = Field(
        description=(
            "That spec as JSON, replicas left out (scaling is never rolled back): what an "
            "automatic rollback applies."
        )
    )


class Rollback(CRModel):
    """An automatic rollback in force: the pods run lastGoodRevision instead of the spec."""

    from_version: str = Field(description="The version that did not roll out.")
    from_generation: int = Field(
        description="Its metadata.generation: the rollback holds until the spec changes."
    )
    to_version: str = Field(description="The version of the revision rolled back to.")
    to_generation: int = Field(description="The generation of the revision rolled back to.")
    reason: str = Field(description="Why the rollout failed.")
    at: str = Field(description="When the operator rolled back (RFC 3339).")


class RollbackRequest(CRModel):
    """A handled value of the rollback-request annotation."""

    value: str = Field(description="The annotation's value.")
    at: str = Field(description="When the operator handled it (RFC 3339).")
    result: str = Field(description="What it did: rolled back to which revision, or why not.")


class CurrentPrimary(CRModel):
    """Who Patroni says is the primary."""

    name: str = Field("", description="The leader member's name; empty while there is none.")
    since: str = Field(description="When the operator first saw this leader (RFC 3339).")
    transitions: str = Field("", description="Patroni's count of leader changes.")


class Switchover(CRModel):
    """A handled value of the switchover-request annotation and how it went."""

    request: str = Field(
        description=(
            "The annotation's value: the member asked to be primary (``<member>@<anything>`` "
            "names the member before the @)."
        )
    )
    phase: Literal["Running", "Completed", "Failed"] = Field(
        description="Running: asked of Patroni, waiting for the new leader; then the result."
    )
    from_member: str = Field(
        "", alias="from", description="The primary when the request was handled."
    )
    started_at: str = Field(description="When the operator handled the request (RFC 3339).")
    finished_at: str = Field("", description="When it completed or failed (RFC 3339).")
    message: str = Field("", description="What happened, or why not.")


class SoakCheck(CRModel):
    """One check of the soak window."""

    at: str = Field(description="When (RFC 3339).")
    passed: bool = Field(description="Whether the check passed.")
    pods: int = Field(0, description="Pods whose /metrics were read.")
    requests: int = Field(0, description="API requests they served since the previous check.")
    error_ratio: str = Field("", description="Fraction of those answered 5xx.")
    p99_ms: str = Field("", description="Their p99 latency in ms (bucket interpolation).")
    message: str = Field("", description="What failed, or why nothing was judged.")


class Soak(CRModel):
    """The soak window of the revision that is rolling out (cluster controller)."""

    generation: int = Field(description="metadata.generation being soaked.")
    version: str = Field(description="Its spec.version.")
    started_at: str = Field(description="When its pods were all available (RFC 3339).")
    checks: int = Field(0, description="Checks made.")
    failed_checks: int = Field(0, description="Checks failed.")
    last_check: SoakCheck | None = Field(None, description="The newest check.")


class RolloutRecord(CRModel):
    """One entry of status.rolloutHistory."""

    generation: int = Field(description="metadata.generation rolled out.")
    version: str = Field(description="spec.version rolled out.")
    result: Literal["Completed", "RolledBack"] = Field(description="How it ended.")
    at: str = Field(description="When (RFC 3339).")
    message: str = Field("", description="Why, for a rollback.")


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
    last_good_revision: GoodRevision | None = Field(
        None, description="The newest revision that rolled out completely (rollback target)."
    )
    previous_good_revision: GoodRevision | None = Field(
        None,
        description=(
            "The good revision lastGoodRevision replaced (a change of replicas alone does not "
            "count): the target of a rollback request when the current spec is the good one."
        ),
    )
    rollback_request: RollbackRequest | None = Field(
        None,
        description=(
            "The last value of the annotation dchat.dev/rollback-request the operator handled, "
            "and what it did: a request is acted on once per value."
        ),
    )
    rollback: Rollback | None = Field(
        None,
        description=(
            "Set when a rollout stalled (progress deadline exceeded), failed its soak window or "
            "a rollback was requested, and the operator went back to a good revision; kept, "
            "and the spec not tried again, until the spec changes."
        ),
    )
    current_primary: CurrentPrimary | None = Field(
        None,
        description="The PostgreSQL primary per Patroni's leader (database.postgres.patroni).",
    )
    switchover: Switchover | None = Field(
        None,
        description=(
            "The last switchover requested with the annotation dchat.dev/switchover-request "
            "(database.postgres.patroni): once per value, Patroni demotes the primary and "
            "promotes the named healthy standby; <member>@<anything> asks again for a member "
            "asked for before."
        ),
    )
    soak: Soak | None = Field(
        None,
        description=(
            "While a new revision is in its soak window (spec.rollout.analysis): its checks "
            "so far. Removed when the revision is recorded good or rolled back."
        ),
    )
    rollout_history: list[RolloutRecord] = Field(
        default_factory=list,
        max_length=10,
        description="The last 10 rollouts: completed, or rolled back and why.",
    )
    last_backup: LastBackup | None = Field(
        None, description="The most recently created DchatBackup of this cluster."
    )
    last_successful_backup: LastBackup | None = Field(
        None, description="The most recently completed DchatBackup of this cluster."
    )
    first_recoverability_point: str | None = Field(
        None, description="completedAt of the oldest Completed DchatBackup of this cluster."
    )
    backup_schedule: BackupScheduleStatus | None = Field(
        None, description="Times of the backup schedule."
    )
    restore_in_progress: RestoreHold | None = Field(
        None, description="Set while a DchatRestore holds the cluster at 0 replicas."
    )
    bootstrap: BootstrapStatus | None = Field(
        None, description="Progress of spec.bootstrap.fromBackup."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready, Progressing and Degraded (the cluster controller); BackupHealthy, "
            "BackupVerified and ContinuousArchiving (the backup schedule controller)."
        ),
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
