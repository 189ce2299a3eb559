"""What the operator creates for each sample DchatCluster (`dchat-operator render`), checked
the way the install bundle is: schema-valid, Pod Security "restricted", and the node pods
get no API access at all (the guide's mistake 6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.packaging.support import (
    OPERATOR_SA,
    by_kind,
    cluster_samples,
    operator_render,
    pod_specs,
    restricted_violations,
)

pytestmark = pytest.mark.unit

SAMPLE_FILES = cluster_samples()
# Kinds kubernetes-validate has no schema for (CRDs of other projects).
THIRD_PARTY_GROUPS = ("monitoring.coreos.com/", "dchat.dev/")


def _rendered(sample: Path) -> list[dict[str, Any]]:
    objects = operator_render(sample)
    assert objects, f"{sample.name} rendered nothing"
    return objects


def test_there_are_samples() -> None:
    assert SAMPLE_FILES, "manifests/samples/*.yaml with a DchatCluster"


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.stem)
def test_rendered_objects_validate(sample: Path) -> None:
    for obj in _rendered(sample):
        if obj["apiVersion"].startswith(THIRD_PARTY_GROUPS):
            continue
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.stem)
def test_rendered_pods_meet_restricted_and_have_no_api_access(sample: Path) -> None:
    objects = _rendered(sample)
    specs = list(pod_specs(objects))
    assert specs, "the node Deployment"
    patroni = {o["metadata"]["name"] for o in by_kind(objects, "StatefulSet")}
    for name, spec in specs:
        assert restricted_violations(spec) == [], name
        for c in spec["containers"]:
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, name
        assert spec.get("serviceAccountName") not in (None, "default", OPERATOR_SA), name
        if name.split("/", 1)[-1] in patroni:
            # managed PostgreSQL: Patroni's store is the Kubernetes API (its own SA)
            assert spec.get("automountServiceAccountToken") is True, name
        else:
            assert spec.get("automountServiceAccountToken") is False, name
    for kind in ("Role", "ClusterRole", "ClusterRoleBinding"):
        assert by_kind(objects, kind) == [], f"the node gets no RBAC, but {kind} was rendered"
    # the one RoleBinding: managed PostgreSQL's members to the bundle's dchat-postgres
    for rb in by_kind(objects, "RoleBinding"):
        assert rb["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "dchat-postgres",
        }
        assert [s["name"] for s in rb["subjects"]] == [f"{n}" for n in patroni]
    for sa in by_kind(objects, "ServiceAccount"):
        assert sa.get("automountServiceAccountToken") is False, sa["metadata"]["name"]


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.stem)
def test_no_credentials_in_configmaps(sample: Path) -> None:
    """Mistake 1 of the guide: a password inside a ConfigMap's database URL."""
    for cm in by_kind(_rendered(sample), "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", value), f"{key} holds a credential"
