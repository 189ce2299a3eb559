"""``kubectl dchat status CLUSTER``: the cluster, its children and their health, as a tree.

Design: ``gather`` reads everything once into a ``Snapshot`` (plain JSON: the DchatCluster,
each child the operator builds for it, found or missing, its pods, the Secrets it references
with their key names only, recent Events); ``render`` is a pure function of a snapshot, and
``-o json`` prints the snapshot itself, so a recorded snapshot is also the unit tests'
fixture. Which children exist is not guessed: it is ``builders.children.desired_children`` of
the parsed cluster, the operator's own list. Secret values are never read into the snapshot:
only the names of their keys.

Health: ``✓`` ok, ``!`` in progress or worth a look, ``✗`` broken. The command exits 0 when
the cluster is Ready for its current generation and no child is broken, else 1.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import (
    CLUSTER,
    CONFIG_MAP,
    DEPLOYMENT,
    EVENT,
    PDB,
    POD,
    PVC,
    SECRET,
    SERVICE,
    SERVICE_MONITOR,
    child_kind,
)
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.children import Capabilities, desired_children
from dchat_operator.builders.common import selector_string
from dchat_operator.builders.config import secret_references
from dchat_operator.plugin.kube import CRD, Kube, KubeError
from dchat_operator.plugin.output import FAIL, MARKS, OK, WARN, age

Obj = dict[str, Any]
EVENT_LIMIT = 10
NEGATIVE_CONDITIONS = {"Degraded": FAIL, "Warning": WARN}


class NotFound(Exception):
    """The DchatCluster does not exist."""


def parse(obj: Obj) -> tuple[DchatCluster | None, list[str], str | None]:
    """(cluster, fields this plugin's model does not know, error). A field unknown to the
    model (a CRD newer than the plugin) is dropped and named, so the plugin still reads the
    rest; any other error is returned as it is."""
    body = copy.deepcopy(obj)
    unknown: list[str] = []
    for _ in range(50):
        try:
            return DchatCluster.parse(body), unknown, None
        except ValidationError as exc:
            errors = exc.errors()
            if not all(e["type"] == "extra_forbidden" for e in errors):
                return None, unknown, str(exc)
            for error in errors:
                loc = [str(part) for part in error["loc"]]
                parent: Any = body
                for part in loc[:-1]:
                    parent = parent.get(part) if isinstance(parent, dict) else None
                if isinstance(parent, dict):
                    parent.pop(loc[-1], None)
                unknown.append(".".join(loc))
    return None, unknown, "too many unknown fields"


def referenced_secrets(cluster: DchatCluster) -> dict[str, list[str]]:
    """Secret name -> the keys the cluster needs from it (the pods' references, plus the S3
    credentials the backup Jobs mount)."""
    out: dict[str, list[str]] = {}
    for name, key in secret_references(cluster):
        keys = out.setdefault(name, [])
        if key and key not in keys:
            keys.append(key)
    s3 = cluster.spec.backup.s3
    if s3 is not None:
        keys = out.setdefault(s3.credentials_secret_ref.name, [])
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if key not in keys:
                keys.append(key)
    return out


def monitoring_crds(kube: Kube) -> bool:
    """Whether the Prometheus Operator's CRDs exist (the operator then builds its monitors)."""
    name = f"{SERVICE_MONITOR.plural}.{SERVICE_MONITOR.group}"
    try:
        return kube.get(CRD, name, None) is not None
    except KubeError:
        return False


def secret_keys(kube: Kube, name: str) -> Obj:
    """{"name", "found": bool|None, "keys": [...]} (None: not allowed to read it)."""
    try:
        secret = kube.get(SECRET, name)
    except KubeError as exc:
        return {"name": name, "found": None, "keys": [], "error": exc.message}
    if secret is None:
        return {"name": name, "found": False, "keys": []}
    keys = sorted({*(secret.get("data") or {}), *(secret.get("stringData") or {})})
    return {"name": name, "found": True, "keys": keys, "type": secret.get("type", "")}


def trim(obj: Obj) -> Obj:
    """The object without managedFields (noise in a snapshot)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": meta}


def gather(kube: Kube, name: str) -> Obj:
    """Everything ``render`` shows, as plain JSON."""
    obj = kube.get(CLUSTER, name)
    if obj is None:
        raise NotFound(f'dchatcluster "{name}" not found in namespace "{kube.namespace}"')
    snapshot: Obj = {
        "namespace": kube.namespace,
        "cluster": trim(obj),
        "children": [],
        "pods": [],
        "secrets": [],
        "events": [],
        "parseError": None,
        "unknownFields": [],
    }
    cluster, snapshot["unknownFields"], snapshot["parseError"] = parse(obj)
    if cluster is None:
        return snapshot
    caps = Capabilities(monitoring_crds=monitoring_crds(kube))
    for desired in desired_children(cluster, caps):
        kind = child_kind(desired)
        child_name = desired["metadata"]["name"]
        live = kube.get(kind, child_name)
        snapshot["children"].append(
            {"kind": kind.kind, "name": child_name, "object": live and trim(live)}
        )
    pods = kube.list(POD, labels=selector_string(cluster))
    snapshot["pods"] = [trim(p) for p in sorted(pods, key=lambda p: p["metadata"]["name"])]
    wanted = referenced_secrets(cluster)
    for secret_name, keys in wanted.items():
        entry = secret_keys(kube, secret_name)
        entry["wanted"] = keys
        snapshot["secrets"].append(entry)
    events = kube.list(EVENT, fields=f"involvedObject.name={name},involvedObject.kind={c.KIND}")
    deployment_events = kube.list(
        EVENT, fields=f"involvedObject.name={name},involvedObject.kind=Deployment"
    )
    recent = sorted(events + deployment_events, key=event_time)[-EVENT_LIMIT:]
    snapshot["events"] = [trim(e) for e in recent]
    return snapshot


def event_time(event: Obj) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("series") or {}).get("lastObservedTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


# --- health of one object (pure) ------------------------------------------------------------


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {str(x.get("type")): x for x in (obj.get("status") or {}).get("conditions") or []}


def deployment_health(dep: Obj) -> tuple[str, str]:
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1) or 0)
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    conds = _conditions(dep)
    detail = f"{ready}/{want} ready, {updated} updated"
    if spec.get("paused"):
        detail += ", rollout paused"
    progress = conds.get("Progressing", {})
    if progress.get("reason") == "ProgressDeadlineExceeded":
        return FAIL, f"{detail}; {progress.get('message', 'progress deadline exceeded')}"
    if ready == want and updated >= want and conds.get("Available", {}).get("status") != "False":
        return OK, detail
    return WARN, detail


def pod_health(pod: Obj) -> tuple[str, str]:
    status = pod.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    ready = _conditions(pod).get("Ready", {}).get("status") == "True"
    restarts = sum(int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or [])
    node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
    waiting = [
        str((s.get("state") or {}).get("waiting", {}).get("reason"))
        for s in status.get("containerStatuses") or []
        if (s.get("state") or {}).get("waiting")
    ]
    detail = f"{phase}, {'ready' if ready else 'not ready'}, node {node}, restarts {restarts}"
    if waiting:
        detail += f", waiting: {', '.join(waiting)}"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return WARN, detail + ", terminating"
    if phase == "Failed" or any(w in ("CrashLoopBackOff", "ImagePullBackOff") for w in waiting):
        return FAIL, detail
    return (OK if ready and phase == "Running" else WARN), detail


def child_health(kind: str, obj: Obj | None) -> tuple[str, str]:
    """(mark, detail) of one child; a missing child is broken."""
    if obj is None:
        return FAIL, "missing (the operator has not created it, or it was deleted)"
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if kind == DEPLOYMENT.kind:
        return deployment_health(obj)
    if kind == PVC.kind:
        phase = str(status.get("phase") or "Pending")
        capacity = (status.get("capacity") or {}).get("storage") or (
            (spec.get("resources") or {}).get("requests") or {}
        ).get("storage", "?")
        mark = OK if phase == "Bound" else FAIL if phase == "Lost" else WARN
        return mark, f"{phase}, {capacity}"
    if kind == SERVICE.kind:
        ports = ",".join(str(p.get("port")) for p in spec.get("ports") or [])
        return OK, f"{spec.get('type', 'ClusterIP')} {spec.get('clusterIP', '')} port {ports}"
    if kind == PDB.kind:
        healthy = int(status.get("currentHealthy") or 0)
        desired = int(status.get("desiredHealthy") or 0)
        allowed = int(status.get("disruptionsAllowed") or 0)
        mark = OK if healthy >= desired else WARN
        return mark, f"{healthy}/{desired} healthy, {allowed} disruptions allowed"
    if kind == CONFIG_MAP.kind:
        return OK, "keys " + ", ".join(sorted(obj.get("data") or {}))
    return OK, "present"


def secret_health(entry: Obj) -> tuple[str, str]:
    if entry.get("found") is None:
        return WARN, f"not checked: {entry.get('error', 'no access')}"
    if not entry.get("found"):
        return FAIL, "missing"
    missing = [k for k in entry.get("wanted") or [] if k not in entry.get("keys", [])]
    if missing:
        return FAIL, "missing key(s) " + ", ".join(missing)
    return OK, "keys " + ", ".join(entry.get("wanted") or []) if entry.get("wanted") else "present"


def condition_mark(cond: Obj) -> str:
    ctype, status = str(cond.get("type")), str(cond.get("status"))
    if ctype in NEGATIVE_CONDITIONS:
        return NEGATIVE_CONDITIONS[ctype] if status == "True" else OK
    if ctype == "Progressing":
        return WARN if status == "True" else OK
    return {"True": OK, "False": FAIL}.get(status, WARN)


def cluster_ok(snapshot: Obj) -> bool:
    """Ready for its current generation, and nothing broken among children and Secrets."""
    obj = snapshot["cluster"]
    status = obj.get("status") or {}
    ready = _conditions(obj).get("Ready", {}).get("status") == "True"
    current = status.get("observedGeneration") == (obj.get("metadata") or {}).get("generation")
    broken = any(child_health(ch["kind"], ch["object"])[0] == FAIL for ch in snapshot["children"])
    broken = broken or any(secret_health(s)[0] == FAIL for s in snapshot["secrets"])
    return bool(ready and current and not broken and not snapshot.get("parseError"))


# --- rendering (pure) -----------------------------------------------------------------------


def _line(mark: str, text: str) -> str:
    return f"{MARKS[mark]} {text}"


def _header(obj: Obj, at: dt.datetime) -> list[str]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    engine = (spec.get("database") or {}).get("engine", "sqlite")
    gen, seen = meta.get("generation"), status.get("observedGeneration")
    lines = [
        f"DchatCluster {meta.get('namespace')}/{meta.get('name')}   "
        f"phase {status.get('phase', 'Pending')}   age {age(meta.get('creationTimestamp'), at)}",
        f"  version   {status.get('currentVersion') or '-'} running, {spec.get('version', '-')} "
        f"in spec; engine {engine}",
        f"  replicas  {status.get('readyReplicas', 0)}/{spec.get('replicas', 1)} ready, "
        f"{status.get('updatedReplicas', 0)} updated",
        f"  generation {gen}, observed {seen}"
        + ("" if gen == seen else "  (the operator has not caught up with the spec yet)"),
    ]
    rollout = spec.get("rollout") or {}
    if rollout.get("paused"):
        lines.append("  rollout   PAUSED (spec.rollout.paused)")
    if (spec.get("bridge") or {}).get("paused"):
        lines.append("  bridge    paused (spec.bridge.paused)")
    return lines


def _sections(obj: Obj, at: dt.datetime) -> list[str]:
    status = obj.get("status") or {}
    return [
        *_condition_lines(status, at),
        *_rollout_lines(status, at),
        *_work_lines(status, at),
        *_backup_lines(status, at),
    ]


def _condition_lines(status: Obj, at: dt.datetime) -> list[str]:
    lines: list[str] = []
    conds = status.get("conditions") or []
    if conds:
        lines.append("Conditions")
        width = max(len(str(x.get("type"))) for x in conds)
        for cond in conds:
            lines.append(
                "  "
                + _line(
                    condition_mark(cond),
                    f"{str(cond.get('type')).ljust(width)}  {str(cond.get('status')).ljust(7)} "
                    f"{cond.get('reason', '')}: {cond.get('message', '')}  "
                    f"({age(cond.get('lastTransitionTime'), at)})",
                )
            )
    return lines


Field = tuple[str, Callable[[Obj, dt.datetime], str], bool]
"""A status field shown on one line: (key, its line from (value, now), shown when present
but empty)."""


def _field_lines(status: Obj, at: dt.datetime, fields: Sequence[Field]) -> list[str]:
    """One line per field the status has (in ``fields``' order)."""
    out = []
    for key, line, even_empty in fields:
        value = status.get(key)
        if value or (even_empty and value is not None):
            out.append(line(value, at))
    return out


def _rollback(x: Obj, at: dt.datetime) -> str:
    return (
        f"Rollback in force: {x.get('fromVersion')} -> {x.get('toVersion')} "
        f"({x.get('reason')}, {age(x.get('at'), at)} ago)"
    )


def _rollback_request(x: Obj, at: dt.datetime) -> str:
    return (
        f"Last rollback request: {x.get('value')}: {x.get('result')} ({age(x.get('at'), at)} ago)"
    )


def _soak(x: Obj, at: dt.datetime) -> str:
    last = (x.get("lastCheck") or {}).get("message") or ""
    return (
        f"Soak window: version {x.get('version')}, {x.get('checks', 0)} checks, "
        f"{x.get('failedChecks', 0)} failed" + (f"; last: {last}" if last else "")
    )


def _good_revision(x: Obj, at: dt.datetime) -> str:
    return (
        f"Last good revision: version {x.get('version')} (generation "
        f"{x.get('generation')}, {age(x.get('completedAt'), at)} ago)"
    )


def _restore_hold(x: Obj, at: dt.datetime) -> str:
    return (
        f"Restore in progress: dchatrestore/{x.get('name')} holds the cluster at 0 "
        f"replicas ({age(x.get('since'), at)})"
    )


def _bootstrap(x: Obj, at: dt.datetime) -> str:
    return f"Bootstrap from backup {x.get('backup') or '-'}: {x.get('phase')}" + (
        f": {x['error']}" if x.get("error") else ""
    )


def _primary(x: Obj, at: dt.datetime) -> str:
    who = x.get("name") or "NONE (Patroni's leader lock is free)"
    return (
        f"Primary: {who} since {age(x.get('since'), at)} ago "
        f"(transitions {x.get('transitions') or '-'})"
    )


def _switchover(x: Obj, at: dt.datetime) -> str:
    return (
        f"Switchover to {x.get('request')}: {x.get('phase')}: "
        f"{x.get('message', '')} ({age(x.get('startedAt'), at)} ago)"
    )


def _rollout_lines(status: Obj, at: dt.datetime) -> list[str]:
    lines = _field_lines(
        status,
        at,
        [
            ("rollback", _rollback, False),
            ("rollbackRequest", _rollback_request, False),
            ("soak", _soak, False),
        ],
    )
    history = status.get("rolloutHistory") or []
    if history:
        lines.append("Rollouts (newest last)")
        for record in history[-3:]:
            lines.append(
                f"  {age(record.get('at'), at):>4}  generation {record.get('generation')} "
                f"version {record.get('version')}: {record.get('result')}"
                + (f" ({record['message']})" if record.get("message") else "")
            )
    return lines + _field_lines(status, at, [("lastGoodRevision", _good_revision, False)])


def _work_lines(status: Obj, at: dt.datetime) -> list[str]:
    """A restore hold, a bootstrap, the database primary, a switchover."""
    return _field_lines(
        status,
        at,
        [
            ("restoreInProgress", _restore_hold, False),
            ("bootstrap", _bootstrap, False),
            ("currentPrimary", _primary, True),  # {}: Patroni's leader lock is free
            ("switchover", _switchover, False),
        ],
    )


def _backup_lines(status: Obj, at: dt.datetime) -> list[str]:
    last, good = status.get("lastBackup"), status.get("lastSuccessfulBackup")
    if not last and not good:
        return ["Backups: none yet"]
    out = ["Backups"]
    if last:
        out.append(
            f"  last        {last.get('name')}: {last.get('phase') or '-'}, "
            f"{age(last.get('time'), at)} ago {last.get('location') or ''}".rstrip()
        )
    if good:
        out.append(
            f"  successful  {good.get('name')}: {age(good.get('time'), at)} ago "
            f"{good.get('location') or ''}".rstrip()
        )
    schedule = status.get("backupSchedule") or {}
    if schedule.get("nextScheduleTime"):
        out.append(f"  next        {schedule['nextScheduleTime']} ({schedule.get('schedule')})")
    return out


def _tree(snapshot: Obj) -> list[str]:
    items: list[tuple[str, str, list[tuple[str, str]]]] = []
    for child in snapshot["children"]:
        mark, detail = child_health(child["kind"], child["object"])
        subs: list[tuple[str, str]] = []
        if child["kind"] == DEPLOYMENT.kind:
            for pod in snapshot["pods"]:
                pmark, pdetail = pod_health(pod)
                subs.append((pmark, f"Pod/{pod['metadata']['name']}  {pdetail}"))
        items.append((mark, f"{child['kind']}/{child['name']}  {detail}", subs))
    for entry in snapshot["secrets"]:
        mark, detail = secret_health(entry)
        items.append((mark, f"Secret/{entry['name']}  {detail}", []))
    lines = ["Children"]
    for i, (mark, text, subs) in enumerate(items):
        last = i == len(items) - 1
        lines.append(("└─ " if last else "├─ ") + _line(mark, text))
        for j, (smark, stext) in enumerate(subs):
            branch = "   " if last else "│  "
            lines.append(branch + ("└─ " if j == len(subs) - 1 else "├─ ") + _line(smark, stext))
    return lines


def _events(snapshot: Obj, at: dt.datetime) -> list[str]:
    events = snapshot["events"]
    if not events:
        return ["Events: none recent"]
    lines = ["Events (newest last)"]
    for event in events:
        involved = event.get("involvedObject") or {}
        count = event.get("count") or 1
        lines.append(
            f"  {age(event_time(event), at):>4}  {str(event.get('type', '')).ljust(7)} "
            f"{event.get('reason', '')}  {involved.get('kind', '')}: "
            f"{event.get('message', '')}" + (f"  (x{count})" if count > 1 else "")
        )
    return lines


def render(snapshot: Obj, at: dt.datetime) -> str:
    """The tree as text."""
    obj = snapshot["cluster"]
    lines = _header(obj, at)
    if snapshot.get("parseError"):
        lines.append(f"✗ the plugin cannot read this spec: {snapshot['parseError']}")
        return "\n".join(lines) + "\n"
    if snapshot.get("unknownFields"):
        lines.append(
            "! fields this plugin does not know (a newer CRD?): "
            + ", ".join(snapshot["unknownFields"])
        )
    lines.append("")
    lines.extend(_sections(obj, at))
    lines.append("")
    lines.extend(_tree(snapshot))
    lines.append("")
    lines.extend(_events(snapshot, at))
    verdict = "healthy" if cluster_ok(snapshot) else "NOT healthy"
    lines.append("")
    lines.append(f"Overall: {verdict}")
    return "\n".join(lines) + "\n"
