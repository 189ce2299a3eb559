"""The alert rules: promtool check rules, promtool test rules, coverage, real series names.

- ``promtool`` (Debian's ``prometheus`` package, installed by ``scripts/bootstrap.sh deps``)
  must be there: a missing promtool fails these tests, it does not skip them.
- ``promtool check rules`` on the plain rule file and on the PrometheusRule the operator
  builds for each sample DchatCluster.
- ``promtool test rules`` on ``tests/monitoring/rules/*.yaml``. Annotations that a case does
  not spell out are filled in from the rule before the run (they are fixed text; cases of
  templated annotations give them expanded), so the cases test labels, values and timing.
- Every alert of the rule file has a case where it fires and one where it does not.
- Every input series of the cases exists: node series with the label set of a sample of
  the recorded real node (``node_metrics.prom``) once the scrape's target labels are
  dropped, operator series with the label names the operator declares.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from dchat_operator.builders import monitoring
from tests.monitoring.exported import (
    NODE_TARGET_LABELS,
    OPERATOR_TARGET_LABELS,
    RULES,
    litestream_catalogue,
    node_catalogue,
    operator_catalogue,
)
from tests.operator.unit.conftest import sample

pytestmark = pytest.mark.unit

CASES = sorted((Path(__file__).parent / "rules").glob("*.yaml"))


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run scripts/bootstrap.sh deps (Debian package prometheus)"
    return found


def _alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def _cases() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, yaml.safe_load(path.read_text())) for path in CASES]


def test_promtool_checks_the_plain_rule_file() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in result.stdout


@pytest.mark.parametrize("name", ["postgres.yaml", "sqlite.yaml"])
def test_promtool_checks_the_prometheus_rule_of_each_sample(name: str, tmp_path: Path) -> None:
    rule = monitoring.prometheus_rule(sample(name))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _with_annotations(case: dict[str, Any], rules_path: Path) -> dict[str, Any]:
    alerts = _alerts()
    out = copy.deepcopy(case)
    out["rule_files"] = [str(rules_path)]
    for test in out["tests"]:
        for check in test.get("alert_rule_test") or []:
            for expected in check.get("exp_alerts") or []:
                if "exp_annotations" not in expected:
                    expected["exp_annotations"] = alerts[check["alertname"]]["annotations"]
    return out


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(path: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    assert case["rule_files"] == ["../../../manifests/monitoring/rules.yaml"]
    assert (path.parent / case["rule_files"][0]).resolve() == RULES
    run = tmp_path / path.name
    run.write_text(yaml.safe_dump(_with_annotations(case, RULES)))
    result = subprocess.run(
        [promtool(), "test", "rules", str(run)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for _, case in _cases():
        for test in case["tests"]:
            for check in test.get("alert_rule_test") or []:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(_alerts())
    assert len(alerts) >= 17
    assert sorted(alerts - firing) == [], "alerts never tested firing"
    assert sorted(alerts - quiet) == [], "alerts never tested not firing"
    assert firing | quiet <= alerts, "a case names an alert the rules do not have"


def _input_series() -> list[tuple[str, str, dict[str, str]]]:
    """(case file, metric name, labels) of every input series."""
    out = []
    for path, case in _cases():
        for test in case["tests"]:
            for item in test.get("input_series") or []:
                parsed = promql_parser.parse(item["series"])
                assert isinstance(parsed, promql_parser.VectorSelector), item["series"]
                labels = {m.name: m.value for m in parsed.matchers.matchers}
                out.append((path.name, str(parsed.name), labels))
    return out


def test_node_input_series_are_the_real_nodes() -> None:
    """Names and label sets as a real node (or its Litestream sidecar) exports them (the
    recorded scrapes)."""
    node = {**node_catalogue(), **litestream_catalogue()}
    checked = 0
    for where, name, labels in _input_series():
        if name.startswith("dchat_operator_"):
            continue
        assert set(labels) >= NODE_TARGET_LABELS, f"{where}: {name} lacks target labels"
        own = ",".join(
            f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in NODE_TARGET_LABELS
        )
        assert name in node, f"{where}: the node exports no {name}"
        known = sorted(node[name]["labelsets"])[:5]
        assert own in node[name]["labelsets"], (
            f"{where}: no {name}{{{own}}} in the recording; it has {known}"
        )
        checked += 1
    assert checked >= 30


def test_operator_input_series_have_the_operators_names_and_labels() -> None:
    operator = operator_catalogue()
    checked = 0
    for where, name, labels in _input_series():
        if not name.startswith("dchat_operator_"):
            continue
        assert name in operator, f"{where}: the operator exports no {name}"
        assert set(labels) - OPERATOR_TARGET_LABELS == operator[name], (where, name, labels)
        checked += 1
    assert checked >= 10
