"""Automatic rollback: which revision the children are built from, and the rollout record.

Design (pure functions; the cluster controller does the I/O, ``build_status`` calls these):
- When a rollout completes with every replica Ready and no rollback is in force, the status
  records ``lastGoodRevision``: version, generation and the spec as JSON (replicas left out:
  scaling is never rolled back).
- A rollout whose Deployment exceeds its progress deadline (``ProgressDeadlineExceeded``:
  pods that never turn Ready, or whose process exits) while a lastGoodRevision of another
  generation exists starts a rollback: ``status.rollback`` names the failed version and why,
  and ``rolloutHistory`` gets an entry.
- ``pinned`` builds the children from lastGoodRevision's spec (with the current replicas)
  for as long as ``status.rollback.fromGeneration`` is the cluster's generation: the failed
  spec is not tried again until the spec changes (Argo Rollouts' "Degraded until the spec
  changes"); a new generation drops the rollback and rolls the new spec out.
- The soak window (``spec.rollout.analysis.soakSeconds`` > 0): a completed rollout of a
  revision whose spec differs from lastGoodRevision's (a change of replicas alone does not
  count) is not good yet. ``status.soak`` counts the checks the controller makes
  (``builders.analysis``) every ``intervalSeconds``, the first at once; a check made once the
  window has run its length, with fewer than ``failureLimit`` failures, makes the revision
  good; ``failureLimit`` failures roll it back like a stalled rollout. The window's start
  and counts live in the status, so a restarted operator goes on where it was.
- A manual rollback: a new value of the annotation ``dchat.dev/rollback-request`` on the
  DchatCluster (any value, e.g. a time) rolls back to the newest good revision other than
  the current spec and what already runs (lastGoodRevision, else previousGoodRevision,
  the one it replaced); ``status.rollbackRequest`` records the value handled and the result,
  so a request is acted on once. It holds, like an automatic one, until the spec changes.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from dchat_operator.api.models import DchatCluster, DchatClusterSpec
from dchat_operator.builders.common import Obj

HISTORY_LIMIT = 10


def spec_json(cluster: DchatCluster) -> str:
    """The spec of ``cluster`` as deterministic JSON, replicas left out."""
    spec = cluster.spec.model_dump(mode="json", by_alias=True, exclude={"replicas"})
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


GOOD_REVISIONS = ("lastGoodRevision", "previousGoodRevision")


def rollback_target(status: Obj | None, rollback: Obj) -> Obj | None:
    """The good revision ``rollback`` goes back to (lastGoodRevision, or for a manual
    rollback possibly previousGoodRevision), if the status still holds it."""
    for name in GOOD_REVISIONS:
        revision = (status or {}).get(name)
        if (
            isinstance(revision, dict)
            and revision.get("spec")
            and revision.get("generation") == rollback.get("toGeneration")
        ):
            return revision
    return None


def rollback_in_force(cluster: DchatCluster, status: Obj | None) -> Obj | None:
    """``status.rollback`` when it holds for the cluster's current generation."""
    rollback = (status or {}).get("rollback")
    if not isinstance(rollback, dict):
        return None
    if rollback.get("fromGeneration") != cluster.metadata.generation:
        return None
    return rollback if rollback_target(status, rollback) is not None else None


def manual_target(cluster: DchatCluster, status: Obj | None) -> Obj | None:
    """What a rollback request goes back to: the newest good revision that is neither the
    current spec nor what already runs instead of it."""
    running = rollback_in_force(cluster, status)
    skip = {cluster.metadata.generation, (running or {}).get("toGeneration")}
    current = spec_json(cluster)
    for name in GOOD_REVISIONS:
        revision = (status or {}).get(name)
        if (
            isinstance(revision, dict)
            and revision.get("spec")
            and revision.get("spec") != current
            and revision.get("generation") not in skip
        ):
            return revision
    return None


def pinned(cluster: DchatCluster, status: Obj | None) -> DchatCluster:
    """``cluster`` built from its rollback's target while a rollback is in force, else itself."""
    rollback = rollback_in_force(cluster, status)
    if rollback is None:
        return cluster
    good = rollback_target(status, rollback)
    assert good is not None  # rollback_in_force checked it
    try:
        data = json.loads(str(good["spec"]))
        data["replicas"] = cluster.spec.replicas
        spec = DchatClusterSpec.model_validate(data)
    except (ValueError, TypeError):  # not a spec this operator reads: roll nothing back
        return cluster
    return cluster.model_copy(update={"spec": spec})


def serving_image(cluster: DchatCluster, status: Obj | None) -> DchatCluster:
    """``cluster`` with the version and image its pods run: the last good revision's while a
    rollback is in force. For the Jobs of backups and restores, which run the node image
    beside (or instead of) the pods but keep the spec's other settings."""
    run = pinned(cluster, status)
    if run is cluster:
        return cluster
    spec = cluster.spec.model_copy(update={"version": run.spec.version, "image": run.spec.image})
    return cluster.model_copy(update={"spec": spec})


def good_revision(cluster: DchatCluster, previous: Obj | None, now: str) -> Obj:
    """lastGoodRevision for a rollout of ``cluster`` that just completed; the previous one
    unchanged (its time too) when it is the same revision, so an idle cluster writes nothing."""
    spec = spec_json(cluster)
    if (
        isinstance(previous, dict)
        and previous.get("generation") == cluster.metadata.generation
        and previous.get("spec") == spec
    ):
        return previous
    return {
        "version": cluster.spec.version,
        "generation": cluster.metadata.generation,
        "completedAt": now,
        "spec": spec,
    }


def new_rollback(cluster: DchatCluster, good: Obj, reason: str, now: str) -> Obj:
    return {
        "fromVersion": cluster.spec.version,
        "fromGeneration": cluster.metadata.generation,
        "toVersion": str(good.get("version") or ""),
        "toGeneration": int(good.get("generation") or 0),
        "reason": reason[:500],
        "at": now,
    }


def rolled_back_message(rollback: Obj) -> str:
    return (
        f"version {rollback.get('fromVersion')} (generation {rollback.get('fromGeneration')}) "
        f"did not roll out ({rollback.get('reason')}); running the last good revision, version "
        f"{rollback.get('toVersion')} (generation {rollback.get('toGeneration')}), until the "
        "spec changes"
    )[:1000]


def with_record(history: list[Obj] | None, record: Obj) -> list[Obj]:
    """``history`` with ``record`` appended, the oldest dropped beyond HISTORY_LIMIT."""
    return [*(history or []), record][-HISTORY_LIMIT:]


Verdict = Literal["Running", "Passed", "Failed"]


def _pods_json(spec_text: str) -> str:
    """What a spec (as ``spec_json``) makes the pods run: the spec without its rollout policy."""
    try:
        data = json.loads(spec_text)
    except ValueError:
        return ""
    if isinstance(data, dict):
        data.pop("rollout", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def soak_needed(cluster: DchatCluster, good: Obj | None) -> bool:
    """Does the completed rollout of ``cluster`` go through a soak window before it is good?
    Only when what the pods run changed: not for replicas, not for the rollout policy."""
    if cluster.spec.rollout.analysis.soak_seconds <= 0:
        return False
    if not isinstance(good, dict):
        return True
    return _pods_json(str(good.get("spec") or "")) != _pods_json(spec_json(cluster))


def _time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def current_soak(cluster: DchatCluster, status: Obj | None) -> Obj | None:
    """``status.soak`` when it is the window of the cluster's current generation."""
    soak = (status or {}).get("soak")
    if isinstance(soak, dict) and soak.get("generation") == cluster.metadata.generation:
        return soak
    return None


def soak_step(
    cluster: DchatCluster, previous: Obj | None, check: Obj | None, now: str
) -> tuple[Obj, Verdict]:
    """The soak window after this run's ``check`` (None: no check this run), and its verdict."""
    analysis = cluster.spec.rollout.analysis
    soak: Obj = dict(previous) if previous is not None else {}
    if not soak:
        soak = {
            "generation": cluster.metadata.generation,
            "version": cluster.spec.version,
            "startedAt": now,
            "checks": 0,
            "failedChecks": 0,
        }
    if check is not None:
        soak["checks"] = int(soak.get("checks") or 0) + 1
        soak["failedChecks"] = int(soak.get("failedChecks") or 0) + (not check.get("passed"))
        soak["lastCheck"] = check
    if int(soak.get("failedChecks") or 0) >= analysis.failure_limit:
        return soak, "Failed"
    started, at = _time(soak.get("startedAt")), _time(now)
    ran = (at - started).total_seconds() if started and at else 0.0
    if check is not None and ran >= analysis.soak_seconds:
        return soak, "Passed"
    return soak, "Running"


def next_check_in(cluster: DchatCluster, soak: Obj | None, now: str) -> float:
    """Seconds until the soak window's next check: ``intervalSeconds`` after the last one,
    but not after the window's end; 0 when none was made yet."""
    analysis = cluster.spec.rollout.analysis
    if soak is None:
        return 0.0
    at = _time(now)
    last = _time((soak.get("lastCheck") or {}).get("at"))
    started = _time(soak.get("startedAt"))
    if at is None or last is None:
        return 0.0
    due = last + dt.timedelta(seconds=analysis.interval_seconds)
    if started is not None:
        end = started + dt.timedelta(seconds=analysis.soak_seconds)
        if last < end:
            due = min(due, end)
    return max(0.0, (due - at).total_seconds())


def soak_failed_reason(soak: Obj) -> str:
    last = soak.get("lastCheck") or {}
    return (
        f"soak window failed {soak.get('failedChecks')} of {soak.get('checks')} checks: "
        f"{last.get('message', '')}"
    )[:500]
