"""``rollback``, ``pause-rollout``/``resume-rollout``, ``pause-bridge``/``resume-bridge``,
``scale`` and ``promote``: edits of the DchatCluster, then the operator's answer.

Design:
- ``rollback`` writes a new value of the annotation ``dchat.dev/rollback-request`` (what
  ``kubectl annotate`` would) and waits until ``status.rollbackRequest.value`` is that value:
  the operator's result says which revision it went back to, or why it refused (exit 1).
- ``pause-*``/``resume-*`` are merge patches of ``spec.rollout.paused`` and
  ``spec.bridge.paused``; ``--wait`` waits until the operator observed the new generation.
  ``spec.bridge.paused`` reaches the pods as the ConfigMap key ``bridge-paused`` (no
  restart); the node's bridge then stops signing and submitting; the command says so.
- ``scale`` patches the scale subresource (as ``kubectl scale``); admission refuses what the
  CRD refuses (a SQLite cluster above 1 replica) with its own message.
- ``promote CLUSTER MEMBER`` sets the annotation ``dchat.dev/switchover-request=MEMBER``:
  the operator checks the member against Patroni's and asks Patroni (its failover
  ConfigMap, as ``patronictl switchover`` does); the plugin waits for ``status.switchover``
  of that request to say Completed or Failed, and prints the operator's message. The
  operator acts once per value: asking again for the member it last handled is refused here
  with that explanation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.constants import switchover_member
from dchat_operator.api.kinds import CLUSTER
from dchat_operator.plugin.kube import Kube
from dchat_operator.plugin.output import err
from dchat_operator.plugin.wait import Verdict, follow, ready_fraction

Obj = dict[str, Any]
SHOWN = 63
"""Characters of a request value the operator keeps in status.switchover.request."""


def _cluster(kube: Kube, name: str) -> Obj | None:
    obj = kube.get(CLUSTER, name)
    if obj is None:
        err(f'dchatcluster "{name}" not found in namespace "{kube.namespace}"')
    return obj


def of_cluster(judge: Callable[[Obj], Verdict]) -> Callable[[Obj | None], Verdict]:
    """A judge of the DchatCluster: its deletion ends the wait as a failure."""

    def judged(obj: Obj | None) -> Verdict:
        return Verdict(True, False, "the DchatCluster is gone") if obj is None else judge(obj)

    return judged


def _follow(
    kube: Kube, args: argparse.Namespace, judge: Callable[[Obj | None], Verdict], what: str = ""
) -> int:
    """``wait.follow`` on the command's DchatCluster (``args.cluster``)."""
    what = what or f"dchatcluster/{args.cluster}"
    return follow(kube, CLUSTER, args.cluster, judge, what=what, args=args)


def rollback_token(at: dt.datetime) -> str:
    return f"kubectl-dchat-{at.strftime('%Y%m%dT%H%M%S.%fZ')}"


def judge_rollback(token: str) -> Any:
    @of_cluster
    def judge(obj: Obj) -> Verdict:
        handled = (obj.get("status") or {}).get("rollbackRequest") or {}
        if handled.get("value") != token:
            return Verdict(False, False, "waiting for the operator to handle the request")
        result = str(handled.get("result") or "")
        return Verdict(True, not result.startswith("refused"), result)

    return judge


def cmd_rollback(kube: Kube, args: argparse.Namespace) -> int:
    if _cluster(kube, args.cluster) is None:
        return 1
    token = rollback_token(dt.datetime.now(dt.UTC))
    patch = {"metadata": {"annotations": {c.ANNOTATION_ROLLBACK_REQUEST: token}}}
    kube.merge_patch(CLUSTER, args.cluster, patch)
    print(f"dchatcluster/{args.cluster} annotated {c.ANNOTATION_ROLLBACK_REQUEST}={token}")
    return _follow(kube, args, judge_rollback(token), f"rollback of dchatcluster/{args.cluster}")


def judge_observed(generation: int) -> Any:
    @of_cluster
    def judge(obj: Obj) -> Verdict:
        seen = int((obj.get("status") or {}).get("observedGeneration") or 0)
        if seen >= generation:
            phase = (obj.get("status") or {}).get("phase", "?")
            return Verdict(True, True, f"observed generation {seen}, phase {phase}")
        return Verdict(False, False, f"operator at generation {seen} of {generation}")

    return judge


BRIDGE_NOTE = (
    "note: spec.bridge.paused reaches the pods as the ConfigMap key bridge-paused, with no "
    "restart (the kubelet refreshes a mounted ConfigMap within about a minute); a paused "
    "bridge keeps observing both chains but signs and submits nothing (docs/bridge.md)"
)


def cmd_set_paused(kube: Kube, args: argparse.Namespace, section: str, paused: bool) -> int:
    obj = _cluster(kube, args.cluster)
    if obj is None:
        return 1
    current = bool(((obj.get("spec") or {}).get(section) or {}).get("paused", False))
    field = f"spec.{section}.paused"
    if current == paused:
        print(f"dchatcluster/{args.cluster}: {field} is already {str(paused).lower()}")
    else:
        result = kube.merge_patch(CLUSTER, args.cluster, {"spec": {section: {"paused": paused}}})
        obj = result
        print(f"dchatcluster/{args.cluster}: {field} set to {str(paused).lower()}")
    if section == "bridge":
        print(BRIDGE_NOTE, file=sys.stderr)
    if not args.wait:
        return 0
    generation = int(obj["metadata"].get("generation") or 0)
    return _follow(kube, args, judge_observed(generation))


def judge_scaled(replicas: int) -> Any:
    @of_cluster
    def judge(obj: Obj) -> Verdict:
        status = obj.get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        seen = status.get("observedGeneration") == obj["metadata"].get("generation")
        if seen and ready == replicas and int(status.get("replicas") or 0) == replicas:
            return Verdict(True, True, f"{ready}/{replicas} ready")
        return Verdict(False, False, f"{ready}/{replicas} ready", ready_fraction(ready, replicas))

    return judge


def cmd_scale(kube: Kube, args: argparse.Namespace) -> int:
    if _cluster(kube, args.cluster) is None:
        return 1
    kube.merge_patch(CLUSTER, args.cluster, {"spec": {"replicas": args.replicas}}, "scale")
    print(f"dchatcluster/{args.cluster} scaled to {args.replicas}")
    return _follow(kube, args, judge_scaled(args.replicas))


# --- promote: the operator's switchover request ----------------------------------------------


def patroni_scope(cluster: Obj) -> str | None:
    postgres = ((cluster.get("spec") or {}).get("database") or {}).get("postgres") or {}
    scope = (postgres.get("patroni") or {}).get("scope")
    return str(scope) if scope else None


def judge_switchover(member: str) -> Any:
    @of_cluster
    def judge(obj: Obj) -> Verdict:
        found = (obj.get("status") or {}).get("switchover") or {}
        if found.get("request") != member[:SHOWN]:
            return Verdict(False, False, "waiting for the operator to handle the request")
        phase = str(found.get("phase") or "Running")
        state = f"{phase}: {found.get('message') or ''}".rstrip(": ")
        if phase == "Running":
            return Verdict(False, False, state)
        return Verdict(True, phase == "Completed", state)

    return judge


def cmd_promote(kube: Kube, args: argparse.Namespace) -> int:
    cluster = _cluster(kube, args.cluster)
    if cluster is None:
        return 1
    scope = patroni_scope(cluster)
    if scope is None:
        err(
            f"dchatcluster/{args.cluster} names no Patroni cluster "
            "(spec.database.postgres.patroni.scope): promote asks Patroni for a switchover, "
            "and nothing else can promote safely (a SQLite cluster has one pod; a PostgreSQL "
            "database without Patroni is promoted by whoever runs it)"
        )
        return 1
    status = cluster.get("status") or {}
    primary = (status.get("currentPrimary") or {}).get("name")
    if primary == args.member:
        print(f"{args.member} is already the primary of Patroni cluster {scope}")
        return 0
    annotations = (cluster.get("metadata") or {}).get("annotations") or {}
    handled = (status.get("switchover") or {}).get("request") or ""
    asked = str(annotations.get(c.ANNOTATION_SWITCHOVER_REQUEST) or "")
    value = args.member
    if switchover_member(asked) == args.member or switchover_member(handled) == args.member:
        # the operator acts once per value: a member asked for before gets a new one
        value = f"{args.member}@{int(time.time())}"
    patch = {"metadata": {"annotations": {c.ANNOTATION_SWITCHOVER_REQUEST: value}}}
    kube.merge_patch(CLUSTER, args.cluster, patch)
    print(
        f"dchatcluster/{args.cluster} annotated {c.ANNOTATION_SWITCHOVER_REQUEST}={value} "
        f"(Patroni cluster {scope}, primary {primary or 'none'})"
    )
    return _follow(kube, args, judge_switchover(value), f"switchover of {scope} to {args.member}")
