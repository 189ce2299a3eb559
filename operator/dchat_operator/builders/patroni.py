"""``status.currentPrimary``: who Patroni says is the PostgreSQL primary (pure).

Design: Patroni (Kubernetes DCS with ConfigMaps) keeps its leader lock in the ConfigMap
``<scope>-leader``: annotations ``leader`` (the member), ``renewTime`` (ISO 8601), ``ttl``
(seconds) and ``transitions``. The cluster controller reads that object; ``leader_of`` turns it
into (leader, transitions), with no leader when the object is missing, the annotation empty,
or the lock expired (renewTime + ttl in the past: the leader died and no member took over
yet). ``current_primary`` keeps ``since`` while the leader stays the same, so an unchanged
leader writes nothing. Promotion is Patroni's: the operator never promotes or fences a
database itself.

Switchover on request (annotation ``dchat.dev/switchover-request=<member>``), the way
``patronictl switchover`` asks: the operator writes the annotations ``leader`` (the current
primary) and ``member`` (the candidate) on the ConfigMap ``<scope>-failover``, with the
labels of the leader ConfigMap (Patroni lists its objects by those labels); Patroni's leader
sees it in its next HA loop, checks the candidate, demotes itself and lets the candidate
take the lock, then clears the object. ``switchover_step`` is the pure decision per
reconcile, with the state in ``status.switchover`` (so a restarted operator goes on):
a new value is checked first (a primary exists; the candidate is a member whose Pod
``status`` annotation says a running replica; not already the primary) and then asked;
a Running request completes when the candidate holds the lock, and fails when Patroni
cleared the request without acting (``SWITCHOVER_DECLINED_SECONDS``, e.g. a lagging
candidate in synchronous mode) or after ``SWITCHOVER_TIMEOUT_SECONDS``. Each value is
acted on once; asking again for an unchanged value does nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from dchat_operator.api.constants import switchover_member
from dchat_operator.builders.common import Obj

SWITCHOVER_TIMEOUT_SECONDS = 60.0
SWITCHOVER_DECLINED_SECONDS = 15.0
_SHOWN = 63  # characters of a request value quoted back in status and Events


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


def failover_object(scope: str) -> str:
    return f"{scope}-failover"


@dataclass(frozen=True)
class Member:
    """A Patroni member as its Pod's ``status`` annotation describes it."""

    name: str
    role: str
    state: str


def members_of(pods: list[Obj]) -> dict[str, Member]:
    out: dict[str, Member] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name") or "")
        try:
            info = json.loads((meta.get("annotations") or {}).get("status") or "{}")
        except ValueError:
            info = {}
        if not isinstance(info, dict):
            info = {}
        if name:
            out[name] = Member(name, str(info.get("role") or ""), str(info.get("state") or ""))
    return out


def member_selector(leader_config_map: Obj | None) -> str:
    """The label selector of the scope's objects: the labels Patroni put on its leader
    ConfigMap (its configured labels and the scope label), which its member Pods carry."""
    labels = ((leader_config_map or {}).get("metadata") or {}).get("labels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def failover_config_map(
    leader_config_map: Obj, namespace: str, scope: str, leader: str, candidate: str
) -> Obj:
    labels = dict(((leader_config_map.get("metadata") or {}).get("labels")) or {})
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": failover_object(scope),
            "namespace": namespace,
            "labels": labels,
            "annotations": {"leader": leader, "member": candidate},
        },
    }


def pending_candidate(failover: Obj | None) -> str:
    """The candidate of a switchover Patroni has not acted on yet ("" when none)."""
    annotations = ((failover or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get("member") or "")


@dataclass(frozen=True)
class SwitchoverStep:
    status: Obj | None
    """The new status.switchover (None: unchanged)."""
    ask: tuple[str, str] | None = None
    """(leader, candidate) to write on the failover ConfigMap now."""


def _iso(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(started: str, now: dt.datetime) -> float:
    try:
        at = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return SWITCHOVER_TIMEOUT_SECONDS  # unreadable: treat as timed out
    return (now - at).total_seconds()


def switchover_step(
    request: str,
    previous: Obj | None,
    *,
    scope: str,
    leader: str,
    members: dict[str, Member] | None,
    pending: str,
    now: dt.datetime,
) -> SwitchoverStep:
    """What to do about the switchover-request annotation's value ``request`` this
    reconcile. ``members`` is read only for a new request (None otherwise); ``pending`` is
    the candidate still written on the failover ConfigMap (for a Running one)."""
    previous = previous if isinstance(previous, dict) else None
    if not request:
        return SwitchoverStep(None)
    shown = request[:_SHOWN]
    if previous is not None and previous.get("request") == shown:
        if previous.get("phase") != "Running":
            return SwitchoverStep(None)  # handled once; a new value asks again
        return _running(previous, leader, pending, now)
    phase, message = _judge(request, scope=scope, leader=leader, members=members)
    status: Obj = {"request": shown, "phase": phase, "from": leader, "startedAt": _iso(now)}
    if phase != "Running":
        status["finishedAt"] = _iso(now)
    status["message"] = message
    ask = (leader, switchover_member(request)) if phase == "Running" else None
    return SwitchoverStep(status, ask=ask)


def _judge(
    request: str, *, scope: str, leader: str, members: dict[str, Member] | None
) -> tuple[str, str]:
    """(phase, message) for a new request: Running when Patroni is to be asked."""
    if len(request) > _SHOWN:
        return "Failed", f"not a member name (longer than {_SHOWN} characters)"
    request = switchover_member(request)
    if not scope:
        return "Failed", "database.postgres.patroni is not set: no Patroni cluster to switch over"
    if not leader:
        return "Failed", "no primary to switch over from: Patroni's leader lock is free"
    if request == leader:
        return "Completed", f"{request} is already the primary"
    found = (members or {}).get(request)
    if found is None:
        known = ", ".join(sorted(members or {})) or "none found"
        return "Failed", f"{request} is not a member of Patroni cluster {scope} (members: {known})"
    if found.role not in ("replica", "sync_standby") or found.state not in ("running", "streaming"):
        role, state = found.role or "?", found.state or "?"
        return "Failed", f"{request} is not a healthy standby (role {role}, state {state})"
    return "Running", f"asked Patroni to hand the primary role from {leader} to {request}"


def _running(previous: Obj, leader: str, pending: str, now: dt.datetime) -> SwitchoverStep:
    candidate = switchover_member(str(previous.get("request") or ""))
    was = str(previous.get("from") or "")
    elapsed = _since(str(previous.get("startedAt") or ""), now)
    done = {**previous, "finishedAt": _iso(now)}
    if leader == candidate:
        return SwitchoverStep(
            {
                **done,
                "phase": "Completed",
                "message": (
                    f"{candidate} is the primary (was {was}), {elapsed:.0f} s after the request"
                ),
            }
        )
    if elapsed >= SWITCHOVER_TIMEOUT_SECONDS:
        now_primary = leader or "none"
        return SwitchoverStep(
            {
                **done,
                "phase": "Failed",
                "message": (
                    f"{candidate} did not become the primary within "
                    f"{SWITCHOVER_TIMEOUT_SECONDS:.0f} s (primary: {now_primary})"
                ),
            }
        )
    if not pending and leader == was and elapsed >= SWITCHOVER_DECLINED_SECONDS:
        return SwitchoverStep(
            {
                **done,
                "phase": "Failed",
                "message": (
                    f"Patroni declined the switchover to {candidate}: the request was cleared "
                    f"and {was} is still the primary (see the Patroni leader's log)"
                ),
            }
        )
    return SwitchoverStep(None)  # still running
