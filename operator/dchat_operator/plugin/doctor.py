"""``kubectl dchat doctor CLUSTER``: every dependency the cluster needs, each with the fix.

Design: a list of checks, each a ``Check`` (name, ok/warn/fail/not configured, what was found, and
for a failure the fix as a command or an edit). The checks read what a user with kubectl can
read: the three CRDs (Established, serving v1alpha1), the operator (its leader Lease,
``dchat-operator``, in ``--operator-namespace`` or in the cluster's namespace, renewed within
its duration; its Deployment when installed from manifests/), the DchatCluster (parses with
the operator's model; the operator has observed its generation), every Secret and key the spec
references (key names only; values are never read into output), and the operator's own
conditions (Ready, Degraded, BackupHealthy) with their messages. Database, chain RPC, relay,
bridge and S3 reachability are asked of the Ready node pods themselves through the
apiserver's pod proxy (``reach``): ok, failed with the node's reason, or not configured
(the node runs without it); a pod the plugin cannot ask (RBAC ``pods/proxy``, the network) is
a warning with how to look. Exit 1 when any check failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, DEPLOYMENT, LEASE, RESTORE, Kind
from dchat_operator.api.models import DchatCluster
from dchat_operator.api.rbac import LEASE_NAME
from dchat_operator.plugin import reach
from dchat_operator.plugin.kube import CRD, Kube, KubeError
from dchat_operator.plugin.output import FAIL, MARKS, OK, WARN, emit_json, parse_time
from dchat_operator.plugin.status import parse, referenced_secrets, secret_keys

Obj = dict[str, Any]
NOT_CONFIGURED = reach.NOT_CONFIGURED
LEASE_SLACK = 5.0


@dataclass
class Check:
    name: str
    result: str
    detail: str
    fix: str = ""


def crd_check(kind: Kind, crd: Obj | None) -> Check:
    name = f"{kind.plural}.{kind.group}"
    fix = "kubectl apply --server-side -f crds/ (the CRDs of this release)"
    if crd is None:
        return Check(f"CRD {name}", FAIL, "not installed", fix)
    conds = {x.get("type"): x for x in (crd.get("status") or {}).get("conditions") or []}
    if conds.get("Established", {}).get("status") != "True":
        return Check(f"CRD {name}", FAIL, "installed but not Established", fix)
    served = [
        v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if v.get("served")
    ]
    if kind.version not in served:
        return Check(
            f"CRD {name}", FAIL, f"serves {served}, not {kind.version}", fix + " (upgrade)"
        )
    return Check(f"CRD {name}", OK, f"Established, serves {kind.version}")


def lease_check(lease: Obj | None, where: str, at: dt.datetime) -> Check | None:
    """A fresh Lease: OK; a stale one: FAIL; none: None (look elsewhere)."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = parse_time(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 15)
    if holder and renewed and (at - renewed).total_seconds() <= duration + LEASE_SLACK:
        ago = (at - renewed).total_seconds()
        return Check("operator", OK, f"leader {holder} (Lease {where}, renewed {ago:.0f}s ago)")
    age = f"{(at - renewed).total_seconds():.0f}s ago" if renewed else "never"
    return Check(
        "operator",
        FAIL,
        f"Lease {where} not renewed (holder {holder or 'none'}, last renewal {age})",
        "the operator is down or cannot reach the apiserver: kubectl -n "
        f"{where.split('/')[0]} logs deploy/dchat-operator; kubectl -n {where.split('/')[0]} "
        "rollout restart deploy/dchat-operator",
    )


def operator_check(kube: Kube, operator_ns: str, cluster: Obj | None) -> Check:
    at = dt.datetime.now(dt.UTC)
    for ns in dict.fromkeys([operator_ns, kube.namespace]):
        try:
            found = lease_check(kube.get(LEASE, LEASE_NAME, ns), f"{ns}/{LEASE_NAME}", at)
        except KubeError as exc:
            if exc.status != 403:
                raise
            found = None
        if found is not None:
            return found
    deployment = None
    try:
        deployment = kube.get(DEPLOYMENT, "dchat-operator", operator_ns)
    except KubeError:
        deployment = None
    if deployment is not None:
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if ready:
            return Check(
                "operator",
                WARN,
                f"Deployment {operator_ns}/dchat-operator has {ready} ready "
                "pod(s) but no leader Lease was found (leader election off?)",
            )
        return Check(
            "operator",
            FAIL,
            f"Deployment {operator_ns}/dchat-operator has no ready pod",
            f"kubectl -n {operator_ns} describe deploy/dchat-operator; kubectl -n {operator_ns} "
            "logs deploy/dchat-operator",
        )
    status = (cluster or {}).get("status") or {}
    if cluster is not None and status.get("observedGeneration") == cluster["metadata"].get(
        "generation"
    ):
        return Check(
            "operator",
            WARN,
            "no leader Lease or Deployment found, but the cluster's status is current "
            "(an operator without leader election?)",
        )
    return Check(
        "operator",
        FAIL,
        f"no leader Lease {LEASE_NAME} in {operator_ns} or {kube.namespace}, no Deployment "
        f"{operator_ns}/dchat-operator",
        "install the operator: kubectl apply -k manifests/ (or give --operator-namespace "
        "where it runs)",
    )


def secret_checks(entries: list[Obj]) -> list[Check]:
    out = []
    for entry in entries:
        name = entry["name"]
        wanted = entry.get("wanted") or []
        if entry.get("found") is None:
            out.append(Check(f"Secret {name}", WARN, f"cannot read it: {entry.get('error')}", ""))
            continue
        literals = " ".join(f"--from-literal={k}=..." for k in wanted) or "..."
        if not entry.get("found"):
            out.append(
                Check(
                    f"Secret {name}",
                    FAIL,
                    "missing: the spec references it (keys " + ", ".join(wanted) + ")",
                    f"kubectl create secret generic {name} {literals}",
                )
            )
            continue
        missing = [k for k in wanted if k not in entry.get("keys", [])]
        if missing:
            out.append(
                Check(
                    f"Secret {name}",
                    FAIL,
                    "lacks key(s) " + ", ".join(missing),
                    f"kubectl patch secret {name} --type merge -p "
                    + '\'{"stringData":{'
                    + ",".join(f'"{k}":"..."' for k in missing)
                    + "}}'",
                )
            )
            continue
        out.append(Check(f"Secret {name}", OK, "has " + ", ".join(wanted)))
    return out


CONDITION_FIX = {
    "Ready": "kubectl dchat status {name} shows which child or pod is not ready",
    "Degraded": "read the message; kubectl dchat status {name} and the Events",
    "BackupHealthy": "kubectl dchat backups {name}; the failed backup's status.error says why",
}


def condition_checks(obj: Obj) -> list[Check]:
    status = obj.get("status") or {}
    conds = {x.get("type"): x for x in status.get("conditions") or []}
    name = obj["metadata"]["name"]
    out = []
    gen = obj["metadata"].get("generation")
    if status.get("observedGeneration") != gen:
        out.append(
            Check(
                "reconciled",
                WARN,
                f"the operator observed generation {status.get('observedGeneration')}, "
                f"the spec is at {gen}",
                "wait, or see the operator check",
            )
        )
    for ctype, bad in (("Ready", "False"), ("Degraded", "True"), ("BackupHealthy", "False")):
        cond = conds.get(ctype)
        if cond is None:
            continue
        msg = f"{cond.get('status')} {cond.get('reason')}: {cond.get('message', '')}"
        if cond.get("status") == bad:
            fix = CONDITION_FIX[ctype].format(name=name)
            if cond.get("reason") == "InvalidSpec":
                fix = (
                    f"the operator refuses the spec: correct the fields named (kubectl edit "
                    f"dchatcluster/{name}), or run the operator release that matches the CRD"
                )
            out.append(Check(ctype, FAIL, msg, fix))
        else:
            out.append(Check(ctype, OK, msg))
    return out


def reach_checks(kube: Kube, cluster: DchatCluster, obj: Obj) -> list[Check]:
    """Database, chain, relay, bridge and S3, asked of the Ready node pods (``reach``)."""
    try:
        pods = reach.ready_pods(kube, cluster)
    except KubeError as exc:
        return [Check("node pods", WARN, f"cannot list them: {exc.message}")]
    memo: reach.Unreachable = {}
    rows = [
        *reach.component_checks(kube, pods, memo),
        reach.s3_check(kube, cluster, pods, obj, memo),
    ]
    return [Check(title, result, detail, fix) for title, result, detail, fix in rows]


def run_checks(kube: Kube, name: str, operator_ns: str) -> list[Check]:
    checks: list[Check] = []
    for kind in (CLUSTER, BACKUP, RESTORE):
        try:
            crd = kube.get(CRD, f"{kind.plural}.{kind.group}", None)
            checks.append(crd_check(kind, crd))
        except KubeError as exc:
            checks.append(
                Check(f"CRD {kind.plural}.{kind.group}", WARN, f"cannot check: {exc.message}")
            )
    obj = None
    if checks[0].result != FAIL:  # a user who may not read CRDs (WARN) may read the cluster
        obj = kube.get(CLUSTER, name)
    checks.append(operator_check(kube, operator_ns, obj))
    if obj is None:
        checks.append(
            Check(
                f"{c.KIND} {name}",
                FAIL,
                f"not found in namespace {kube.namespace}",
                "kubectl get dchatclusters -A; give -n NAMESPACE",
            )
        )
        return checks
    cluster, unknown, error = parse(obj)
    if cluster is None:
        checks.append(
            Check(
                f"{c.KIND} {name}",
                FAIL,
                f"this plugin's model refuses the spec: {error}",
                "use the kubectl-dchat of the operator's release",
            )
        )
        return checks
    if unknown:
        checks.append(
            Check(
                f"{c.KIND} {name}",
                WARN,
                "fields this plugin does not know (a CRD newer than the plugin?): "
                + ", ".join(unknown),
                "use the kubectl-dchat of the operator's release",
            )
        )
    else:
        checks.append(Check(f"{c.KIND} {name}", OK, "spec valid"))
    for secret_name, keys in referenced_secrets(cluster).items():
        entry = secret_keys(kube, secret_name)
        entry["wanted"] = keys
        checks.extend(secret_checks([entry]))
    checks.extend(condition_checks(obj))
    checks.extend(reach_checks(kube, cluster, obj))
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        mark = MARKS.get(check.result, "-")
        lines.append(f"{mark} {check.name}: {check.detail}")
        if check.fix and check.result in (FAIL, WARN):
            lines.append(f"    {'fix' if check.result == FAIL else 'how'}: {check.fix}")
    failed = sum(1 for x in checks if x.result == FAIL)
    if failed:
        lines.append(f"{failed} check(s) failed")
    else:
        unset = sum(1 for x in checks if x.result == NOT_CONFIGURED)
        lines.append("all checks passed" + (f" ({unset} not configured)" if unset else ""))
    return "\n".join(lines) + "\n"


def cmd_doctor(kube: Kube, args: argparse.Namespace) -> int:
    checks = run_checks(kube, args.cluster, args.operator_namespace)
    if args.output == "json":
        emit_json({"checks": [asdict(x) for x in checks]})
    else:
        print(render(checks), end="")
    return 1 if any(x.result == FAIL for x in checks) else 0
