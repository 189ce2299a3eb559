"""The install bundle (manifests/base and the namespaced overlay), rendered with kustomize
and checked offline: schema validity, least-privilege RBAC, Pod Security "restricted"."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.packaging.support import (
    OPERATOR_NAMESPACE,
    OPERATOR_SA,
    REPO,
    by_kind,
    kustomize,
    one,
    pod_specs,
    restricted_violations,
)

pytestmark = pytest.mark.unit

BASE = REPO / "manifests" / "base"
NAMESPACED = REPO / "manifests" / "overlays" / "namespaced"
ENTRY = REPO / "manifests"

# The oldest Kubernetes the bundle supports, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.34.0", kubernetes_validate.latest_version()]

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
CRUD = ALL_VERBS
READ = {"get", "list", "watch"}
# (apiGroup, resource) → the verbs the operator needs: exactly these, no more, no fewer.
REQUIRED: dict[tuple[str, str], set[str]] = {
    ("dchat.dev", "dchatclusters"): READ | {"patch", "update"},
    ("dchat.dev", "dchatclusters/status"): {"get", "patch", "update"},
    ("dchat.dev", "dchatbackups"): READ | {"patch", "update"},
    ("dchat.dev", "dchatbackups/status"): {"get", "patch", "update"},
    ("dchat.dev", "dchatrestores"): READ | {"patch", "update"},
    ("dchat.dev", "dchatrestores/status"): {"get", "patch", "update"},
    ("", "configmaps"): CRUD,
    ("", "services"): CRUD,
    ("", "serviceaccounts"): CRUD,
    ("", "persistentvolumeclaims"): CRUD,
    ("", "secrets"): READ,
    ("", "pods"): READ,
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apps", "deployments"): CRUD,
    ("apps", "replicasets"): READ,
    ("policy", "poddisruptionbudgets"): CRUD,
    ("networking.k8s.io", "networkpolicies"): CRUD,
    ("networking.k8s.io", "ingresses"): CRUD,
    ("monitoring.coreos.com", "servicemonitors"): CRUD,
    ("monitoring.coreos.com", "prometheusrules"): CRUD,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
}
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions")}


@functools.cache
def _render(path: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(REPO / path))


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return list(_render("manifests/base"))


@pytest.fixture(scope="module")
def namespaced() -> list[dict[str, Any]]:
    return list(_render("manifests/overlays/namespaced"))


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_base_contains_the_whole_install(base: list[dict[str, Any]]) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in base)
    assert kinds == sorted(
        [
            "Namespace/dchat-system",
            "CustomResourceDefinition/dchatclusters.dchat.dev",
            *[
                f"CustomResourceDefinition/{n}.dchat.dev"
                for n in ("dchatbackups", "dchatrestores")
                if (REPO / "crds" / f"dchat.dev_{n}.yaml").exists()
            ],
            f"ServiceAccount/{OPERATOR_SA}",
            "ClusterRole/dchat-operator",
            "ClusterRoleBinding/dchat-operator",
            "NetworkPolicy/dchat-operator",
            "Deployment/dchat-operator",
        ]
    )
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for obj in base:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == OPERATOR_NAMESPACE, obj["metadata"]


def test_entry_kustomization_is_the_base(base: list[dict[str, Any]]) -> None:
    assert list(_render("manifests")) == base


def test_every_crd_file_is_in_the_bundle() -> None:
    listed = (REPO / "crds" / "kustomization.yaml").read_text()
    for crd in sorted((REPO / "crds").glob("dchat.dev_*.yaml")):
        assert crd.name in listed, f"crds/kustomization.yaml does not list {crd.name}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("bundle", ["manifests/base", "manifests/overlays/namespaced"])
def test_every_object_validates_offline(bundle: str, version: str) -> None:
    for obj in _render(bundle):
        kubernetes_validate.validate(obj, version, strict=True)


def test_namespace_enforces_restricted(base: list[dict[str, Any]]) -> None:
    labels = one(base, "Namespace", OPERATOR_NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def _assert_least_privilege(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
            assert all("*" not in v for v in rule[field]), rule
        assert not rule.get("nonResourceURLs"), rule
        assert not rule.get("resourceNames"), rule
        assert set(rule["verbs"]) <= ALL_VERBS, f"verb outside {sorted(ALL_VERBS)}: {rule}"


def test_cluster_role_is_exactly_what_the_operator_needs(base: list[dict[str, Any]]) -> None:
    rules = one(base, "ClusterRole", "dchat-operator")["rules"]
    _assert_least_privilege(rules)
    assert _grants(rules) == REQUIRED


def test_secrets_are_read_only_and_status_has_its_own_rule(base: list[dict[str, Any]]) -> None:
    rules = one(base, "ClusterRole", "dchat-operator")["rules"]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert secret_rules
    for rule in secret_rules:
        assert set(rule["verbs"]) <= READ, rule
    status_rules = [r for r in rules if "dchatclusters/status" in r["resources"]]
    assert status_rules == [
        {
            "apiGroups": ["dchat.dev"],
            "resources": ["dchatclusters/status"],
            "verbs": ["get", "patch", "update"],
        }
    ]


def test_cluster_role_is_bound_to_the_operator_only(base: list[dict[str, Any]]) -> None:
    binding = one(base, "ClusterRoleBinding", "dchat-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "dchat-operator",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}
    ]
    assert len(by_kind(base, "RoleBinding")) == 0


def test_namespaced_overlay_moves_rules_to_a_role(namespaced: list[dict[str, Any]]) -> None:
    role = one(namespaced, "Role", "dchat-operator")
    assert role["metadata"]["namespace"] == "dchat"
    _assert_least_privilege(role["rules"])
    expected = {k: v for k, v in REQUIRED.items() if k not in CLUSTER_SCOPED}
    assert _grants(role["rules"]) == expected
    cluster_role = one(namespaced, "ClusterRole", "dchat-operator")
    _assert_least_privilege(cluster_role["rules"])
    # kopf lists/watches Namespaces only when given --namespace (see the overlay).
    assert _grants(cluster_role["rules"]) == {
        **{k: REQUIRED[k] for k in CLUSTER_SCOPED},
        ("", "namespaces"): READ,
    }
    binding = one(namespaced, "RoleBinding", "dchat-operator")
    assert binding["metadata"]["namespace"] == "dchat"
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}
    ]
    args = one(namespaced, "Deployment", "dchat-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert "--namespace=dchat" in args
    assert "--all-namespaces" not in args
    labels = one(namespaced, "Namespace", "dchat")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("bundle", ["manifests/base", "manifests/overlays/namespaced"])
def test_every_pod_template_meets_restricted(bundle: str) -> None:
    specs = list(pod_specs(list(_render(bundle))))
    assert specs
    for name, spec in specs:
        assert restricted_violations(spec) == [], name


def test_operator_deployment(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "dchat-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "at most one kopf instance (standalone)"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == OPERATOR_SA
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "ghcr.io/dchat-dev/dchat-operator:0.1.0"
    assert container["args"] == [
        "run",
        "--all-namespaces",
        "--liveness-port=8080",
        "--metrics-port=8081",
    ]
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    # The root filesystem is read-only: anything writable is an emptyDir.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"tmp": "/tmp"}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()


def test_network_policy_selects_the_operator(base: list[dict[str, Any]]) -> None:
    policy = one(base, "NetworkPolicy", "dchat-operator")
    deployment = one(base, "Deployment", "dchat-operator")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
