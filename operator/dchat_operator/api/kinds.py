"""API coordinates of every kind the operator reads or writes (no logic, no I/O).

Design: one ``Kind`` value per Kubernetes kind, so clients build paths from it, builders stamp
``apiVersion``/``kind`` from it and controllers name what they watch with it. The operator's
own kinds (``CLUSTER``, ``BACKUP``, ``RESTORE``) and the children it manages
(``CHILD_KINDS``) are listed apart: a child is something a cluster owns.
"""

from __future__ import annotations

from dataclasses import dataclass

from dchat_operator.api import constants as c


@dataclass(frozen=True)
class Kind:
    """API coordinates of one kind."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# The operator's own custom resources.
CLUSTER = Kind(c.API_VERSION, c.KIND, c.PLURAL)
BACKUP = Kind(c.API_VERSION, c.BACKUP_KIND, c.BACKUP_PLURAL)
RESTORE = Kind(c.API_VERSION, c.RESTORE_KIND, c.RESTORE_PLURAL)

# Read or written besides the children.
SECRET = Kind("v1", "Secret", "secrets")
EVENT = Kind("v1", "Event", "events")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
JOB = Kind("batch/v1", "Job", "jobs")
"""Backup, verify, delete and restore Jobs (owned by a DchatBackup or DchatRestore)."""
POD = Kind("v1", "Pod", "pods")
"""Listed to read a Job pod's termination message; a SQLite pod stuck on a lost node is fenced."""
PERSISTENT_VOLUME = Kind("v1", "PersistentVolume", "persistentvolumes")
"""Read (cluster-scoped) to tell whether a SQLite claim's volume is pinned to a dead node."""
NODE = Kind("v1", "Node", "nodes")
"""Read (cluster-scoped) to tell whether a SQLite pod's node still reports Ready."""

# Children of a DchatCluster.
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
CONFIG_MAP = Kind("v1", "ConfigMap", "configmaps")
SERVICE = Kind("v1", "Service", "services")
PVC = Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICY = Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
STATEFUL_SET = Kind("apps/v1", "StatefulSet", "statefulsets")
"""Managed PostgreSQL's Patroni members."""
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
"""Binds the ClusterRole dchat-postgres (Patroni's rights) to managed PostgreSQL's members."""
SERVICE_MONITOR = Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors")
PROMETHEUS_RULE = Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules")

CHILD_KINDS: tuple[Kind, ...] = (
    SERVICE_ACCOUNT,
    CONFIG_MAP,
    SERVICE,
    PVC,
    DEPLOYMENT,
    PDB,
    NETWORK_POLICY,
    INGRESS,
    STATEFUL_SET,
    ROLE_BINDING,
    SERVICE_MONITOR,
    PROMETHEUS_RULE,
)
_BY_KIND = {k.kind: k for k in CHILD_KINDS}


def child_kind(obj: dict[str, object]) -> Kind:
    """The child kind of a built object (KeyError for a kind the operator does not manage)."""
    return _BY_KIND[str(obj["kind"])]
