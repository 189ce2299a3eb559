"""``status.currentPrimary``: who Patroni says is the PostgreSQL primary (pure).

Design: Patroni (Kubernetes DCS with ConfigMaps) keeps its leader lock in the ConfigMap
``<scope>-leader``: annotations ``leader`` (the member), ``renewTime`` (ISO 8601), ``ttl``
(seconds) and ``transitions``. The cluster controller reads that object; ``leader_of`` turns it
into (leader, transitions), with no leader when the object is missing, the annotation empty,
or the lock expired (renewTime + ttl in the past: the leader died and no member took over
yet). ``current_primary`` keeps ``since`` while the leader stays the same, so an unchanged
leader writes nothing. The operator only reads: promotion is Patroni's.
"""

from __future__ import annotations

import datetime as dt

from dchat_operator.builders.common import Obj


def leader_object(scope: str) -> str:
    return f"{scope}-leader"


def leader_of(config_map: Obj | None, now: dt.datetime) -> tuple[str, str]:
    """(leader member or "", transitions) from Patroni's leader ConfigMap."""
    annotations = ((config_map or {}).get("metadata") or {}).get("annotations") or {}
    leader = str(annotations.get("leader") or "")
    transitions = str(annotations.get("transitions") or "")
    renewed = str(annotations.get("renewTime") or "")
    try:
        ttl = float(annotations.get("ttl") or 0)
        at = dt.datetime.fromisoformat(renewed) if renewed else None
    except ValueError:
        at, ttl = None, 0.0
    if leader and at is not None and ttl > 0:
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        if at + dt.timedelta(seconds=ttl) < now:
            leader = ""  # the lock expired: nobody holds it now
    return leader, transitions


def current_primary(previous: Obj | None, seen: tuple[str, str], now: str) -> Obj:
    name, transitions = seen
    if isinstance(previous, dict) and previous.get("name") == name:
        if previous.get("transitions") == transitions:
            return previous
        return {**previous, "transitions": transitions}
    return {"name": name, "since": now, "transitions": transitions}
