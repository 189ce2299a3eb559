"""The install bundle against the real test cluster: the apiserver accepts it (server-side
apply), Pod Security "restricted" admits the operator's pod, and the operator's
ServiceAccount can do exactly what it needs (kubectl auth can-i)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dchat_operator.api.rbac import CLUSTER_SCOPED, RULES
from tests.harness.cluster import KubeCluster
from tests.packaging.support import OPERATOR, OPERATOR_NAMESPACE, OPERATOR_SA, REPO, kustomize

# One worker runs the whole module (`--dist loadgroup`): its module fixture installs the
# bundle under fixed names (dchat-system, ClusterRole dchat-operator) and removes it after;
# a second worker doing the same would delete the namespace under the first.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("install-bundle")]

BASE = REPO / "manifests" / "base"
AS = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
TENANT_NS = "default"  # any namespace: the ClusterRole applies everywhere

VERBS = ("get", "list", "watch", "create", "patch", "update", "delete", "deletecollection")


def _kubectl_name(group: str, resource: str) -> tuple[str, str]:
    """("apps", "deployments/status") -> ("deployments.apps", "status")."""
    name, _, sub = resource.partition("/")
    return (f"{name}.{group}" if group else name), sub


# (resource as kubectl names it, subresource, namespaced, verbs, object name or ""): what
# RULES grants (a rule limited by resourceNames is asked once per name), and on the same
# resources, the verbs no rule grants for every object of the resource (asked without a name).
ALLOWED: list[tuple[str, str, bool, tuple[str, ...], str]] = [
    (
        *_kubectl_name(group, resource),
        (group, resource) not in CLUSTER_SCOPED,
        tuple(rule["verbs"]),
        object_name,
    )
    for rule in RULES
    for group in rule["apiGroups"]
    for resource in rule["resources"]
    for object_name in rule.get("resourceNames") or [""]
]
_UNNAMED: dict[tuple[str, str, bool], set[str]] = {}
for _name, _sub, _namespaced, _verbs, _object in ALLOWED:
    _UNNAMED.setdefault((_name, _sub, _namespaced), set()).update(() if _object else _verbs)
NOT_GRANTED: list[tuple[str, str, bool, tuple[str, ...], str]] = [
    (name, sub, namespaced, tuple(v for v in VERBS if v not in granted), "")
    for (name, sub, namespaced), granted in _UNNAMED.items()
]
# (verb, resource, subresource, namespaced)
DENIED: list[tuple[str, str, str, bool]] = [
    ("delete", "secrets", "", True),
    ("create", "roles.rbac.authorization.k8s.io", "", True),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", False),
    ("update", "secrets", "", True),
    ("patch", "secrets", "", True),
    ("deletecollection", "configmaps", "", True),
    ("create", "pods", "", True),
    ("create", "pods", "exec", True),
    ("create", "dchatclusters.dchat.dev", "", True),
    ("delete", "dchatclusters.dchat.dev", "", True),
    ("update", "dchatclusters.dchat.dev", "", True),
    ("patch", "dchatclusters.dchat.dev", "", True),
    ("update", "dchatclusters.dchat.dev", "status", True),
    ("update", "dchatbackups.dchat.dev", "", True),
    ("create", "dchatrestores.dchat.dev", "", True),
    ("list", "secrets", "", True),
    ("watch", "secrets", "", True),
    ("get", "pods", "", True),
    ("list", "replicasets.apps", "", True),
    ("create", "events.events.k8s.io", "", True),
    ("create", "roles.rbac.authorization.k8s.io", "", True),
    ("create", "clusterroles.rbac.authorization.k8s.io", "", False),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "", False),
    ("bind", "clusterroles.rbac.authorization.k8s.io", "", False),  # only dchat-postgres
    ("impersonate", "serviceaccounts", "", True),
    ("list", "nodes", "", False),
    ("patch", "nodes", "", False),
    ("list", "persistentvolumes", "", False),
    ("delete", "persistentvolumes", "", False),
    ("delete", "namespaces", "", False),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "", False),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", "", False),
]


def _ref(obj: dict[str, Any]) -> list[str]:
    """kubectl arguments naming one object: kind.group name [-n namespace]."""
    meta = obj["metadata"]
    group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
    kind = f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()
    return [kind, meta["name"], *(["-n", meta["namespace"]] if "namespace" in meta else [])]


def _exists(cluster: KubeCluster, obj: dict[str, Any]) -> bool:
    result = cluster.kubectl("get", *_ref(obj), "--ignore-not-found", "-o", "name")
    return bool(result.stdout.strip())


def _namespace_usable(kube_cluster: KubeCluster) -> bool:
    """The operator namespace is absent, or present and not being deleted."""
    found = kube_cluster.kubectl(
        "get", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "-o", "json"
    ).stdout.strip()
    if not found:
        return True
    ns = json.loads(found)
    return not ns["metadata"].get("deletionTimestamp") and ns["status"]["phase"] == "Active"


@pytest.fixture(scope="module")
def installed(crd_installed: KubeCluster) -> Iterator[tuple[KubeCluster, str]]:
    """`kubectl apply --server-side -k manifests/base`; afterwards, delete what it created
    (objects that were there before stay: the CRDs are applied first, as other tests,
    perhaps running beside this one, use them)."""
    kube_cluster = crd_installed
    objects = kustomize(BASE)
    created: list[dict[str, Any]] = []
    result = None
    deadline = time.monotonic() + 120
    while result is None or ("being terminated" in result.stderr and time.monotonic() < deadline):
        # A namespace left Terminating (an earlier run, or this module's own teardown when
        # xdist ran its tests in two pieces) must be gone before applying again; one
        # deleted between this check and the apply is waited for too.
        kube_cluster.wait_for(
            lambda: _namespace_usable(kube_cluster),
            timeout=90,
            what=f"namespace {OPERATOR_NAMESPACE} not terminating",
        )
        # what a refused try already made counts as ours too (removed after)
        created += [o for o in objects if o not in created and not _exists(kube_cluster, o)]
        result = kube_cluster.kubectl(
            "apply",
            "--server-side",
            "--field-manager=dchat-packaging-e2e",
            "--force-conflicts",
            "-k",
            str(BASE),
            check=False,
        )
    try:
        assert result.returncode == 0, result.stderr
        yield kube_cluster, result.stderr
    finally:
        # Namespaced objects go with their namespace; cluster-scoped ones one by one.
        for obj in reversed(created):
            kube_cluster.kubectl(
                "delete", *_ref(obj), "--ignore-not-found", "--wait=false", check=False
            )


def test_apiserver_accepts_the_bundle_without_warnings(
    installed: tuple[KubeCluster, str],
) -> None:
    cluster, stderr = installed
    assert "PodSecurity" not in stderr, stderr
    assert "Warning" not in stderr, stderr
    ns = cluster.get_json("namespace", OPERATOR_NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    crd = cluster.get_json("crd", "dchatclusters.dchat.dev")
    assert crd["spec"]["group"] == "dchat.dev"


def test_operator_pod_is_admitted_under_restricted(installed: tuple[KubeCluster, str]) -> None:
    cluster, _ = installed

    def pod() -> dict[str, Any] | None:
        pods = cluster.get_json(
            "pods",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=dchat-operator",
        )["items"]
        return pods[0] if pods and pods[0]["spec"].get("nodeName") else None

    admitted = cluster.wait_for(pod, timeout=90, what="the operator pod to be created and bound")
    assert admitted["spec"]["serviceAccountName"] == OPERATOR_SA
    assert admitted["spec"]["securityContext"]["runAsUser"] == 65532
    deployment = cluster.get_json("deployment", "dchat-operator", "-n", OPERATOR_NAMESPACE)
    for condition in deployment["status"].get("conditions", []):
        if condition["type"] == "ReplicaFailure":
            pytest.fail(f"ReplicaFailure: {condition}")


def test_restricted_is_enforced_in_the_operator_namespace(
    installed: tuple[KubeCluster, str],
) -> None:
    """The admission above means something: a privileged pod is rejected there."""
    cluster, _ = installed
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged-probe", "namespace": OPERATOR_NAMESPACE},
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}
            ]
        },
    }
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def _resource_attributes(
    verb: str, resource: str, sub: str, ns: str | None, object_name: str = ""
) -> dict[str, str]:
    name, _, group = resource.partition(".")
    attrs = {"verb": verb, "resource": name, "group": group}
    if object_name:
        attrs["name"] = object_name
    if sub:
        attrs["subresource"] = sub
    if ns:
        attrs["namespace"] = ns
    return attrs


def _allowed(cluster: KubeCluster, asks: list[tuple[Any, ...]]) -> list[bool]:
    """SubjectAccessReviews for the operator's ServiceAccount, all in one request. (kubectl
    auth can-i cannot name a resource the server does not serve yet, such as the
    Prometheus Operator's or the later dchat.dev kinds: it then drops the group.)"""
    reviews = [
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": AS,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{OPERATOR_NAMESPACE}",
                    "system:authenticated",
                ],
                "resourceAttributes": _resource_attributes(*ask),
            },
        }
        for ask in asks
    ]
    result = cluster.kubectl(
        "create",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": reviews}),
    )
    # kubectl prints one JSON document per created object.
    decoder = json.JSONDecoder()
    items: list[dict[str, Any]] = []
    text = result.stdout.strip()
    while text:
        item, end = decoder.raw_decode(text)
        items.append(item)
        text = text[end:].strip()
    assert len(items) == len(asks)
    return [bool(item["status"].get("allowed")) for item in items]


def _asks(
    table: list[tuple[str, str, bool, tuple[str, ...], str]],
) -> list[tuple[str, str, str, str | None, str]]:
    return [
        (verb, name, sub, TENANT_NS if namespaced else None, object_name)
        for name, sub, namespaced, verbs, object_name in table
        for verb in verbs
    ]


def test_service_account_can_do_what_the_operator_needs(
    installed: tuple[KubeCluster, str],
) -> None:
    cluster, _ = installed
    asks = _asks(ALLOWED)
    assert len(asks) == sum(
        len(r["apiGroups"])
        * len(r["resources"])
        * len(r["verbs"])
        * len(r.get("resourceNames") or [""])
        for r in RULES
    )
    refused = [a for a, ok in zip(asks, _allowed(cluster, asks), strict=True) if not ok]
    assert refused == [], f"the operator may not: {refused}"


def test_service_account_gets_no_more_than_rules_on_those_resources(
    installed: tuple[KubeCluster, str],
) -> None:
    cluster, _ = installed
    asks = _asks(NOT_GRANTED)
    assert ("delete", "secrets", "", TENANT_NS, "") in asks
    granted = [a for a, ok in zip(asks, _allowed(cluster, asks), strict=True) if ok]
    assert granted == [], f"the operator must not be able to: {granted}"


def test_service_account_cannot_do_anything_else(installed: tuple[KubeCluster, str]) -> None:
    cluster, _ = installed
    asks: list[tuple[str, str, str, str | None]] = [
        (verb, resource, sub, TENANT_NS if namespaced else None)
        for verb, resource, sub, namespaced in DENIED
    ]
    granted = [a for a, ok in zip(asks, _allowed(cluster, asks), strict=True) if ok]
    assert granted == [], f"the operator must not be able to: {granted}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["get", "dchatclusters.dchat.dev"], "yes"),
        (["patch", "dchatclusters.dchat.dev", "--subresource=status"], "yes"),
        (["create", "deployments.apps"], "yes"),
        (["get", "secrets"], "yes"),
        (["watch", "secrets"], "no"),
        (["update", "dchatclusters.dchat.dev"], "no"),
        (["delete", "secrets"], "no"),
        (["create", "clusterroles.rbac.authorization.k8s.io"], "no"),
        (["get", "nodes"], "yes"),  # fencing: is that node still Ready?
        (["list", "nodes"], "no"),
        (["create", "pods"], "no"),
    ],
)
def test_kubectl_auth_can_i(
    installed: tuple[KubeCluster, str], args: list[str], expected: str
) -> None:
    """The same answers through `kubectl auth can-i --as=...` (impersonation)."""
    cluster, _ = installed
    result = cluster.kubectl("auth", "can-i", *args, f"--as={AS}", "-n", TENANT_NS, check=False)
    assert result.stdout.strip() == expected, result.stdout + result.stderr


def _token_kubeconfig(cluster: KubeCluster, path: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a short-lived
    token from the TokenRequest API), for the same API server as the admin one."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    token = cluster.kubectl(
        "create", "token", OPERATOR_SA, "-n", OPERATOR_NAMESPACE, "--duration=20m"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "c", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.mark.timeout(240)
def test_real_operator_reconciles_with_only_its_rbac(
    installed: tuple[KubeCluster, str], tmp_path: Path
) -> None:
    """The RBAC is not only small but sufficient: the operator, authenticated as its
    ServiceAccount, turns the SQLite sample into a node Deployment whose pod is admitted
    under "restricted", writes the status, and is never refused by the API server."""
    cluster, _ = installed
    kubeconfig = _token_kubeconfig(cluster, tmp_path / "operator.kubeconfig")
    # The operator runs with --namespace here, so as not to reconcile other tests'
    # DchatClusters; kopf then also lists/watches Namespaces, which RULES grants: the
    # bundle's ClusterRole alone is enough, nothing is added for the test.
    _run_operator_on_sample(cluster, kubeconfig, tmp_path)


def _run_operator_on_sample(cluster: KubeCluster, kubeconfig: Path, tmp_path: Path) -> None:
    with cluster.namespace("pkg") as ns:
        log = tmp_path / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(OPERATOR),
                    "run",
                    f"--namespace={ns}",
                    "--liveness-port=0",
                    "--metrics-port=0",
                    "--resync-seconds=2",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            sample = yaml.safe_load((REPO / "manifests" / "samples" / "sqlite.yaml").read_text())
            cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(sample))
            name = sample["metadata"]["name"]

            def reconciled() -> bool:
                assert process.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
                cr = cluster.get_json("dchatcluster", name, "-n", ns)
                status = cr.get("status") or {}
                pods = cluster.get_json(
                    "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={name}"
                )["items"]
                return bool(
                    status.get("observedGeneration") == cr["metadata"]["generation"] and pods
                )

            cluster.wait_for(reconciled, timeout=120, what="the sample to be reconciled")
            kinds = {
                line.split("/")[0]
                for line in cluster.kubectl(
                    "get",
                    "deployment,service,configmap,serviceaccount,persistentvolumeclaim,networkpolicy",
                    "-n",
                    ns,
                    "-l",
                    f"app.kubernetes.io/instance={name}",
                    "-o",
                    "name",
                ).stdout.split()
            }
            assert {
                "deployment.apps",
                "service",
                "configmap",
                "serviceaccount",
                "persistentvolumeclaim",
                "networkpolicy.networking.k8s.io",
            } <= kinds, kinds
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        text = log.read_text()
        # "403" as a status code, not inside a hex id (the Lease holder's is random hex)
        refused = re.search(r"(?<![0-9A-Za-z])403(?![0-9A-Za-z])|[Ff]orbidden", text)
        assert refused is None, f"the API server refused the operator:\n{text[-4000:]}"
