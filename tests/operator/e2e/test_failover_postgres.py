"""PostgreSQL failover with Patroni, end to end: real Patroni (PyPI) and PostgreSQL (Debian)
members whose DCS is the test cluster's API, a real dchat node process writing through a
multi-host URL, and the operator reporting the primary.

Writes run continuously through the node (20 a second). In the synchronous run a switchover
is asked first, the way on-call asks it (the annotation ``dchat.dev/switchover-request``):
an unknown member is refused in status, then the replica is promoted by Patroni on the
operator's request, with no acknowledged write lost. Then the Patroni leader (Patroni and its
PostgreSQL) is SIGKILLed like a dead machine; Patroni promotes the replica, the node follows
without a restart, and the DchatCluster's ``status.currentPrimary`` and a ``PrimaryChanged``
Event follow (in the asynchronous run the operator is SIGKILLed with the leader and restarted
after the promotion: the Event still comes exactly once). Measured: RTO (kill to the first
acknowledged write), the outage as the operator saw it, and acknowledged writes missing
afterwards (0 with synchronous mode).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.net import free_port
from tests.harness.patroni import PatroniCluster, patroni_venv
from tests.harness.postgres import pg_bin_dir
from tests.harness.writer import Writer
from tests.node.conftest import DCHAT, JWT_SECRET, NodeProcess, bearer

from .conftest import Operator, get_cluster, wait_ready
from .objects import cluster_cr

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def patroni_base() -> Iterator[Path]:
    try:
        pg_bin_dir()
        patroni_venv()
    except (RuntimeError, FileNotFoundError) as err:
        pytest.skip(str(err))
    # not under pytest's tmp dir: as root the members run as `nobody`, who must reach it
    base = Path(tempfile.mkdtemp(prefix="dchat-failover-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _node(tmp_path: Path, url: str) -> NodeProcess:
    api, ops = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
    env.update(
        {
            "DCHAT_HOST": "127.0.0.1",
            "DCHAT_API_PORT": str(api),
            "DCHAT_METRICS_PORT": str(ops),
            "DCHAT_P2P_PORT": str(free_port()),
            "JWT_SECRET": JWT_SECRET,
            "DATABASE_URL": url,
        }
    )
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [DCHAT], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    return NodeProcess(proc, api, ops, log)


def _cluster_on(kube: KubeCluster, namespace: str, url: str, leader: str) -> None:
    """A DchatCluster on ``url`` that names the Patroni scope; until it shows ``leader``."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"url": url},
    }
    postgres = {"primary": {"name": "db", "key": "url"}, "patroni": {"scope": "pg"}}
    cr = cluster_cr("ha", replicas=1, database={"engine": "postgres", "postgres": postgres})
    kube.apply([secret, cr], namespace)
    wait_ready(kube, namespace, "ha", replicas=1)
    kube.wait_for(lambda: _primary(kube, namespace) == leader, timeout=30, what="currentPrimary")


def _primary_events(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    events = kube.get_json("-n", namespace, "events", "--field-selector", "involvedObject.name=ha")[
        "items"
    ]
    return [e for e in events if e.get("reason") == "PrimaryChanged"]


def _told_once(kube: KubeCluster, namespace: str, new: str, seen: set[str]) -> None:
    """One PrimaryChanged Event for ``new`` among those not in ``seen`` (uids of the earlier
    ones), also when the operator restarted meanwhile. Its text is "primary is now <new>",
    with "(was <old>)" unless the lock was seen free in between (then NoPrimary came first)."""
    changed = [e for e in _primary_events(kube, namespace) if e["metadata"]["uid"] not in seen]
    told = [e for e in changed if e["message"].startswith(f"primary is now {new}")]
    assert len(told) == 1, changed
    assert len(changed) == 1, changed
    assert int(told[0].get("count") or 1) == 1, told


def _seen(kube: KubeCluster, namespace: str) -> set[str]:
    return {e["metadata"]["uid"] for e in _primary_events(kube, namespace)}


def _switchover(kube: KubeCluster, namespace: str, member: str, phase: str) -> dict[str, Any]:
    """Annotate the request; status.switchover for it once it reaches ``phase``."""
    kube.kubectl(
        "annotate",
        "-n",
        namespace,
        "dchatcluster",
        "ha",
        "--overwrite",
        f"dchat.dev/switchover-request={member}",
    )

    def handled() -> dict[str, Any] | None:
        status = get_cluster(kube, namespace, "ha").get("status") or {}
        found = status.get("switchover") or {}
        done = found.get("request") == member and found.get("phase") == phase
        return dict(found) if done else None

    found = kube.wait_for(handled, timeout=60, what=f"switchover to {member}: {phase}")
    assert isinstance(found, dict)
    return found


def _switch_over(
    kube: KubeCluster, namespace: str, patroni: PatroniCluster, writer: Writer, leader: str
) -> str:
    """Refused for a stranger, then done for the replica: (new leader), writes kept, the
    status and one PrimaryChanged Event following."""
    seen = _seen(kube, namespace)
    refused = _switchover(kube, namespace, "nobody", "Failed")
    assert "is not a member of Patroni cluster pg" in refused["message"], refused
    replica = next(m.name for m in patroni.members if m.name != leader)
    asked_at = time.monotonic()
    done = _switchover(kube, namespace, replica, "Completed")
    took = time.monotonic() - asked_at
    assert done["from"] == leader
    assert patroni.leader() == replica
    reasons = [
        e.get("reason")
        for e in kube.get_json(
            "-n", namespace, "events", "--field-selector", "involvedObject.name=ha"
        )["items"]
    ]
    assert {"SwitchoverFailed", "SwitchoverRequested", "SwitchoverCompleted"} <= set(reasons)
    writer.wait_acked(20, timeout=60)
    stored = set(writer.bodies())
    lost = [body for _, body in writer.acked if body not in stored]
    during = [t for t, _ in writer.failures if t >= asked_at]
    outage = (writer.first_ack_after(during[-1]) or asked_at) - during[0] if during else 0.0
    print(
        f"\nswitchover {leader} -> {replica}: completed {took:.1f} s after the request "
        f"({done['message']}); writes failed for {outage:.1f} s ({len(during)} attempts); "
        f"{len(lost)} acknowledged writes lost"
    )
    assert lost == []
    kube.wait_for(lambda: _primary(kube, namespace) == replica, timeout=30, what="the primary")
    _told_once(kube, namespace, replica, seen)
    patroni.wait_healthy(timeout=90)  # the old primary back as a replica before the kill
    return replica


def _primary(kube: KubeCluster, namespace: str) -> str | None:
    status = get_cluster(kube, namespace, "ha").get("status") or {}
    found = status.get("currentPrimary")
    return str(found["name"]) if found else None


@pytest.mark.timeout(400)
@pytest.mark.parametrize("synchronous", [True, False], ids=["synchronous", "asynchronous"])
def test_the_patroni_leader_dies_the_node_follows_and_the_status_says_so(
    kube: KubeCluster,
    namespace: str,
    operator: Operator,
    patroni_base: Path,
    tmp_path: Path,
    synchronous: bool,
) -> None:
    patroni = PatroniCluster.start(
        patroni_base,
        kube.kubeconfig,
        namespace,
        scope="pg",
        members=2,
        synchronous=synchronous,
        kubectl=str(kube.bin_dir / "kubectl"),
    )
    node: NodeProcess | None = None
    try:
        patroni.wait_healthy(timeout=120)
        url = patroni.create_login_database("chat", uuid.uuid4().hex)
        leader = patroni.leader()
        assert leader is not None

        _cluster_on(kube, namespace, url, leader)

        node = _node(tmp_path, url)
        node.wait_ready(timeout=60)
        writer = Writer(node.api, bearer(), rate=20, limit_s=200).start()
        try:
            writer.wait_acked(40)
            if synchronous:
                leader = _switch_over(kube, namespace, patroni, writer, leader)
            told_before = _seen(kube, namespace)
            killed_at = time.monotonic()
            old = patroni.kill_leader()
            if not synchronous:  # and the operator dies with the database's machine
                operator.process.kill()
            new = patroni.wait_leader(other_than=old, timeout=90)
            led_at = time.monotonic()
            if not synchronous:
                operator.kill_and_restart()
            seen = kube.wait_for(
                lambda: _primary(kube, namespace) == new, timeout=30, what="the new primary"
            )
            assert seen
            status_at = time.monotonic()
            writer.wait_acked(40, timeout=60)
        finally:
            writer.stop()
        # a write in flight at the kill may still be acknowledged: the outage starts with the
        # first failed attempt after the kill and ends with the next acknowledged write
        failed = next((t for t, _ in writer.failures if t > killed_at), killed_at)
        resumed = writer.first_ack_after(failed)
        assert resumed is not None
        rto = resumed - killed_at
        stored = set(writer.bodies())
        lost = [body for t, body in writer.acked if body not in stored]
        mode = "synchronous" if synchronous else "asynchronous"
        print(
            f"\nPatroni {mode}: leader {old} SIGKILLed; {new} led after "
            f"{led_at - killed_at:.1f} s; writes resumed (RTO) {rto:.1f} s; "
            f"status.currentPrimary = {new} after {status_at - killed_at:.1f} s; "
            f"{len(writer.acked)} writes acknowledged, {len(lost)} lost "
            f"{lost[:5]}, {len(writer.failures)} attempts failed meanwhile"
        )
        assert rto < 30, rto
        assert node.proc.poll() is None  # followed without a restart
        if synchronous:
            assert lost == []  # RPO 0
        _told_once(kube, namespace, new, told_before)
    finally:
        if node is not None:
            node.stop()
        patroni.stop()


def test_a_patroni_scope_must_be_a_dns_label(kube: KubeCluster, namespace: str) -> None:
    postgres: dict[str, Any] = {
        "primary": {"name": "db", "key": "url"},
        "patroni": {"scope": "Not_A_Label"},
    }
    cr = cluster_cr("bad", replicas=1, database={"engine": "postgres", "postgres": postgres})
    result = kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cr), check=False)
    assert result.returncode != 0
    assert "patroni.scope" in result.stderr, result.stderr
