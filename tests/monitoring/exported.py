"""What the rules, rule tests and dashboards may reference: the catalogue of exported series.

Design: one place answers "does this metric (with these labels) exist?":
- the node: the recorded scrape of a real node (``node_metrics.prom``, see ``record.py``),
  name -> the label names of its samples;
- the Litestream sidecar: its recorded scrapes (``litestream_metrics.prom``, see
  ``record_litestream.py``), scraped with the node's target labels;
- the operator: its registry (``dchat_operator.clients.metrics``, the prometheus_client
  objects it declares), name -> label names, with the suffixes Prometheus exposes
  (``_total``, ``_bucket``/``_sum``/``_count``);
- the recording rules of ``manifests/monitoring/rules.yaml`` (labels ``namespace``,
  ``dchat_cluster``);
- and explicit allow-lists, each with its reason: series Prometheus makes itself, series of
  the kubelet and cAdvisor (every Kubernetes node exports them; only the Infrastructure board
  uses them), and DESIGN.md's contract metrics that no code path writes yet (they are
  registered by the node, so they are in the recording already, with no labels: the list is
  empty, and stays here as the place to name one with its reason).
Target labels (what the scrape adds) are allowed on every node series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from dchat_operator.clients import metrics as operator_metrics
from tests.monitoring.record import FIXTURE
from tests.monitoring.record_litestream import from_fixture

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "manifests" / "monitoring" / "rules.yaml"

NODE_TARGET_LABELS = frozenset({"namespace", "dchat_cluster", "pod", "job", "instance"})
OPERATOR_TARGET_LABELS = frozenset({"pod", "job", "instance"})

PROMETHEUS_OWN = {
    "up": "Prometheus writes it for every target it scrapes",
    "scrape_samples_scraped": "Prometheus writes it for every target it scrapes",
    "ALERTS": "Prometheus writes it for every pending or firing alert",
}
KUBERNETES = {
    "kubelet_volume_stats_used_bytes": "the kubelet, per PersistentVolumeClaim (PVC usage)",
    "kubelet_volume_stats_capacity_bytes": "the kubelet, per PersistentVolumeClaim",
    "container_network_receive_bytes_total": "cAdvisor in the kubelet, per pod",
    "container_network_transmit_bytes_total": "cAdvisor in the kubelet, per pod",
}
NOT_WRITTEN_YET: dict[str, str] = {}
"""DESIGN.md contract metrics absent from the recording (name -> reason). Empty: the node
registers marketplace_purchase_latency_ms, bridge_finality_proof_timeout_total and
accessibility_validation_failures_total from its first scrape, before any code writes them."""


def node_catalogue(text: str | None = None) -> dict[str, dict[str, set[str]]]:
    """name -> {label names -> ...}: name -> set of label-set strings, and label names."""
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text or FIXTURE.read_text()):
        for sample in family.samples:
            entry = out.setdefault(sample.name, {"labelsets": set(), "labels": set()})
            entry["labelsets"].add(",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items())))
            entry["labels"].update(sample.labels)
    return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def litestream_catalogue() -> dict[str, dict[str, set[str]]]:
    """Like ``node_catalogue``, from both recorded scrapes of the Litestream sidecar, with
    the sample names as exposed: Litestream's counters lack the ``_total`` suffix, which
    prometheus_client's parser would add, and Prometheus stores them as they are."""
    out: dict[str, dict[str, set[str]]] = {}
    for text in from_fixture().values():
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if line.startswith("#") or match is None:
                continue
            labels = dict(_LABEL.findall(match.group(2) or ""))
            entry = out.setdefault(match.group(1), {"labelsets": set(), "labels": set()})
            entry["labelsets"].add(",".join(f'{k}="{v}"' for k, v in sorted(labels.items())))
            entry["labels"].update(labels)
    return out


def operator_catalogue() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for value in vars(operator_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, labels = value._name, frozenset(value._labelnames)
        if isinstance(value, Counter):
            out[f"{name}_total"] = labels
        elif isinstance(value, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                out[name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        elif isinstance(value, Gauge):
            out[name] = labels
    return out


def recording_rules() -> set[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


@dataclass(frozen=True)
class Selector:
    name: str
    labels: frozenset[str] = field(default_factory=frozenset)


def selectors(expr: str) -> list[Selector]:
    """Every series selector of a PromQL expression (raises if it does not parse)."""
    found: list[Selector] = []

    def walk(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = node.matchers.matchers
            labels = frozenset(m.name for m in matchers if m.name != "__name__")
            name = node.name or next((m.value for m in matchers if m.name == "__name__"), "")
            found.append(Selector(str(name), labels))
            return
        for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and type(child).__module__ == "promql_parser":
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expr))
    return found


class Catalogue:
    def __init__(self) -> None:
        self.node = {**node_catalogue(), **litestream_catalogue()}
        self.operator = operator_catalogue()
        self.records = recording_rules()

    def problem(self, sel: Selector) -> str | None:
        """Why a selector references something not exported (None: it is fine)."""
        if sel.name in self.node:
            extra = sel.labels - self.node[sel.name]["labels"] - NODE_TARGET_LABELS
            return f"{sel.name}: the node has no label {sorted(extra)}" if extra else None
        if sel.name in self.operator:
            extra = sel.labels - self.operator[sel.name] - OPERATOR_TARGET_LABELS
            return f"{sel.name}: the operator has no label {sorted(extra)}" if extra else None
        if sel.name in self.records:
            extra = sel.labels - {"namespace", "dchat_cluster"}
            return f"{sel.name}: recorded without label {sorted(extra)}" if extra else None
        if sel.name in PROMETHEUS_OWN or sel.name in KUBERNETES or sel.name in NOT_WRITTEN_YET:
            return None
        return f"{sel.name}: exported by neither the node nor the operator"
