"""``kubectl dchat`` against the real control plane, with the real operator running.

One namespace and one operator for the module (the tests share them, in order, on one xdist
worker): a PostgreSQL cluster ``demo`` (2 replicas; kwok pods turn Ready), a SQLite cluster
``solo`` (never Ready: no volume provisioner here; it serves admission's refusals) and, for
doctor's failure, ``broken`` whose database Secret does not exist. Every command runs as the
console script ``kubectl-dchat`` in a subprocess with the test cluster's kubeconfig, the way
kubectl would run it; what it reports is checked against the objects themselves (read with
kubectl). Backups: no S3 is configured here, so a backup is created and the operator fails it
at once (``no backup.s3``): that is what the test asserts; a completed backup and restore are
the real-node tests' (test_backups_real_node.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cluster import KubeCluster

from .conftest import PG, Operator, cluster_cr, db_secret, get_cluster, start_operator, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("kubectl-dchat")]

PLUGIN = Path(sys.executable).parent / "kubectl-dchat"


def demo(version: str = "0.1.0", replicas: int = 2) -> dict[str, Any]:
    return cluster_cr("demo", version=version, replicas=replicas, database=PG)


def broken() -> dict[str, Any]:
    database = {"engine": "postgres", "postgres": {"primary": {"name": "nope", "key": "url"}}}
    return cluster_cr("broken", database=database)


@pytest.fixture(scope="module")
def setup(
    crd_installed: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[KubeCluster, str, Operator]]:
    kube = crd_installed
    namespace = kube.create_namespace("plug")
    log = tmp_path_factory.mktemp("plugin") / "operator.log"
    op = start_operator(kube, [namespace], log)
    try:
        kube.apply([db_secret(), demo(), cluster_cr("solo"), broken()], namespace)
        wait_ready(kube, namespace, "demo", replicas=2)
        yield kube, namespace, op
    finally:
        # the backups carry the operator's finalizer: deleted while it runs, it drops it
        # (else the namespace would stay Terminating)
        kube.kubectl(
            "-n", namespace, "delete", "dchatbackups", "--all", "--timeout=30s", check=False
        )
        op.stop()
        kube.delete_namespace(namespace)


def plugin(
    setup: tuple[KubeCluster, str, Operator], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    kube, namespace, _ = setup
    env = {**kube.env, "KUBECONFIG": str(kube.kubeconfig), "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        [str(PLUGIN), *args, "-n", namespace],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        out, err = process.communicate(stdin, timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler prints where it hangs
        out, err = process.communicate(timeout=10)
        raise AssertionError(f"kubectl-dchat {args} hung:\n{err}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_context_picks_the_kubeconfig_context_like_kubectl(setup: Any, tmp_path: Path) -> None:
    """A kubeconfig whose current context names a server that refuses connections, and a
    second context for the test cluster: ``--context`` picks the second, as kubectl does;
    without it the plugin fails with the server's address, exit 1, nothing on stdout."""
    kube, namespace, _ = setup
    config = yaml.safe_load(kube.kubeconfig.read_text())
    (ctx,) = [c for c in config["contexts"] if c["name"] == config["current-context"]]
    (cluster,) = [c for c in config["clusters"] if c["name"] == ctx["context"]["cluster"]]
    dead = {**cluster, "name": "dead", "cluster": {**cluster["cluster"]}}
    dead["cluster"]["server"] = "https://127.0.0.1:1"
    config["clusters"].append(dead)
    config["contexts"] = [
        {**ctx, "name": "test-cluster"},
        {"name": "elsewhere", "context": {**ctx["context"], "cluster": "dead"}},
    ]
    config["current-context"] = "elsewhere"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    env = {**kube.env, "KUBECONFIG": str(path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PLUGIN), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    picked = run("status", "demo", "--context", "test-cluster", "-n", namespace, "-o", "json")
    assert picked.returncode == 0, picked.stdout + picked.stderr
    assert json.loads(picked.stdout)["cluster"]["metadata"]["name"] == "demo"
    # before the subcommand, as kubectl's global flags may be
    before = run("--context", "test-cluster", "-n", namespace, "status", "demo")
    assert before.returncode == 0, before.stdout + before.stderr
    refused = run("status", "demo", "-n", namespace)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout == ""
    assert "127.0.0.1:1" in refused.stderr, refused.stderr


def test_status_shows_the_tree_of_children_with_their_health(setup: Any) -> None:
    kube, namespace, _ = setup
    out = plugin(setup, "status", "demo")
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    pods = kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=demo")
    for line in (
        "✓ Deployment/demo  2/2 ready, 2 updated",
        "✓ Service/demo-api",
        "✓ Service/demo-metrics",
        "✓ ConfigMap/demo-config",
        "✓ PodDisruptionBudget/demo",
        "✓ NetworkPolicy/demo",
        "✓ Secret/db  keys url",
        "Overall: healthy",
    ):
        assert line in text, text
    for pod in pods["items"]:
        assert f"✓ Pod/{pod['metadata']['name']}  Running, ready" in text
    assert "✓ Ready" in text
    assert "version   0.1.0 running, 0.1.0 in spec" in text
    assert "Backups: none yet" in text

    data = json.loads(plugin(setup, "status", "demo", "-o", "json").stdout)
    assert data["healthy"] is True
    kinds = sorted(c["kind"] for c in data["children"])
    assert kinds.count("Service") == 4  # api, metrics, p2p, p2p-peers
    assert "Deployment" in kinds
    assert (
        data["cluster"]["metadata"]["uid"]
        == get_cluster(kube, namespace, "demo")["metadata"]["uid"]
    )
    assert all("data" not in s for s in data["secrets"])  # key names only, never values

    missing = plugin(setup, "status", "nothere")
    assert missing.returncode == 1
    assert 'dchatcluster "nothere" not found' in missing.stderr
    unhealthy = plugin(setup, "status", "broken")
    assert unhealthy.returncode == 1
    assert "✗ Secret/nope  missing" in unhealthy.stdout


def test_doctor_passes_on_a_healthy_cluster_and_explains_a_missing_secret(setup: Any) -> None:
    _, namespace, _ = setup
    ok = plugin(setup, "doctor", "demo", "--operator-namespace", namespace)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ CRD dchatclusters.dchat.dev: Established" in ok.stdout
    assert "✓ operator: leader" in ok.stdout
    assert "✓ Secret db: has url" in ok.stdout
    # no S3 here; the kwok pods serve nothing, so the apiserver's pod proxy cannot reach
    # them: the reachability checks are warnings (cannot ask), not failures
    assert "all checks passed (1 not configured)" in ok.stdout
    data = plugin(setup, "doctor", "demo", "--operator-namespace", namespace, "-o", "json")
    checks = {c["name"]: c for c in json.loads(data.stdout)["checks"]}
    assert checks["S3 reachable"]["result"] == "not configured"
    assert checks["database reachable"]["result"] in ("warn", "ok"), checks

    bad = plugin(setup, "doctor", "broken", "--operator-namespace", namespace, "-o", "json")
    assert bad.returncode == 1
    checks = {c["name"]: c for c in json.loads(bad.stdout)["checks"]}
    assert checks["Secret nope"]["result"] == "fail"
    assert (
        checks["Secret nope"]["fix"] == "kubectl create secret generic nope --from-literal=url=..."
    )
    assert checks["Ready"]["result"] == "fail"
    text = plugin(setup, "doctor", "broken", "--operator-namespace", namespace).stdout
    assert "✗ Secret nope: missing" in text
    assert "fix: kubectl create secret generic nope" in text


def test_pause_and_resume_rollout_set_the_spec_and_the_deployment(setup: Any) -> None:
    kube, namespace, _ = setup
    out = plugin(setup, "pause-rollout", "demo", "--wait", "--timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert get_cluster(kube, namespace, "demo")["spec"]["rollout"]["paused"] is True
    kube.wait_for(
        lambda: kube.get_json("-n", namespace, "deploy", "demo")["spec"].get("paused") is True,
        timeout=20,
        what="the Deployment paused",
    )
    assert "rollout   PAUSED" in plugin(setup, "status", "demo").stdout
    again = plugin(setup, "pause-rollout", "demo")
    assert again.returncode == 0
    assert "already true" in again.stdout
    out = plugin(setup, "resume-rollout", "demo", "--wait", "--timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert get_cluster(kube, namespace, "demo")["spec"]["rollout"]["paused"] is False
    kube.wait_for(
        lambda: not kube.get_json("-n", namespace, "deploy", "demo")["spec"].get("paused"),
        timeout=20,
        what="the Deployment resumed",
    )


def test_pause_bridge_sets_the_field_and_reaches_the_pods_without_a_restart(setup: Any) -> None:
    kube, namespace, _ = setup
    out = plugin(setup, "pause-bridge", "solo")
    assert out.returncode == 0, out.stderr
    assert "signs and submits nothing" in out.stderr
    assert get_cluster(kube, namespace, "solo")["spec"]["bridge"]["paused"] is True
    before = kube.get_json("-n", namespace, "deployment", "solo")["spec"]["template"]
    kube.wait_for(
        lambda: (
            kube.get_json("-n", namespace, "configmap", "solo-config")["data"]["bridge-paused"]
            == "true"
        ),
        timeout=20,
        what="the ConfigMap key bridge-paused = true",
    )
    # no restart: the pod template (its config checksum) is what it was
    after = kube.get_json("-n", namespace, "deployment", "solo")["spec"]["template"]
    assert after == before
    out = plugin(setup, "resume-bridge", "solo", "--wait", "--timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    assert get_cluster(kube, namespace, "solo")["spec"]["bridge"]["paused"] is False


def test_scale_uses_the_scale_subresource_and_admission_refuses_sqlite_above_one(
    setup: Any,
) -> None:
    kube, namespace, _ = setup
    out = plugin(setup, "scale", "demo", "3", "--wait", "--timeout", "40")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3/3 ready" in out.stderr
    assert kube.get_json("-n", namespace, "deploy", "demo")["status"]["readyReplicas"] == 3
    refused = plugin(setup, "scale", "solo", "2")
    assert refused.returncode == 1
    assert "SQLite mode allows at most 1 replica" in refused.stderr
    assert plugin(setup, "scale", "demo", "-1").returncode == 2  # usage
    out = plugin(setup, "scale", "demo", "2", "--wait", "--timeout", "40")
    assert out.returncode == 0, out.stdout + out.stderr


def test_backup_is_created_and_followed_and_listed(setup: Any) -> None:
    kube, namespace, _ = setup
    assert plugin(setup, "backups", "demo").stdout == "no backups\n"
    out = plugin(setup, "backup", "demo", "--name", "demo-b1", "--wait", "--timeout", "30")
    # no backup.s3 on this cluster: the operator fails the backup, and says why
    assert out.returncode == 1, out.stdout + out.stderr
    assert "dchatbackup/demo-b1 created" in out.stdout
    status = kube.get_json("-n", namespace, "dchatbackup", "demo-b1")["status"]
    assert status["phase"] == "Failed"
    assert status["error"] in out.stderr
    table = plugin(setup, "backups", "demo")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "PHASE", "ORIGIN"]
    assert row.startswith("demo-b1")
    assert "✗ Failed" in row
    assert "on-demand" in row
    items = json.loads(plugin(setup, "backups", "demo", "-o", "json").stdout)["items"]
    assert [i["metadata"]["name"] for i in items] == ["demo-b1"]
    restore = plugin(setup, "restore", "demo-b1", "--to", "demo")
    assert restore.returncode == 1
    assert "is Failed, not Completed" in restore.stderr
    assert plugin(setup, "restore", "demo-b1").returncode == 2  # --to or --new is required


def test_diff_shows_the_cr_change_and_what_the_operator_would_do(
    setup: Any, tmp_path: Path
) -> None:
    kube, namespace, _ = setup
    live = get_cluster(kube, namespace, "demo")
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(demo()))
    unchanged = plugin(setup, "diff", str(same))
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert unchanged.stdout == ""
    assert "no changes" in unchanged.stderr

    newer = tmp_path / "newer.yaml"
    newer.write_text(yaml.safe_dump(demo(version="0.2.0")))
    changed = plugin(setup, "diff", str(newer))
    assert changed.returncode == 1, changed.stderr
    assert "-  version: 0.1.0\n+  version: 0.2.0" in changed.stdout
    assert "+++ merged/Deployment/demo" in changed.stdout
    assert "+        image: ghcr.io/dchat-dev/dchat:0.2.0" in changed.stdout.replace("'", "")
    # nothing was stored
    assert (
        get_cluster(kube, namespace, "demo")["metadata"]["generation"]
        == live["metadata"]["generation"]
    )

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cluster_cr("solo", replicas=2)))
    refused = plugin(setup, "diff", str(bad))
    assert refused.returncode == 2
    assert "SQLite mode allows at most 1 replica" in refused.stderr


def test_a_user_who_may_only_read_the_cluster_gets_warnings_not_failures(
    setup: Any, tmp_path: Path
) -> None:
    """A bearer token of a ServiceAccount whose Role reads DchatClusters only: CRDs, the
    Lease and the Secret cannot be read, which doctor reports as such (exit 0 on a healthy
    cluster), and status still draws the tree."""
    kube, namespace, _ = setup
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "viewer"},
        "rules": [
            {
                "apiGroups": ["dchat.dev"],
                "resources": ["dchatclusters"],
                "verbs": ["get", "list"],
            },
            {
                "apiGroups": ["", "apps", "policy", "networking.k8s.io"],
                "resources": [
                    "serviceaccounts",
                    "configmaps",
                    "services",
                    "pods",
                    "events",
                    "deployments",
                    "poddisruptionbudgets",
                    "networkpolicies",
                ],
                "verbs": ["get", "list"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}}
    kube.apply([account, role, binding], namespace)
    token = kube.kubectl("-n", namespace, "create", "token", "viewer").stdout.strip()
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    cluster = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    viewer = tmp_path / "viewer.kubeconfig"
    viewer.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "viewer",
                "clusters": [cluster],
                "contexts": [
                    {
                        "name": "viewer",
                        "context": {"cluster": cluster["name"], "user": "viewer"},
                    }
                ],
                "users": [{"name": "viewer", "user": {"token": token}}],
            }
        )
    )
    out = plugin(setup, "doctor", "demo", "--kubeconfig", str(viewer), "-o", "json")
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    crd = checks["CRD dchatclusters.dchat.dev"]
    assert crd["result"] == "warn"
    assert "cannot check" in crd["detail"]
    assert "forbidden" in crd["detail"]
    assert checks["operator"]["result"] == "warn"
    assert checks["Secret db"]["result"] == "warn"
    assert checks["Ready"]["result"] == "ok"
    tree = plugin(setup, "status", "demo", "--kubeconfig", str(viewer))
    assert "✓ Deployment/demo  2/2 ready" in tree.stdout
    assert "! Secret/db  not checked: " in tree.stdout
    denied = plugin(setup, "pause-rollout", "demo", "--kubeconfig", str(viewer))
    assert denied.returncode == 1
    assert 'cannot patch resource "dchatclusters"' in denied.stderr


def test_rollback_round_trip_and_refusal(setup: Any) -> None:
    kube, namespace, _ = setup
    refused = plugin(setup, "rollback", "solo", "--timeout", "20")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused: no earlier good revision" in refused.stderr

    kube.apply([demo(version="0.1.1")], namespace)
    kube.wait_for(
        lambda: (
            (get_cluster(kube, namespace, "demo").get("status") or {})
            .get("lastGoodRevision", {})
            .get("version")
            == "0.1.1"
        ),
        timeout=40,
        what="0.1.1 recorded good",
    )
    started = time.monotonic()
    out = plugin(setup, "rollback", "demo", "--timeout", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    obj = get_cluster(kube, namespace, "demo")
    request = obj["status"]["rollbackRequest"]
    assert request["value"] in out.stdout
    assert request["result"].startswith("rolled back to version 0.1.0")
    assert request["result"] in out.stderr
    assert obj["status"]["rollback"]["toVersion"] == "0.1.0"
    print(f"rollback handled {time.monotonic() - started:.1f} s after the request")
    wait_ready(kube, namespace, "demo", replicas=2, timeout=40)
    assert "Rollback in force: 0.1.1 -> 0.1.0" in plugin(setup, "status", "demo").stdout


def test_promote_without_patroni_says_it_cannot(setup: Any) -> None:
    out = plugin(setup, "promote", "demo", "demo-1")
    assert out.returncode == 1
    assert "names no Patroni cluster (spec.database.postgres.patroni.scope)" in out.stderr
