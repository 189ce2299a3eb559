"""The install bundle (manifests/base, the namespaced overlay and the opt-in Prometheus
Operator overlay), rendered with kustomize and checked offline: schema validity,
least-privilege RBAC, Pod Security "restricted", no Prometheus Operator kind in the default
bundles."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from dchat_operator.api.kinds import CHILD_KINDS
from dchat_operator.api.rbac import CLUSTER_SCOPED, RULES
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
PROMETHEUS_OPERATOR = "manifests/overlays/prometheus-operator"
ENTRY = REPO / "manifests"

# The oldest Kubernetes the bundle supports, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.34.0", kubernetes_validate.latest_version()]

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "bind"}
# The one grant on an RBAC object that is not a child: binding the bundle's ClusterRole
# dchat-postgres (Patroni's rights) per managed PostgreSQL, by name, nothing else.
BIND_POSTGRES = {
    "apiGroups": ["rbac.authorization.k8s.io"],
    "resources": ["clusterroles"],
    "verbs": ["bind"],
    "resourceNames": ["dchat-postgres"],
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
READ = {"get", "list", "watch"}
# What the operator owns and therefore may write: the children its builders make, its CR's
# status (patch only), and Events (create only). Its CR's spec is the user's.
CHILDREN = {(k.group, k.plural) for k in CHILD_KINDS}
MAY_WRITE: dict[tuple[str, str], set[str]] = {
    **{child: WRITE_VERBS for child in CHILDREN},
    ("dchat.dev", "dchatclusters/status"): {"patch"},
    # backups: the schedule creates and (retention) deletes them; the backup controller patches
    # their metadata (finalizer, cluster label); both controllers write the statuses they own
    ("dchat.dev", "dchatbackups"): {"create", "patch", "delete"},
    ("dchat.dev", "dchatbackups/status"): {"patch"},
    ("dchat.dev", "dchatrestores/status"): {"patch"},
    # fencing: a SQLite cluster's pod on a node that stopped reporting Ready is force-deleted
    ("", "pods"): {"delete"},
    # managed PostgreSQL's Secret of generated passwords: created once, never updated
    ("", "secrets"): {"create"},
    # backup, verify, delete and restore Jobs (owned by a DchatBackup or DchatRestore)
    ("batch", "jobs"): {"create", "delete"},
    ("", "events"): {"create"},
    ("coordination.k8s.io", "leases"): {"create", "update"},
}


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


# The bundle is generated from RULES (`make rbac`): exactly these grants, no more, no fewer.
REQUIRED = _grants(RULES)


@functools.cache
def _render(path: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(REPO / path))


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return list(_render("manifests/base"))


@pytest.fixture(scope="module")
def namespaced() -> list[dict[str, Any]]:
    return list(_render("manifests/overlays/namespaced"))


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
            "ClusterRole/dchat-postgres",  # bound per managed PostgreSQL by the operator
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


@pytest.mark.parametrize("bundle", ["manifests", "manifests/base", "manifests/overlays/namespaced"])
def test_the_default_bundles_need_no_prometheus_operator(bundle: str) -> None:
    """They install where the monitoring.coreos.com CRDs do not exist."""
    groups = {o["apiVersion"].split("/")[0] for o in _render(bundle)}
    assert "monitoring.coreos.com" not in groups


def test_the_prometheus_operator_overlay_is_the_base_plus_the_operators_monitor(
    base: list[dict[str, Any]],
) -> None:
    """The opt-in variant: the base unchanged, plus the shipped PodMonitor (what makes the
    Prometheus Operator scrape the operator, whose metrics the backup, failover, rollback
    and reconcile alerts read) and the operator-wide PrometheusRule."""
    rendered = list(_render(PROMETHEUS_OPERATOR))
    extra = [o for o in rendered if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert [o for o in rendered if o not in extra] == base
    shipped = REPO / "manifests" / "monitoring" / "prometheus-operator.yaml"
    objects = [d for d in yaml.safe_load_all(shipped.read_text()) if d]
    assert sorted(extra, key=lambda o: o["kind"]) == sorted(objects, key=lambda o: o["kind"])
    monitor = one(extra, "PodMonitor", "dchat-operator")
    assert monitor["metadata"]["namespace"] == OPERATOR_NAMESPACE
    deployment = one(base, "Deployment", "dchat-operator")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
             for p in c.get("ports", [])}  # fmt: skip
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "metrics" in ports


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
        # names only narrow a rule: the leader Lease's, and the one ClusterRole it may bind
        assert (
            not rule.get("resourceNames")
            or rule["resources"] == ["leases"]
            or {k: sorted(v) for k, v in rule.items()} == BIND_POSTGRES
        ), rule
        assert set(rule["verbs"]) <= ALL_VERBS, f"verb outside {sorted(ALL_VERBS)}: {rule}"
        if "bind" in rule["verbs"]:
            assert {k: sorted(v) for k, v in rule.items()} == BIND_POSTGRES, rule


def test_rules_are_least_privilege() -> None:
    """RULES itself, the source of every Role and ClusterRole in the bundle."""
    _assert_least_privilege(RULES)
    grants = _grants(RULES)
    # Secrets are read one by one (the referenced ones), never listed, watched or updated;
    # the one created is managed PostgreSQL's Secret of generated passwords.
    assert grants[("", "secrets")] == {"get", "create"}
    # No write verb on anything the operator does not own.
    for key, verbs in grants.items():
        allowed = MAY_WRITE.get(key, set())
        assert verbs & WRITE_VERBS <= allowed, f"{key}: writes {sorted(verbs - allowed)}"
    assert grants[("dchat.dev", "dchatclusters")] <= READ, "the spec belongs to the user"
    # The cluster-scoped rules are read-only, but for binding dchat-postgres (by name).
    for key in CLUSTER_SCOPED:
        if key == ("rbac.authorization.k8s.io", "clusterroles"):
            assert grants[key] == {"bind"}
        else:
            assert grants[key] <= READ, key
    # The status subresource has a rule of its own, with nothing else in it.
    status_rules = [r for r in RULES if "dchatclusters/status" in r["resources"]]
    assert status_rules == [
        {"apiGroups": ["dchat.dev"], "resources": ["dchatclusters/status"], "verbs": ["patch"]}
    ]
    # On RBAC objects only managed PostgreSQL's RoleBinding (a child) and the bind of
    # dchat-postgres: no Roles, ClusterRoleBindings or escalate. Nothing on webhooks or
    # certificates; nodes only read, pods only listed and (fencing) deleted, never exec'd
    # into or read from.
    rbac = {key: verbs for key, verbs in grants.items() if key[0] == "rbac.authorization.k8s.io"}
    assert rbac == {
        ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create", "patch", "delete"},
        ("rbac.authorization.k8s.io", "clusterroles"): {"bind"},
    }
    assert not any("escalate" in r["verbs"] for r in RULES)
    groups = {group for group, _ in grants}
    assert not groups & {"admissionregistration.k8s.io", "certificates.k8s.io"}
    assert not {("", "pods/exec"), ("", "pods/log")} & grants.keys()
    # pods: a finished Job's pod is listed for its termination message; fencing deletes
    assert grants[("", "pods")] == {"list", "delete"}
    # nodes: read one by name (is the fenced pod's node still Ready?), never list or write
    assert grants[("", "nodes")] == {"get"}
    assert grants[("dchat.dev", "dchatrestores")] <= READ, "a restore's spec belongs to the user"


def test_cluster_role_is_exactly_rules(base: list[dict[str, Any]]) -> None:
    rules = one(base, "ClusterRole", "dchat-operator")["rules"]
    _assert_least_privilege(rules)
    assert rules == RULES
    assert _grants(rules) == REQUIRED


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
    # Only the base's binding, one generated ClusterRole (the base's full ClusterRole is
    # gone) and dchat-postgres (bound per managed PostgreSQL, not to the operator).
    cluster_role, postgres_role = sorted(
        by_kind(namespaced, "ClusterRole"), key=lambda r: r["metadata"]["name"]
    )
    assert cluster_role["metadata"]["name"] == "dchat-operator"
    assert postgres_role["metadata"]["name"] == "dchat-postgres"
    _assert_least_privilege(cluster_role["rules"])
    assert _grants(cluster_role["rules"]) == {k: REQUIRED[k] for k in CLUSTER_SCOPED}
    for key, verbs in _grants(cluster_role["rules"]).items():
        assert verbs <= READ or (key, verbs) == (
            ("rbac.authorization.k8s.io", "clusterroles"),
            {"bind"},
        )
    (cluster_binding,) = by_kind(namespaced, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == "dchat-operator"
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


@pytest.mark.parametrize(
    "bundle", ["manifests/base", "manifests/overlays/namespaced", PROMETHEUS_OPERATOR]
)
def test_every_pod_template_meets_restricted(bundle: str) -> None:
    specs = list(pod_specs(list(_render(bundle))))
    assert specs
    for name, spec in specs:
        assert restricted_violations(spec) == [], name


def test_operator_deployment(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "dchat-operator")
    spec = deployment["spec"]
    # two replicas with leader election: one reconciles, the other takes over
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--no-leader-elect" not in args
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


def _doc_table(path: Path, heading: str) -> dict[tuple[str, str], set[str]]:
    """The grants in the first table after `heading`: API group | resources | verbs | why."""
    text = path.read_text(encoding="utf-8").split(heading, 1)[1]
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    out: dict[tuple[str, str], set[str]] = {}
    for line in rows[2:]:
        group, resources, verbs = (cell.strip().replace("`", "") for cell in line.split("|")[1:4])
        group = "" if group in {"core", '""'} else group
        for resource in resources.split(","):
            out.setdefault((group, resource.strip()), set()).update(
                verb.strip() for verb in verbs.split(",")
            )
    return out


@pytest.mark.parametrize(
    ("doc", "heading"),
    [("docs/packaging.md", "\n## RBAC\n"), ("docs/operator.md", "## RBAC the operator needs")],
)
def test_rbac_tables_in_the_docs_mirror_rules(doc: str, heading: str) -> None:
    assert _doc_table(REPO / doc, heading) == REQUIRED
