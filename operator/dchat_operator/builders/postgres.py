"""Managed PostgreSQL (``spec.database.postgres.managed``): the objects of a Patroni cluster (pure).

Design: the operator does not run PostgreSQL's high availability itself; Patroni does, with
the Kubernetes API as its store (leader lock in the ConfigMap ``<scope>-leader``, scope
``<cluster>-postgres``). These builders render what Patroni needs to run in the cluster's
namespace, and nothing Patroni writes:

- ``<cluster>-postgres`` ServiceAccount and a RoleBinding of it to the ClusterRole
  ``dchat-postgres`` (Patroni's rights: ConfigMaps and its own Pods' labels, in this
  namespace only). The ClusterRole ships in the install bundle; the operator may only *bind*
  that one (``bind`` with resourceNames), so a CR cannot make it grant anything else.
- ``<cluster>-postgres-patroni`` ConfigMap: ``patroni.yml`` (no secret in it: the passwords
  come from the generated Secret as environment variables).
- ``<cluster>-postgres`` StatefulSet of ``instances`` members (Pod Security restricted,
  uid 999, one claim ``data-<cluster>-postgres-<n>`` each, readiness = Patroni's
  ``/readiness``), a headless Service for it, ``<cluster>-postgres-rw`` (selects the pod
  Patroni labels ``role=primary``) and ``<cluster>-postgres-ro`` (``role=replica``), and a
  PodDisruptionBudget of one unavailable member (a drain never takes two at once).
- The Secret ``<cluster>-postgres`` (superuser, replication and app passwords, and the
  node's URL) is not built here: its passwords are random, so the controller creates it
  once (``secret_data`` renders it from passwords it is given) and never rewrites them.

The node reaches the primary through ``<cluster>-postgres-rw``: when Patroni promotes a
replica it moves the ``role`` label, the Service's endpoints follow, and the node (which
drops broken connections and answers 503 meanwhile) reconnects to the new primary without
a restart.
"""

from __future__ import annotations

from urllib.parse import quote

from dchat_operator.api import constants as c
from dchat_operator.api.crd import to_yaml
from dchat_operator.api.models import DchatCluster, ManagedPostgresSpec
from dchat_operator.builders.common import Obj, digest, metadata

PG_PORT = 5432
PATRONI_PORT = 8008
DATA_DIR = "/var/lib/postgresql/data"
CONFIG_DIR = "/etc/patroni"
SECRETS_DIR = "/etc/patroni-secrets"
CONFIG_FILE = "patroni.yml"
APP_USER = "dchat"
APP_DATABASE = "dchat"
REPLICATION_USER = "replicator"
SUPERUSER = "postgres"
COMPONENT = "database"
APP_NAME = "dchat-postgres"
ROLE_LABEL = "role"
SCOPE_LABEL = f"{c.GROUP}/patroni-scope"
# keys of the generated Secret
SUPERUSER_PASSWORD = "superuser-password"  # noqa: S105 - a key name
REPLICATION_PASSWORD = "replication-password"  # noqa: S105 - a key name
APP_PASSWORD = "app-password"  # noqa: S105 - a key name
URL_KEY = "url"
SECRET_KEYS = (SUPERUSER_PASSWORD, REPLICATION_PASSWORD, APP_PASSWORD, URL_KEY)


def managed(cluster: DchatCluster) -> ManagedPostgresSpec | None:
    """The managed PostgreSQL spec when the cluster runs PostgreSQL itself."""
    db = cluster.spec.database
    if db.engine != "postgres" or db.postgres is None:
        return None
    return db.postgres.managed


def name(cluster: DchatCluster) -> str:
    """StatefulSet, headless Service, ServiceAccount, RoleBinding, PDB and Secret name."""
    return f"{cluster.name}-postgres"


def scope(cluster: DchatCluster) -> str:
    """Patroni's scope: its objects are ``<scope>-leader``, ``-config``, ``-failover``..."""
    return name(cluster)


def config_map_name(cluster: DchatCluster) -> str:
    return f"{name(cluster)}-patroni"  # not <scope>-config: that one is Patroni's own


def rw_service(cluster: DchatCluster) -> str:
    return f"{name(cluster)}-rw"


def ro_service(cluster: DchatCluster) -> str:
    return f"{name(cluster)}-ro"


def secret_name(cluster: DchatCluster) -> str:
    return name(cluster)


def member_labels(cluster: DchatCluster) -> dict[str, str]:
    """Labels of the members: the StatefulSet's selector and Patroni's ``kubernetes.labels``
    (Patroni lists its members and labels its ConfigMaps by these)."""
    return {
        c.LABEL_NAME: APP_NAME,
        c.LABEL_INSTANCE: cluster.name,
        c.LABEL_COMPONENT: COMPONENT,
        # Patroni adds <scope_label>=<scope> to its selector: a member without it is not
        # found, and a replica then fails with a bare "failed to bootstrap from leader"
        SCOPE_LABEL: scope(cluster),
    }


def _labels(cluster: DchatCluster) -> dict[str, str]:
    """Every object's labels: the members' plus who manages them (no version label: a new
    dchat version must not roll the database)."""
    return {
        **member_labels(cluster),
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.APP_NAME,
    }


def _meta(cluster: DchatCluster, obj_name: str, *, owned: bool = True) -> Obj:
    meta = metadata(cluster, obj_name, owned=owned)
    meta["labels"] = _labels(cluster)
    return meta


def app_url(cluster: DchatCluster, password: str) -> str:
    """The node's DATABASE_URL: the app role on the primary's Service, by DNS name."""
    host = f"{rw_service(cluster)}.{cluster.namespace}.svc"
    return f"postgresql://{APP_USER}:{quote(password, safe='')}@{host}:{PG_PORT}/{APP_DATABASE}"


def secret_data(cluster: DchatCluster, passwords: dict[str, str]) -> dict[str, str]:
    """``stringData`` of the generated Secret, from the three passwords."""
    return {
        SUPERUSER_PASSWORD: passwords[SUPERUSER_PASSWORD],
        REPLICATION_PASSWORD: passwords[REPLICATION_PASSWORD],
        APP_PASSWORD: passwords[APP_PASSWORD],
        URL_KEY: app_url(cluster, passwords[APP_PASSWORD]),
    }


def secret(cluster: DchatCluster, passwords: dict[str, str]) -> Obj:
    """The generated Secret (created once by the controller; owned only when not retained)."""
    spec = managed(cluster)
    assert spec is not None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(cluster, secret_name(cluster), owned=not spec.retain_on_delete),
        "stringData": secret_data(cluster, passwords),
    }


def service_account(cluster: DchatCluster) -> Obj | None:
    if managed(cluster) is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(cluster, name(cluster)),
        "automountServiceAccountToken": False,  # mounted by the pod that needs it
    }


def role_binding(cluster: DchatCluster) -> Obj | None:
    if managed(cluster) is None:
        return None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(cluster, name(cluster)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": c.POSTGRES_CLUSTER_ROLE,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": name(cluster), "namespace": cluster.namespace}
        ],
    }


def patroni_config(cluster: DchatCluster) -> Obj:
    """patroni.yml as data (environment variables fill in the member's name, addresses and
    passwords)."""
    spec = managed(cluster)
    assert spec is not None
    return {
        "scope": scope(cluster),
        "kubernetes": {
            "use_endpoints": False,
            "labels": member_labels(cluster),
            "scope_label": SCOPE_LABEL,
            "role_label": ROLE_LABEL,
            "leader_label_value": "primary",
            "follower_label_value": "replica",
        },
        "restapi": {"listen": f"0.0.0.0:{PATRONI_PORT}"},
        "bootstrap": {
            "dcs": {
                "ttl": spec.ttl_seconds,
                "loop_wait": spec.loop_wait_seconds,
                "retry_timeout": spec.retry_timeout_seconds,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": spec.synchronous,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
            "post_bootstrap": "/usr/local/bin/dchat-postgres-bootstrap",
        },
        "postgresql": {
            "listen": f"0.0.0.0:{PG_PORT}",
            "data_dir": f"{DATA_DIR}/pgdata",
            "bin_dir": "/usr/lib/postgresql/15/bin",
            "pgpass": "/tmp/pgpass",  # noqa: S108 - the container's own emptyDir
            # a new replica's pg_basebackup asks for an immediate checkpoint (the default,
            # spread, made a new member wait over a minute on an idle primary)
            "basebackup": [{"checkpoint": "fast"}],
            "authentication": {
                "superuser": {"username": SUPERUSER},
                "replication": {"username": REPLICATION_USER},
            },
            "parameters": {"unix_socket_directories": "/tmp"},  # noqa: S108
            "pg_hba": [
                "local all all peer",
                f"host replication {REPLICATION_USER} all scram-sha-256",
                "host all all all scram-sha-256",
            ],
        },
        "watchdog": {"mode": "off"},  # no /dev/watchdog in a restricted pod
    }


def config_map(cluster: DchatCluster) -> Obj | None:
    if managed(cluster) is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(cluster, config_map_name(cluster)),
        "data": {CONFIG_FILE: to_yaml(patroni_config(cluster))},
    }


def _service(cluster: DchatCluster, svc: str, role: str | None) -> Obj:
    selector = member_labels(cluster)
    if role is not None:
        selector = {**selector, ROLE_LABEL: role}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cluster, svc),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": "postgresql",
                    "port": PG_PORT,
                    "targetPort": "postgresql",
                    "protocol": "TCP",
                }
            ],
        },
    }


def primary_service(cluster: DchatCluster) -> Obj | None:
    return None if managed(cluster) is None else _service(cluster, rw_service(cluster), "primary")


def replica_service(cluster: DchatCluster) -> Obj | None:
    return None if managed(cluster) is None else _service(cluster, ro_service(cluster), "replica")


def headless_service(cluster: DchatCluster) -> Obj | None:
    if managed(cluster) is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(cluster, name(cluster)),
        "spec": {
            "clusterIP": "None",
            "selector": member_labels(cluster),
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "postgresql", "port": PG_PORT, "targetPort": "postgresql"},
                {"name": "patroni", "port": PATRONI_PORT, "targetPort": "patroni"},
            ],
        },
    }


def pod_disruption_budget(cluster: DchatCluster) -> Obj | None:
    spec = managed(cluster)
    if spec is None or spec.instances < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(cluster, name(cluster)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": member_labels(cluster)}},
    }


def _field_env(var: str, path: str) -> Obj:
    return {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _probe(path: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": "patroni", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _resources(spec: ManagedPostgresSpec) -> Obj:
    out: Obj = {}
    for part in ("requests", "limits"):
        values = getattr(spec.resources, part).model_dump(exclude_none=True)
        if values:
            out[part] = values
    return out


def _pod_spec(cluster: DchatCluster, spec: ManagedPostgresSpec) -> Obj:
    uid = c.POSTGRES_UID
    container: Obj = {
        "name": "postgres",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": [f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "ports": [
            {"name": "postgresql", "containerPort": PG_PORT, "protocol": "TCP"},
            {"name": "patroni", "containerPort": PATRONI_PORT, "protocol": "TCP"},
        ],
        "env": [
            _field_env("PATRONI_NAME", "metadata.name"),
            _field_env("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP"),
            {"name": "PATRONI_KUBERNETES_POD_IP", "value": "$(POD_IP)"},
            {"name": "PATRONI_POSTGRESQL_CONNECT_ADDRESS", "value": f"$(POD_IP):{PG_PORT}"},
            {"name": "PATRONI_RESTAPI_CONNECT_ADDRESS", "value": f"$(POD_IP):{PATRONI_PORT}"},
        ],
        # Patroni's REST API: /readiness is 200 on the running primary and on a streaming
        # replica; /liveness while Patroni's HA loop runs.
        "readinessProbe": _probe("/readiness", 2, 3),
        "livenessProbe": _probe("/liveness", 10, 6),
        "resources": _resources(spec),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            # the passwords as files (the image's entrypoint hands two to Patroni)
            {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - sockets, pgpass
            {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - a memory emptyDir
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    sched = cluster.spec.scheduling
    pod: Obj = {
        "serviceAccountName": name(cluster),
        "automountServiceAccountToken": True,  # Patroni's store is the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map_name(cluster)}},
            {
                "name": "secrets",
                "secret": {
                    "secretName": secret_name(cluster),
                    "defaultMode": 0o440,  # root:999 (fsGroup), read by the postgres user
                    "items": [
                        {"key": k, "path": k}
                        for k in (SUPERUSER_PASSWORD, REPLICATION_PASSWORD, APP_PASSWORD)
                    ],
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        ],
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": member_labels(cluster)},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        },
        "tolerations": _tolerations(cluster),
    }
    if sched.node_selector:
        pod["nodeSelector"] = dict(sched.node_selector)
    if sched.priority_class_name:
        pod["priorityClassName"] = sched.priority_class_name
    return pod


def _tolerations(cluster: DchatCluster) -> list[Obj]:
    """The spec's tolerations, as given. No short not-ready toleration as the node pods have:
    a StatefulSet pod on a lost node is not replaced until the node is gone or the pod is
    deleted, and the database does not need it to be: Patroni promotes a replica on another
    node once the lost primary's lock expires."""
    return [dict(t) for t in cluster.spec.scheduling.tolerations]


def stateful_set(cluster: DchatCluster) -> Obj | None:
    spec = managed(cluster)
    if spec is None:
        return None
    pod = _pod_spec(cluster, spec)
    config_hash = digest(patroni_config(cluster))[:32]
    claim: Obj = {
        "metadata": {"name": "data", "labels": member_labels(cluster)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class_name:
        claim["spec"]["storageClassName"] = spec.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            **_meta(cluster, name(cluster)),
            "annotations": {
                # the one pod with an API token: Patroni's store is the Kubernetes API
                "checkov.io/skip1": "CKV_K8S_38=Patroni keeps its leader lock in the API",
            },
        },
        "spec": {
            "serviceName": name(cluster),
            "replicas": spec.instances,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": member_labels(cluster)},
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if spec.retain_on_delete else "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": _labels(cluster),
                    "annotations": {c.ANNOTATION_CONFIG_CHECKSUM: config_hash},
                },
                "spec": pod,
            },
            "volumeClaimTemplates": [claim],
        },
    }


def network_policy(cluster: DchatCluster) -> Obj | None:
    """Ingress to the members: PostgreSQL and Patroni's API only from this cluster's pods
    (the nodes, its backup and restore Jobs, the other members). Egress stays open: Patroni
    talks to the Kubernetes API, whose address a policy cannot name portably."""
    if managed(cluster) is None or not cluster.spec.network_policy.enabled:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(cluster, name(cluster)),
        "spec": {
            "podSelector": {"matchLabels": member_labels(cluster)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {c.LABEL_INSTANCE: cluster.name}}}],
                    "ports": [
                        {"port": PG_PORT, "protocol": "TCP"},
                        {"port": PATRONI_PORT, "protocol": "TCP"},
                    ],
                }
            ],
        },
    }
