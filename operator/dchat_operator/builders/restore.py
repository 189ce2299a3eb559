"""Restores, as pure functions: which backup, the hold on the cluster's replicas.

Design: a restore needs the cluster to run no pod (the node refuses to restore into a
database in use, and PostgreSQL's target must be empty). The restore controller does not
touch the Deployment (the cluster controller would put its replicas back): it writes
``status.restoreInProgress`` (a DchatRestore) or ``status.bootstrap`` (spec.bootstrap) on the
cluster, and the cluster controller builds everything from ``held(cluster, status)``, the same
cluster with 0 replicas while a hold is on. Pure, so both controllers agree.
"""

from __future__ import annotations

from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import Obj


def hold_reason(cluster: DchatCluster, status: Obj | None) -> str | None:
    """Why the cluster must run no pod now, or None."""
    status = status or {}
    restore = status.get("restoreInProgress") or {}
    if restore.get("name"):
        return f"DchatRestore {restore['name']} is restoring into it"
    source = cluster.spec.bootstrap.from_backup
    if source is not None and (status.get("bootstrap") or {}).get("phase") != "Completed":
        return f"bootstrapping from DchatBackup {source.name}"
    return None


def held(cluster: DchatCluster, status: Obj | None) -> DchatCluster:
    """``cluster`` with 0 replicas while a restore holds it, else ``cluster`` itself."""
    if hold_reason(cluster, status) is None or cluster.spec.replicas == 0:
        return cluster
    spec = cluster.spec.model_copy(update={"replicas": 0})
    return cluster.model_copy(update={"spec": spec})


def newest_completed_backup(items: list[Obj]) -> Obj | None:
    """The DchatBackup with the newest completedAt among the Completed ones."""

    def completed(item: Obj) -> tuple[str, str]:
        status = item.get("status") or {}
        return (str(status.get("completedAt") or ""), str(item["metadata"]["name"]))

    done = [
        i
        for i in items
        if (i.get("status") or {}).get("phase") == "Completed"
        and not (i.get("metadata") or {}).get("deletionTimestamp")
    ]
    return max(done, key=completed, default=None)


def deployment_scaled_down(deployment: Obj | None) -> bool:
    """No pod of the Deployment is left (or there is no Deployment)."""
    if deployment is None:
        return True
    status: dict[str, Any] = deployment.get("status") or {}
    spec: dict[str, Any] = deployment.get("spec") or {}
    return int(spec.get("replicas") or 0) == 0 and int(status.get("replicas") or 0) == 0


def restore_labels(cluster: DchatCluster, owner: str) -> dict[str, str]:
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: cluster.name,
        c.LABEL_COMPONENT: "restore",
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_PART_OF: c.APP_NAME,
        c.LABEL_RESTORE: owner,
    }
