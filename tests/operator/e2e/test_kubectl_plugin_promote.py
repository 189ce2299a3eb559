"""``kubectl dchat promote``: a real Patroni switchover, asked of the operator.

Two real Patroni members (PyPI Patroni, Debian PostgreSQL; tests/harness/patroni.py) keep
their DCS in the test namespace; the operator runs and a DchatCluster names the scope. The
plugin sets ``dchat.dev/switchover-request=<member>`` and follows ``status.switchover``
until the operator reports the result. Checked against Patroni itself: the new leader's
PostgreSQL is out of recovery, the old one streams from it, and ``status.currentPrimary``
follows. Also: a name that is not a member fails with the operator's member list; asking for
the member that is already primary is a no-op (exit 0).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.cluster import KubeCluster
from tests.harness.patroni import PatroniCluster, patroni_venv
from tests.harness.postgres import pg_bin_dir

from .conftest import Operator, get_cluster, kubectl_dchat, wait_ready
from .objects import cluster_cr, db_secret

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("kubectl-dchat-promote")]


@pytest.fixture
def patroni_base() -> Iterator[Path]:
    try:
        pg_bin_dir()
        patroni_venv()
    except (RuntimeError, FileNotFoundError) as err:
        pytest.skip(str(err))
    base = Path(tempfile.mkdtemp(prefix="dchat-promote-"))  # `nobody` must reach it
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _primary(kube: KubeCluster, namespace: str) -> str | None:
    found = (get_cluster(kube, namespace, "ha").get("status") or {}).get("currentPrimary")
    return str(found["name"]) if found else None


@pytest.mark.timeout(240)
def test_promote_switches_the_patroni_leader_and_the_status_follows(
    kube: KubeCluster, namespace: str, operator: Operator, patroni_base: Path
) -> None:
    patroni = PatroniCluster.start(patroni_base, kube.kubeconfig, namespace, "pg")
    try:
        patroni.wait_healthy()
        old = patroni.wait_leader()
        new = next(m.name for m in patroni.members if m.name != old)
        postgres = {"primary": {"name": "db", "key": "url"}, "patroni": {"scope": "pg"}}
        cr = cluster_cr("ha", database={"engine": "postgres", "postgres": postgres})
        kube.apply([db_secret(), cr], namespace)
        wait_ready(kube, namespace, "ha", replicas=1)
        kube.wait_for(lambda: _primary(kube, namespace) == old, timeout=30, what="primary")

        def plugin(*args: str) -> subprocess.CompletedProcess[str]:
            return kubectl_dchat(kube, namespace, *args, timeout=90)

        refused = plugin("promote", "ha", "pg-9", "--timeout", "30")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "Failed: pg-9 is not a member of Patroni cluster pg (members: pg-0, pg-1)" in (
            refused.stderr
        )

        started = time.monotonic()
        out = plugin("promote", "ha", new, "--timeout", "90")
        took = time.monotonic() - started
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"dchat.dev/switchover-request={new} (Patroni cluster pg, primary {old})" in (
            out.stdout
        )
        switchover = get_cluster(kube, namespace, "ha")["status"]["switchover"]
        assert switchover["phase"] == "Completed"
        assert switchover["message"] in out.stderr
        assert patroni.wait_leader(other_than=old, timeout=30) == new  # PostgreSQL promoted
        patroni.wait_healthy(timeout=60)  # the old leader streams from the new one
        kube.wait_for(lambda: _primary(kube, namespace) == new, timeout=30, what="status")
        print(f"switchover {old} -> {new} done {took:.1f} s after kubectl dchat promote")
        again = plugin("promote", "ha", new)
        assert again.returncode == 0
        assert f"{new} is already the primary of Patroni cluster pg" in again.stdout
    finally:
        patroni.stop()
