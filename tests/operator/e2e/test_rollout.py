"""Automatic rollback on the real control plane: a version whose pods never turn Ready
(kwok's fault stage: an image tag containing "never-ready") is rolled back by the operator
to the last good revision, and not tried again until the spec changes; a paused rollout
replaces no pod until resumed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster

from .conftest import PG, Operator, cluster_cr, condition, db_secret, get_cluster, wait_ready

pytestmark = pytest.mark.e2e

SECRET = db_secret()


def _cr(version: str) -> dict[str, Any]:
    return cluster_cr(
        "rb", version=version, replicas=2, database=PG, rollout={"progressDeadlineSeconds": 10}
    )


def _image(kube: KubeCluster, namespace: str) -> str:
    dep = kube.get_json("-n", namespace, "deployment", "rb")
    return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.mark.timeout(240)
def test_a_version_that_never_turns_ready_is_rolled_back_until_the_spec_changes(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    kube.apply([SECRET, _cr("0.1.0")], namespace)
    wait_ready(kube, namespace, "rb", replicas=2)
    good = _image(kube, namespace)
    assert get_cluster(kube, namespace, "rb")["status"]["lastGoodRevision"]["version"] == "0.1.0"

    started = time.monotonic()
    kube.apply([_cr("0.2.0-never-ready")], namespace)

    def rolled_back() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, "rb")
        return obj if (obj.get("status") or {}).get("rollback") else None

    obj = kube.wait_for(rolled_back, timeout=90, interval=0.5, what="a rollback")
    rollback = obj["status"]["rollback"]
    assert rollback["fromVersion"] == "0.2.0-never-ready"
    assert rollback["toVersion"] == "0.1.0"
    assert condition(obj, "Degraded")["reason"] == "RolledBack"
    assert obj["status"]["rolloutHistory"][-1]["result"] == "RolledBack"
    kube.wait_for(lambda: _image(kube, namespace) == good, timeout=30, what="the good image back")
    serving = wait_ready(kube, namespace, "rb", replicas=2, timeout=60)
    print(
        f"rolled back and serving the good version {time.monotonic() - started:.1f} s "
        "after the bad one was applied (progress deadline 10 s)"
    )
    assert serving["status"]["currentVersion"] == "0.1.0"
    assert serving["status"]["phase"] == "Degraded"
    events = kube.get_json("-n", namespace, "events", "--field-selector", "involvedObject.name=rb")[
        "items"
    ]
    assert any(e["reason"] == "RolledBack" for e in events), [e["reason"] for e in events]

    # not tried again: resyncs every 2 s leave the good revision in place
    resyncs = operator.resyncs()
    kube.wait_for(lambda: operator.resyncs() >= resyncs + 3, timeout=30, what="3 resyncs")
    assert _image(kube, namespace) == good
    assert get_cluster(kube, namespace, "rb")["status"]["rollback"] == rollback

    # a new spec is tried, rolls out, and becomes the good revision
    kube.apply([_cr("0.2.1")], namespace)
    done = wait_ready(kube, namespace, "rb", replicas=2, timeout=90)
    assert "rollback" not in done["status"]
    assert done["status"]["phase"] == "Ready"
    assert done["status"]["lastGoodRevision"]["version"] == "0.2.1"
    assert _image(kube, namespace).endswith(":0.2.1")


@pytest.mark.timeout(240)
def test_a_paused_rollout_holds_the_pods_until_resumed(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    def cr(version: str, paused: bool) -> dict[str, Any]:
        return cluster_cr(
            "ps", version=version, replicas=2, database=PG, rollout={"paused": paused}
        )

    kube.apply([SECRET, cr("0.1.0", paused=False)], namespace)
    wait_ready(kube, namespace, "ps", replicas=2)
    kube.apply([cr("0.2.0", paused=True)], namespace)

    def paused() -> dict[str, Any] | None:
        obj = get_cluster(kube, namespace, "ps")
        progressing = condition(obj, "Progressing")
        return obj if progressing.get("reason") == "Paused" else None

    obj = kube.wait_for(paused, timeout=60, interval=0.5, what="Progressing/Paused")
    assert condition(obj, "Ready")["status"] == "True"  # the old pods serve
    dep = kube.get_json("-n", namespace, "deployment", "ps")
    assert dep["spec"]["paused"] is True
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.2.0")
    time.sleep(3)  # the Deployment controller replaces nothing while paused
    images = {
        p["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
        for p in kube.get_json("-n", namespace, "pods", "-l", "app.kubernetes.io/instance=ps")[
            "items"
        ]
    }
    assert images == {"0.1.0"}, images
    assert get_cluster(kube, namespace, "ps")["status"]["lastGoodRevision"]["version"] == "0.1.0"

    kube.apply([cr("0.2.0", paused=False)], namespace)
    done = wait_ready(kube, namespace, "ps", replicas=2, timeout=90)
    assert done["status"]["lastGoodRevision"]["version"] == "0.2.0"
    assert not kube.get_json("-n", namespace, "deployment", "ps")["spec"].get("paused")


def _reasons(kube: KubeCluster, namespace: str, name: str) -> dict[str, int]:
    """Events about ``name`` by reason, with their counts."""
    items = kube.get_json(
        "-n", namespace, "events", "--field-selector", f"involvedObject.name={name}"
    )["items"]
    out: dict[str, int] = {}
    for e in items:
        out[e["reason"]] = out.get(e["reason"], 0) + int(e.get("count") or 1)
    return out


@pytest.mark.timeout(300)
def test_the_operator_killed_mid_rollout_and_mid_rollback_finishes_once(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    def cr(version: str) -> dict[str, Any]:
        return cluster_cr(
            "kr", version=version, replicas=2, database=PG, rollout={"progressDeadlineSeconds": 10}
        )

    def image() -> str:
        dep = kube.get_json("-n", namespace, "deployment", "kr")
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    kube.apply([SECRET, cr("0.1.0")], namespace)
    wait_ready(kube, namespace, "kr", replicas=2)
    good = image()
    kube.apply([cr("0.2.0-never-ready")], namespace)
    kube.wait_for(lambda: image().endswith("never-ready"), timeout=30, what="the rollout")
    operator.kill_and_restart()  # 1: mid-rollout, the new pods starting

    def rollback() -> dict[str, Any] | None:
        found = (get_cluster(kube, namespace, "kr").get("status") or {}).get("rollback")
        return found if isinstance(found, dict) else None

    written = kube.wait_for(rollback, timeout=90, interval=0.1, what="the rollback")
    operator.kill_and_restart()  # 2: the rollback written, its apply maybe not yet
    kube.wait_for(lambda: image() == good, timeout=60, what="the good image back")
    done = wait_ready(kube, namespace, "kr", replicas=2, timeout=90)
    status = done["status"]
    assert status["rollback"] == written  # the same decision, not a second one
    assert [r["result"] for r in status["rolloutHistory"]].count("RolledBack") == 1
    resyncs = operator.resyncs()
    kube.wait_for(lambda: operator.resyncs() >= resyncs + 2, timeout=30, what="2 resyncs")
    assert _reasons(kube, namespace, "kr").get("RolledBack") == 1, _reasons(kube, namespace, "kr")
    assert image() == good


@pytest.mark.timeout(240)
def test_a_rollback_request_on_the_cr_goes_back_to_the_previous_version(
    kube: KubeCluster, namespace: str, operator: Operator
) -> None:
    def cr(version: str) -> dict[str, Any]:
        return cluster_cr("rq", version=version, replicas=1, database=PG)

    def image() -> str:
        dep = kube.get_json("-n", namespace, "deployment", "rq")
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    kube.apply([SECRET, cr("0.1.0")], namespace)
    wait_ready(kube, namespace, "rq", replicas=1)
    kube.apply([cr("0.2.0")], namespace)
    kube.wait_for(
        lambda: (
            (get_cluster(kube, namespace, "rq").get("status") or {})
            .get("lastGoodRevision", {})
            .get("version")
            == "0.2.0"
        ),
        timeout=60,
        what="0.2.0 good",
    )
    kube.kubectl("annotate", "-n", namespace, "dchatcluster", "rq", "dchat.dev/rollback-request=1")
    kube.wait_for(lambda: image().endswith(":0.1.0"), timeout=30, what="0.1.0 back")
    done = wait_ready(kube, namespace, "rq", replicas=1, timeout=60)
    assert done["status"]["rollbackRequest"]["result"] == (
        "rolled back to version 0.1.0 (generation 1)"
    )
    assert condition(done, "Degraded")["reason"] == "RolledBack"
    # a new spec ends the rollback
    kube.apply([cr("0.2.1")], namespace)
    kube.wait_for(lambda: image().endswith(":0.2.1"), timeout=30, what="0.2.1 rolling out")
    final = wait_ready(kube, namespace, "rq", replicas=1, timeout=60)
    assert "rollback" not in final["status"]
