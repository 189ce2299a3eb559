"""The DchatCluster status, built in one place from observed facts.

Design: ``build_status`` is a pure function of the parsed cluster, what the controller
observed (the live Deployment, missing Secrets, apply errors, children it refused to take
over, its retry state) and the previous status (to keep ``lastTransitionTime`` when a
condition did not change). The clock is an argument. It returns only the fields the cluster
controller owns (``CLUSTER_OWNED``); ``status_patch`` turns that into the merge patch to send
against the live status: other controllers' fields (``lastBackup``, ...) are never sent, other
controllers' conditions are kept in the list (a merge patch replaces lists whole, which is why
the controller sends it with the ``resourceVersion`` it read), and ``None`` means "already so,
write nothing".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dchat_operator.api.constants import ANNOTATION_ROLLBACK_REQUEST as c_rollback_request
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import Obj, selector_string
from dchat_operator.builders.config import config_checksum
from dchat_operator.builders.patroni import current_primary
from dchat_operator.builders.rollout import (
    Verdict,
    current_soak,
    good_revision,
    manual_target,
    new_rollback,
    next_check_in,
    rollback_in_force,
    rolled_back_message,
    soak_failed_reason,
    soak_needed,
    soak_step,
    with_record,
)


@dataclass(frozen=True)
class Observed:
    """What the controller saw while reconciling one cluster."""

    deployment: Obj | None = None
    missing_secrets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    """Objects with a child's name that the operator does not control (left untouched)."""
    policy: list[str] = field(default_factory=list)
    """Operator policy rules the spec breaks (nothing was applied)."""
    retry: tuple[int, float] | None = None
    """(attempt, seconds until the next one) when this reconcile is failing."""
    check: Obj | None = None
    """The soak window's check made by this reconcile (``builders.analysis.check``)."""
    primary: tuple[str, str] | None = None
    """(Patroni's leader or "", transitions) when database.postgres.patroni is set."""
    rollback_request: str = ""
    """The value of the DchatCluster's rollback-request annotation ("" when none)."""
    switchover: Obj | None = None
    """A new status.switchover (``builders.patroni.switchover_step``); None keeps it."""

    @property
    def blocked(self) -> bool:
        """Something other than the rollout itself is wrong."""
        return bool(self.policy or self.conflicts or self.missing_secrets or self.errors)


CLUSTER_OWNED = frozenset(
    {
        "observedGeneration",
        "phase",
        "replicas",
        "readyReplicas",
        "updatedReplicas",
        "selector",
        "configChecksum",
        "currentVersion",
        "lastGoodRevision",
        "previousGoodRevision",
        "rollbackRequest",
        "rollback",
        "rolloutHistory",
        "soak",
        "currentPrimary",
        "switchover",
        "conditions",
    }
)
CLUSTER_CONDITIONS = frozenset({"Ready", "Progressing", "Degraded", "Warning"})


def not_acted_on(cluster: DchatCluster) -> list[str]:
    """Spec fields set away from their defaults that nothing acts on yet (their CRD
    descriptions say so too)."""
    spec = cluster.spec
    out: list[str] = []
    if spec.database.postgres is not None and spec.database.postgres.standbys:
        out.append("spec.database.postgres.standbys")
    if spec.relay.nat_upnp or spec.relay.nat_turn_servers:
        out.append("spec.relay (natUpnp, natTurnServers)")
    return out


@dataclass(frozen=True)
class _Cond:
    type: str
    status: str
    reason: str
    message: str


def _template_observed(dep: Obj) -> bool:
    """The Deployment's status describes its current template (generation observed)."""
    return int((dep.get("status") or {}).get("observedGeneration") or 0) >= int(
        (dep.get("metadata") or {}).get("generation") or 0
    )


def _rollout(cluster: DchatCluster, dep: Obj | None) -> tuple[bool, bool, str, dict[str, int]]:
    """(complete, stalled, message, counts) of the Deployment's rollout."""
    counts = {"replicas": 0, "readyReplicas": 0, "updatedReplicas": 0, "availableReplicas": 0}
    if dep is None:
        return False, False, "Deployment not created yet", counts
    status: dict[str, Any] = dep.get("status") or {}
    for key in counts:
        counts[key] = int(status.get(key) or 0)
    want = cluster.spec.replicas
    observed = _template_observed(dep)
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


def _degraded(
    observed: Observed, stalled: bool, message: str, rollback: Obj | None, failed_soak: Obj | None
) -> _Cond:
    """The Degraded condition: the first problem found, most fundamental first."""
    problems = (
        ("PolicyViolation", "refused by the operator's policy, nothing applied: ", observed.policy),
        (
            "ChildConflict",
            "not taking over objects the operator does not control: ",
            observed.conflicts,
        ),
        ("SecretNotFound", "missing Secret or key: ", observed.missing_secrets),
        ("ReconcileFailed", "", observed.errors),
    )
    degraded = _Cond("Degraded", "False", "AsExpected", "no problems found")
    for reason, prefix, found in problems:
        if found:
            joiner = ", " if reason == "SecretNotFound" else "; "
            degraded = _Cond("Degraded", "True", reason, (prefix + joiner.join(found))[:1000])
            break
    else:
        if rollback is not None:
            degraded = _Cond("Degraded", "True", "RolledBack", rolled_back_message(rollback))
        elif failed_soak is not None:  # no earlier good revision to go back to
            degraded = _Cond(
                "Degraded",
                "True",
                "AnalysisFailed",
                soak_failed_reason(failed_soak) + "; no earlier good revision to roll back to",
            )
        elif stalled:
            degraded = _Cond(
                "Degraded", "True", "RolloutStalled", f"progress deadline exceeded: {message}"
            )
    if degraded.status == "True" and observed.retry is not None:
        attempt, delay = observed.retry
        degraded = _Cond(
            degraded.type,
            degraded.status,
            degraded.reason,
            f"{degraded.message[:900]} (attempt {attempt}; next retry in {delay:.0f} s)",
        )
    return degraded


def _ready_and_progressing(
    cluster: DchatCluster,
    complete: bool,
    degraded: _Cond,
    message: str,
    soak: tuple[Obj, Verdict] | None,
    serving: bool,
) -> tuple[_Cond, _Cond]:
    version = cluster.spec.version
    if complete and degraded.status == "False" and soak is not None and soak[1] == "Running":
        window, _ = soak
        last = window.get("lastCheck") or {}
        return (
            _Cond("Ready", "True", "AllReplicasReady", f"{message}; version {version}"),
            _Cond(
                "Progressing",
                "True",
                "Soaking",
                f"version {version}: soak window of "
                f"{cluster.spec.rollout.analysis.soak_seconds} s, {window.get('checks', 0)} "
                f"checks, {window.get('failedChecks', 0)} failed"
                + (f"; last: {last['message']}" if last.get("message") else ""),
            ),
        )
    if complete and degraded.status == "False":
        return (
            _Cond("Ready", "True", "AllReplicasReady", f"{message}; version {version}"),
            _Cond("Progressing", "False", "RolloutComplete", f"version {version}"),
        )
    if cluster.spec.rollout.paused and degraded.status == "False":
        ready = (
            _Cond("Ready", "True", "AllReplicasReady", f"{message}; rollout paused")
            if serving
            else _Cond("Ready", "False", "RolloutPaused", f"{message}; rollout paused")
        )
        return ready, _Cond(
            "Progressing",
            "False",
            "Paused",
            f"rollout of version {version} paused by spec.rollout.paused: {message}",
        )
    if complete and degraded.reason == "RolledBack":  # the last good revision serves
        return (
            _Cond("Ready", "True", "AllReplicasReady", f"{message}; version {version}"),
            _Cond("Progressing", "False", "RolledBack", degraded.message),
        )
    reason = "Degraded" if degraded.status == "True" else "RolloutInProgress"
    ready = _Cond("Ready", "False", reason, message)
    if degraded.status == "True" and degraded.reason != "RolloutStalled":
        return ready, _Cond("Progressing", "False", "Blocked", degraded.message)
    return ready, _Cond("Progressing", "True", "RollingOut", f"{message}; version {version}")


def _warning(cluster: DchatCluster) -> _Cond:
    unused = not_acted_on(cluster)
    if unused:
        return _Cond(
            "Warning", "True", "NotActedOn", "accepted but not acted on yet: " + ", ".join(unused)
        )
    return _Cond("Warning", "False", "None", "every field set is acted on")


def build_status(cluster: DchatCluster, observed: Observed, previous: Obj | None, now: str) -> Obj:
    """The whole ``status`` of the DchatCluster."""
    previous = previous or {}
    complete, stalled, message, counts = _rollout(cluster, observed.deployment)
    version = cluster.spec.version
    good, rollback, history = _revisions(cluster, observed, previous, stalled, message, now)
    rollback, history, request = _requested(cluster, observed, previous, rollback, history, now)
    soak = _soak(cluster, observed, previous, complete, good, rollback, now)
    failed_soak: Obj | None = None
    if soak is not None and soak[1] == "Failed":
        rollback, history = _soak_failed(cluster, good, history, soak[0], now)
        failed_soak = soak[0] if rollback is None else None

    degraded = _degraded(observed, stalled, message, rollback, failed_soak)
    serving = counts["availableReplicas"] >= cluster.spec.replicas
    ready, progressing = _ready_and_progressing(cluster, complete, degraded, message, soak, serving)
    warning = _warning(cluster)
    conditions = _conditions(
        (ready, progressing, degraded, warning), previous, cluster.metadata.generation, now
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
    soaking = soak is not None and soak[1] != "Passed" and rollback is None
    before = previous.get("previousGoodRevision")
    if complete and degraded.status == "False" and rollback is None and not soaking:
        new_good, history = _completed(cluster, good, history, now)
        if new_good is not good:
            if good is not None and good.get("spec") != new_good.get("spec"):
                before = good  # a new revision (not a rescale of the same one)
            good = new_good
    revisions = {
        "soak": soak[0] if soak is not None and soaking else None,
        "lastGoodRevision": good,
        "previousGoodRevision": before,
        "rollbackRequest": request,
        "rollback": rollback,
        "rolloutHistory": history or None,
        "switchover": observed.switchover or previous.get("switchover"),
    }
    status.update({k: v for k, v in revisions.items() if v is not None})
    if observed.primary is not None:
        status["currentPrimary"] = current_primary(
            previous.get("currentPrimary"), observed.primary, now
        )
    return status


def _conditions(conds: tuple[_Cond, ...], previous: Obj, generation: int, now: str) -> list[Obj]:
    """``conds`` as status conditions; lastTransitionTime kept where the status held."""
    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
    out = []
    for cond in conds:
        old = prev_conditions.get(cond.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == cond.status else None
        out.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return out


def _completed(
    cluster: DchatCluster, good: Obj | None, history: list[Obj], now: str
) -> tuple[Obj, list[Obj]]:
    """The rollout of ``cluster`` completed: it is the good revision (recorded once)."""
    new_good = good_revision(cluster, good, now)
    if new_good is not good:
        record = {
            "generation": cluster.metadata.generation,
            "version": cluster.spec.version,
            "result": "Completed",
            "at": now,
        }
        history = with_record(history, record)
    return new_good, history


def _soak(
    cluster: DchatCluster,
    observed: Observed,
    previous: Obj,
    complete: bool,
    good: Obj | None,
    rollback: Obj | None,
    now: str,
) -> tuple[Obj, Verdict] | None:
    """The soak window of the revision that just rolled out, and its verdict; None when no
    window applies (none asked for, a rollback in force, the rollout not complete, something
    else wrong, only replicas changed)."""
    if (
        not complete
        or cluster.spec.replicas == 0
        or rollback is not None
        or observed.blocked
        or cluster.spec.rollout.paused
        or not soak_needed(cluster, good)
    ):
        return None
    return soak_step(cluster, current_soak(cluster, previous), observed.check, now)


def soak_check_due(
    cluster: DchatCluster, deployment: Obj | None, status: Obj | None, now: str
) -> bool:
    """Should this reconcile read the pods' metrics for the soak window? (The rollout of a
    revision that needs one is complete, its window has not failed, and a check is due.)"""
    previous = status or {}
    good = previous.get("lastGoodRevision")
    complete = _rollout(cluster, deployment)[0]
    if (
        not complete
        or cluster.spec.replicas == 0
        or cluster.spec.rollout.paused
        or rollback_in_force(cluster, previous) is not None
        or not soak_needed(cluster, good if isinstance(good, dict) else None)
    ):
        return False
    soak = current_soak(cluster, previous)
    if soak is not None and int(soak.get("failedChecks") or 0) >= (
        cluster.spec.rollout.analysis.failure_limit
    ):
        return False
    return next_check_in(cluster, soak, now) <= 0


def soak_requeue(cluster: DchatCluster, status: Obj | None, now: str) -> float | None:
    """Seconds until the next soak check when a window is running in ``status``."""
    soak = current_soak(cluster, status)
    if soak is None or int(soak.get("failedChecks") or 0) >= (
        cluster.spec.rollout.analysis.failure_limit
    ):
        return None
    return next_check_in(cluster, soak, now)


def _soak_failed(
    cluster: DchatCluster, good: Obj | None, history: list[Obj], soak: Obj, now: str
) -> tuple[Obj | None, list[Obj]]:
    """The soak window failed: (the rollback to lastGoodRevision, history); no rollback when
    there is no earlier good revision (Degraded/AnalysisFailed instead)."""
    if not (good and good.get("spec") and good.get("generation") != cluster.metadata.generation):
        return None, history
    rollback = new_rollback(cluster, good, soak_failed_reason(soak), now)
    return rollback, _rolled_back(cluster, history, rollback, now)


def _revisions(
    cluster: DchatCluster,
    observed: Observed,
    previous: Obj,
    stalled: bool,
    message: str,
    now: str,
) -> tuple[Obj | None, Obj | None, list[Obj]]:
    """(lastGoodRevision, the rollback in force, rolloutHistory) before this rollout's
    completion is recorded: a rollback starts when the Deployment, having observed its
    current template, exceeded its progress deadline, a good revision of another generation
    exists, and nothing else (policy, conflicts, Secrets, apply errors) explains it."""
    good = previous.get("lastGoodRevision")
    good = good if isinstance(good, dict) else None
    history = list(previous.get("rolloutHistory") or [])
    rollback = rollback_in_force(cluster, previous)
    dep = observed.deployment or {}
    current_template = _template_observed(dep)
    if (
        rollback is None
        and stalled
        and current_template
        and not observed.blocked
        and good is not None
        and good.get("spec")
        and good.get("generation") != cluster.metadata.generation
    ):
        rollback = new_rollback(cluster, good, f"progress deadline exceeded: {message}", now)
        history = _rolled_back(cluster, history, rollback, now)
    return good, rollback, history


def _rolled_back(cluster: DchatCluster, history: list[Obj], rollback: Obj, now: str) -> list[Obj]:
    record = {
        "generation": cluster.metadata.generation,
        "version": cluster.spec.version,
        "result": "RolledBack",
        "at": now,
        "message": rollback["reason"],
    }
    return with_record(history, record)


def _requested(
    cluster: DchatCluster,
    observed: Observed,
    previous: Obj,
    rollback: Obj | None,
    history: list[Obj],
    now: str,
) -> tuple[Obj | None, list[Obj], Obj | None]:
    """A rollback-request annotation value not handled yet: (the rollback in force after it,
    history, status.rollbackRequest)."""
    handled = previous.get("rollbackRequest")
    token = observed.rollback_request
    if not token or (isinstance(handled, dict) and handled.get("value") == token):
        return rollback, history, handled if isinstance(handled, dict) else None
    target = manual_target(cluster, previous)
    if target is None:
        result = "refused: no earlier good revision to roll back to"
        return rollback, history, {"value": token[:253], "at": now, "result": result}
    rollback = new_rollback(
        cluster, target, f"rollback requested ({c_rollback_request}={token[:63]})", now
    )
    history = _rolled_back(cluster, history, rollback, now)
    result = (
        f"rolled back to version {target.get('version')} (generation {target.get('generation')})"
    )
    return rollback, history, {"value": token[:253], "at": now, "result": result}


def status_patch(
    previous: Obj | None,
    owned: Obj,
    fields: frozenset[str] = CLUSTER_OWNED,
    condition_types: frozenset[str] = CLUSTER_CONDITIONS,
) -> Obj | None:
    """The merge patch that makes ``previous`` hold ``owned``, or None when it already does.

    Only ``fields`` are sent (an owned field that is no longer built is removed with null);
    conditions of other types stay in the list, in their place.
    """
    previous = previous or {}
    ours = {c["type"]: c for c in owned.get("conditions") or []}
    merged: list[Obj] = []
    for cond in previous.get("conditions") or []:
        kind = cond.get("type")
        if kind in condition_types:
            if kind in ours:
                merged.append(ours.pop(kind))
        else:
            merged.append(cond)
    merged.extend(ours.values())
    patch: Obj = {}
    for name in sorted(fields):
        value = (merged or None) if name == "conditions" else owned.get(name)
        if previous.get(name) != value:
            patch[name] = value
    return patch or None


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

    kept = {k: v for k, v in (previous or {}).items() if k in CLUSTER_OWNED}
    return {
        **kept,
        "observedGeneration": generation,
        "phase": "Degraded",
        "conditions": [
            cond("Ready", "False", "InvalidSpec", problems),
            cond("Progressing", "False", "InvalidSpec", "the spec cannot be parsed"),
            cond("Degraded", "True", "InvalidSpec", problems),
        ],
    }
