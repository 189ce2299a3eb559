"""Optional push of the node's metrics to a Prometheus Pushgateway.

Scraping ``/metrics`` always works; when ``observability.prometheus_pushgateway`` is set, a
background task also pushes the registry every ``prometheus_push_interval_secs`` (job
``dchat``, grouped by instance = hostname), in a worker thread since the client is blocking.
Failures are logged and counted in ``observability_errors_total{kind="pushgateway"}``; they
never stop the node.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from prometheus_client import push_to_gateway

from dchat_node.observability.metrics import NodeMetrics

log = logging.getLogger("dchat_node.push")


async def push_once(metrics: NodeMetrics, gateway: str, instance: str) -> bool:
    metrics.refresh()
    try:
        await asyncio.to_thread(
            push_to_gateway,
            gateway,
            job="dchat",
            registry=metrics.registry,
            grouping_key={"instance": instance},
            timeout=10,
        )
    except Exception as exc:
        metrics.observability_errors.labels(kind="pushgateway").inc()
        log.warning("metrics push to gateway failed: %s", type(exc).__name__)
        return False
    return True


async def push_loop(metrics: NodeMetrics, gateway: str, interval: float) -> None:
    instance = socket.gethostname()
    while True:
        await push_once(metrics, gateway, instance)
        await asyncio.sleep(interval)
