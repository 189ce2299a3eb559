"""``kubectl dchat diff FILE``: what applying a file would change, before it is applied.

Design: each document of the file is sent as a server-side apply with ``dryRun=All`` (field
manager ``kubectl``, as ``kubectl apply --server-side``; ``--field-manager`` to match another),
so admission (the CRD's schema and CEL rules) judges it exactly as a real apply would and
nothing is stored. The result is compared with the live object as a unified diff of YAML,
with the fields the server rewrites on every write (resourceVersion, generation,
managedFields, timestamps) and the status left out. For a DchatCluster it also shows what the
operator would then change in its children: ``builders.children.desired_children`` of the live
spec against that of the dry-run result, the operator's own builders, so a new version shows
as the Deployment's new image. (Built from the spec: while a rollback is in force the
operator builds from the last good revision instead.) Exit codes as ``kubectl diff``: 0 no
change, 1 changes, 2 an error (a refused document, an unreadable file).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import (
    BACKUP,
    CHILD_KINDS,
    CLUSTER,
    RESTORE,
    SECRET,
    Kind,
    child_kind,
)
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.children import Capabilities, desired_children
from dchat_operator.plugin.kube import Kube, KubeError
from dchat_operator.plugin.status import monitoring_crds

Obj = dict[str, Any]
VOLATILE_META = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")
KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k for k in (CLUSTER, BACKUP, RESTORE, SECRET, *CHILD_KINDS)
}


class DiffError(Exception):
    """A document could not be diffed (the message says why)."""


def clean(obj: Obj | None) -> Obj:
    """The object without status and server-maintained metadata."""
    if obj is None:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_META}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    if out.get("kind") == "Secret":  # never print secret values
        out = {**out, "data": dict.fromkeys(out.get("data") or {}, "***")}
        out.pop("stringData", None)
    return out


def unified(before: Obj, after: Obj, label: str) -> str:
    a = yaml.safe_dump(clean(before), sort_keys=True).splitlines(keepends=True) if before else []
    b = yaml.safe_dump(clean(after), sort_keys=True).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, f"live/{label}", f"merged/{label}"))


def children_diff(live: Obj | None, merged: Obj, caps: Capabilities) -> str:
    """The operator's children for the live spec vs for the merged one."""
    try:
        after = desired_children(DchatCluster.parse(merged), caps)
    except ValidationError as exc:
        raise DiffError(f"the operator would refuse this spec: {exc}") from None
    before: list[Obj] = []
    if live is not None:
        try:
            before = desired_children(DchatCluster.parse(live), caps)
        except ValidationError:
            before = []

    def key(o: Obj) -> tuple[str, str]:
        return child_kind(o).kind, o["metadata"]["name"]

    old = {key(o): o for o in before}
    new = {key(o): o for o in after}
    out = []
    for k in [*new, *(k for k in old if k not in new)]:
        label = f"{k[0]}/{k[1]}"
        if k not in new:
            out.append(f"--- live/{label}\n+++ (deleted by the operator)\n")
            continue
        text = unified(old.get(k) or {}, new[k], label)
        out.append(text)
    return "".join(out)


def documents(path: str) -> list[Obj]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise DiffError(f"cannot read {path}: {exc}") from None
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise DiffError(f"{path}: every document needs apiVersion, kind and metadata")
    return docs


def diff_one(kube: Kube, doc: Obj, args: argparse.Namespace, caps: Capabilities) -> str:
    kind = KINDS.get((str(doc.get("apiVersion")), str(doc.get("kind"))))
    name = str((doc.get("metadata") or {}).get("name") or "")
    if kind is None:
        raise DiffError(f"{doc.get('apiVersion')} {doc.get('kind')}: not a kind dchat manages")
    namespace = (doc.get("metadata") or {}).get("namespace")
    if namespace and namespace != kube.namespace:
        raise DiffError(
            f"{kind.kind}/{name} is in namespace {namespace}, the command in {kube.namespace} "
            "(give -n)"
        )
    body = {**doc, "metadata": {**doc["metadata"], "namespace": kube.namespace}}
    live = kube.get(kind, name)
    try:
        try:
            merged = kube.apply_dry_run(
                kind, name, body, field_manager=args.field_manager, force=args.force_conflicts
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
            print(
                f"note: {kind.kind}/{name}: {exc.message}; a server-side apply as "
                f"{args.field_manager} needs --force-conflicts (a client-side kubectl apply "
                "overwrites them): the diff shows the result with it",
                file=sys.stderr,
            )
            merged = kube.apply_dry_run(
                kind, name, body, field_manager=args.field_manager, force=True
            )
    except KubeError as exc:
        raise DiffError(f"{kind.kind}/{name}: the apiserver refused it: {exc.message}") from None
    label = f"{kind.kind}/{name}"
    out = unified(live or {}, merged, label)
    if kind == CLUSTER:
        out += children_diff(live, merged, caps)
    return out


def cmd_diff(kube: Kube, args: argparse.Namespace) -> int:
    try:
        docs = documents(args.file)
        caps = Capabilities(monitoring_crds=monitoring_crds(kube))
        texts = [diff_one(kube, doc, args, caps) for doc in docs]
    except DiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = "".join(texts)
    sys.stdout.write(text)
    if not text:
        print(f"no changes ({len(docs)} object(s), {c.GROUP} server-side dry run)", file=sys.stderr)
    return 1 if text else 0
