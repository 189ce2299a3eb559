"""``/health/database`` and ``/health/chain`` (``dchat_node.health``) through the ops app:
what ``kubectl dchat doctor`` reads from each pod. The database is the real SQLite storage
(closed to make it unreachable); the chain is a real anvil (integration) or a loopback port
where nothing listens (the client's own connection error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dchat_node.chain.client import ChainClient
from dchat_node.components import ComponentRegistry
from dchat_node.health import ChainComponent, DatabaseComponent
from dchat_node.services import Services, build_services
from tests.harness.chain import Anvil
from tests.harness.net import free_port
from tests.node import health_recording
from tests.node.conftest import config_for


@pytest.mark.unit
async def test_database_ok_then_unreachable(ops_client: Any, services: Services) -> None:
    r = await ops_client.get("/health/database")
    assert r.status_code == 200
    assert await r.get_json() == {
        "status": "ok",
        "component": "database",
        "healthy": True,
        "details": {"engine": "sqlite"},
    }
    await services.storage.close()
    r = await ops_client.get("/health/database")
    assert r.status_code == 503
    body = await r.get_json()
    assert (body["status"], body["healthy"]) == ("unreachable", False)
    assert body["details"]["reason"]  # the error's type, never its text


@pytest.mark.unit
async def test_build_services_keeps_a_database_component_given_by_the_caller(
    services: Services, tmp_path: Path
) -> None:
    registry = ComponentRegistry()
    own = DatabaseComponent(services.storage, timeout=0.5)
    registry.register(own)
    built = build_services(config_for(tmp_path), services.storage, components=registry)
    assert built.components.get("database") is own


@pytest.mark.unit
async def test_chain_without_rpc_is_disabled_not_failed() -> None:
    status = await ChainComponent({}).status()
    assert (status.healthy, status.state) == (False, "disabled")


@pytest.mark.unit
async def test_chain_unreachable_names_the_chain(ops_client: Any, services: Services) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = ChainClient(url, timeout_secs=2, retries=0, name="currency")
    services.components.register(ChainComponent({"currency": client}))
    try:
        r = await ops_client.get("/health/chain")
    finally:
        await client.aclose()
    assert r.status_code == 503
    body = await r.get_json()
    assert body["status"] == "unreachable"
    assert body["details"]["reason"] == "chain RPC not answering: currency"
    assert body["details"]["currency"]["ok"] is False
    assert "eth_blockNumber failed" in body["details"]["currency"]["reason"]


@pytest.mark.integration
async def test_chain_ok_reports_each_chains_height(chain: Anvil) -> None:
    clients = {
        name: ChainClient(chain.url, timeout_secs=5, retries=0, name=name)
        for name in ("chat", "currency")
    }
    try:
        status = await ChainComponent(clients).status()
    finally:
        for client in clients.values():
            await client.aclose()
    assert (status.healthy, status.state) == (True, "ok")
    height = int(chain.rpc("eth_blockNumber"), 16)
    assert status.details == {
        "chat": {"ok": True, "block": height},
        "currency": {"ok": True, "block": height},
    }


@pytest.mark.unit
async def test_the_plugins_recorded_answers_are_the_nodes(tmp_path: Path) -> None:
    """kubectl dchat doctor's unit tests classify data/plugin_node_health.json: it must be
    what the node answers today (statuses, states, keys; reasons carry ports)."""

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items() if k not in ("reason",)} | {
                k: "..." for k in value if k == "reason"
            }
        return value

    fresh = await health_recording.record(tmp_path)
    committed = json.loads(health_recording.FIXTURE.read_text())
    assert shape(fresh) == shape(committed), "run python -m tests.node.health_recording"


@pytest.mark.integration
def test_a_node_process_reports_its_configured_chains(start_node: Any, chain: Anvil) -> None:
    """The server registers the chain component with a client per configured RPC (the
    environment names of the guide: CHAT_CHAIN_RPC, CURRENCY_CHAIN_RPC)."""
    node = start_node(env={"CHAT_CHAIN_RPC": chain.url, "CURRENCY_CHAIN_RPC": chain.url})
    node.wait_ready()
    r = httpx.get(f"{node.ops}/health/chain", timeout=10)
    assert r.status_code == 200, r.text
    details = r.json()["details"]
    assert set(details) == {"chat", "currency"}
    assert details["chat"]["ok"] is True
    assert details["currency"]["block"] == int(chain.rpc("eth_blockNumber"), 16)
    assert httpx.get(f"{node.ops}/health/database", timeout=10).json()["status"] == "ok"
    plain = start_node()
    plain.wait_ready()
    r = httpx.get(f"{plain.ops}/health/chain", timeout=10)
    assert (r.status_code, r.json()["status"]) == (503, "disabled")
