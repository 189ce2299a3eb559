"""Record the node's real ``/health/<component>`` answers: what ``kubectl dchat doctor``
classifies (tests/operator/unit/data/plugin_node_health.json).

Design: ``record(tmp)`` builds the node's services on a fresh SQLite database
(``build_services``, as the server does), registers the chain component the server
registers (no RPC configured: ``disabled``; one RPC on a loopback port where nothing
listens: ``unreachable``) and asks the ops app, in process, for each case; the database's
unreachable answer comes after closing the storage. ``python -m tests.node.health_recording``
rewrites the fixture; ``tests/node/test_health_components.py`` re-records and compares
statuses, states and keys (the reasons carry ports and timings).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from dchat_node.app import create_ops_app
from dchat_node.chain.client import ChainClient
from dchat_node.health import ChainComponent
from dchat_node.lifecycle import NodeState
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from tests.harness.net import free_port
from tests.node.conftest import config_for

FIXTURE = (
    Path(__file__).resolve().parents[1] / "operator" / "unit" / "data" / "plugin_node_health.json"
)


async def record(tmp: Path) -> dict[str, dict[str, Any]]:
    """Case -> {"status": HTTP status, "body": the JSON body}."""
    config = config_for(tmp)
    storage = await open_storage(config.database)
    await storage.migrate()
    out: dict[str, dict[str, Any]] = {}

    async def ask(case: str, services: Any, path: str) -> None:
        client = create_ops_app(services, NodeState()).test_client()
        r = await client.get(path)
        out[case] = {"status": r.status_code, "body": await r.get_json()}

    plain = build_services(config, storage)
    await ask("component_not_reported", plain, "/health/chain")  # a node without it: 404
    plain.components.register(ChainComponent({}))
    await ask("database_ok", plain, "/health/database")
    await ask("chain_disabled", plain, "/health/chain")
    await ask("relay_disabled", plain, "/health/relay")
    await ask("bridge_disabled", plain, "/health/bridge")
    down = build_services(config, storage)
    client = ChainClient(f"http://127.0.0.1:{free_port()}", timeout_secs=2, retries=0)
    down.components.register(ChainComponent({"currency": client}))
    try:
        await ask("chain_unreachable", down, "/health/chain")
    finally:
        await client.aclose()
    await storage.close()
    await ask("database_unreachable", down, "/health/database")
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="dchat-health-") as tmp:
        data = asyncio.run(record(Path(tmp)))
    FIXTURE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
