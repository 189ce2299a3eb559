"""Generate the DchatCluster CustomResourceDefinition from the pydantic models.

Design: pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3 schema by
one recursive pass (``structural``): ``$ref`` inlined, ``Optional[X]`` becomes ``X`` (absent
means unset), ``int | str`` becomes ``x-kubernetes-int-or-string``, free-form objects get
``x-kubernetes-preserve-unknown-fields``, numeric exclusive bounds get the OpenAPI 3.0 boolean
form, ``title``/``additionalProperties: false`` are dropped (unknown fields are rejected by the
apiserver's strict field validation), and every object-typed property gets ``default: {}`` so
nested defaults apply when a section is omitted. The CEL rules declared on the models travel
through ``json_schema_extra``. One ``CrdDefinition`` per kind (its models, names, printer
columns, scale subresource and root CEL rules) and one generic ``crd(definition)``, so a new
kind is a new definition in ``DEFINITIONS``. ``render_crd_yaml`` is what ``crds/`` holds; a
unit test fails when a file there is stale.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from dchat_operator.api import constants as c
from dchat_operator.api.backups import (
    DchatBackupSpec,
    DchatBackupStatus,
    DchatRestoreSpec,
    DchatRestoreStatus,
)
from dchat_operator.api.kinds import BACKUP, CLUSTER, RESTORE, Kind
from dchat_operator.api.models import ROOT_VALIDATIONS, DchatClusterSpec, DchatClusterStatus

JSON = dict[str, Any]

_DROP = {"title", "additionalProperties", "$defs"}


def _resolve(node: JSON, defs: JSON) -> JSON:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return node


def structural(node: JSON, defs: JSON) -> JSON:
    """Convert one pydantic JSON Schema node (and its children) to a structural schema."""
    node = _resolve(node, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node["allOf"][0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k != "allOf"}}
    if "anyOf" in node:
        return _union(node, defs)
    out = {k: v for k, v in node.items() if k not in _DROP and k != "properties"}
    if out.get("default", 0) is None:
        del out["default"]
    for bound, key in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in out and not isinstance(out[bound], bool):
            out[key] = out.pop(bound)
            out[bound] = True
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        out["type"] = "object"
        out.update(_object_members(node, defs))
    elif kind == "array":
        out["items"] = structural(node.get("items", {}), defs)
    return out


def _union(node: JSON, defs: JSON) -> JSON:
    """``X | None`` is ``X``; ``int | str`` is int-or-string; other unions are refused."""
    branches = [_resolve(b, defs) for b in node["anyOf"]]
    non_null = [b for b in branches if b.get("type") != "null"]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    types = sorted(b.get("type", "") for b in non_null)
    if types == ["integer", "string"]:
        out: JSON = {"x-kubernetes-int-or-string": True}
        for key in ("description", "default"):
            if key in rest:
                out[key] = rest[key]
        return out
    if len(non_null) != 1:
        raise ValueError(f"unsupported union in CRD schema: {node}")
    merged = {**non_null[0], **rest}
    if merged.get("default", 0) is None:
        del merged["default"]
    return structural(merged, defs)


def _object_members(node: JSON, defs: JSON) -> JSON:
    """``properties`` (nested objects defaulted to ``{}``), or a map's value schema, or
    free-form."""
    if "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return {"additionalProperties": structural(extra, defs)}
        return {"x-kubernetes-preserve-unknown-fields": True}
    props: JSON = {}
    for name, child in node["properties"].items():
        converted = structural(child, defs)
        if (
            converted.get("type") == "object"
            and "default" not in converted
            # `X | None = None`: absent means "not asked for" (e.g. managed PostgreSQL)
            and not ("anyOf" in child and child.get("default", 0) is None)
            and "properties" in converted
            and not converted.get("required")
        ):
            converted["default"] = {}
        props[name] = converted
    return {"properties": props}


def _filled(node: JSON, value: JSON) -> JSON:
    """``value`` with the defaults of ``node``'s properties filled in, recursively."""
    out = dict(value)
    for name, child in (node.get("properties") or {}).items():
        if name in out:
            if isinstance(out[name], dict) and child.get("properties"):
                out[name] = _filled(child, out[name])
        elif "default" in child:
            default = child["default"]
            out[name] = _filled(child, default) if isinstance(default, dict) else default
    return out


def materialize_defaults(node: JSON) -> JSON:
    """Expand every object default to the full object its properties' defaults make.

    The apiserver checks CEL rules against defaults without defaulting them further, so a
    bare ``default: {}`` on an object with rules is rejected.
    """
    for child in (node.get("properties") or {}).values():
        materialize_defaults(child)
    if isinstance(node.get("items"), dict):
        materialize_defaults(node["items"])
    if isinstance(node.get("default"), dict) and node.get("properties"):
        node["default"] = _filled(node, node["default"])
    return node


@dataclass(frozen=True)
class CrdDefinition:
    """Everything that makes one kind's CRD besides its pydantic models."""

    kind: Kind
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[JSON, ...] = ()
    root_rules: tuple[JSON, ...] = ()
    scale: JSON | None = None
    categories: tuple[str, ...] = ("dchat", "all")
    # `spec: {}` may be omitted (defaulted whole). Only for a spec with nothing required and
    # rules its defaults satisfy: the apiserver validates a default against both (DchatBackup's
    # `default: {}` was refused: "default.cluster: Required value").
    default_spec: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind.plural}.{self.kind.group}"

    @property
    def file_name(self) -> str:
        return f"{self.kind.group}_{self.kind.plural}.yaml"


def spec_schema(model: type[BaseModel] = DchatClusterSpec) -> JSON:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def status_schema(model: type[BaseModel] = DchatClusterStatus) -> JSON:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = structural(raw, raw.get("$defs", {}))
    conditions = (schema.get("properties") or {}).get("conditions")
    if conditions is not None:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]
    _drop_defaults(schema)
    return schema


def _drop_defaults(node: JSON) -> None:
    """No defaults anywhere in a status: only controllers write it, and a default the
    apiserver fills in (``backupSchedule: {}`` materialized to an object of empty fields)
    differs from what the controller wrote, so it would patch it back on every resync."""
    node.pop("default", None)
    for child in (node.get("properties") or {}).values():
        _drop_defaults(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _drop_defaults(node[key])


CLUSTER_CRD = CrdDefinition(
    kind=CLUSTER,
    singular=c.SINGULAR,
    short_names=tuple(c.SHORT_NAMES),
    default_spec=True,
    description=(
        "DchatCluster runs a dchat deployment: node pods, their config, services, "
        "ingress, storage, disruption budget, network policy and monitoring, kept in "
        "the desired state by dchat-operator."
    ),
    spec_model=DchatClusterSpec,
    status_model=DchatClusterStatus,
    scale={
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    },
    root_rules=tuple(ROOT_VALIDATIONS),
    printer_columns=(
        {
            "name": "Version",
            "type": "string",
            "jsonPath": ".status.currentVersion",
            "description": "Version all pods run.",
        },
        {
            "name": "Replicas",
            "type": "integer",
            "jsonPath": ".spec.replicas",
            "description": "Desired pods.",
        },
        {
            "name": "Ready",
            "type": "integer",
            "jsonPath": ".status.readyReplicas",
            "description": "Ready pods.",
        },
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "Pending, Progressing, Ready or Degraded.",
        },
        {
            "name": "Last Backup",
            "type": "date",
            "jsonPath": ".status.lastSuccessfulBackup.time",
            "description": "When the last successful backup completed.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
BACKUP_CRD = CrdDefinition(
    kind=BACKUP,
    singular="dchatbackup",
    short_names=(),
    # not in the `dchat` category: `kubectl get dchat` (DchatCluster's short name, and that
    # category) must keep listing clusters alone
    categories=(),
    description=(
        "DchatBackup is one backup of a DchatCluster to its backup.s3 target, taken by a Job "
        "of the node image (`dchat backup create`) that dchat-operator creates and watches. "
        "Deleting it deletes its S3 objects first (finalizer dchat.dev/backup-objects)."
    ),
    spec_model=DchatBackupSpec,
    status_model=DchatBackupStatus,
    printer_columns=(
        {
            "name": "Cluster",
            "type": "string",
            "jsonPath": ".spec.cluster",
            "description": "The DchatCluster backed up.",
        },
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "Pending, Running, Completed or Failed.",
        },
        {
            "name": "Size",
            "type": "integer",
            "jsonPath": ".status.size",
            "description": "Bytes stored.",
        },
        {
            "name": "Started",
            "type": "date",
            "jsonPath": ".status.startedAt",
            "description": "When the backup started.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
RESTORE_CRD = CrdDefinition(
    kind=RESTORE,
    singular="dchatrestore",
    short_names=(),
    categories=(),
    description=(
        "DchatRestore restores a DchatBackup into an existing DchatCluster: dchat-operator "
        "scales it to 0, runs a restore Job of the node image (`dchat backup restore`), then "
        "scales it back."
    ),
    spec_model=DchatRestoreSpec,
    status_model=DchatRestoreStatus,
    printer_columns=(
        {
            "name": "Target",
            "type": "string",
            "jsonPath": ".spec.target",
            "description": "The DchatCluster restored into.",
        },
        {
            "name": "Backup",
            "type": "string",
            "jsonPath": ".status.backup",
            "description": "The DchatBackup restored.",
        },
        {
            "name": "Phase",
            "type": "string",
            "jsonPath": ".status.phase",
            "description": "Where the restore is.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)
DEFINITIONS: tuple[CrdDefinition, ...] = (CLUSTER_CRD, BACKUP_CRD, RESTORE_CRD)
"""Every kind the operator defines."""


def crd(definition: CrdDefinition = CLUSTER_CRD) -> JSON:
    """The CustomResourceDefinition of one kind, as a dict."""
    spec = spec_schema(definition.spec_model)
    if definition.default_spec:
        spec["default"] = {}
    materialize_defaults(spec)
    root: JSON = {
        "type": "object",
        "description": definition.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this object.",
            },
            "kind": {"type": "string", "description": "Kind is the type of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status_schema(definition.status_model),
        },
    }
    if definition.root_rules:
        root["x-kubernetes-validations"] = [dict(rule) for rule in definition.root_rules]
    subresources: JSON = {"status": {}}
    if definition.scale is not None:
        subresources["scale"] = dict(definition.scale)
    version: JSON = {
        "name": definition.kind.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "subresources": subresources,
    }
    if definition.printer_columns:
        version["additionalPrinterColumns"] = [dict(col) for col in definition.printer_columns]
    kind = definition.kind
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": definition.name,
            "labels": {c.LABEL_NAME: c.APP_NAME, c.LABEL_PART_OF: c.APP_NAME},
        },
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": definition.singular,
                **({"shortNames": list(definition.short_names)} if definition.short_names else {}),
                **({"categories": list(definition.categories)} if definition.categories else {}),
            },
            "versions": [version],
        },
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(obj: Any) -> str:
    """YAML the way this project writes it: key order kept, block style, wide lines."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def render_crd_yaml(definition: CrdDefinition = CLUSTER_CRD) -> str:
    """The text of ``crds/<group>_<plural>.yaml`` for one kind."""
    header = (
        "# Generated by `dchat-operator crd` from dchat_operator.api.models. Do not edit:\n"
        "# change the models and regenerate (a unit test fails when this file is stale).\n"
    )
    return header + to_yaml(crd(definition))
