"""The gate of the real-node tier: where a machine cannot run a real node, the tier is
skipped with one line that says why, and nothing half-starts.

``realnode.sh check`` exits 3 and prints the first missing thing (not root, a missing
program, no overlayfs, ...); ``real-node-status.sh`` turns up.sh's record into the one
line ``make test`` prints.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness.cluster import REPO

pytestmark = pytest.mark.integration

CHECK = REPO / "tests" / "cluster" / "realnode.sh"
STATUS = REPO / "tests" / "cluster" / "real-node-status.sh"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=30, check=False, env=env or dict(os.environ)
    )


def test_turned_off_by_the_environment() -> None:
    result = _run(["bash", str(CHECK), "check"], {**os.environ, "DCHAT_REAL_NODE": "0"})
    assert (result.returncode, result.stdout.strip()) == (3, "DCHAT_REAL_NODE=0")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_not_root_is_a_reason_not_a_failure() -> None:
    result = _run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(CHECK), "check"]
    )
    assert result.returncode == 3, result
    assert result.stdout.strip() == "not root (containerd and the kubelet need root)"


def test_a_missing_program_is_named(tmp_path: Path) -> None:
    # A PATH with bash and the basics but no containerd.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "cat", "grep"):
        found = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    env = {**os.environ, "PATH": str(bin_dir), "DCHAT_REAL_NODE": "auto"}
    result = _run([str(bin_dir / "bash"), str(CHECK), "check"], env)
    assert result.returncode == 3, result
    if os.geteuid() == 0:
        assert result.stdout.startswith("containerd is not installed"), result.stdout
    else:
        assert result.stdout.startswith("not root"), result.stdout


@pytest.mark.parametrize(
    ("record", "line"),
    [
        ("ready dchat-real-0\n", "real-node tier: runs on node dchat-real-0"),
        ("skipped: not root (x)\n", "real-node tier: SKIPPED (not root (x))"),
        (None, "real-node tier: SKIPPED (no local test cluster)"),
    ],
)
def test_make_test_prints_one_line(tmp_path: Path, record: str | None, line: str) -> None:
    if record is not None:
        (tmp_path / "c.realnode").write_text(record)
    env = {**os.environ, "DCHAT_CLUSTER_DIR": str(tmp_path), "DCHAT_CLUSTER_NAME": "c"}
    result = _run(["bash", str(STATUS)], env)
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == [line]
