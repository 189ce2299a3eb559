"""The DchatCluster status, built in one place from observed facts.

Design: ``build_status`` is a pure function of the parsed cluster, what the controller
observed (the live Deployment, missing Secrets, apply errors) and the previous status (to keep
``lastTransitionTime`` when a condition did not change, and the fields other controllers own,
such as ``lastBackup``). The clock is an argument. The controller writes the result with one
client call, and only when it differs from the live status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import Obj, selector_string
from dchat_operator.builders.config import config_checksum


@dataclass(frozen=True)
class Observed:
    """What the controller saw while reconciling one cluster."""

    deployment: Obj | None = None
    missing_secrets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Cond:
    type: str
    status: str
    reason: str
    message: str


def _rollout(cluster: DchatCluster, dep: Obj | None) -> tuple[bool, bool, str, dict[str, int]]:
    """(complete, stalled, message, counts) of the Deployment's rollout."""
    counts = {"replicas": 0, "readyReplicas": 0, "updatedReplicas": 0, "availableReplicas": 0}
    if dep is None:
        return False, False, "Deployment not created yet", counts
    status: dict[str, Any] = dep.get("status") or {}
    for key in counts:
        counts[key] = int(status.get(key) or 0)
    want = cluster.spec.replicas
    observed = int(status.get("observedGeneration") or 0) >= int(
        dep.get("metadata", {}).get("generation") or 0
    )
    stalled = any(
        cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded"
        for cond in status.get("conditions") or []
    )
    complete = (
        observed
        and int((dep.get("spec") or {}).get("replicas", -1)) == want
        and counts["updatedReplicas"] == want
        and counts["replicas"] == want
        and counts["availableReplicas"] >= want
    )
    message = (
        f"{counts['readyReplicas']}/{want} replicas ready, {counts['updatedReplicas']} updated"
    )
    return complete, stalled, message, counts


def build_status(cluster: DchatCluster, observed: Observed, previous: Obj | None, now: str) -> Obj:
    """The whole ``status`` of the DchatCluster."""
    previous = previous or {}
    complete, stalled, message, counts = _rollout(cluster, observed.deployment)
    version = cluster.spec.version

    if observed.missing_secrets:
        degraded = _Cond(
            "Degraded",
            "True",
            "SecretNotFound",
            "missing Secret or key: " + ", ".join(observed.missing_secrets),
        )
    elif observed.errors:
        degraded = _Cond("Degraded", "True", "ReconcileFailed", "; ".join(observed.errors)[:1000])
    elif stalled:
        degraded = _Cond(
            "Degraded", "True", "RolloutStalled", f"progress deadline exceeded: {message}"
        )
    else:
        degraded = _Cond("Degraded", "False", "AsExpected", "no problems found")

    if complete and degraded.status == "False":
        ready = _Cond("Ready", "True", "AllReplicasReady", f"{message}; version {version}")
        progressing = _Cond("Progressing", "False", "RolloutComplete", f"version {version}")
    else:
        reason = "Degraded" if degraded.status == "True" else "RolloutInProgress"
        ready = _Cond("Ready", "False", reason, message)
        if degraded.status == "True" and degraded.reason != "RolloutStalled":
            progressing = _Cond("Progressing", "False", "Blocked", degraded.message)
        else:
            progressing = _Cond(
                "Progressing", "True", "RollingOut", f"{message}; version {version}"
            )

    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for cond in (ready, progressing, degraded):
        old = prev_conditions.get(cond.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == cond.status else None
        conditions.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or now,
                "observedGeneration": cluster.metadata.generation,
            }
        )

    if degraded.status == "True":
        phase = "Degraded"
    elif ready.status == "True":
        phase = "Ready"
    elif observed.deployment is not None:
        phase = "Progressing"
    else:
        phase = "Pending"

    status: Obj = {
        "observedGeneration": cluster.metadata.generation,
        "phase": phase,
        "replicas": counts["replicas"],
        "readyReplicas": counts["readyReplicas"],
        "updatedReplicas": counts["updatedReplicas"],
        "selector": selector_string(cluster),
        "configChecksum": config_checksum(cluster),
        "conditions": conditions,
    }
    current = version if complete else previous.get("currentVersion")
    if current:
        status["currentVersion"] = current
    if previous.get("lastBackup"):
        status["lastBackup"] = previous["lastBackup"]
    return status


def invalid_status(generation: int, previous: Obj | None, problems: str, now: str) -> Obj:
    """Status of a CR the apiserver accepted but the operator's model rejects."""
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}

    def cond(type_: str, status: str, reason: str, message: str) -> Obj:
        before = old.get(type_) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:1000],
            "lastTransitionTime": since or now,
            "observedGeneration": generation,
        }

    return {
        **(previous or {}),
        "observedGeneration": generation,
        "phase": "Degraded",
        "conditions": [
            cond("Ready", "False", "InvalidSpec", problems),
            cond("Progressing", "False", "InvalidSpec", "the spec cannot be parsed"),
            cond("Degraded", "True", "InvalidSpec", problems),
        ],
    }


def condition(status: Obj | None, type_: str) -> Obj | None:
    """The condition of ``type_`` in a status, if any."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
