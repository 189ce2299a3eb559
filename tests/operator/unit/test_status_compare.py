"""The status builder and the desired-vs-live comparison (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from dchat_operator.builders.common import condition
from dchat_operator.builders.status import (
    CLUSTER_OWNED,
    Observed,
    build_status,
    status_patch,
)
from dchat_operator.controllers.compare import covers, differences, quantity
from tests.operator.unit.conftest import cluster

pytestmark = pytest.mark.unit


def _dep(
    replicas: int, ready: int, updated: int | None = None, generation: int = 3
) -> dict[str, Any]:
    updated = ready if updated is None else updated
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
        },
    }


def test_ready_when_rollout_complete() -> None:
    status = build_status(cluster(), Observed(deployment=_dep(1, 1)), None, "2026-01-01T00:00:00Z")
    assert status["phase"] == "Ready"
    assert status["readyReplicas"] == 1
    assert status["observedGeneration"] == 2
    assert status["currentVersion"] == "0.1.0"
    assert status["selector"] == (
        "app.kubernetes.io/name=dchat,app.kubernetes.io/instance=c1,app.kubernetes.io/component=node"
    )
    ready = condition(status, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    assert ready["reason"] == "AllReplicasReady"


def test_progressing_while_pods_not_ready() -> None:
    status = build_status(cluster(), Observed(deployment=_dep(1, 0)), None, "t0")
    assert status["phase"] == "Progressing"
    assert condition(status, "Progressing")["status"] == "True"  # type: ignore[index]
    assert condition(status, "Ready")["status"] == "False"  # type: ignore[index]
    assert "currentVersion" not in status


def test_degraded_with_reason_when_secret_missing() -> None:
    status = build_status(cluster(), Observed(missing_secrets=["db"]), None, "t0")
    assert status["phase"] == "Degraded"
    degraded = condition(status, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "SecretNotFound")
    assert "db" in degraded["message"]


def test_transition_time_kept_while_status_unchanged() -> None:
    first = build_status(cluster(), Observed(deployment=_dep(1, 1)), None, "t0")
    again = build_status(cluster(), Observed(deployment=_dep(1, 1)), first, "t1")
    assert again == first
    later = build_status(cluster(), Observed(deployment=_dep(1, 0)), first, "t2")
    assert condition(later, "Ready")["lastTransitionTime"] == "t2"  # type: ignore[index]
    assert condition(later, "Degraded")["lastTransitionTime"] == "t0"  # type: ignore[index]
    assert later["currentVersion"] == "0.1.0"  # kept from the last completed rollout


def test_the_patch_never_carries_another_controllers_fields_or_conditions() -> None:
    backup_cond = {"type": "BackupHealthy", "status": "True", "reason": "Ok", "message": ""}
    prev = {
        "lastBackup": {"name": "b1", "time": "t", "location": "s3://x/y"},
        "conditions": [backup_cond],
    }
    status = build_status(cluster(), Observed(deployment=_dep(1, 1)), prev, "t0")
    assert set(status) <= CLUSTER_OWNED
    patch = status_patch(prev, status)
    assert patch is not None
    assert "lastBackup" not in patch
    # a merge patch replaces the list whole: the other controller's condition stays in it
    assert patch["conditions"][0] == backup_cond
    assert {c["type"] for c in patch["conditions"]} == {
        "BackupHealthy",
        "Ready",
        "Progressing",
        "Degraded",
        "Warning",
    }
    applied = {**prev, **patch}
    assert status_patch(applied, status) is None


def test_an_owned_field_no_longer_built_is_removed() -> None:
    prev = {"phase": "Ready", "currentVersion": "1", "replicas": 3}
    assert status_patch(prev, {"phase": "Ready", "replicas": 3}) == {"currentVersion": None}


def test_quantities() -> None:
    assert quantity("1000m") == quantity("1")
    assert quantity("1Gi") == 1024**3
    assert quantity("ghcr.io/x:1") is None


def test_covers_ignores_server_defaults_and_normalisation() -> None:
    desired = {
        "spec": {
            "replicas": 1,
            "minReadySeconds": 0,
            "template": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1000m"}}}]},
            "annotations": {},
        }
    }
    live = {
        "metadata": {"resourceVersion": "9"},
        "spec": {
            "replicas": 1,
            "template": {
                "containers": [
                    {
                        "name": "a",
                        "resources": {"limits": {"cpu": "1"}},
                        "terminationMessagePath": "/x",
                    }
                ]
            },
        },
    }
    assert covers(desired, live)
    assert differences(desired, live) == []


def test_covers_detects_drift() -> None:
    desired = {"spec": {"containers": [{"image": "a:1"}], "replicas": 2}}
    assert not covers(desired, {"spec": {"containers": [{"image": "b:1"}], "replicas": 2}})
    assert not covers(desired, {"spec": {"containers": [{"image": "a:1"}, {}], "replicas": 2}})
    assert not covers(desired, {"spec": {"containers": [{"image": "a:1"}]}})
    assert differences(desired, {"spec": {"containers": [{"image": "b"}], "replicas": 2}}) == [
        ".spec.containers[0].image"
    ]
    assert not covers({"a": True}, {"a": 1})


def test_invalid_spec_status() -> None:
    from dchat_operator.builders.status import invalid_status

    previous = {"lastBackup": {"name": "b"}, "replicas": 2, "selector": "a=b"}
    status = invalid_status(3, previous, "spec.backup.schedule: bad", "t0")
    assert status["phase"] == "Degraded"
    assert status["observedGeneration"] == 3
    # owned fields it cannot rebuild are kept; another controller's are not its to send
    assert (status["replicas"], status["selector"]) == (2, "a=b")
    assert "lastBackup" not in status
    degraded = condition(status, "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert invalid_status(3, status, "spec.backup.schedule: bad", "t1") == status
