"""The least RBAC the operator needs, as data: the ONE source of the operator's RBAC.

Design: one list of PolicyRules, derived from what ``clients.kube`` and kopf actually call;
an e2e test runs the operator under a ServiceAccount bound to exactly these rules, so the
list cannot silently fall behind the code. Everything else is generated from it:
``dchat-operator rbac`` prints the ClusterRole (written by ``make rbac`` to
``manifests/base/rbac.yaml``) and ``dchat-operator rbac --namespaced NAMESPACE`` prints a
Role with the namespaced rules plus a ClusterRole with only the cluster-scoped ones
(``manifests/overlays/namespaced/rbac.yaml``). Unit tests fail when those files are stale,
and the packaging tests check the bundle and the real cluster's answers against ``RULES``.

Nothing is granted ahead of need: when a feature needs more, it adds its rule here, with its
reason, in the same change as the code that calls the API, then runs ``make rbac``.
"""

from __future__ import annotations

from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.crd import to_yaml

_CHILD_VERBS = ["get", "create", "patch", "delete"]
LEASE_NAME = "dchat-operator"

RULES: list[dict[str, Any]] = [
    # the custom resource: kopf lists/watches it; the controller writes its status
    {"apiGroups": [c.GROUP], "resources": [c.PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [c.GROUP], "resources": [f"{c.PLURAL}/status"], "verbs": ["patch"]},
    # children: server-side apply (patch; create when missing), prune (delete) where a child
    # is optional; the always-present children are never deleted by it
    # (delete: managed PostgreSQL's ServiceAccount and Patroni ConfigMap are pruned when the
    # spec stops asking for it; prune deletes only objects this cluster owns)
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts", "configmaps"],
        "verbs": _CHILD_VERBS,
    },
    # the SQLite data claim: deleted only by fencing, when it is bound to a volume pinned to
    # the dead node and the data has a continuous S3 replica to restore from
    {
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
        "verbs": ["get", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": _CHILD_VERBS},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": [*_CHILD_VERBS, "list", "watch"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _CHILD_VERBS},
    # managed PostgreSQL (builders/postgres.py): the Patroni members' StatefulSet, and a
    # RoleBinding of their ServiceAccount to the bundle's ClusterRole dchat-postgres
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": _CHILD_VERBS},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["rolebindings"],
        "verbs": _CHILD_VERBS,
    },
    # ... which needs `bind` on that ClusterRole (and only on it: the operator holds none of
    # Patroni's rights, and can grant nothing else through a RoleBinding)
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "verbs": ["bind"],
        "resourceNames": [c.POSTGRES_CLUSTER_ROLE],
    },
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies", "ingresses"],
        "verbs": _CHILD_VERBS,
    },
    {
        "apiGroups": ["monitoring.coreos.com"],
        "resources": ["servicemonitors", "prometheusrules"],
        "verbs": _CHILD_VERBS,
    },
    # backups (controllers/backup.py, controllers/schedule.py): kopf watches them; the schedule
    # lists a cluster's backups, creates the scheduled ones and deletes expired ones; the
    # backup controller patches metadata (its finalizer, the cluster label) and writes status
    {
        "apiGroups": [c.GROUP],
        "resources": [c.BACKUP_PLURAL],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {"apiGroups": [c.GROUP], "resources": [f"{c.BACKUP_PLURAL}/status"], "verbs": ["patch"]},
    # restores (controllers/restore.py): read and watched; status written
    {"apiGroups": [c.GROUP], "resources": [c.RESTORE_PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [c.GROUP], "resources": [f"{c.RESTORE_PLURAL}/status"], "verbs": ["patch"]},
    # backup, verify, delete and restore Jobs: created, read, watched (kopf), deleted to rerun
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    # a finished Job's pod is listed (by its job-name label) to read its termination message;
    # a SQLite cluster's pod on a node that stopped reporting Ready is fenced (force delete)
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
    # referenced Secrets must exist (read); managed PostgreSQL's Secret of generated
    # passwords is created once (never updated: the passwords open the data)
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    # Events of the operator and of kopf
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # leader election (clients/leader.py): the one Lease it holds is read and renewed by name;
    # create cannot be limited by name (the apiserver does not know the name before it exists)
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "update"],
        "resourceNames": [LEASE_NAME],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    # kopf: runtime observation of CRDs and namespaces (namespaces are listed even when the
    # operator runs with --namespace; without the permission startup stalls)
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # whether a SQLite pod's node still reports Ready (fencing never acts while it does), and
    # whether its data claim's volume is pinned to that node
    {"apiGroups": [""], "resources": ["nodes", "persistentvolumes"], "verbs": ["get"]},
]


# Resources that are not namespaced: a Role cannot grant them, so the namespaced install
# keeps these rules in a (small) ClusterRole.
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset(
    {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
        ("", "nodes"),
        ("", "persistentvolumes"),
        ("rbac.authorization.k8s.io", "clusterroles"),
    }
)

# Patroni's rights in a namespace with managed PostgreSQL (Kubernetes API as its store, with
# ConfigMaps: leader lock, config, sync and failover objects; it labels its own Pods with
# their role, which the -rw/-ro Services select). Shipped in the bundle as the ClusterRole
# dchat-postgres; the operator binds it per cluster (a RoleBinding: this namespace only).
POSTGRES_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
]

HEADER = (
    "# generated by `make rbac` from operator/dchat_operator/api/rbac.py; do not edit\n"
    "# (the reason for each rule is documented there; a unit test fails when this is stale)\n"
)

_LABELS = {
    c.LABEL_NAME: "dchat-operator",
    c.LABEL_PART_OF: "dchat",
    c.LABEL_COMPONENT: "operator",
}


def _is_cluster_scoped(rule: dict[str, Any]) -> bool:
    keys = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    scoped = keys & CLUSTER_SCOPED
    if scoped and scoped != keys:
        raise ValueError(f"rule mixes cluster-scoped and namespaced resources: {rule}")
    return bool(scoped)


def namespaced_rules() -> list[dict[str, Any]]:
    return [rule for rule in RULES if not _is_cluster_scoped(rule)]


def cluster_scoped_rules() -> list[dict[str, Any]]:
    return [rule for rule in RULES if _is_cluster_scoped(rule)]


def cluster_role(
    name: str = "dchat-operator", rules: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "rules": RULES if rules is None else rules,
    }


def role(namespace: str, name: str = "dchat-operator") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(_LABELS)},
        "rules": namespaced_rules(),
    }


def render_rbac_yaml(namespace: str | None = None) -> str:
    """The text of manifests/base/rbac.yaml (all of ``RULES`` in a ClusterRole) or, given a
    namespace, of manifests/overlays/namespaced/rbac.yaml (a Role in that namespace and a
    ClusterRole with the cluster-scoped rules only)."""
    if namespace is None:
        return HEADER + to_yaml(cluster_role())
    docs = [role(namespace), cluster_role(rules=cluster_scoped_rules())]
    return HEADER + "---\n".join(to_yaml(doc) for doc in docs)


def postgres_cluster_role() -> dict[str, Any]:
    """The ClusterRole dchat-postgres (``POSTGRES_RULES``), bound per managed cluster."""
    role_ = cluster_role(c.POSTGRES_CLUSTER_ROLE, POSTGRES_RULES)
    role_["metadata"]["labels"][c.LABEL_COMPONENT] = "database"
    return role_


def render_postgres_rbac_yaml() -> str:
    """The text of manifests/base/rbac-postgres.yaml (same in both installs)."""
    return HEADER + to_yaml(postgres_cluster_role())
