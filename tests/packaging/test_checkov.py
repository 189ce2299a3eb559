"""checkov over everything dchat ships (scripts/checkov.sh): the install bundle, the objects
the operator renders for each sample, and both Dockerfiles. Integration: the script creates
(once, then reuses) its own virtualenv with checkov from PyPI.

scripts/checkov.sh itself is the gate (it exits non-zero on any failed check). Failures
whose fix belongs to the operator (operator/, owned by the operator engineer) and has been
asked for are listed in PENDING_OPERATOR_FIXES: test_checkov_fails_only_on_pending_fixes
accepts exactly those (and nothing else), and test_checkov_is_clean is a strict xfail that
turns red the moment they are fixed, so that the list and the xfail get deleted.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.packaging.support import REPO, operator_render_available

pytestmark = pytest.mark.integration

SCRIPT = REPO / "scripts" / "checkov.sh"
NOT_YET = "`dchat-operator render` does not exist yet (the operator engineer is writing it)"

# (check id, file the script scans) → the change asked of the operator's code.
PENDING_OPERATOR_FIXES: dict[tuple[str, str], str] = {
    # The CRD description of spec.database.postgres.primary (operator/dchat_operator/api/
    # models.py) shows an example URL with `user:password@`, which the secrets scan reads as
    # a credential. Write it `postgresql://<user>:<password>@<host>:5432/<db>`.
    ("CKV_SECRET_4", "/kubernetes/bundle-base.yaml"): "CRD description example URL",
    ("CKV_SECRET_4", "/kubernetes/bundle-namespaced.yaml"): "CRD description example URL",
    # Node container imagePullPolicy defaults to IfNotPresent for a tag-pinned image
    # (api/models.py image.pull_policy). Default to Always unless the image names a digest.
    ("CKV_K8S_15", "/kubernetes/operator-sqlite.yaml"): "imagePullPolicy for tag images",
    ("CKV_K8S_15", "/kubernetes/operator-postgres.yaml"): "imagePullPolicy for tag images",
    # DATABASE_URL comes from the Secret via env secretKeyRef (builders/workload.py _env).
    # Mount the Secret key as a file (like the JWT key) and set DATABASE_URL_FILE.
    ("CKV_K8S_35", "/kubernetes/operator-postgres.yaml"): "DATABASE_URL as a file",
}


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
def test_checkov_fails_only_on_pending_fixes() -> None:
    if not operator_render_available():
        pytest.skip(NOT_YET)
    failed, summaries = _failures()
    assert {"kubernetes", "dockerfile"} <= set(summaries), summaries
    assert summaries["dockerfile"]["failed"] == 0
    assert summaries["kubernetes"]["passed"] > 100, "the bundle and the renders were scanned"
    unexpected = failed - set(PENDING_OPERATOR_FIXES)
    assert not unexpected, f"checkov failures not yet known: {sorted(unexpected)}"


@pytest.mark.timeout(1800)
@pytest.mark.xfail(
    strict=True,
    reason="operator fixes pending: " + "; ".join(sorted(set(PENDING_OPERATOR_FIXES.values()))),
)
def test_checkov_is_clean() -> None:
    if not operator_render_available():
        pytest.skip(NOT_YET)
    result = _run()
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(1800)
def test_checkov_is_clean_on_images_and_bundle_workloads() -> None:
    """What is entirely ours (no operator render): the Dockerfiles pass every check with no
    skip; the bundle fails nothing but the pending CRD description."""
    failed, summaries = _failures("--no-operator-render")
    assert summaries["dockerfile"]["failed"] == 0
    assert summaries["dockerfile"]["skipped"] == 0
    assert summaries["dockerfile"]["passed"] > 100
    assert not {f for f in failed if f[0] != "CKV_SECRET_4"}, failed
    assert failed <= set(PENDING_OPERATOR_FIXES), failed
