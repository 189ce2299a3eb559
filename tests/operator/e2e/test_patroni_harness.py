"""The Patroni harness itself: two members with the test cluster's API as DCS, synchronous
replication; the leader dies (Patroni and PostgreSQL SIGKILLed), the replica takes over and
still has the row the old leader acknowledged."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.patroni import PatroniCluster, patroni_venv
from tests.harness.postgres import pg_bin_dir

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def patroni(kube: KubeCluster, namespace: str) -> Iterator[PatroniCluster]:
    try:
        pg_bin_dir()
        patroni_venv()
    except (RuntimeError, FileNotFoundError) as err:
        pytest.skip(str(err))
    # Not under pytest's tmp dir: as root the members run as `nobody`, who must reach it.
    base = Path(tempfile.mkdtemp(prefix="dchat-patroni-"))
    cluster = PatroniCluster.start(
        base,
        kube.kubeconfig,
        namespace,
        scope="pg",
        members=2,
        synchronous=True,
        kubectl=str(kube.bin_dir / "kubectl"),
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(180)
def test_a_replica_takes_over_when_the_leader_dies(
    kube: KubeCluster, namespace: str, patroni: PatroniCluster
) -> None:
    patroni.wait_healthy(timeout=90)
    url = patroni.create_login_database("chat", "chat-password-1")
    patroni.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('before failover')", dsn=url)

    old = patroni.kill_leader()
    started = time.monotonic()
    new = patroni.wait_leader(other_than=old, timeout=90)
    took = time.monotonic() - started
    print(f"\nPatroni failover: {old} killed, {new} leads after {took:.1f} s")

    assert patroni.psql("SELECT v FROM t", dsn=url) == "before failover"
    roles = kube.get_json("pods", "-n", namespace, "-l", "cluster-name=pg")["items"]
    assert {p["metadata"]["name"]: p["metadata"]["labels"].get("role") for p in roles}[new] == (
        "primary"
    )
