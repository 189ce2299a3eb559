"""config.toml for the node, rendered through the node's own config model.

Design: ``DchatClusterSpec.to_node_config`` builds a ``dchat_node.config.NodeConfig`` and
``dchat_node.config.render_toml`` writes it (secrets are never part of the model: the
database URL of PostgreSQL mode and the JWT key reach the pod from Secrets). The checksum
covers the file and the Secret references, and goes on the pod template so a change rolls
the pods.
"""

from __future__ import annotations

from dchat_node.config import render_toml
from dchat_operator.api import constants as c
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import Obj, digest, metadata, names


def config_toml(cluster: DchatCluster) -> str:
    header = (
        f"# Rendered by dchat-operator from DchatCluster {cluster.namespace}/{cluster.name}.\n"
        "# Secrets are not in this file: DATABASE_URL_FILE (PostgreSQL) and JWT_SECRET_FILE name\n"
        "# files mounted from Kubernetes Secrets.\n"
    )
    return header + render_toml(cluster.spec.to_node_config())


def secret_references(cluster: DchatCluster) -> list[tuple[str, str | None]]:
    """(Secret name, key or None) the pods need; the controller checks they exist."""
    refs: list[tuple[str, str | None]] = []
    spec = cluster.spec
    if spec.database.postgres is not None and spec.database.engine == "postgres":
        refs.append((spec.database.postgres.primary.name, spec.database.postgres.primary.key))
        refs.extend((s.name, s.key) for s in spec.database.postgres.standbys)
    if spec.security.jwt_secret_ref is not None:
        refs.append((spec.security.jwt_secret_ref.name, spec.security.jwt_secret_ref.key))
    if spec.security.tls_secret_ref is not None:
        refs.append((spec.security.tls_secret_ref.name, "tls.crt"))
        refs.append((spec.security.tls_secret_ref.name, "tls.key"))
    return refs


def config_checksum(cluster: DchatCluster) -> str:
    return digest([config_toml(cluster), secret_references(cluster)])[:32]


def config_map(cluster: DchatCluster) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cluster, names(cluster).config_map),
        "data": {c.CONFIG_FILE: config_toml(cluster)},
    }
