"""The P2P platform package: the PubSub contract's bounded subscriptions, the persistent
identity key, DNS discovery against a real HTTP endpoint, and two real libp2p hosts in
this process (loopback, free ports; their threads end at stop)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dchat_node.config import ConfigError, parse_config
from dchat_node.p2p.discovery import DnsDiscovery, fetch_peer_id
from dchat_node.p2p.host import HostSettings, Libp2pHost, load_or_create_key, peer_id_of
from dchat_node.p2p.local import LocalNetwork, LocalPubSub
from dchat_node.p2p.pubsub import (
    MAX_MESSAGE_BYTES,
    Message,
    P2PUnavailable,
    PubSub,
    Subscription,
)


@pytest.mark.unit
async def test_subscription_is_bounded_counts_drops_and_ends_on_close() -> None:
    drops: list[str] = []
    sub = Subscription("t", maxsize=2, on_drop=drops.append)
    net = LocalNetwork()
    a, b = LocalPubSub(net, "a"), LocalPubSub(net, "b")
    sub_b = b.subscribe("t", maxsize=2)
    own = a.subscribe("t")
    for i in range(3):
        await a.publish("t", b"m%d" % i)
    assert [(await sub_b.get()).data for _ in range(2)] == [b"m0", b"m1"]
    assert sub_b.dropped == 1
    assert own.qsize() == 0  # no delivery to the publisher itself
    assert isinstance(a, PubSub)
    sub.deliver(await _one(a, b))
    sub.deliver(await _one(a, b))
    assert not sub.deliver(await _one(a, b))
    assert drops == ["t"]
    sub.close()
    assert [m.data async for m in sub] == [b"x", b"x"]
    with pytest.raises(ValueError, match="exceeds"):
        await a.publish("t", b"x" * (MAX_MESSAGE_BYTES + 1))
    a.close()
    with pytest.raises(P2PUnavailable):
        await a.publish("t", b"x")


async def _one(a: LocalPubSub, b: LocalPubSub) -> Message:
    sub = b.subscribe("one")
    await a.publish("one", b"x")
    msg = await sub.get()
    sub.close()
    return msg


@pytest.mark.unit
def test_identity_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "p2p" / "identity.key"
    first = peer_id_of(load_or_create_key(path))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert peer_id_of(load_or_create_key(path)) == first
    assert first.startswith("12D3KooW")
    path.write_bytes(b"short")
    with pytest.raises(P2PUnavailable, match="32-byte"):
        load_or_create_key(path)


@pytest.mark.unit
def test_relay_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"relay.bootstrap_dns"):
        parse_config({}, environ={"RELAY_BOOTSTRAP_DNS": "not a name!"})
    with pytest.raises(ConfigError, match=r"gossip_degree_low <= gossip_degree"):
        parse_config({"relay": {"gossip_degree": 20}})
    with pytest.raises(ConfigError, match=r"relay.max_envelope_bytes"):
        parse_config({"relay": {"max_envelope_bytes": 10**9}})
    cfg = parse_config({}, environ={"RELAY_BOOTSTRAP_DNS": "dchat-p2p.ns.svc.cluster.local"})
    assert cfg.relay.bootstrap_dns == "dchat-p2p.ns.svc.cluster.local"


class _Targets:
    def __init__(self, peer_id: str) -> None:
        self.peer_id = peer_id
        self.added: list[str] = []
        self.removed: list[str] = []

    def add_dial_target(self, addr: str) -> None:
        self.added.append(addr)

    def remove_dial_target(self, addr: str) -> None:
        self.removed.append(addr)


@pytest.fixture
async def info_server() -> AsyncIterator[tuple[int, dict[str, str]]]:
    """A real HTTP endpoint answering /p2p/info with the given peer id (chunked, as
    hypercorn may send it)."""
    answer = {"peerId": "12D3KooWpeer"}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps({"peerId": answer["peerId"], "addrs": []}).encode()
        writer.write(
            b"HTTP/1.1 200 \r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            + f"{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, answer
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.unit
async def test_dns_discovery_learns_peer_ids_and_skips_itself(
    info_server: tuple[int, dict[str, str]],
) -> None:
    port, answer = info_server
    assert await fetch_peer_id("127.0.0.1", port) == "12D3KooWpeer"
    targets = _Targets("12D3KooWself")
    discovery = DnsDiscovery(targets, "127.0.0.1", info_port=port, p2p_port=7000, interval=1)
    await discovery.round()
    assert targets.added == ["/ip4/127.0.0.1/tcp/7000/p2p/12D3KooWpeer"]
    await discovery.round()
    assert len(targets.added) == 1  # unchanged: not added twice
    answer["peerId"] = "12D3KooWnewpod"  # a new pod took the address
    await discovery.round()
    assert targets.removed == ["/ip4/127.0.0.1/tcp/7000/p2p/12D3KooWpeer"]
    assert targets.added[-1] == "/ip4/127.0.0.1/tcp/7000/p2p/12D3KooWnewpod"
    answer["peerId"] = "12D3KooWself"  # ourselves behind the name: skipped
    before = list(targets.added)
    await discovery.round()
    assert targets.added == before
    with socket.socket() as s:  # a closed port: no answer, no target
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert await fetch_peer_id("127.0.0.1", closed) is None


def _libp2p_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name == "dchat-libp2p" or "_background_cleanup" in t.name
    ]


@pytest.mark.integration
async def test_two_real_hosts_exchange_every_message_and_stop_cleanly(tmp_path: Path) -> None:
    a = Libp2pHost(HostSettings(key_path=tmp_path / "a.key"))
    sub_a = a.subscribe("t")
    await a.start()
    b = Libp2pHost(
        HostSettings(key_path=tmp_path / "b.key", bootstrap=(a.status()["listen_addrs"][0],))
    )
    sub_b = b.subscribe("t")
    try:
        await b.start()
        async with asyncio.timeout(20):
            while not (a.status()["mesh"].get("t") and b.status()["mesh"].get("t")):  # noqa: ASYNC110 - polls the host's snapshot
                await asyncio.sleep(0.1)
        assert b.status()["connected_peers"] == [a.peer_id]
        for i in range(300):
            await a.publish("t", b"a%d" % i)
        await b.publish("t", b"from b")
        async with asyncio.timeout(60):
            got = [(await sub_b.get()) for _ in range(300)]
            back = await sub_a.get()
        assert [m.data for m in got] == [b"a%d" % i for i in range(300)]
        assert {m.from_peer for m in got} == {a.peer_id}
        assert (back.data, back.from_peer) == (b"from b", b.peer_id)
        assert sub_b.dropped == 0
    finally:
        await b.stop()
        await a.stop()
    assert _libp2p_threads() == []
    assert sub_b.closed
    with pytest.raises(P2PUnavailable):
        await a.publish("t", b"late")


@pytest.mark.integration
async def test_a_port_in_use_is_a_clear_start_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        host = Libp2pHost(HostSettings(key_path=tmp_path / "k.key", port=port))
        with pytest.raises(P2PUnavailable, match="cannot listen"):
            await host.start()
    assert host.failure is not None
    assert _libp2p_threads() == []
