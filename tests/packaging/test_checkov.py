"""checkov over everything dchat ships (scripts/checkov.sh): the install bundle, the objects
the operator renders for each sample, and both Dockerfiles. Integration: the script creates
(once, then reuses) its own virtualenv with checkov from PyPI.

scripts/checkov.sh is the gate (it exits non-zero on any failed check); the checks it skips
are listed, each with its reason, in the script and in docs/packaging.md.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.support import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "checkov.sh"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def _failures(*args: str) -> tuple[set[tuple[str, str]], dict[str, Any]]:
    """Run the script with JSON output: the failed (check id, file) pairs and summaries."""
    result = _run(*args, "--output", "json")
    assert result.returncode in (0, 1), result.stderr
    reports = json.loads(result.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    failed: set[tuple[str, str]] = set()
    summaries: dict[str, Any] = {}
    for report in reports:
        summaries[report["check_type"]] = report["summary"]
        for check in report["results"]["failed_checks"]:
            failed.add((check["check_id"], check["file_path"]))
    assert (result.returncode == 0) == (not failed), "exit code disagrees with the report"
    return failed, summaries


@pytest.mark.timeout(1800)
def test_checkov_passes_on_bundle_renders_and_dockerfiles() -> None:
    failed, summaries = _failures()
    # (checkov leaves the secrets framework out of its JSON when it found nothing)
    assert {"kubernetes", "dockerfile"} <= set(summaries), summaries
    assert summaries["kubernetes"]["passed"] > 100, "the bundle and the renders were scanned"
    assert summaries["dockerfile"]["passed"] > 100
    assert summaries["dockerfile"]["skipped"] == 0
    assert not failed, f"checkov failures: {sorted(failed)}"


@pytest.mark.timeout(600)
def test_checkov_secrets_scan_catches_the_guides_configmap(tmp_path: Path) -> None:
    """The gate is live: the guide's ConfigMap (password inside the database URL, mistake 1
    of DESIGN.md) is caught by the same checkov the script runs."""
    _run("--no-operator-render", "--output", "json")  # creates the checkov venv if absent
    cache = Path(os.environ.get("DCHAT_CACHE", Path.home() / ".cache" / "dchat"))
    guide_cm = tmp_path / "guide-configmap.yaml"
    guide_cm.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dchat-config\n"
        "data:\n  config.toml: |\n    [database]\n"
        '    url = "postgresql://dchat:password@postgres:5432/dchat"\n'
    )
    result = subprocess.run(
        [
            str(cache / "checkov-venv" / "bin" / "checkov"),
            "-d",
            str(tmp_path),
            "--framework",
            "secrets",
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert "CKV_SECRET_4" in {c["check_id"] for c in report["results"]["failed_checks"]}
