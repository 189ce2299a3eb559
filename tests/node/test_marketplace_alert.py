"""The guide's marketplace alert (``MarketplacePurchaseLatencyHigh``: p99 of
``marketplace_purchase_latency_ms`` over 5 minutes above 100 ms, as the operator renders it
into the PrometheusRule) fires in ``promtool test rules`` on series produced by a real run,
and resolves when purchases are fast again.

The run: the node's app (real routes, service, SQLite store, metrics) takes purchases; for
the first 8 simulated minutes every SQLite statement is slowed by 40 ms (a trace callback on
the database thread, like a slow disk: a purchase is 4-6 statements, so 160-240 ms), then
the database is fast again for 8 minutes. ``/metrics`` is scraped once per simulated minute;
every scraped bucket of the histogram becomes an input series of the rule test."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.chain import ChainUnavailable
from dchat_node.lifecycle import NodeState
from dchat_node.marketplace.payments import PaymentObservation, PaymentRequest
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from dchat_node.storage.sqlite import SqliteStorage
from tests.node.alert_rules import check_alert, series_labels
from tests.node.conftest import bearer, config_for, make_token

pytestmark = pytest.mark.unit

SLOW_MINUTES, FAST_MINUTES, PER_MINUTE = 8, 8, 2
STATEMENT_DELAY = 0.04
BUCKET = re.compile(r'^marketplace_purchase_latency_ms_bucket\{le="([^"]+)"\} (\S+)$', re.M)


class _NoChain:
    """Creating a purchase never asks the chain (the worker does, and it does not run here)."""

    async def check(self, request: PaymentRequest) -> PaymentObservation:
        raise ChainUnavailable("check", 1, "no chain in this test")

    async def still_canonical(self, block_number: int, block_hash: str) -> bool:
        raise ChainUnavailable("still_canonical", 1, "no chain in this test")


def _slow(_sql: str) -> None:
    time.sleep(STATEMENT_DELAY)  # on aiosqlite's thread, once per statement


def _fast(_sql: str) -> None:
    return None


async def _scraped_run(tmp_path: Path) -> dict[str, list[float]]:
    """le -> the bucket's count as scraped before the run and after each minute."""
    cfg = config_for(tmp_path, marketplace={"escrow_address": "0x" + "22" * 20, "chain_id": 31337})
    storage = await open_storage(cfg.database)
    await storage.migrate()
    assert isinstance(storage, SqliteStorage)
    try:
        services = build_services(cfg, storage, payment_verifier=_NoChain())
        api = create_api_app(services).test_client()
        ops = create_ops_app(services, NodeState()).test_client()
        seller = {"Authorization": f"Bearer {make_token('seller', scope='marketplace:write')}"}
        listing = await api.post(
            "/api/v1/marketplace/listings",
            json={"title": "a theme", "price": "1000", "payout_address": "0x" + "11" * 20},
            headers=seller,
        )
        assert listing.status_code == 201, await listing.get_data(as_text=True)
        listing_id = (await listing.get_json())["id"]
        buyer = bearer(make_token("buyer", scope="marketplace:write"))

        series: dict[str, list[float]] = {}

        async def scrape() -> None:
            text = await (await ops.get("/metrics")).get_data(as_text=True)
            for le, value in BUCKET.findall(text):
                series.setdefault(le, []).append(float(value))

        await scrape()
        conn = storage._conn
        assert conn is not None
        for minute in range(SLOW_MINUTES + FAST_MINUTES):
            slow = minute < SLOW_MINUTES
            await conn.set_trace_callback(_slow if slow else _fast)
            for _ in range(PER_MINUTE):
                r = await api.post(
                    "/api/v1/marketplace/purchases", json={"listing_id": listing_id}, headers=buyer
                )
                assert r.status_code == 201, await r.get_data(as_text=True)
            await scrape()
        await conn.set_trace_callback(_fast)
        return series
    finally:
        await storage.close()


async def test_marketplace_latency_alert_fires_on_a_real_run(tmp_path: Path) -> None:
    series = await _scraped_run(tmp_path)
    total = PER_MINUTE * (SLOW_MINUTES + FAST_MINUTES)
    assert series["+Inf"][-1] == total
    slow_done = series["100.0"][SLOW_MINUTES] if "100.0" in series else None
    assert slow_done == 0, "the slowed purchases all took over 100 ms"
    assert series["100.0"][-1] == PER_MINUTE * FAST_MINUTES, "and the fast ones under it"

    inputs = [
        {
            "series": f'marketplace_purchase_latency_ms_bucket{{{series_labels()},le="{le}"}}',
            "values": " ".join(f"{v:g}" for v in values),
        }
        for le, values in series.items()
    ]
    await check_alert(
        tmp_path,
        "MarketplacePurchaseLatencyHigh",
        inputs,
        # p99 above 100 ms from the first slow minutes, `for: 5m` holds it pending; 6 fast
        # minutes later the 5-minute window holds only fast purchases
        quiet_at=["3m", "15m"],
        firing_at=["8m"],
    )
