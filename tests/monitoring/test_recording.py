"""The recorded node scrape (``node_metrics.prom``) is what a real node exports today.

Re-records with ``record.record`` (a real node process on free loopback ports, real
traffic with 4xx and shed 503s, failing Pushgateway pushes) and compares: the same metric
names, and every label set of the fixture present in the new scrape (so every series the rule
tests use, checked against the fixture, is one the node really exports). The fixture is
refreshed with ``python -m tests.monitoring.record``. The same for the Litestream sidecar's
two recorded scrapes (``litestream_metrics.prom``, ``record_litestream.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.monitoring import record_litestream
from tests.monitoring.exported import _LABEL, _SAMPLE, RULES, selectors
from tests.monitoring.record import FIXTURE, record, series, stable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PUT = record_litestream.PUT


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


def test_the_litestream_fixture_matches_a_fresh_recording(tmp_path: Path) -> None:
    """A real Litestream with the operator's config against moto's S3: the series the
    replication-lag rule reads exist, with the recorded names and label names, and stopping S3
    really stalls the uploads while transactions go on."""
    fresh = record_litestream.record(tmp_path)
    committed = record_litestream.from_fixture()
    assert list(fresh) == list(committed) == list(record_litestream.SCRAPES)

    def shape(text: str) -> set[tuple[str, str]]:
        return {(name, ",".join(sorted(k for k, _ in labels))) for name, labels in _samples(text)}

    # what the rules read (other gauges, e.g. L0 retention, appear on their own timers)
    used = {
        sel.name
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        for sel in selectors(rule["expr"])
        if sel.name.startswith("litestream_")
    }
    assert used == {"litestream_txid", PUT, "litestream_sync_error_count"}
    for name in record_litestream.SCRAPES:
        got = {s for s in shape(fresh[name]) if s[0] in used}
        assert got == {s for s in shape(committed[name]) if s[0] in used}, name
        assert {n for n, _ in got} == used, name
    healthy, down = fresh["healthy"], fresh["s3_down"]
    assert record_litestream.total(down, PUT, operation="PUT") == record_litestream.total(
        healthy, PUT, operation="PUT"
    )
    assert record_litestream.total(down, "litestream_txid") > record_litestream.total(
        healthy, "litestream_txid"
    )


def _samples(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            out.append((match.group(1), _LABEL.findall(match.group(2) or "")))
    return out
