"""A bounded open-loop HTTP load generator for loopback tests: ``count`` GET requests sent
at a fixed ``rate`` (each on its own connection, scheduled at ``start + i / rate`` whether
or not earlier ones were answered, so a slow server sees the backlog a real crowd would
make), each bounded by ``limit_secs``; it stops by itself after the last answer or timeout.
Loopback targets only.

    python -m tests.node.loadgen http://127.0.0.1:9000/api/v1/channels/1 --rate 250 --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = ("127.", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Sample:
    status: int  # 0 = no answer within the timeout / connection failed
    seconds: float
    retry_after: str | None


async def _one(host: str, port: int, path: str, limit_secs: float) -> Sample:
    start = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit_secs):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            await reader.read()  # the body, to EOF
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return Sample(0, time.perf_counter() - start, None)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    retry_after = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "retry-after":
            retry_after = value.strip()
    return Sample(status, time.perf_counter() - start, retry_after)


async def open_loop(url: str, *, rate: float, count: int, limit_secs: float = 10.0) -> list[Sample]:
    """Send ``count`` GETs to ``url`` at ``rate`` per second; every sample, in order."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.startswith(LOOPBACK):
        raise ValueError(f"loopback targets only, not {host!r}")
    port = parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[Sample]] = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(_one(host, port, path, limit_secs)))
    return list(await asyncio.gather(*tasks))


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Counts per status and p50/p99 latency (ms) per status."""
    by_status: dict[int, list[float]] = {}
    for s in samples:
        by_status.setdefault(s.status, []).append(s.seconds)
    return {
        "requests": len(samples),
        "counts": dict(sorted(Counter(s.status for s in samples).items())),
        "latency_ms": {
            status: {
                "p50": round(_quantile(v, 0.50) * 1000, 1),
                "p99": round(_quantile(v, 0.99) * 1000, 1),
            }
            for status, v in sorted(by_status.items())
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args()
    samples = asyncio.run(
        open_loop(args.url, rate=args.rate, count=args.count, limit_secs=args.timeout)
    )
    print(json.dumps(summarize(samples)))


if __name__ == "__main__":
    main()
