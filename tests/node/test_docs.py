"""docs/node.md stays in step with the code: every config key, variable and metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from dchat_node.config import ENV_VARS, NodeConfig
from dchat_node.observability.metrics import ALERT_METRIC_NAMES

pytestmark = pytest.mark.unit

DOC = (Path(__file__).resolve().parents[2] / "docs" / "node.md").read_text()


def test_every_config_key_is_documented() -> None:
    missing = []
    for section, field in NodeConfig.model_fields.items():
        if section == "env":
            continue
        model = field.default_factory().__class__  # type: ignore[call-arg,misc]
        missing += [f"{section}.{k}" for k in model.model_fields if f"`{section}.{k}`" not in DOC]
    assert missing == []


def test_every_variable_and_alert_metric_is_documented() -> None:
    assert [v for v in ENV_VARS if f"`{v}`" not in DOC] == []
    assert [m for m in ALERT_METRIC_NAMES if f"`{m}`" not in DOC] == []
    assert "DCHAT_<SECTION>__<KEY>" in DOC
    assert "_FILE" in DOC
