"""``backup``, ``backups`` and ``restore``: DchatBackup and DchatRestore objects, as a user
would write them with kubectl.

Design: ``backup`` creates one DchatBackup (``spec.cluster``, ``spec.verify``), labelled with
its cluster, and with ``--wait`` follows ``status.phase`` until Completed or Failed (and
``status.verified`` with ``--verify``). ``restore BACKUP --to CLUSTER`` creates a DchatRestore
(the operator scales the target to 0, replaces its data, scales it back); ``--new NAME``
creates a DchatCluster with ``spec.bootstrap.fromBackup``, its spec copied from the backup's
cluster (a PostgreSQL cluster needs ``--database-secret``: the copy would point at the source's
own database, which the node refuses to restore into). Tables and phase judgments are pure.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import BACKUP, CLUSTER, RESTORE
from dchat_operator.plugin.kube import Kube
from dchat_operator.plugin.output import FAIL, MARKS, OK, WARN, age, emit_json, err, size, table
from dchat_operator.plugin.status import trim
from dchat_operator.plugin.wait import Verdict, follow, ready_fraction

Obj = dict[str, Any]
RESTORE_DONE = {"Completed", "Failed"}


def stamp(at: dt.datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S")


def backup_body(cluster: str, name: str, verify: bool) -> Obj:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.BACKUP_KIND,
        "metadata": {"name": name, "labels": {c.LABEL_CLUSTER: cluster}},
        "spec": {"cluster": cluster, "verify": verify},
    }


def judge_backup(verify: bool) -> Any:
    def judge(obj: Obj | None) -> Verdict:
        if obj is None:
            return Verdict(True, False, "the DchatBackup is gone")
        status = obj.get("status") or {}
        phase = str(status.get("phase") or "Pending")
        state = phase + (f": {status['error']}" if status.get("error") else "")
        if phase == "Failed":
            return Verdict(True, False, state)
        if phase == "Completed":
            where = f" {status.get('location', '')} ({size(status.get('size'))})"
            if not verify:
                return Verdict(True, True, "Completed" + where)
            if status.get("verified") is None:
                return Verdict(False, False, "Completed, verifying")
            verified = bool(status.get("verified"))
            detail = status.get("verifyDetail") or ""
            return Verdict(
                True, verified, f"Completed{where}, verified {verified}: {detail}".rstrip(": ")
            )
        return Verdict(False, False, state)

    return judge


def backup_rows(items: list[Obj], at: dt.datetime) -> list[list[str]]:
    rows = []
    for item in sorted(items, key=lambda i: str(i["metadata"].get("creationTimestamp", ""))):
        meta, status = item["metadata"], item.get("status") or {}
        phase = str(status.get("phase") or "Pending")
        mark = MARKS[OK if phase == "Completed" else FAIL if phase == "Failed" else WARN]
        verified = status.get("verified")
        rows.append(
            [
                meta["name"],
                f"{mark} {phase}",
                (meta.get("labels") or {}).get(c.LABEL_BACKUP_ORIGIN, "on-demand"),
                size(status.get("size")),
                age(status.get("startedAt"), at),
                age(status.get("completedAt"), at),
                "-" if verified is None else str(verified).lower(),
                str(status.get("error") or status.get("location") or "-"),
            ]
        )
    return rows


BACKUP_HEADERS = (
    "NAME",
    "PHASE",
    "ORIGIN",
    "SIZE",
    "STARTED",
    "COMPLETED",
    "VERIFIED",
    "LOCATION/ERROR",
)


def render_backups(items: list[Obj], at: dt.datetime) -> str:
    if not items:
        return "no backups\n"
    return table(BACKUP_HEADERS, backup_rows(items, at))


def cluster_backups(kube: Kube, cluster: str) -> list[Obj]:
    """The DchatBackups of ``cluster``: by spec.cluster (the label comes later, from the
    operator, on ones made by hand)."""
    items = kube.list(BACKUP)
    return [i for i in items if (i.get("spec") or {}).get("cluster") == cluster]


def cmd_backup(kube: Kube, args: argparse.Namespace) -> int:
    if kube.get(CLUSTER, args.cluster) is None:
        err(f'dchatcluster "{args.cluster}" not found in namespace "{kube.namespace}"')
        return 1
    name = args.name or f"{args.cluster}-manual-{stamp(dt.datetime.now(dt.UTC))}"
    kube.create(BACKUP, backup_body(args.cluster, name, args.verify))
    print(f"dchatbackup/{name} created")
    return follow(
        kube, BACKUP, name, judge_backup(args.verify), what=f"dchatbackup/{name}", args=args
    )


def cmd_backups(kube: Kube, args: argparse.Namespace) -> int:
    items = cluster_backups(kube, args.cluster)
    if args.output == "json":
        emit_json({"apiVersion": "v1", "kind": "List", "items": [trim(i) for i in items]})
    else:
        print(render_backups(items, dt.datetime.now(dt.UTC)), end="")
    return 0


def restore_body(backup: str, target: str, name: str) -> Obj:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.RESTORE_KIND,
        "metadata": {"name": name},
        "spec": {"backup": backup, "target": target},
    }


def judge_restore(obj: Obj | None) -> Verdict:
    if obj is None:
        return Verdict(True, False, "the DchatRestore is gone")
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    detail = status.get("error") or status.get("progress") or ""
    state = f"{phase}: {detail}" if detail else phase
    if phase in RESTORE_DONE:
        return Verdict(True, phase == "Completed", state)
    return Verdict(False, False, state)


def judge_bootstrap(obj: Obj | None) -> Verdict:
    if obj is None:
        return Verdict(True, False, "the DchatCluster is gone")
    boot = (obj.get("status") or {}).get("bootstrap") or {}
    phase = str(boot.get("phase") or "Pending")
    state = phase + (f": {boot['error']}" if boot.get("error") else "")
    if phase == "Failed":
        return Verdict(True, False, state)
    if phase == "Completed":
        status = obj.get("status") or {}
        ready = status.get("phase") == "Ready"
        pods = int(status.get("readyReplicas") or 0)
        desired = int((obj.get("spec") or {}).get("replicas") or 0)
        state = f"Completed, cluster {status.get('phase')}"
        if ready:
            return Verdict(True, True, state)
        fraction = ready_fraction(pods, desired)
        if fraction is not None:
            state += f", {pods}/{desired} pods ready"
        return Verdict(False, False, state, fraction)
    return Verdict(False, False, state)


def new_cluster_body(source: Obj, name: str, backup: str, database_secret: str | None) -> Obj:
    """A DchatCluster ``name`` with the source cluster's spec, bootstrapped from ``backup``."""
    spec = dict(source.get("spec") or {})
    spec.pop("bootstrap", None)
    spec["bootstrap"] = {
        "fromBackup": {"name": backup, "cluster": source["metadata"]["name"]},
    }
    if database_secret is not None:
        secret, _, key = database_secret.partition(":")
        database = dict(spec.get("database") or {})
        postgres = dict(database.get("postgres") or {})
        postgres["primary"] = {"name": secret, "key": key or "url"}
        postgres.pop("patroni", None)
        postgres.pop("standbys", None)
        database["postgres"] = postgres
        spec["database"] = database
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def cmd_restore(kube: Kube, args: argparse.Namespace) -> int:
    backup = kube.get(BACKUP, args.backup)
    if backup is None:
        err(f'dchatbackup "{args.backup}" not found in namespace "{kube.namespace}"')
        return 1
    phase = (backup.get("status") or {}).get("phase")
    if phase != "Completed":
        err(f"dchatbackup/{args.backup} is {phase or 'Pending'}, not Completed")
        return 1
    if args.to:
        return _restore_into(kube, args)
    return _restore_new(kube, args, backup)


def _restore_into(kube: Kube, args: argparse.Namespace) -> int:
    if kube.get(CLUSTER, args.to) is None:
        err(f'dchatcluster "{args.to}" not found in namespace "{kube.namespace}"')
        return 1
    name = f"{args.to}-restore-{stamp(dt.datetime.now(dt.UTC))}"
    kube.create(RESTORE, restore_body(args.backup, args.to, name))
    print(f"dchatrestore/{name} created: {args.backup} -> dchatcluster/{args.to} (data REPLACED)")
    return follow(kube, RESTORE, name, judge_restore, what=f"dchatrestore/{name}", args=args)


def _restore_new(kube: Kube, args: argparse.Namespace, backup: Obj) -> int:
    source_name = str((backup.get("spec") or {}).get("cluster"))
    source = kube.get(CLUSTER, source_name)
    if source is None:
        err(
            f"the backup's cluster {source_name} is gone, so its spec cannot be copied; "
            "create the new DchatCluster from a file with spec.bootstrap.fromBackup: "
            f"{{name: {args.backup}, cluster: {source_name}}}"
        )
        return 1
    engine = ((source.get("spec") or {}).get("database") or {}).get("engine", "sqlite")
    if engine == "postgres" and not args.database_secret:
        err(
            "the source cluster uses PostgreSQL: give --database-secret SECRET[:KEY] "
            "with the URL of a new, empty database (a copy of the spec would restore into the "
            "source's own database, which the node refuses)"
        )
        return 2
    if kube.get(CLUSTER, args.new) is not None:
        err(f"dchatcluster/{args.new} already exists")
        return 1
    body = new_cluster_body(source, args.new, args.backup, args.database_secret)
    kube.create(CLUSTER, body)
    print(f"dchatcluster/{args.new} created from dchatbackup/{args.backup}")
    return follow(
        kube,
        CLUSTER,
        args.new,
        judge_bootstrap,
        what=f"dchatcluster/{args.new} bootstrap",
        args=args,
    )
