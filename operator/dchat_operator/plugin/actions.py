"""``rollback``, ``pause-rollout``/``resume-rollout``, ``pause-bridge``/``resume-bridge``,
``scale`` and ``promote``: edits of the DchatCluster (or Patroni's DCS), then the operator's
answer.

Design:
- ``rollback`` writes a new value of the annotation ``dchat.dev/rollback-request`` (what
  ``kubectl annotate`` would) and waits until ``status.rollbackRequest.value`` is that value:
  the operator's result says which revision it went back to, or why it refused (exit 1).
- ``pause-*``/``resume-*`` are merge patches of ``spec.rollout.paused`` and
  ``spec.bridge.paused``; ``--wait`` waits until the operator observed the new generation.
  The node has no bridge service yet: ``spec.bridge.paused`` reaches config.toml (and, as any
  config change, rolls the pods) but nothing acts on it; the command says so.
- ``scale`` patches the scale subresource (as ``kubectl scale``); admission refuses what the
  CRD refuses (a SQLite cluster above 1 replica) with its own message.
- ``promote CLUSTER MEMBER`` is a Patroni switchover through its Kubernetes DCS, the way
  ``patronictl switchover`` does it when the REST API is out of reach: the annotations
  ``leader`` (current leader) and ``member`` (candidate) on the ConfigMap ``<scope>-failover``,
  labelled like Patroni's leader ConfigMap so Patroni sees it. The leader's HA loop checks the
  candidate is healthy and demotes itself; the candidate takes the lock. Patroni decides: the
  plugin only asks, and waits for ``<scope>-leader`` to name the candidate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import CLUSTER, CONFIG_MAP, POD
from dchat_operator.plugin.kube import Kube, KubeError
from dchat_operator.plugin.output import err
from dchat_operator.plugin.wait import Verdict, wait_for

Obj = dict[str, Any]


def _cluster(kube: Kube, name: str) -> Obj | None:
    obj = kube.get(CLUSTER, name)
    if obj is None:
        err(f'dchatcluster "{name}" not found in namespace "{kube.namespace}"')
    return obj


def rollback_token(at: dt.datetime) -> str:
    return f"kubectl-dchat-{at.strftime('%Y%m%dT%H%M%S.%fZ')}"


def judge_rollback(token: str) -> Any:
    def judge(obj: Obj | None) -> Verdict:
        if obj is None:
            return Verdict(True, False, "the DchatCluster is gone")
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
    if not args.wait:
        return 0
    verdict = wait_for(
        lambda: kube.get(CLUSTER, args.cluster),
        judge_rollback(token),
        what=f"rollback of dchatcluster/{args.cluster}",
        limit=args.timeout,
    )
    return 0 if verdict.ok else 1


def judge_observed(generation: int) -> Any:
    def judge(obj: Obj | None) -> Verdict:
        if obj is None:
            return Verdict(True, False, "the DchatCluster is gone")
        seen = int((obj.get("status") or {}).get("observedGeneration") or 0)
        if seen >= generation:
            phase = (obj.get("status") or {}).get("phase", "?")
            return Verdict(True, True, f"observed generation {seen}, phase {phase}")
        return Verdict(False, False, f"operator at generation {seen} of {generation}")

    return judge


BRIDGE_NOTE = (
    "note: the node has no bridge service yet: spec.bridge.paused reaches config.toml "
    "([bridge] paused) and, like any config change, rolls the pods, but nothing acts on it "
    "(the cluster's Warning condition lists spec.bridge as not acted on)"
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
    verdict = wait_for(
        lambda: kube.get(CLUSTER, args.cluster),
        judge_observed(generation),
        what=f"dchatcluster/{args.cluster}",
        limit=args.timeout,
    )
    return 0 if verdict.ok else 1


def judge_scaled(replicas: int) -> Any:
    def judge(obj: Obj | None) -> Verdict:
        if obj is None:
            return Verdict(True, False, "the DchatCluster is gone")
        status = obj.get("status") or {}
        ready = int(status.get("readyReplicas") or 0)
        seen = status.get("observedGeneration") == obj["metadata"].get("generation")
        if seen and ready == replicas and int(status.get("replicas") or 0) == replicas:
            return Verdict(True, True, f"{ready}/{replicas} ready")
        return Verdict(False, False, f"{ready}/{replicas} ready")

    return judge


def cmd_scale(kube: Kube, args: argparse.Namespace) -> int:
    if _cluster(kube, args.cluster) is None:
        return 1
    kube.merge_patch(CLUSTER, args.cluster, {"spec": {"replicas": args.replicas}}, "scale")
    print(f"dchatcluster/{args.cluster} scaled to {args.replicas}")
    if not args.wait:
        return 0
    verdict = wait_for(
        lambda: kube.get(CLUSTER, args.cluster),
        judge_scaled(args.replicas),
        what=f"dchatcluster/{args.cluster}",
        limit=args.timeout,
    )
    return 0 if verdict.ok else 1


# --- promote: a Patroni switchover through its Kubernetes DCS ---------------------------------


def patroni_scope(cluster: Obj) -> str | None:
    postgres = ((cluster.get("spec") or {}).get("database") or {}).get("postgres") or {}
    scope = (postgres.get("patroni") or {}).get("scope")
    return str(scope) if scope else None


def members(pods: list[Obj]) -> dict[str, str]:
    """Patroni members (Pods with its ``status`` annotation) -> role."""
    out: dict[str, str] = {}
    for pod in pods:
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get("status")
        if not raw:
            continue
        try:
            status = json.loads(raw)
        except ValueError:
            continue
        out[pod["metadata"]["name"]] = str(status.get("role") or "unknown")
    return out


def failover_body(scope: str, labels: dict[str, str], leader: str, candidate: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{scope}-failover",
            "labels": labels,
            "annotations": {"leader": leader, "member": candidate},
        },
    }


def judge_leader(candidate: str) -> Any:
    def judge(obj: Obj | None) -> Verdict:
        leader = (((obj or {}).get("metadata") or {}).get("annotations") or {}).get("leader")
        if leader == candidate:
            return Verdict(True, True, f"{candidate} is the leader")
        return Verdict(False, False, f"leader {leader or 'none'}")

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
    leader_cm = kube.get(CONFIG_MAP, f"{scope}-leader")
    leader = ((leader_cm or {}).get("metadata") or {}).get("annotations", {}).get("leader")
    if not leader_cm or not leader:
        err(f"Patroni scope {scope} has no leader now (ConfigMap {scope}-leader): no switchover")
        return 1
    if leader == args.member:
        print(f"{args.member} is already the leader of {scope}")
        return 0
    labels = dict((leader_cm.get("metadata") or {}).get("labels") or {})
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    known = members(kube.list(POD, labels=selector)) if selector else {}
    if args.member not in known:
        listed = ", ".join(f"{m} ({r})" for m, r in sorted(known.items())) or "none found"
        err(f"{args.member} is not a member of Patroni scope {scope}; members: {listed}")
        return 1
    name = f"{scope}-failover"
    body = failover_body(scope, labels, leader, args.member)
    try:
        existing = kube.get(CONFIG_MAP, name)
        if existing is None:
            kube.create(CONFIG_MAP, body)
        else:
            kube.merge_patch(CONFIG_MAP, name, {"metadata": body["metadata"]})
    except KubeError as exc:
        err(f"cannot write ConfigMap {name}: {exc.message}")
        return 1
    print(f"switchover of {scope} requested: {leader} -> {args.member} (ConfigMap {name})")
    if not args.wait:
        return 0
    verdict = wait_for(
        lambda: kube.get(CONFIG_MAP, f"{scope}-leader"),
        judge_leader(args.member),
        what=f"switchover of {scope}",
        limit=args.timeout,
    )
    return 0 if verdict.ok else 1
