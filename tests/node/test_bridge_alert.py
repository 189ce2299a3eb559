"""The guide's bridge alert (``BridgeFinalityProofTimeout``, as the operator renders it into
the PrometheusRule) fires in ``promtool test rules`` on series from a real run: a lone
validator on two real anvil chains (no quorum possible) times out deposits
(``finality_proof_timeout_secs`` 1), its metrics are scraped once per simulated minute, and
the scraped ``bridge_finality_proof_timeout_total`` values become the input series."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.node.alert_rules import check_alert, series_labels
from tests.node.bridge_helpers import Bridge
from tests.node.test_bridge_worker import Miner, bridge, make_node  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

COUNTER = re.compile(r"^bridge_finality_proof_timeout_total (\S+)$", re.MULTILINE)


async def test_bridge_finality_alert_fires_on_a_real_run(
    bridge: Bridge,  # noqa: F811
    make_node: Callable[..., Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = bridge.a, bridge.b
    node = await make_node(0, finality_proof_timeout_secs=1)

    def scrape() -> int:
        found = COUNTER.search(generate_latest(node.registry).decode())
        assert found is not None, "the counter is exposed from the first scrape"
        return int(float(found.group(1)))

    values = [scrape()]
    with Miner([a, b]):
        for minute in range(12):
            if minute < 5:  # two deposits a minute that can never reach a quorum
                for _ in range(2):
                    await asyncio.to_thread(bridge.deposit, a, b, 10**15, recipient=b.accounts[8])
                async with asyncio.timeout(20):
                    while scrape() < values[-1] + 2:  # noqa: ASYNC110 (polls a counter)
                        await asyncio.sleep(0.1)
            values.append(scrape())
    assert values == [0, 2, 4, 6, 8, 10, *([10] * 7)]
    await check_alert(
        tmp_path,
        "BridgeFinalityProofTimeout",
        [
            {
                "series": f"bridge_finality_proof_timeout_total{{{series_labels()}}}",
                "values": " ".join(map(str, values)),
            }
        ],
        # > 5 in 10 minutes from minute 3, held pending by `for: 2m`; resolved once the
        # 10-minute window holds no increase
        quiet_at=["2m", "18m"],
        firing_at=["6m", "10m"],
    )
