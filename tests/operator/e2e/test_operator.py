"""End to end on the real control plane: samples, scaling, validation, drift, zero writes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.operator.e2e.conftest import (
    Operator,
    condition,
    get_cluster,
    load_sample,
    metric_sum,
    parse_metrics,
    wait_ready,
)

pytestmark = pytest.mark.e2e

SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
PG_SPEC = {
    "database": {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}},
    "resources": SMALL,
}


def _apply(kube: KubeCluster, namespace: str, *docs: dict[str, Any]) -> None:
    kube.apply(list(docs), namespace)


def _cr(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dchat.dev/v1alpha1",
        "kind": "DchatCluster",
        "metadata": {"name": name},
        "spec": spec,
    }


def _db_secret(name: str = "db") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"url": "postgresql://dchat:pw@postgres:5432/dchat"},
    }


def _kinds(kube: KubeCluster, namespace: str, name: str) -> set[str]:
    items = kube.get_json(
        "-n",
        namespace,
        "serviceaccounts,configmaps,services,deployments,persistentvolumeclaims,"
        "poddisruptionbudgets,networkpolicies,ingresses",
        "-l",
        f"app.kubernetes.io/instance={name}",
    )["items"]
    return {f"{i['kind']}/{i['metadata']['name']}" for i in items}


@pytest.fixture
def local_pv(kube: KubeCluster, namespace: str) -> Iterator[str]:
    """A PersistentVolume (and its StorageClass name) for the SQLite volume: kwok has no
    provisioner, so the test provides the volume statically."""
    storage_class = f"e2e-{namespace}"
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{namespace}"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "hostPath": {"path": f"/tmp/dchat-e2e/{namespace}"},
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(pv))
    try:
        yield storage_class
    finally:
        kube.kubectl("delete", "pv", f"pv-{namespace}", "--wait=false", check=False)


@pytest.mark.timeout(180)
def test_sqlite_sample_ready_children_and_pvc_retained(
    kube: KubeCluster, namespace: str, operator: Operator, local_pv: str
) -> None:
    (doc,) = load_sample("sqlite.yaml")
    doc["spec"]["database"]["sqlite"]["storageClassName"] = local_pv
    _apply(kube, namespace, doc)
    obj = wait_ready(kube, namespace, "dchat-sqlite", replicas=1)
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["currentVersion"] == "0.1.0"
    assert status["selector"].startswith("app.kubernetes.io/name=dchat,")
    assert condition(obj, "Degraded")["status"] == "False"
    # no finalizer: deleting a DchatCluster never depends on the operator running
    assert "finalizers" not in obj["metadata"]
    assert _kinds(kube, namespace, "dchat-sqlite") == {
        "ServiceAccount/dchat-sqlite",
        "ConfigMap/dchat-sqlite-config",
        "PersistentVolumeClaim/dchat-sqlite-data",
        "Service/dchat-sqlite-api",
        "Service/dchat-sqlite-metrics",
        "Service/dchat-sqlite-p2p",
        "Service/dchat-sqlite-p2p-peers",
        "Deployment/dchat-sqlite",
        "NetworkPolicy/dchat-sqlite",
    }
    dep = kube.get_json("-n", namespace, "deployment", "dchat-sqlite", "--show-managed-fields")
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "dchat-operator" in managers
    pvc = kube.get_json("-n", namespace, "pvc", "dchat-sqlite-data")
    assert pvc["status"]["phase"] == "Bound"
    assert "ownerReferences" not in pvc["metadata"]

    # printer columns
    table = kube.kubectl("-n", namespace, "get", "dchat").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "VERSION", "REPLICAS", "READY", "PHASE", "LAST", "BACKUP", "AGE"]
    row = table.splitlines()[1].split()
    assert row[:5] == ["dchat-sqlite", "0.1.0", "1", "1", "Ready"]

    # deleting the cluster removes the children through owner references, keeps the data
    kube.kubectl("-n", namespace, "delete", "dchatcluster", "dchat-sqlite", "--wait=true")
    kube.wait_for(
        lambda: (
            _kinds(kube, namespace, "dchat-sqlite") == {"PersistentVolumeClaim/dchat-sqlite-data"}
        ),
        timeout=60,
        what="garbage collection of the children",
    )


@pytest.mark.timeout(180)
def test_postgres_sample_ready_then_scale_both_ways(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    docs = load_sample("postgres-secret.example.yaml") + load_sample("postgres.yaml")
    docs[-1]["spec"]["resources"] = SMALL
    _apply(kube, namespace, *docs)
    obj = wait_ready(kube, namespace, "dchat-prod", replicas=3)
    assert obj["status"]["replicas"] == 3
    kinds = _kinds(kube, namespace, "dchat-prod")
    assert {"Ingress/dchat-prod", "PodDisruptionBudget/dchat-prod"} <= kinds
    assert not any(k.startswith("PersistentVolumeClaim/") for k in kinds)
    dep = kube.get_json("-n", namespace, "deployment", "dchat-prod")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL_FILE"]["value"] == "/etc/dchat/secrets/database/url"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["database"]["secret"]["secretName"] == "dchat-postgres"
    assert volumes["database"]["secret"]["items"] == [{"key": "url", "path": "url"}]
    assert "valueFrom" not in str(env)
    cm = kube.get_json("-n", namespace, "configmap", "dchat-prod-config")
    assert "CHANGE-ME" not in cm["data"]["config.toml"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    kube.kubectl("-n", namespace, "scale", "dchatcluster/dchat-prod", "--replicas=5")
    wait_ready(kube, namespace, "dchat-prod", replicas=5)
    dep = kube.get_json("-n", namespace, "deployment", "dchat-prod")
    assert dep["spec"]["replicas"] == 5
    assert dep["status"]["readyReplicas"] == 5

    kube.kubectl(
        "-n",
        namespace,
        "patch",
        "dchatcluster",
        "dchat-prod",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":2}}',
    )
    obj = wait_ready(kube, namespace, "dchat-prod", replicas=2)
    assert obj["status"]["replicas"] == 2
    assert kube.get_json("-n", namespace, "deployment", "dchat-prod")["spec"]["replicas"] == 2
    scale = kube.get_json("-n", namespace, "dchatcluster", "dchat-prod", "--subresource=scale")
    assert scale["status"]["replicas"] == 2
    assert "app.kubernetes.io/instance=dchat-prod" in scale["status"]["selector"]
    pods = kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=dchat-prod")
    assert len([p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]) == 2


def test_scaling_a_sqlite_cluster_beyond_one_is_rejected(kube: KubeCluster, namespace: str) -> None:
    _apply(kube, namespace, _cr("one", resources=SMALL))
    result = kube.kubectl("-n", namespace, "scale", "dchatcluster/one", "--replicas=2", check=False)
    assert result.returncode != 0
    assert "SQLite mode allows at most 1 replica" in result.stderr


def test_explain_shows_descriptions(kube: KubeCluster) -> None:
    out = kube.kubectl("explain", "dchatcluster.spec.backup").stdout
    assert "Backups to S3" in out
    assert "Cron expression" in out
    out = kube.kubectl("explain", "dchatcluster.spec.chain.chatChainRpc").stdout
    assert "JSON-RPC URL of the chat chain" in out
    out = kube.kubectl("explain", "dchatcluster.spec.database.postgres.primary").stdout
    assert "DATABASE_URL" in out


@pytest.mark.timeout(180)
def test_missing_secret_degrades_then_recovers(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    _apply(kube, namespace, _cr("nosecret", replicas=2, **PG_SPEC))

    def degraded() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, "nosecret")
        cond = condition(obj, "Degraded")
        return obj if cond.get("status") == "True" else None

    obj = kube.wait_for(degraded, timeout=30, what="Degraded")
    cond = condition(obj, "Degraded")
    assert cond["reason"] == "SecretNotFound"
    assert "db" in cond["message"]
    assert obj["status"]["phase"] == "Degraded"
    assert condition(obj, "Ready")["status"] == "False"
    assert kube.kubectl("-n", namespace, "get", "deploy", "nosecret", check=False).returncode != 0
    events = kube.get_json(
        "-n", namespace, "events", "--field-selector", "involvedObject.name=nosecret"
    )
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in events["items"])
    assert operator.process.poll() is None  # no crash

    _apply(kube, namespace, _db_secret())
    obj = wait_ready(kube, namespace, "nosecret", replicas=2, timeout=60)
    assert condition(obj, "Degraded")["status"] == "False"


def test_spec_the_schema_accepts_but_the_model_rejects_is_degraded(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    # "99 3 * * *" passes the schema's coarse pattern; croniter in the model rejects it
    _apply(kube, namespace, _cr("badcron", resources=SMALL, backup={"schedule": "99 3 * * *"}))

    def degraded() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, "badcron")
        return obj if condition(obj, "Degraded").get("reason") == "InvalidSpec" else None

    obj = kube.wait_for(degraded, timeout=30, what="Degraded/InvalidSpec")
    assert "not a valid cron expression" in condition(obj, "Degraded")["message"]
    assert obj["status"]["phase"] == "Degraded"
    assert operator.process.poll() is None
    assert operator.healthz()


# serial: the zero-writes proof reads the apiserver's own request counters, which are
# cluster-wide; a test running beside it would write too.
@pytest.mark.serial
@pytest.mark.timeout(180)
def test_drift_is_reverted_and_idle_resync_makes_no_writes(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    _apply(kube, namespace, _db_secret(), _cr("drift", replicas=2, **PG_SPEC))
    wait_ready(kube, namespace, "drift", replicas=2)
    dep = kube.get_json("-n", namespace, "deployment", "drift")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]

    # someone edits the image by hand: reverted
    kube.kubectl("-n", namespace, "set", "image", "deployment/drift", "dchat=evil/image:6.6.6")
    kube.wait_for(
        lambda: (
            kube.get_json("-n", namespace, "deployment", "drift")["spec"]["template"]["spec"][
                "containers"
            ][0]["image"]
            == image
        ),
        timeout=30,
        what="image reverted",
    )
    # someone deletes the Deployment: it comes back
    old_uid = kube.get_json("-n", namespace, "deployment", "drift")["metadata"]["uid"]
    kube.kubectl("-n", namespace, "delete", "deployment", "drift", "--wait=true")
    kube.wait_for(
        lambda: (
            kube.kubectl("-n", namespace, "get", "deployment", "drift", check=False).returncode == 0
        ),
        timeout=30,
        what="Deployment recreated",
    )
    new = kube.get_json("-n", namespace, "deployment", "drift")
    assert new["metadata"]["uid"] != old_uid
    # someone deletes the ConfigMap: it comes back at the next resync
    kube.kubectl("-n", namespace, "delete", "configmap", "drift-config")
    kube.wait_for(
        lambda: (
            kube.kubectl(
                "-n", namespace, "get", "configmap", "drift-config", check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="ConfigMap recreated",
    )
    wait_ready(kube, namespace, "drift", replicas=2)

    # idle: several resync passes, zero writes (operator's own count and the apiserver's)
    time.sleep(3)
    writes_before, resyncs_before = operator.writes(), operator.resyncs()
    api_before = _apiserver_writes(kube)
    events_before = _operator_events(kube, namespace)
    kube.wait_for(lambda: operator.resyncs() >= resyncs_before + 4, timeout=30, what="4 resyncs")
    assert operator.writes() == writes_before
    api_after = _apiserver_writes(kube)
    assert api_after == api_before, {
        k: api_after[k] - api_before.get(k, 0)
        for k in api_after
        if api_after[k] != api_before.get(k, 0)
    }
    assert _operator_events(kube, namespace) == events_before
    reconciles = metric_sum(operator.metrics(), "dchat_operator_reconciles_total", trigger="resync")
    assert reconciles >= 4


_OURS = (
    "serviceaccounts",
    "configmaps",
    "services",
    "deployments",
    "persistentvolumeclaims",
    "poddisruptionbudgets",
    "networkpolicies",
    "ingresses",
    "dchatclusters",
)


def _apiserver_writes(kube: KubeCluster) -> dict[str, float]:
    """apiserver_request_total{verb=~"APPLY|PATCH"} on the kinds the operator writes.

    Every write the operator could make on a resync is a server-side apply of a child (verb
    APPLY) or a status merge patch (PATCH on dchatclusters/status); Events (POST) are checked
    separately. Other verbs are left out because other components issue them in the
    background (garbage collector DELETEs and the root-CA publisher POSTs in namespaces of
    earlier tests that are still terminating; controller-manager status PUTs).
    """
    metrics = parse_metrics(kube.kubectl("get", "--raw", "/metrics").stdout)
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not key.startswith("apiserver_request_total{"):
            continue
        if not any(f'verb="{v}"' in key for v in ("APPLY", "PATCH")):
            continue
        if not any(f'resource="{r}"' in key for r in _OURS):
            continue
        sub_ok = 'subresource=""' in key or (
            'resource="dchatclusters"' in key and 'subresource="status"' in key
        )
        if sub_ok:
            out[key] = value
    return out


def _operator_events(kube: KubeCluster, namespace: str) -> int:
    events = kube.get_json("-n", namespace, "events")["items"]
    return sum(1 for e in events if (e.get("source") or {}).get("component") == "dchat-operator")


@pytest.mark.timeout(180)
def test_config_change_rolls_the_pods(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    _apply(kube, namespace, _db_secret(), _cr("roll", replicas=2, **PG_SPEC))
    wait_ready(kube, namespace, "roll", replicas=2)
    ann = "dchat.dev/config-checksum"
    before = kube.get_json("-n", namespace, "deployment", "roll")["spec"]["template"]["metadata"][
        "annotations"
    ][ann]
    kube.kubectl(
        "-n",
        namespace,
        "patch",
        "dchatcluster",
        "roll",
        "--type=merge",
        "-p",
        '{"spec":{"marketplace":{"cacheSize":42}}}',
    )
    wait_ready(kube, namespace, "roll", replicas=2)
    dep = kube.get_json("-n", namespace, "deployment", "roll")
    assert dep["spec"]["template"]["metadata"]["annotations"][ann] != before
    cm = kube.get_json("-n", namespace, "configmap", "roll-config")
    assert "cache_size = 42" in cm["data"]["config.toml"]
    rs = kube.get_json("-n", namespace, "replicasets", "-l", "app.kubernetes.io/instance=roll")
    assert len(rs["items"]) == 2  # the old template was rolled away


def test_pods_pass_restricted_pod_security(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    labels = kube.get_json("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    _apply(kube, namespace, _db_secret(), _cr("psa", replicas=2, **PG_SPEC))
    wait_ready(kube, namespace, "psa", replicas=2)
    pods = kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=psa")["items"]
    assert len(pods) == 2
    events = kube.get_json("-n", namespace, "events", "--field-selector", "reason=FailedCreate")
    assert events["items"] == []
    # the same pod spec, created directly, passes admission with no warnings
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"psa-probe-{uuid.uuid4().hex[:6]}"},
        "spec": pods[0]["spec"] | {"nodeName": None},
    }
    result = kube.kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod)
    )
    assert "Warning" not in result.stderr


def test_operator_probe_and_metrics(kube: KubeCluster, namespace: str, operator: Operator) -> None:
    health = operator.healthz()
    assert "leader" in health["resync"]  # kopf caches probe results for a while
    metrics = operator.metrics()
    assert "dchat_operator_resyncs_total" in metrics
    assert metrics["dchat_operator_leader"] == 1
    _apply(kube, namespace, _db_secret(), _cr("probe", replicas=1, **PG_SPEC))
    wait_ready(kube, namespace, "probe", replicas=1)
    metrics = operator.metrics()
    assert any(
        k.startswith('dchat_operator_reconcile_duration_seconds_bucket{kind="DchatCluster"')
        for k in metrics
    )
    assert metric_sum(metrics, "dchat_operator_work_queue", kind="DchatCluster", state="known") == 1
