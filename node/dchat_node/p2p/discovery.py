"""DNS discovery of relay peers inside a cluster (``relay.bootstrap_dns``).

Design: every ``interval`` seconds resolve the name's A/AAAA records (in Kubernetes the
headless P2P Service of the DchatCluster lists every pod's address); for each address
other than this node's own, ask ``GET http://<address>:<info_port>/p2p/info`` (the peer's
ops port; pods of one cluster share the config, so it is this node's
``server.metrics_port``) for ``{peerId, addrs}``, and keep
``/ip4/<address>/tcp/<p2p_port>/p2p/<peerId>`` as a dial target of the host (which
redials with backoff). Addresses that left the DNS answer are dropped as targets. The
HTTP request is a minimal HTTP/1.1 GET over asyncio streams (bounded: 64 KiB response,
3 seconds), so the node needs no HTTP client library. A peer that does not
answer is retried on the next round. No peer id needs to be known in advance.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from typing import Protocol

log = logging.getLogger("dchat_node.p2p.discovery")

MAX_INFO_BYTES = 65536


class DialTargets(Protocol):
    @property
    def peer_id(self) -> str: ...

    def add_dial_target(self, addr: str) -> None: ...

    def remove_dial_target(self, addr: str) -> None: ...


async def resolve(name: str) -> list[str]:
    """The IPv4/IPv6 addresses of ``name`` (empty when it does not resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


async def fetch_peer_id(address: str, port: int, *, limit_secs: float = 3.0) -> str | None:
    """``peerId`` from ``http://address:port/p2p/info``; None when unreachable or invalid."""
    host = f"[{address}]" if ":" in address else address
    try:
        async with asyncio.timeout(limit_secs):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                writer.write(
                    f"GET /p2p/info HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Accept: application/json\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                raw = await reader.read(MAX_INFO_BYTES)
                while len(raw) < MAX_INFO_BYTES:
                    more = await reader.read(MAX_INFO_BYTES - len(raw))
                    if not more:
                        break
                    raw += more
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    try:
        peer_id = json.loads(body)["peerId"]
    except (ValueError, KeyError, TypeError):
        return None
    return peer_id if isinstance(peer_id, str) and 0 < len(peer_id) <= 128 else None


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            return b""
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def peer_addr(address: str, p2p_port: int, peer_id: str) -> str:
    proto = "ip6" if ipaddress.ip_address(address).version == 6 else "ip4"
    return f"/{proto}/{address}/tcp/{p2p_port}/p2p/{peer_id}"


class DnsDiscovery:
    def __init__(
        self,
        host: DialTargets,
        name: str,
        *,
        info_port: int,
        p2p_port: int,
        interval: float,
    ) -> None:
        self.host = host
        self.name = name
        self.info_port = info_port
        self.p2p_port = p2p_port
        self.interval = interval
        self.targets: dict[str, str] = {}  # address -> multiaddr
        self.last_addresses: list[str] = []

    async def round(self) -> None:
        addresses = await resolve(self.name)
        self.last_addresses = addresses
        for address in set(self.targets) - set(addresses):
            self.host.remove_dial_target(self.targets.pop(address))
        for address in addresses:
            peer_id = await fetch_peer_id(address, self.info_port)
            if peer_id is None or peer_id == self.host.peer_id:
                continue
            addr = peer_addr(address, self.p2p_port, peer_id)
            old = self.targets.get(address)
            if old == addr:
                continue
            if old is not None:  # a new pod took the address
                self.host.remove_dial_target(old)
            self.targets[address] = addr
            log.info("discovered relay peer %s via %s", addr, self.name)
            self.host.add_dial_target(addr)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as exc:  # a bad round is retried at the next interval
                log.warning("relay DNS discovery round failed: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)
