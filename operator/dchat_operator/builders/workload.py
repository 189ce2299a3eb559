"""ServiceAccount, Deployment, PersistentVolumeClaim and PodDisruptionBudget.

Design (the guide's section 3.3 where it is right, fixed where it is not):
- Pod Security "restricted": non-root uid/gid 1000, fsGroup, seccomp RuntimeDefault, no
  privilege escalation, all capabilities dropped, read-only root filesystem with an emptyDir
  at /tmp (and at the log directory when logging.output is file). Logs go to stdout.
- Probes on the metrics port with the guide's timings; requests/limits from the spec;
  preferred anti-affinity on the hostname for this cluster's pods.
- SQLite: one replica, Recreate strategy (its ReadWriteOnce volume cannot be attached twice).
  PostgreSQL: RollingUpdate with the spec's maxSurge/maxUnavailable (1/0 by default).
- Secrets reach the node as mounted files named by ``<VAR>_FILE`` (``config.secret_files``):
  the database URL (DATABASE_URL_FILE), the JWT key, and chain RPC / push gateway URLs given
  as Secret references (CHAT_CHAIN_RPC_FILE, CURRENCY_CHAIN_RPC_FILE,
  PROMETHEUS_PUSHGATEWAY_FILE); never the ConfigMap or a plain environment variable.
- The ServiceAccount has no token (the node needs no API access); so does the pod.
- The config checksum on the pod template rolls the pods when config.toml changes.
- SQLite with backups on: Litestream's restore init container and replicating native sidecar
  (``builders.litestream``).
- A pod being replaced keeps serving for ``PRESTOP_SLEEP_SECONDS`` (a preStop sleep, the
  kubelet's own action: no shell in the image) before the node gets SIGTERM: the endpoint
  controller, kube-proxy and ingress controllers stop sending it new connections
  asynchronously, and without the delay a rollout drops the requests that arrive in that
  window (seen on the real test node: a request timed out while a pod was replaced). The
  node's own drain (server.shutdown_grace_secs) follows, inside terminationGracePeriodSeconds.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.models import DatabaseEngine, DchatCluster
from dchat_operator.builders import litestream
from dchat_operator.builders.common import Obj, digest, metadata, names, selector_labels
from dchat_operator.builders.config import SecretFile, config_checksum, secret_files


def service_account(cluster: DchatCluster) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(cluster, names(cluster).service_account),
        "automountServiceAccountToken": False,
    }


def persistent_volume_claim(cluster: DchatCluster) -> Obj | None:
    """The SQLite volume; None in PostgreSQL mode. Retained (no owner) unless told otherwise."""
    if cluster.spec.database.engine != DatabaseEngine.sqlite:
        return None
    sqlite = cluster.spec.database.sqlite
    spec: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": sqlite.storage_size}},
    }
    if sqlite.storage_class_name:
        spec["storageClassName"] = sqlite.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(cluster, names(cluster).pvc, owned=not sqlite.retain_on_delete),
        "spec": spec,
    }


def pod_disruption_budget(cluster: DchatCluster) -> Obj | None:
    """Only with more than one replica: a budget on a single pod would block node drains."""
    if not cluster.spec.disruption.enabled or cluster.spec.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cluster, names(cluster).pdb),
        "spec": {
            "maxUnavailable": cluster.spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(cluster)},
        },
    }


def _resources(cluster: DchatCluster) -> Obj:
    out: Obj = {}
    for kind in ("requests", "limits"):
        values = getattr(cluster.spec.resources, kind).model_dump(exclude_none=True)
        if values:
            out[kind] = values
    return out


def _env(cluster: DchatCluster) -> list[Obj]:
    return secret_file_env(secret_files(cluster))


def secret_volume(name: str, secret: str, items: dict[str, str] | None = None) -> Obj:
    """A Secret volume readable by the pod's group only; ``items`` maps keys to file names
    (all keys, under their own names, when None)."""
    source: Obj = {"secretName": secret}
    if items is not None:
        source["items"] = [{"key": key, "path": path} for key, path in items.items()]
    source["defaultMode"] = 0o440
    return {"name": name, "secret": source}


def base_volumes(cluster: DchatCluster) -> tuple[list[Obj], list[Obj]]:
    """(volumes, volumeMounts) every pod of the node image needs: the config (read-only),
    /tmp, and /data (the SQLite claim, or an emptyDir in PostgreSQL mode)."""
    n = names(cluster)
    volumes: list[Obj] = [
        {"name": "config", "configMap": {"name": n.config_map}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    mounts: list[Obj] = [
        {"name": "config", "mountPath": c.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - a pod emptyDir
    ]
    if cluster.spec.database.engine == DatabaseEngine.sqlite:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": n.pvc}})
    else:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": "1Gi"}})
    mounts.append({"name": "data", "mountPath": c.DATA_DIR})
    return volumes, mounts


def secret_file_volume(file: SecretFile) -> tuple[Obj, Obj]:
    """(volume, volumeMount) of one Secret key the node reads as a file."""
    return (
        secret_volume(file.volume, file.ref.name, {file.ref.key: file.file}),
        {"name": file.volume, "mountPath": file.directory, "readOnly": True},
    )


def secret_file_env(files: list[SecretFile]) -> list[Obj]:
    """``<VAR>_FILE`` variables naming the mounted Secret files."""
    return [{"name": f"{f.env}_FILE", "value": f.path} for f in files if f.env is not None]


def _volumes(cluster: DchatCluster) -> tuple[list[Obj], list[Obj]]:
    """(volumes, volumeMounts) of the node container."""
    volumes, mounts = base_volumes(cluster)
    for file in secret_files(cluster):
        volume, mount = secret_file_volume(file)
        volumes.append(volume)
        mounts.append(mount)
    security = cluster.spec.security
    if security.tls_secret_ref is not None:
        volumes.append(secret_volume("tls", security.tls_secret_ref.name))
        mounts.append({"name": "tls", "mountPath": c.TLS_DIR, "readOnly": True})
    if cluster.spec.logging.output == "file":
        volumes.append({"name": "logs", "emptyDir": {"sizeLimit": "2Gi"}})
        mounts.append(
            {"name": "logs", "mountPath": posixpath.dirname(cluster.spec.logging.file_path)}
        )
    return volumes, mounts


def container_security_context() -> Obj:
    """Restricted Pod Security for every container of the node image."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": c.NODE_UID,
        "runAsGroup": c.NODE_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> Obj:
    """Restricted Pod Security for every pod of the node image (fsGroup owns /data)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": c.NODE_UID,
        "runAsGroup": c.NODE_UID,
        "fsGroup": c.NODE_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, initial: int, period: int, timeout: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": "metrics", "scheme": "HTTP"},
        "initialDelaySeconds": initial,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def _affinity(cluster: DchatCluster) -> Obj:
    if cluster.spec.scheduling.affinity is not None:
        return dict(cluster.spec.scheduling.affinity)
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector_labels(cluster)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


# Long enough for endpoint removal to reach kube-proxy and ingresses; the node's drain
# (server.shutdown_grace_secs, 20 s by default) must fit in the 30 s grace
# period after it.
PRESTOP_SLEEP_SECONDS = 5


def _pod_spec(cluster: DchatCluster) -> Obj:
    spec = cluster.spec
    server = spec.server
    volumes, mounts = _volumes(cluster)
    container: Obj = {
        "name": c.CONTAINER_NAME,
        "image": cluster.image,
        "imagePullPolicy": spec.image.effective_pull_policy,
        # A node that exits leaves the tail of its log in the pod status (and in `kubectl
        # describe`), where it survives the container's removal.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "args": ["--config", f"{c.CONFIG_DIR}/{c.CONFIG_FILE}"],
        "ports": [
            {"name": "api", "containerPort": server.api_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": server.metrics_port, "protocol": "TCP"},
            {"name": "p2p", "containerPort": server.p2p_port, "protocol": "TCP"},
        ],
        "livenessProbe": _probe("/health", 10, 10, 5, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "readinessProbe": _probe("/ready", 5, 5, 3, 2),
        "resources": _resources(cluster),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    env = _env(cluster)
    if env:
        container["env"] = env
    pod: Obj = {
        "serviceAccountName": names(cluster).service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        "affinity": _affinity(cluster),
    }
    sidecars = litestream.init_containers(
        cluster,
        {"image": container["image"], "imagePullPolicy": container["imagePullPolicy"]},
        base_volumes(cluster)[1],
        container_security_context(),
    )
    if sidecars:
        pod["initContainers"] = sidecars
    sched = spec.scheduling
    pod["tolerations"] = _tolerations(cluster)
    if sched.topology_spread_constraints:
        pod["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": selector_labels(cluster)}, **t}
            for t in sched.topology_spread_constraints
        ]
    if sched.node_selector:
        pod["nodeSelector"] = dict(sched.node_selector)
    if sched.priority_class_name:
        pod["priorityClassName"] = sched.priority_class_name
    if spec.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in spec.image.pull_secrets]
    return pod


NODE_LOST_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _tolerations(cluster: DchatCluster) -> list[Obj]:
    """The spec's tolerations, plus how long pods stay on a lost node (unless the spec
    already says so for those taints)."""
    sched = cluster.spec.scheduling
    out = [dict(t) for t in sched.tolerations]
    given = {t.get("key") for t in out}
    for key in NODE_LOST_TAINTS:
        if key not in given:
            out.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": sched.node_lost_toleration_seconds,
                }
            )
    return out


def _strategy(cluster: DchatCluster) -> Obj:
    if cluster.spec.database.engine == DatabaseEngine.sqlite:
        return {"type": "Recreate"}
    rollout = cluster.spec.rollout
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
    }


def deployment(cluster: DchatCluster, secret_versions: Mapping[str, str] | None = None) -> Obj:
    """The node Deployment. ``secret_versions`` (Secret name -> resourceVersion of the Secrets
    the pods mount) goes into the pod template as a digest, so rotating a Secret rolls them."""
    spec = cluster.spec
    annotations: dict[str, Any] = {c.ANNOTATION_CONFIG_CHECKSUM: config_checksum(cluster)}
    if secret_versions:
        annotations[c.ANNOTATION_SECRETS_CHECKSUM] = digest(sorted(secret_versions.items()))[:32]
    if spec.monitoring.scrape_annotations:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(spec.server.metrics_port),
                "prometheus.io/path": "/metrics",
            }
        )
    template_meta = metadata(cluster, names(cluster).deployment, annotations=annotations)
    template_meta.pop("name")
    template_meta.pop("namespace")
    template_meta.pop("ownerReferences", None)
    paused: Obj = {"paused": True} if spec.rollout.paused else {}  # false: the field unset
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(cluster, names(cluster).deployment),
        "spec": {
            **paused,
            "replicas": spec.replicas,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "minReadySeconds": spec.rollout.min_ready_seconds,
            "strategy": _strategy(cluster),
            "selector": {"matchLabels": selector_labels(cluster)},
            "template": {"metadata": template_meta, "spec": _pod_spec(cluster)},
        },
    }
