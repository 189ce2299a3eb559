"""``promtool test rules`` for one alert of the operator's PrometheusRule, fed with series a
real node run produced (the node-side alert tests share it)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import yaml

from dchat_operator.builders import monitoring
from dchat_operator.builders.common import names
from tests.operator.unit.conftest import cluster

CLUSTER = cluster("c1")


def series_labels() -> str:
    """The labels a scraped node series carries in Prometheus (the ServiceMonitor's)."""
    c1 = CLUSTER
    return (
        f'namespace="{c1.namespace}",{monitoring.CLUSTER_LABEL}="{c1.name}",'
        f'job="{names(c1).metrics_service}",instance="10.0.0.1:9001"'
    )


async def check_alert(
    tmp_path: Path,
    alert: str,
    inputs: list[dict[str, str]],
    *,
    quiet_at: list[str],
    firing_at: list[str],
) -> None:
    """The alert, as rendered for ``CLUSTER``, is silent at ``quiet_at`` and firing at
    ``firing_at`` (promtool durations) on ``inputs`` (one sample a minute). A missing
    promtool fails: scripts/bootstrap.sh deps installs Debian's prometheus."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run scripts/bootstrap.sh deps"
    rules = [r for r in monitoring.alert_rules(CLUSTER) if r["alert"] == alert]
    assert len(rules) == 1
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dchat", "rules": rules}]})
    )
    firing: dict[str, Any] = {
        "exp_labels": {
            "severity": rules[0]["labels"]["severity"],
            monitoring.CLUSTER_LABEL: CLUSTER.name,
            "namespace": CLUSTER.namespace,
        },
        "exp_annotations": rules[0]["annotations"],
    }
    checks: list[dict[str, Any]] = [
        {"eval_time": t, "alertname": alert, "exp_alerts": []} for t in quiet_at
    ]
    checks += [{"eval_time": t, "alertname": alert, "exp_alerts": [firing]} for t in firing_at]
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": inputs, "alert_rule_test": checks}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
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
