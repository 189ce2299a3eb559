"""Fencing a SQLite pod stuck on a lost node (pure).

Design: SQLite mode runs one pod with a ReadWriteOnce volume and the Recreate strategy, so
the Deployment starts a replacement only once the old pod is gone. A pod on a node that
stopped reporting (power loss, partition) never goes: its kubelet cannot confirm the
deletion, and the cluster would stay down forever. ``to_fence`` picks the cluster's pods
whose node has not reported Ready for ``failoverDelaySeconds`` (its Ready condition False or
Unknown since then, or the Node object gone); the controller force-deletes them (grace 0)
and says so in an Event. Never a pod whose node reports Ready: a slow pod on a healthy node
is the kubelet's business. It also returns how long until the next pod would qualify, for
the controller's requeue.
- The data claim: when its volume is pinned to the dead node (``pinned_to``: a local volume)
  and the cluster replicates /data continuously to S3 (Litestream), the controller deletes
  the claim too; the claim it applies next is new and empty, and the replacement pod's
  restore init container fills it from the replica before the node starts. Without a
  replica the claim is kept (the pod stays Pending, the data waits for its node): the
  operator never trades data for availability by itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from dchat_operator.builders.common import Obj


@dataclass(frozen=True)
class Fence:
    pod: str
    node: str
    since: str
    """When the node stopped reporting Ready ("" when the Node object is gone)."""


def _not_ready_since(node: Obj) -> dt.datetime | None:
    """When the node's Ready condition left True; None while it is True."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return None
            try:
                return dt.datetime.fromisoformat(str(cond.get("lastTransitionTime")))
            except ValueError:
                return dt.datetime.min.replace(tzinfo=dt.UTC)
    return dt.datetime.min.replace(tzinfo=dt.UTC)  # a node that never reported


def to_fence(
    pods: list[Obj], nodes: Mapping[str, Obj | None], delay: float, now: dt.datetime
) -> tuple[list[Fence], float | None]:
    """(pods to force-delete now, seconds until the next one would qualify or None)."""
    fence: list[Fence] = []
    soonest: float | None = None
    for pod in pods:
        node_name = str((pod.get("spec") or {}).get("nodeName") or "")
        if not node_name:
            continue
        name = str((pod.get("metadata") or {}).get("name") or "")
        node = nodes.get(node_name)
        if node is None:  # the Node object was deleted: the machine is gone
            fence.append(Fence(name, node_name, ""))
            continue
        since = _not_ready_since(node)
        if since is None:
            continue
        waited = (now - since).total_seconds()
        if waited >= delay:
            fence.append(Fence(name, node_name, since.strftime("%Y-%m-%dT%H:%M:%SZ")))
        else:
            left = delay - waited
            soonest = left if soonest is None else min(soonest, left)
    return fence, soonest


HOSTNAME = "kubernetes.io/hostname"


def pinned_to(volume: Obj | None, node: str) -> bool:
    """Is the PersistentVolume ``volume`` usable only on ``node`` (a local volume: its
    required node affinity names that one hostname and nothing else)? Such a volume is as
    lost as its node; a volume without node affinity (network storage) follows the pod."""
    terms = (
        (((volume or {}).get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}
    ).get("nodeSelectorTerms") or []
    if not terms:
        return False
    for term in terms:
        exprs = term.get("matchExpressions") or []
        if not any(
            e.get("key") == HOSTNAME and e.get("operator") == "In" and e.get("values") == [node]
            for e in exprs
        ):
            return False
    return True
