"""Read a node pod's own ``/metrics`` over HTTP, for the soak window of a rollout.

Design: one aiohttp session for the operator's life (no ``trust_env``: pod IPs never go
through a proxy), a short timeout per pod, and a size limit on the answer: the pod runs an
image the CR's author chose, so its answer is untrusted input (parsed by
``builders.analysis``, which only sums two metric families).
"""

from __future__ import annotations

import ipaddress

import aiohttp

MAX_BYTES = 4 * 1024 * 1024
"""A node's /metrics is ~100 KiB; more than this is not read."""


class ScrapeError(Exception):
    """The pod's metrics could not be read."""


class PodMetrics:
    """GET http://<pod IP>:<port>/metrics."""

    def __init__(self, timeout: float = 3.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def scrape(self, ip: str, port: int) -> str:
        try:
            host = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise ScrapeError(f"not a pod IP: {ip!r}") from exc
        hostport = f"[{host}]:{port}" if host.version == 6 else f"{host}:{port}"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=32, force_close=True),
            )
        try:
            async with self._session.get(f"http://{hostport}/metrics") as response:
                if response.status != 200:
                    raise ScrapeError(f"HTTP {response.status}")
                body = await response.content.read(MAX_BYTES + 1)
                if len(body) > MAX_BYTES:
                    raise ScrapeError(f"more than {MAX_BYTES} bytes")
                return body.decode("utf-8", errors="replace")
        except TimeoutError as exc:
            raise ScrapeError("timed out") from exc
        except aiohttp.ClientError as exc:
            raise ScrapeError(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
