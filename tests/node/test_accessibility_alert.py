"""The guide's accessibility alert (``AccessibilityValidationFailure``, as the operator
renders it into the PrometheusRule) fires in ``promtool test rules`` on series produced by a
real run: the node's app validates themes, ``/metrics`` is scraped once per simulated
minute, and the scraped counter values become the input series."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.lifecycle import NodeState
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from dchat_operator.builders import monitoring
from dchat_operator.builders.common import names
from tests.node.conftest import bearer, config_for
from tests.operator.unit.conftest import cluster

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
    promtool = shutil.which("promtool")
    # a missing promtool fails (scripts/bootstrap.sh deps installs Debian's prometheus)
    assert promtool is not None, "promtool is missing: run scripts/bootstrap.sh deps"
    values = await _scraped_run(tmp_path)
    assert values == [0, *(6 * m for m in range(1, 11)), *([60] * 6)]
    c1 = cluster("c1")
    rules = [
        r for r in monitoring.alert_rules(c1) if r["alert"] == "AccessibilityValidationFailure"
    ]
    assert len(rules) == 1
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dchat", "rules": rules}]})
    )
    series = (
        f'accessibility_validation_failures_total{{namespace="{c1.namespace}",'
        f'{monitoring.CLUSTER_LABEL}="{c1.name}",job="{names(c1).metrics_service}",'
        f'instance="10.0.0.1:9001"}}'
    )
    firing: dict[str, Any] = {
        "exp_labels": {
            "severity": "warning",
            monitoring.CLUSTER_LABEL: c1.name,
            "namespace": c1.namespace,
        },
        "exp_annotations": rules[0]["annotations"],
    }
    check = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": " ".join(map(str, values))}],
                "alert_rule_test": [
                    # 6 a minute is > 20 in 5 minutes, but `for: 5m` holds it pending first
                    {"eval_time": "3m", "alertname": rules[0]["alert"], "exp_alerts": []},
                    {"eval_time": "10m", "alertname": rules[0]["alert"], "exp_alerts": [firing]},
                    # no failure for 6 minutes: increase over 5m is 0, resolved
                    {"eval_time": "16m", "alertname": rules[0]["alert"], "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(check))
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "test",
        "rules",
        "test.yaml",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(proc.communicate(), timeout=60))[0].decode()
    assert proc.returncode == 0, out
    assert "SUCCESS" in out
