"""The guide's accessibility alert (``AccessibilityValidationFailure``, as the operator
renders it into the PrometheusRule) fires in ``promtool test rules`` on series produced by a
real run: the node's app validates themes, ``/metrics`` is scraped once per simulated
minute, and the scraped counter values become the input series."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.lifecycle import NodeState
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from tests.node.alert_rules import check_alert, series_labels
from tests.node.conftest import bearer, config_for

pytestmark = pytest.mark.unit

FAILING = {  # six text pairs at 4.478:1, each a failure at AA
    "colors": {"bg": "#ffffff", "muted": "#777777"},
    "pairs": [{"foreground": "muted", "background": "bg", "role": "text"}] * 6,
}
PASSING = {"pairs": [{"foreground": "#000", "background": "#fff", "role": "text"}]}
COUNTER = re.compile(r"^accessibility_validation_failures_total (\S+)$", re.MULTILINE)


async def _scraped_run(tmp_path: Path) -> list[int]:
    """The counter as scraped after each minute of a run: 10 minutes of one failing theme a
    minute (6 failures each), then 6 minutes of passing themes."""
    cfg = config_for(tmp_path, accessibility={"wcag_strict_mode": False})
    storage = await open_storage(cfg.database)
    await storage.migrate()
    try:
        services = build_services(cfg, storage)
        api = create_api_app(services).test_client()
        ops = create_ops_app(services, NodeState()).test_client()

        async def scrape() -> int:
            text = await (await ops.get("/metrics")).get_data(as_text=True)
            found = COUNTER.search(text)
            assert found is not None, "the counter is exposed from the first scrape"
            return int(float(found.group(1)))

        values = [await scrape()]
        for minute in range(16):
            theme = FAILING if minute < 10 else PASSING
            r = await api.post("/api/v1/accessibility/contrast", json=theme, headers=bearer())
            assert r.status_code == 200
            values.append(await scrape())
        return values
    finally:
        await storage.close()


async def test_accessibility_alert_fires_on_a_real_run(tmp_path: Path) -> None:
    values = await _scraped_run(tmp_path)
    assert values == [0, *(6 * m for m in range(1, 11)), *([60] * 6)]
    series = f"accessibility_validation_failures_total{{{series_labels()}}}"
    await check_alert(
        tmp_path,
        "AccessibilityValidationFailure",
        [{"series": series, "values": " ".join(map(str, values))}],
        # 6 a minute is > 20 in 5 minutes, but `for: 5m` holds it pending first; no failure
        # for 6 minutes: increase over 5m is 0, resolved
        quiet_at=["3m", "16m"],
        firing_at=["10m"],
    )
