"""Background work of the server: the database health loop."""

from __future__ import annotations

import asyncio

import pytest

from dchat_node.server import _health_loop
from dchat_node.services import Services

pytestmark = pytest.mark.unit


async def test_health_loop_counts_database_failures(services: Services) -> None:
    metric = services.metrics.errors.labels(component="storage")
    task = asyncio.create_task(_health_loop(services, 0.05))
    await asyncio.sleep(0.2)
    assert metric._value.get() == 0  # healthy database: nothing counted
    await services.storage.close()
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert metric._value.get() >= 2
