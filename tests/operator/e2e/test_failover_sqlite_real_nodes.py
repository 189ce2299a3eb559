"""SQLite failover end to end on two real nodes: the machine holding the volume dies, the
operator fences its pod and replaces its local claim, and the cluster serves again from the
other machine with the data of the continuous Litestream replica.

Two real kubelets on this machine (tests/cluster/realnode.sh: node 0 is the cluster's,
node 1 is started here with its own containerd, kubelet and cgroup root). The cluster's one
SQLite pod runs on node 1, its /data on a local volume pinned to node 1, Litestream
replicating to the S3 server on the bridge. Writes run through the cluster's Service the
whole time. Then node 1 dies at once (`realnode.sh kill`: kubelet, containers and containerd
SIGKILLed, the pods' network namespaces removed, nothing reported): the node-lifecycle
controller marks it Unknown after the cluster's node-monitor grace period (kwokctl's 100 s
in the test cluster; upstream's 50 s), the operator fences the pod after
``failoverDelaySeconds`` and deletes the claim pinned to the dead node (``VolumeReplaced``);
the test plays the provisioner for the new claim on node 0 (an empty directory: another
machine's disk); the new pod's restore init container fills /data from the replica. Printed:
RTO from the death and from the NotReady report, and the RPO (acknowledged writes missing
afterwards, and the age of the newest surviving one relative to the last acknowledged).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.s3 import S3Server
from tests.harness.writer import Writer

from .conftest import wait_ready
from .realnode import (
    hostpath_volume,
    is_ready,
    jwt_secret,
    message_bodies,
    pods,
    real_cr,
    service_url,
    token,
    wait_archiving,
    wait_serving,
)
from .test_backups_real_node import backup_spec, s3_secret

pytestmark = [pytest.mark.e2e, pytest.mark.real_node, pytest.mark.serial]

REALNODE = Path(__file__).resolve().parents[2] / "cluster" / "realnode.sh"
SECOND = "dchat-real-1"
FAILOVER_DELAY = 10


def _realnode(kube: KubeCluster, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "DCHAT_REAL_NODE_INDEX": "1"}
    done = subprocess.run(
        [str(REALNODE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"realnode.sh {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout.strip()


@pytest.fixture
def second_real_node(real_node: str, kube: KubeCluster) -> Iterator[str]:
    """Node 1, started for this test and removed after it (it dies in the test)."""
    _realnode(kube, "down")  # what an interrupted earlier run may have left
    kube.kubectl("delete", "node", SECOND, "--ignore-not-found", check=False)
    try:
        assert _realnode(kube, "up", str(kube.kubeconfig)) == SECOND
        yield SECOND
    finally:
        _realnode(kube, "down")
        kube.kubectl("delete", "node", SECOND, "--ignore-not-found", "--wait=false", check=False)


def _ready_status(kube: KubeCluster, node: str) -> str:
    for cond in (kube.get_json("node", node).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status"))
    return "absent"


def _kill_and_recover(
    kube: KubeCluster, namespace: str, writer: Writer, healthy: str
) -> dict[str, float]:
    """Node 1 dies; the test provides the replaced claim's volume on ``healthy``; until the
    pod is Ready there and writes are acknowledged again. The moments (monotonic) of each
    step: died, last_before (the last write acknowledged before), not_ready, claim (the new
    claim seen), ready (the pod Ready on ``healthy``), back (the first write acknowledged
    after)."""
    died = time.monotonic()
    _realnode(kube, "kill")
    killed = time.monotonic()  # an answer in flight during the kill may still have come back
    last_before = writer.acked[-1][0] if writer.acked else died
    kube.wait_for(
        lambda: _ready_status(kube, SECOND) != "True",
        timeout=180,
        interval=0.5,
        what=f"{SECOND} reported not Ready by the node-lifecycle controller",
    )
    not_ready = time.monotonic()

    def new_claim() -> bool:
        found = kube.kubectl("get", "-n", namespace, "pvc", "fo-data", "-o", "json", check=False)
        return found.returncode == 0 and '"volumeName"' not in found.stdout

    kube.wait_for(new_claim, timeout=120, interval=0.5, what="the claim replaced")
    claim = time.monotonic()
    # the provisioner's part: an empty volume for the new claim on the healthy machine
    hostpath_volume(kube, namespace, "fo-data", healthy, tag="-n0")

    def moved() -> bool:
        return any(
            p["spec"].get("nodeName") == healthy and is_ready(p)
            for p in pods(kube, namespace, "fo")
        )

    kube.wait_for(moved, timeout=240, interval=0.5, what=f"the pod Ready on {healthy}")
    ready = time.monotonic()
    writer.wait_acked(20, timeout=60)
    back = writer.first_ack_after(killed)
    assert back is not None, f"no write acknowledged after the node died: {writer}"
    return {
        "died": died,
        "last_before": last_before,
        "not_ready": not_ready,
        "claim": claim,
        "ready": ready,
        "back": back,
    }


@pytest.mark.timeout(900)
def test_sqlite_fails_over_to_another_real_node_with_the_replicas_data(
    real_node: str,
    second_real_node: str,
    kube: KubeCluster,
    namespace: str,
    operator: Any,
    bridge_s3: S3Server,
    volumes: list[str],
) -> None:
    bucket = bridge_s3.create_bucket(f"fo-{uuid.uuid4().hex[:10]}")
    # node 1's local disk holds the claim: the scheduler puts the pod there
    volumes.append(hostpath_volume(kube, namespace, "fo-data", second_real_node, tag="-n1"))
    volumes.append(f"{namespace}-fo-data-n0")  # made by _kill_and_recover
    kube.apply([jwt_secret(), s3_secret(bridge_s3)], namespace)
    database = {"engine": "sqlite", "sqlite": {"failoverDelaySeconds": FAILOVER_DELAY}}
    cr = real_cr("fo", replicas=1, database=database, backup=backup_spec(bridge_s3, bucket))
    kube.apply(cr, namespace)
    wait_ready(kube, namespace, "fo", replicas=1, timeout=240)
    (first,) = pods(kube, namespace, "fo")
    assert first["spec"]["nodeName"] == second_real_node, first["spec"].get("nodeName")
    wait_archiving(kube, namespace, "fo")
    base = service_url(kube, namespace, "fo-api")
    wait_serving(kube, base)
    writer = Writer(base, {"Authorization": f"Bearer {token()}"}, rate=20, limit_s=420).start()
    try:
        writer.wait_acked(60, timeout=60)
        at = _kill_and_recover(kube, namespace, writer, real_node)
    finally:
        writer.stop()

    survived = message_bodies(base, writer.channel)
    before = [(t, body) for t, body in writer.acked if t <= at["last_before"]]
    lost = [body for _, body in before if body not in survived]
    kept = [t for t, body in before if body in survived]
    assert kept, f"nothing of {len(before)} writes survived"
    rpo = at["last_before"] - max(kept)
    after = [body for t, body in writer.acked if t > at["last_before"]]
    assert all(body in survived for body in after), "a write acknowledged after failover is gone"

    names = {p["metadata"]["name"] for p in pods(kube, namespace, "fo")}
    assert first["metadata"]["name"] not in names  # fenced, not left Terminating
    events = kube.get_json("-n", namespace, "events", "--field-selector", "involvedObject.name=fo")
    reasons = [e.get("reason") for e in events["items"]]
    assert reasons.count("Fenced") == 1, reasons
    assert reasons.count("VolumeReplaced") == 1, reasons
    since = {k: v - at["not_ready"] for k, v in at.items()}
    (pod,) = pods(kube, namespace, "fo")
    steps = sorted(
        (c["lastTransitionTime"], c["type"]) for c in pod["status"]["conditions"]
    ) + sorted((e.get("lastTimestamp") or "", e.get("reason") or "") for e in events["items"])
    print("\n" + "\n".join(f"  {t} {what}" for t, what in sorted(steps)))
    print(
        f"\nSQLite failover across real nodes: writes back {at['back'] - at['died']:.1f} s "
        f"after node 1 died; {-since['died']:.1f} s of node-monitor grace, then from the "
        f"not-Ready report: new claim +{since['claim']:.1f} s (failoverDelaySeconds "
        f"{FAILOVER_DELAY}), pod Ready on node 0 +{since['ready']:.1f} s, writes back "
        f"+{since['back']:.1f} s; {len(before)} writes acknowledged before, {len(lost)} lost, "
        f"recovery point {rpo:.2f} s"
    )
    assert rpo < 5.0, (rpo, lost)
    assert since["back"] < 60.0, since
