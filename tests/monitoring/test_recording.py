"""The recorded node scrape (``node_metrics.prom``) is what a real node exports today.

Re-records with ``record.record`` (a real node process on free loopback ports, real
traffic with 4xx and shed 503s, failing Pushgateway pushes) and compares: the same metric
names, and every label set of the fixture present in the new scrape (so every series the rule
tests use, checked against the fixture, is one the node really exports). The fixture is
refreshed with ``python -m tests.monitoring.record``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.monitoring.record import FIXTURE, record, series, stable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_the_fixture_matches_a_fresh_recording(tmp_path: Path) -> None:
    text, statuses = record(tmp_path)
    assert statuses.get(503, 0) > 0, statuses  # the burst was really shed
    assert {200, 201, 401, 404, 422} <= set(statuses), statuses
    fresh, committed = stable(series(text)), stable(series(FIXTURE.read_text()))
    assert {n for n, _ in fresh} == {n for n, _ in committed}, (
        "metric names changed: run python -m tests.monitoring.record"
    )
    missing = sorted(committed - fresh)
    assert missing == [], f"series of the fixture the node no longer exports: {missing[:10]}"
    names = {n for n, _ in series(text)}
    assert {"process_resident_memory_bytes", "process_start_time_seconds"} <= names
    assert "observability_errors_total" in names
