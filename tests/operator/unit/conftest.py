"""Helpers for the operator's unit tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dchat_operator.api.models import DchatCluster

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def sample(name: str, **spec: Any) -> DchatCluster:
    """A sample CR, parsed, with a namespace/uid/generation as the apiserver would set."""
    doc = yaml.safe_load((SAMPLES / name).read_text(encoding="utf-8"))
    doc["metadata"].update(namespace="ns1", uid="u-123", generation=4)
    doc["spec"].update(spec)
    return DchatCluster.parse(doc)


def cluster(name: str = "c1", **spec: Any) -> DchatCluster:
    return DchatCluster.parse(
        {
            "metadata": {"name": name, "namespace": "ns1", "uid": "u-1", "generation": 2},
            "spec": spec,
        }
    )
