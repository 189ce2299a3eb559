"""The ops app: /health, /ready, /metrics, /health/bridge (and the component registry)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from dchat_node.components import ComponentStatus
from dchat_node.lifecycle import NodeState
from dchat_node.observability.metrics import ALERT_METRIC_NAMES
from dchat_node.services import Services
from tests.node.conftest import bearer

pytestmark = pytest.mark.unit


async def test_health_reports_alive_and_loop(ops_client: Any) -> None:
    r = await ops_client.get("/health")
    assert r.status_code == 200
    body = await r.get_json()
    assert body["status"] == "ok"
    assert body["loop_lag_seconds"] >= 0


async def test_health_fails_when_loop_heartbeat_is_stale(services: Services) -> None:
    from dchat_node.app import create_ops_app

    state = NodeState()
    # no lifespan here, so the heartbeat task does not run and cannot refresh the stamp
    client = create_ops_app(services, state).test_client()
    assert (await client.get("/health")).status_code == 200
    state.loop_heartbeat -= 60
    r = await client.get("/health")
    assert r.status_code == 503
    assert (await r.get_json())["status"] == "unresponsive"


async def test_ready_when_migrated_and_reachable(ops_client: Any) -> None:
    r = await ops_client.get("/ready")
    assert r.status_code == 200
    assert (await r.get_json()) == {"status": "ready", "storage_engine": "sqlite"}


async def test_not_ready_while_draining(ops_client: Any, node_state: NodeState) -> None:
    node_state.begin_drain()
    r = await ops_client.get("/ready")
    assert r.status_code == 503
    assert "draining" in (await r.get_json())["problems"]


async def test_not_ready_with_pending_migrations(ops_client: Any, services: Services) -> None:
    from dchat_node.storage.base import SqlStorage

    assert isinstance(services.storage, SqlStorage)
    await services.storage._execute("DELETE FROM schema_migrations WHERE version = 2")
    r = await ops_client.get("/ready")
    assert r.status_code == 503
    assert "pending" in (await r.get_json())["problems"]["migrations"]


async def test_not_ready_when_database_closed(ops_client: Any, services: Services) -> None:
    await services.storage.close()
    r = await ops_client.get("/ready")
    assert r.status_code == 503
    assert "unreachable" in (await r.get_json())["problems"]["database"]


async def test_bridge_disabled_is_503_not_fake(ops_client: Any) -> None:
    r = await ops_client.get("/health/bridge")
    assert r.status_code == 503
    body = await r.get_json()
    assert body["status"] == "disabled"
    assert body["component"] == "bridge"
    assert (await ops_client.get("/health/unknown-thing")).status_code == 404


class FakeBridge:
    """A stand-in component to prove the registry plumbing (the real one comes later)."""

    name = "bridge"

    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    async def status(self) -> ComponentStatus:
        return ComponentStatus(
            self.healthy, "ok" if self.healthy else "stalled", {"pending_proofs": 3}
        )


async def test_bridge_reports_registered_component_state(
    ops_client: Any, services: Services
) -> None:
    bridge = FakeBridge(True)
    services.components.register(bridge)
    r = await ops_client.get("/health/bridge")
    assert r.status_code == 200
    assert (await r.get_json())["details"] == {"pending_proofs": 3}
    bridge.healthy = False
    r = await ops_client.get("/health/bridge")
    assert r.status_code == 503
    assert (await r.get_json())["status"] == "stalled"
    with pytest.raises(ValueError, match="already registered"):
        services.components.register(FakeBridge(True))


async def test_metrics_expose_alert_names_and_route_templates(
    ops_client: Any, client: Client
) -> None:
    r = await client.post("/api/v1/channels", json={"name": "m"}, headers=bearer())
    cid = (await r.get_json())["id"]
    await client.get(f"/api/v1/channels/{cid}/messages")
    await client.get("/api/v1/channels/987654/messages")
    await client.get("/definitely/not/here")
    r = await ops_client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = await r.get_data(as_text=True)
    for name in ALERT_METRIC_NAMES:
        assert re.search(rf"^# TYPE {name} ", text, re.M), name
    assert "# TYPE marketplace_purchase_latency_ms histogram" in text
    assert 'marketplace_purchase_latency_ms_bucket{le="100.0"}' in text
    route = "/api/v1/channels/<int(max=9223372036854775807):channel_id>/messages"
    assert f'dchat_http_requests_total{{method="GET",route="{route}",status="200"}} 1.0' in text
    assert f'dchat_http_requests_total{{method="GET",route="{route}",status="404"}} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/987654/" not in text
    assert "/definitely/" not in text
    assert "dchat_http_request_duration_seconds_bucket" in text
    assert "database_connections_active 0.0" in text
    assert "database_connections_open 1.0" in text
    # the process (pod-memory alert, restart panels): the node's own registry has it
    rss = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
    assert rss is not None
    assert float(rss.group(1)) > 1e6
    assert re.search(r"^process_start_time_seconds \d", text, re.M)


async def test_server_errors_count_in_dchat_errors_total(
    ops_client: Any, api_app: Any, services: Services
) -> None:
    @api_app.get("/api/v1/_test_boom")  # type: ignore[untyped-decorator]
    async def boom() -> str:
        raise RuntimeError("secret detail that must not leak")

    r = await api_app.test_client().get("/api/v1/_test_boom")
    assert r.status_code == 500
    body = await r.get_json()
    assert "secret detail" not in str(body)
    assert body["error"]["code"] == "internal_error"
    text = await (await ops_client.get("/metrics")).get_data(as_text=True)
    assert 'dchat_errors_total{component="api"} 1.0' in text


async def test_metric_labels_stay_bounded_for_odd_methods(ops_client: Any, client: Client) -> None:
    for method in ("BREW", "PROPFIND", "X-EVIL-1", "X-EVIL-2"):
        r = await client.open("/api/v1/version", method=method)  # type: ignore[call-arg]
        assert r.status_code == 405
    text = await (await ops_client.get("/metrics")).get_data(as_text=True)
    assert 'method="OTHER"' in text
    assert "BREW" not in text
    assert "X-EVIL" not in text


def test_startup_heap_is_frozen_for_the_collector() -> None:
    import gc

    from dchat_node.lifecycle import freeze_startup_heap

    kept = [object()]  # something the process keeps, alive at start-up

    def scanned(obj: object) -> bool:
        return any(o is obj for o in gc.get_objects())

    assert scanned(kept)
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count()
        assert frozen > 10_000  # the imported modules, at least
        assert not scanned(kept)  # no longer in the generations the collector scans
        later = [object()]
        assert scanned(later)  # what serving allocates is collected as usual
    finally:
        gc.unfreeze()
    assert scanned(kept)
