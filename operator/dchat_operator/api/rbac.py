"""The least RBAC the operator needs, as data (printed by ``dchat-operator rbac``).

Design: one list of PolicyRules, derived from what ``clients.kube`` and kopf actually call;
an e2e test runs the operator under a ServiceAccount bound to exactly these rules, so the
list cannot silently fall behind the code.
"""

from __future__ import annotations

from typing import Any

from dchat_operator.api import constants as c

_CHILD_VERBS = ["get", "create", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    # the custom resource: kopf lists/watches it; the controller writes its status
    {"apiGroups": [c.GROUP], "resources": [c.PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [c.GROUP], "resources": [f"{c.PLURAL}/status"], "verbs": ["patch"]},
    # children: server-side apply (patch; create when missing), prune (delete) where a child
    # is optional; the PVC (data) and the always-present children are never deleted by it
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts", "configmaps", "persistentvolumeclaims"],
        "verbs": ["get", "create", "patch"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": _CHILD_VERBS},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": [*_CHILD_VERBS, "list", "watch"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _CHILD_VERBS},
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
    # referenced Secrets must exist (read, never written)
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    # Events of the operator and of kopf
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # kopf: runtime observation of CRDs and namespaces (namespaces are listed even when the
    # operator runs with --namespace; without the permission startup stalls)
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]


def cluster_role(name: str = "dchat-operator") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {c.LABEL_NAME: "dchat-operator"}},
        "rules": RULES,
    }
