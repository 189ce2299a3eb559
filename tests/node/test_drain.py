"""Graceful drain on SIGTERM, with a real node process and real concurrent requests."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import pytest

from tests.node.conftest import SLOW_NODE

pytestmark = pytest.mark.integration

IN_FLIGHT = 24
SLOW_SECS = 2.0


async def wait_in_flight(ops: str, n: int) -> None:
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(timeout=5) as c:
        while time.monotonic() < deadline:
            text = (await c.get(f"{ops}/metrics")).text
            for line in text.splitlines():
                if (
                    line.startswith("dchat_http_requests_in_flight ")
                    and float(line.split()[1]) >= n
                ):
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{n} requests never got in flight")


async def test_sigterm_drains_in_flight_requests(start_node: Any) -> None:
    node = start_node(argv=SLOW_NODE, env={"DCHAT_SERVER__SHUTDOWN_GRACE_SECS": "10"})
    node.wait_ready()
    limits = httpx.Limits(max_connections=IN_FLIGHT + 5)
    async with httpx.AsyncClient(base_url=node.api, timeout=30, limits=limits) as client:
        tasks = [
            asyncio.create_task(client.get(f"/api/v1/_test/slow?secs={SLOW_SECS}"))
            for _ in range(IN_FLIGHT)
        ]
        await wait_in_flight(node.ops, IN_FLIGHT)
        sent_at = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)

        # /ready turns 503 at once while the drain runs (the ops server stays up)
        async with httpx.AsyncClient(timeout=5) as ops:
            ready = None
            while time.monotonic() - sent_at < SLOW_SECS:
                ready = await ops.get(f"{node.ops}/ready")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.02)
            assert ready is not None
            assert ready.status_code == 503
            assert "draining" in ready.json()["problems"]
            assert time.monotonic() - sent_at < 1.0

        # the API listener no longer accepts new connections
        await asyncio.sleep(0.2)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=2) as fresh:
                await fresh.get(f"{node.api}/api/v1/version")

        responses = await asyncio.gather(*tasks)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * IN_FLIGHT, statuses
    assert all(r.json() == {"slept": SLOW_SECS} for r in responses)
    assert await asyncio.to_thread(node.proc.wait, 15) == 0
    assert time.monotonic() - sent_at < 10  # finished well within the grace period
    log = node.log()
    assert '"event": "drain_start"' in log
    assert '"event": "stopped"' in log


async def test_grace_period_bounds_the_drain(start_node: Any) -> None:
    node = start_node(argv=SLOW_NODE, env={"DCHAT_SERVER__SHUTDOWN_GRACE_SECS": "1"})
    node.wait_ready()
    async with httpx.AsyncClient(base_url=node.api, timeout=30) as client:
        task = asyncio.create_task(client.get("/api/v1/_test/slow?secs=20"))
        await wait_in_flight(node.ops, 1)
        sent_at = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 15)
        elapsed = time.monotonic() - sent_at
        try:
            outcome: Any = (await task).status_code
        except httpx.HTTPError as exc:
            outcome = exc
    # cut off at the end of the grace period: hypercorn cancels it (500, or a closed socket)
    assert outcome == 500 or isinstance(outcome, httpx.HTTPError)
    assert code == 0
    assert elapsed < 6, elapsed  # 1 s grace + teardown, not the request's 20 s


async def test_second_signal_exits_at_once(start_node: Any) -> None:
    node = start_node(argv=SLOW_NODE, env={"DCHAT_SERVER__SHUTDOWN_GRACE_SECS": "30"})
    node.wait_ready()
    async with httpx.AsyncClient(base_url=node.api, timeout=30) as client:
        task = asyncio.create_task(client.get("/api/v1/_test/slow?secs=25"))
        await wait_in_flight(node.ops, 1)
        node.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert node.proc.poll() is None  # still draining: the request runs for 25 s
        sent_at = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.proc.wait, 10)
        with pytest.raises(httpx.HTTPError):
            await task
    assert code == 1
    assert time.monotonic() - sent_at < 5
    assert "exiting without waiting" in node.log()
