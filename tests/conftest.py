"""Shared fixtures: real PostgreSQL, a real S3 server, a real EVM dev chain (anvil), the real
Kubernetes test cluster.

Session-scoped services start on first use and stop at the end of the run, so a test
run that needs none of them starts none of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness.cluster import REPO, KubeCluster
from tests.harness.postgres import PostgresServer
from tests.harness.s3 import S3Server

if TYPE_CHECKING:  # imported in the fixtures: web3's packages take a second to import
    from tests.harness.chain import Anvil


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dir: that is private to the user, and when the tests run as
    # root the server runs as `nobody`, which must be able to reach its data directory.
    base = Path(tempfile.mkdtemp(prefix="dchat-pg-"))
    server = PostgresServer.start(base)
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def new_database(postgres_server: PostgresServer) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty databases on the harness server (URL each); all dropped after."""
    names: list[str] = []

    def make() -> str:
        names.append(f"t_{uuid.uuid4().hex[:12]}")
        return postgres_server.create_database(names[-1])

    try:
        yield make
    finally:
        for name in names:
            postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(new_database: Callable[[], str]) -> str:
    """A fresh, empty database on the harness server."""
    return new_database()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server.start(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket(f"dchat-test-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def kube_cluster() -> KubeCluster:
    return KubeCluster.ensure()


@pytest.fixture(scope="session")
def crd_installed(kube_cluster: KubeCluster) -> KubeCluster:
    """Every CRD of crds/ (DchatCluster, DchatBackup, DchatRestore: the operator watches all),
    and the bundle's ClusterRole dchat-postgres (bound per managed PostgreSQL).

    Applied once per test process and never deleted by a test: with parallel workers
    another process may be using them at any moment."""
    kube_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(REPO / "manifests" / "base" / "rbac-postgres.yaml"),
    )
    crds = sorted((REPO / "crds").glob("dchat.dev_*.yaml"))
    for crd in crds:
        kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    names = [f"crd/{p.stem.removeprefix('dchat.dev_')}.dchat.dev" for p in crds]
    kube_cluster.kubectl("wait", "--for=condition=Established", *names, "--timeout=60s")
    return kube_cluster


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace with Pod Security `restricted` enforced; deleted afterwards."""
    with kube_cluster.namespace("t") as name:
        yield name


# The long-running xdist groups, longest first: `--dist loadgroup` hands work out in
# collection order, so a group collected late (the real node's backups take ~4 min on a busy
# 2-core machine) would start late and finish after everything else.
FIRST_GROUPS = (
    "real-node-backups",
    "real-node-cron",
    "real-node",
    "real-node-relay",
    "install-bundle",
)


def _group_rank(item: pytest.Item) -> int:
    groups = {str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args}
    ranks = [FIRST_GROUPS.index(g) for g in groups if g in FIRST_GROUPS]
    return min(ranks) if ranks else len(FIRST_GROUPS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test must carry exactly one of the markers unit, integration, e2e; the long
    xdist groups are moved to the front (stable: the rest keep their order)."""
    items.sort(key=_group_rank)
    kinds = {"unit", "integration", "e2e"}
    missing = [i.nodeid for i in items if not kinds & {m.name for m in i.iter_markers()}]
    if missing and not os.environ.get("DCHAT_ALLOW_UNMARKED"):
        raise pytest.UsageError(
            "tests without a unit/integration/e2e marker:\n  " + "\n  ".join(missing)
        )


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    """One real anvil per test module (chain id 31337, safe = head - 2, finalized = head - 4);
    use it through ``chain``, which reverts each test's changes."""
    from tests.harness.chain import Anvil

    node = Anvil.start(tmp_path_factory.mktemp("anvil"), chain_id=31337)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def chain(anvil: Anvil) -> Iterator[Anvil]:
    """The module's anvil, put back after the test as it was before (evm_snapshot/evm_revert,
    automine on). A test that stops or restarts anvil takes its own from ``anvil_factory``."""
    snapshot = anvil.snapshot()
    try:
        yield anvil
    finally:
        anvil.set_automine(True)
        assert anvil.revert(snapshot), "evm_revert failed: the next test would see this one's chain"


@pytest.fixture
def anvil_factory(tmp_path: Path) -> Iterator[Callable[..., Anvil]]:
    """Starts more anvils (``anvil_factory(chain_id=..., slots_in_an_epoch=...)``), e.g. two
    chains for the bridge, or one a test may stop; all stopped after the test."""
    from tests.harness.chain import Anvil

    started: list[Anvil] = []

    def start(**kwargs: Any) -> Anvil:
        started.append(Anvil.start(tmp_path / f"anvil-{len(started)}", **kwargs))
        return started[-1]

    try:
        yield start
    finally:
        for node in started:
            node.stop()
