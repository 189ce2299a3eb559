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
- Not here yet (the rollout issue asks for them too): a soak window checking the pods'
  error ratio and latency, pause/resume and a manual rollback.
"""

from __future__ import annotations

import json
from typing import Any

from dchat_operator.api.models import DchatCluster, DchatClusterSpec
from dchat_operator.builders.common import Obj

HISTORY_LIMIT = 10


def spec_json(cluster: DchatCluster) -> str:
    """The spec of ``cluster`` as deterministic JSON, replicas left out."""
    spec = cluster.spec.model_dump(mode="json", by_alias=True, exclude={"replicas"})
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def rollback_in_force(cluster: DchatCluster, status: Obj | None) -> Obj | None:
    """``status.rollback`` when it holds for the cluster's current generation."""
    rollback = (status or {}).get("rollback")
    if not isinstance(rollback, dict):
        return None
    if rollback.get("fromGeneration") != cluster.metadata.generation:
        return None
    good = (status or {}).get("lastGoodRevision")
    return rollback if isinstance(good, dict) and good.get("spec") else None


def pinned(cluster: DchatCluster, status: Obj | None) -> DchatCluster:
    """``cluster`` built from lastGoodRevision while a rollback is in force, else itself."""
    if rollback_in_force(cluster, status) is None:
        return cluster
    good: dict[str, Any] = (status or {})["lastGoodRevision"]
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
