"""config.toml for the node, rendered through the node's own config model.

Design: ``DchatClusterSpec.to_node_config`` builds a ``dchat_node.config.NodeConfig`` and
``dchat_node.config.render_toml`` writes what differs from the node's defaults (so an
older node image never meets a key it does not know, and a new default rolls no pods;
secrets are never part of the model: the
database URL of PostgreSQL mode, the JWT key, and chain RPC or push gateway URLs given as
Secret references reach the pod as files mounted from Secrets, named by ``<VAR>_FILE``, which
the node reads like the variable itself). ``secret_files`` lists those files (the workload
mounts them); ``secret_references`` lists every Secret key the pods need (the controller
checks they exist). The checksum covers the file and the Secret references, and goes on the
pod template so a change rolls the pods.
"""

from __future__ import annotations

from dataclasses import dataclass

from dchat_node.config import NodeConfig, render_toml
from dchat_operator.api import constants as c
from dchat_operator.api.models import DatabaseEngine, DchatCluster, SecretKeyRef
from dchat_operator.builders import litestream
from dchat_operator.builders import postgres as pg
from dchat_operator.builders.common import Obj, digest, metadata, names

SECRETS_DIR = c.SECRETS_DIR
BRIDGE_PAUSED_KEY = "bridge-paused"
URL_FILE = "url"


@dataclass(frozen=True)
class SecretFile:
    """One Secret key mounted as a file; the node gets its path as ``<env>_FILE``, or from
    config.toml when ``env`` is None (the bridge keys)."""

    volume: str
    ref: SecretKeyRef
    directory: str
    file: str
    env: str | None

    @property
    def path(self) -> str:
        return f"{self.directory}/{self.file}"


def database_url_ref(cluster: DchatCluster) -> SecretKeyRef | None:
    """Where the node's PostgreSQL URL is: the user's Secret, or the one the operator
    generates for managed PostgreSQL; None in SQLite mode."""
    postgres = cluster.spec.database.postgres
    if cluster.spec.database.engine != DatabaseEngine.postgres or postgres is None:
        return None
    if postgres.primary is not None:
        return postgres.primary
    return SecretKeyRef(name=pg.secret_name(cluster), key=pg.URL_KEY)


def secret_files(cluster: DchatCluster) -> list[SecretFile]:
    """The Secret keys the node reads as files, in mount order."""
    spec = cluster.spec
    files: list[SecretFile] = []
    url = database_url_ref(cluster)
    if url is not None:
        files.append(SecretFile("database", url, c.DB_SECRET_DIR, c.DB_URL_FILE, "DATABASE_URL"))
    if spec.security.jwt_secret_ref is not None:
        files.append(
            SecretFile("jwt", spec.security.jwt_secret_ref, c.JWT_DIR, c.JWT_FILE, "JWT_SECRET")
        )
    for volume, ref, env in (
        ("chat-chain-rpc", spec.chain.chat_chain_rpc_secret_ref, "CHAT_CHAIN_RPC"),
        ("currency-chain-rpc", spec.chain.currency_chain_rpc_secret_ref, "CURRENCY_CHAIN_RPC"),
        (
            "pushgateway",
            spec.observability.prometheus_pushgateway_secret_ref,
            "PROMETHEUS_PUSHGATEWAY",
        ),
    ):
        if ref is not None:
            files.append(SecretFile(volume, ref, f"{SECRETS_DIR}/{volume}", URL_FILE, env))
    # the bridge keys: config.toml names their paths (BridgeSpec.node_keys), no variable
    for role in c.BRIDGE_KEY_ROLES:
        ref = getattr(spec.bridge, f"{role}_key_secret_ref")
        if ref is not None:
            directory = c.bridge_key_dir(role)
            volume = directory.rsplit("/", 1)[1]
            files.append(SecretFile(volume, ref, directory, c.BRIDGE_KEY_FILE, None))
    return files


def config_toml(cluster: DchatCluster) -> str:
    header = (
        f"# Rendered by dchat-operator from DchatCluster {cluster.namespace}/{cluster.name}.\n"
        # unchanged wording on purpose: a new header would roll every cluster's pods
        "# Secrets are not in this file: DATABASE_URL_FILE (PostgreSQL) and JWT_SECRET_FILE name\n"
        "# files mounted from Kubernetes Secrets.\n"
    )
    return header + render_toml(node_config(cluster), changed_only=True)


def node_config(cluster: DchatCluster) -> NodeConfig:
    """The node's configuration: the spec's, plus what only the operator knows: with the
    relay on and no ``relay.bootstrapDns`` given, the pods find each other through the
    headless Service ``<cluster>-p2p-peers`` (every pod address, ready or not)."""
    config = cluster.spec.to_node_config()
    relay = config.relay
    if relay.enabled and not relay.bootstrap_dns:
        dns = f"{names(cluster).p2p_peers_service}.{cluster.namespace}.svc"
        config = config.model_copy(
            update={"relay": relay.model_copy(update={"bootstrap_dns": dns})}
        )
    bridge = config.bridge
    if not bridge.pause_flag_path:
        # spec.bridge.paused reaches the pods as the ConfigMap key bridge-paused, which the
        # node re-reads every poll: pausing or resuming the bridge rolls no pod
        flag = f"{c.CONFIG_DIR}/{BRIDGE_PAUSED_KEY}"
        config = config.model_copy(
            update={"bridge": bridge.model_copy(update={"paused": False, "pause_flag_path": flag})}
        )
    return config


def secret_references(cluster: DchatCluster) -> list[tuple[str, str | None]]:
    """(Secret name, key or None) the pods need; the controller checks they exist."""
    refs: list[tuple[str, str | None]] = []
    spec = cluster.spec
    url = database_url_ref(cluster)
    if url is not None and spec.database.postgres is not None:
        refs.append((url.name, url.key))
        refs.extend((s.name, s.key) for s in spec.database.postgres.standbys)
    if spec.security.jwt_secret_ref is not None:
        refs.append((spec.security.jwt_secret_ref.name, spec.security.jwt_secret_ref.key))
    if spec.security.tls_secret_ref is not None:
        refs.append((spec.security.tls_secret_ref.name, "tls.crt"))
        refs.append((spec.security.tls_secret_ref.name, "tls.key"))
    # appended last, so the checksum of a cluster without them does not change
    urls = [f for f in secret_files(cluster) if f.volume not in ("database", "jwt")]
    refs.extend((f.ref.name, f.ref.key) for f in urls)
    s3 = litestream.target(cluster)
    if s3 is not None:  # the Litestream containers read the S3 keys from it
        name = s3.credentials_secret_ref.name
        refs.extend([(name, "AWS_ACCESS_KEY_ID"), (name, "AWS_SECRET_ACCESS_KEY")])
    return refs


def bridge_paused(cluster: DchatCluster) -> bool:
    """The bridge pause switch as the pods see it (the flag file), unless the spec names a
    pause flag file of its own (then config.toml carries ``paused`` as given)."""
    return cluster.spec.bridge.paused and not cluster.spec.bridge.pause_flag_path


def litestream_yaml(cluster: DchatCluster) -> str | None:
    s3 = litestream.target(cluster)
    return None if s3 is None else litestream.litestream_config(cluster, s3)


def config_checksum(cluster: DchatCluster) -> str:
    parts: list[object] = [config_toml(cluster), secret_references(cluster)]
    extra = litestream_yaml(cluster)
    if extra is not None:  # only then, so other clusters' checksums do not change
        parts.append(extra)
    return digest(parts)[:32]


def config_map(cluster: DchatCluster) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cluster, names(cluster).config_map),
        "data": {
            c.CONFIG_FILE: config_toml(cluster),
            BRIDGE_PAUSED_KEY: "true" if bridge_paused(cluster) else "false",
            **({c.LITESTREAM_CONFIG: extra} if (extra := litestream_yaml(cluster)) else {}),
        },
    }
