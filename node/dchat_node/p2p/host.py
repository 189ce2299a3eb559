"""``Libp2pHost``: the node's real libp2p host (py-libp2p) behind the ``PubSub`` API.

Design:
- py-libp2p is trio-only and the node is asyncio, so the host runs in its own thread under
  ``trio.run``. Crossing threads, both ways non-blocking and bounded:
  asyncio -> trio: ``TrioToken.run_sync_soon`` puts a publish request on a bounded trio
  memory channel (``publish_queue`` items; the asyncio side counts what it has in flight
  and raises ``QueueFull`` beyond it); a trio worker publishes and resolves the caller's
  future with ``loop.call_soon_threadsafe``.
  trio -> asyncio: received messages go into a bounded hand-over deque (``handoff``
  items, a lock); a drain callback is scheduled on the loop only when the deque turns
  non-empty; each message is then delivered to the topic's ``Subscription``s (bounded
  queues). Every full queue drops the new item and counts it in
  ``dchat_p2p_messages_dropped_total{reason}``.
- Security Noise only (``sec_opt``), muxer yamux only, TCP on ``listen_host:port``.
  Identity: an Ed25519 key whose 32-byte seed lives in ``key_path`` (created with mode
  0600, parent directory 0700), so a restarted node keeps its peer id.
- GossipSub (``/meshsub/1.2.0`` and ``1.1.0``) with the settings of ``GossipSettings``:
  heartbeat 1 s (py-libp2p's default is 120 s), per-peer-per-topic rate limit raised
  (default 10 msg/s drops ordinary traffic), IP-diversity ("eclipse") protection off
  (every pod of a cluster may sit behind few addresses; on loopback all share one), the
  per-peer outbound RPC queue raised from 32 to ``outbound_queue`` (py-libp2p's queue
  refuses RPCs beyond it, silently except for our counter). A publisher waits (up to
  ``PUBLISH_BACKPRESSURE_SECS``) while a peer's outbound queue is over 3/4 full instead
  of overrunning it.
- Peers: ``dial_targets`` (from ``relay.bootstrap_nodes`` and discovery) are kept
  connected by one trio task each: dial, and when the connection drops, redial with
  exponential backoff (1 s doubling to ``MAX_BACKOFF_SECS``, 10 s). ``/dns``/``/dns4``/
  ``/dns6`` addresses are resolved on each attempt. Addresses without ``/p2p/<id>`` cannot
  be dialled by py-libp2p and are reported in ``status()["unusable_addrs"]``.
- ``status()`` is a snapshot the trio thread refreshes every second (connected peers, mesh
  size per topic, listen and announced addresses, dial targets): the asyncio side never
  touches libp2p objects.
- ``stop()`` sets the trio stop event through the token and joins the thread (bounded);
  every subscription ends. ``start()`` raises ``P2PUnavailable`` when the host cannot
  start (port in use, bad key file) within ``START_TIMEOUT_SECS``.
- Pinned to py-libp2p 0.8.x internals in three places: the per-peer ``RpcQueue``'s
  capacity and ``_handle_dropped_rpc`` (drop counting) in ``_RelayGossipSub``, and the
  swarm's 60 s "negative cache" of failed peers, cleared before each redial (our own
  backoff decides when to retry; without it a restarted peer stayed unreachable for a
  minute).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.tools.timed_cache.base_timed_cache import BaseTimedCache

from dchat_node.p2p.pubsub import (
    Message,
    P2PUnavailable,
    QueueFull,
    Subscription,
    check_publish,
)

log = logging.getLogger("dchat_node.p2p")

START_TIMEOUT_SECS = 15.0
STOP_TIMEOUT_SECS = 5.0
MAX_BACKOFF_SECS = 10.0
DIAL_TIMEOUT_SECS = 5.0
PUBLISH_BACKPRESSURE_SECS = 2.0
SNAPSHOT_INTERVAL_SECS = 1.0


@dataclass(frozen=True)
class GossipSettings:
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_secs: int = 1
    max_messages_per_peer_per_sec: int = 5000
    outbound_queue: int = 4096
    seen_ttl_secs: int = 120


@dataclass(frozen=True)
class HostSettings:
    key_path: Path
    listen_host: str = "127.0.0.1"
    port: int = 0
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    gossip: GossipSettings = field(default_factory=GossipSettings)
    publish_queue: int = 1024
    handoff: int = 8192


class _Counters:
    """Where the host reports counts (the node passes its Prometheus metrics)."""

    def __init__(
        self,
        dropped: Callable[[str], None] | None = None,
        published: Callable[[str], None] | None = None,
        received: Callable[[str], None] | None = None,
    ) -> None:
        self.dropped = dropped or (lambda reason: None)
        self.published = published or (lambda topic: None)
        self.received = received or (lambda topic: None)


def load_or_create_key(path: Path) -> KeyPair:
    """The Ed25519 key pair whose seed ``path`` holds; a new one (mode 0600) if missing."""
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise P2PUnavailable(f"identity key {path} is not a 32-byte Ed25519 seed")
        priv = Ed25519PrivateKey.from_bytes(seed)
        return KeyPair(priv, priv.get_public_key())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv = Ed25519PrivateKey.new()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, priv.to_bytes())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return KeyPair(priv, priv.get_public_key())


def peer_id_of(key: KeyPair) -> str:
    """The base58 libp2p peer id of a key pair."""
    return str(ID.from_pubkey(key.public_key).to_base58())


class _RelayGossipSub(GossipSub):
    """GossipSub with a larger per-peer outbound queue and counted drops."""

    def __init__(self, settings: GossipSettings, on_drop: Callable[[str], None]) -> None:
        super().__init__(
            [PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=settings.degree,
            degree_low=settings.degree_low,
            degree_high=settings.degree_high,
            heartbeat_interval=settings.heartbeat_secs,
            max_messages_per_topic_per_second=float(settings.max_messages_per_peer_per_sec),
            eclipse_protection_enabled=False,
            max_pending_messages_per_peer=settings.outbound_queue,
        )
        self._outbound_queue = settings.outbound_queue
        self._on_drop = on_drop

    def _resize(self, peer_id: ID) -> None:
        queue = self.pubsub.peer_queues.get(peer_id) if self.pubsub is not None else None
        if queue is not None and queue._queue.max_size < self._outbound_queue:
            queue._queue.max_size = self._outbound_queue

    def send_rpc(self, peer_id: ID, rpc: Any, priority: bool = False) -> None:
        self._resize(peer_id)
        super().send_rpc(peer_id, rpc, priority)

    def _handle_dropped_rpc(self, peer_id: ID, rpc: Any, reason: str) -> None:
        self._on_drop("gossip_queue_full")
        super()._handle_dropped_rpc(peer_id, rpc, reason)

    def fullest_queue_ratio(self, topic: str) -> float:
        """How full the fullest outbound queue towards a peer of ``topic`` is (0..1)."""
        if self.pubsub is None:
            return 0.0
        peers = self.mesh.get(topic) or self.fanout.get(topic) or set()
        worst = 0.0
        for peer in peers:
            queue = self.pubsub.peer_queues.get(peer)
            if queue is not None:
                worst = max(worst, len(queue) / max(self._outbound_queue, 1))
        return worst


class _RelayPubsub(Pubsub):
    """Pubsub that hands received messages straight to the host (no 32-slot channel)."""

    deliver: Callable[[Any], None]

    def notify_subscriptions(self, publish_message: Any) -> None:
        self.deliver(publish_message)


class Libp2pHost:
    """The real ``PubSub``: a py-libp2p host in its own trio thread (see module doc)."""

    def __init__(
        self,
        settings: HostSettings,
        *,
        on_drop: Callable[[str], None] | None = None,
        on_published: Callable[[str], None] | None = None,
        on_received: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._counters = _Counters(on_drop, on_published, on_received)
        self._key = load_or_create_key(settings.key_path)
        self._peer_id = peer_id_of(self._key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._running = False
        self._failure: str | None = None
        self._subs: dict[str, list[Subscription]] = {}
        self._joined: set[str] = set()
        self._join_send: trio.MemorySendChannel[str] | None = None
        self._pub_send: trio.MemorySendChannel[tuple[str, bytes, asyncio.Future[None]]] | None
        self._pub_send = None
        self._dial_send: trio.MemorySendChannel[str] | None = None
        self._in_flight = 0
        self._handoff: collections.deque[Message] = collections.deque()
        self._handoff_lock = threading.Lock()
        self._drain_scheduled = False
        self._targets: set[str] = set(settings.bootstrap)
        self._unusable: set[str] = set()
        self._snapshot: dict[str, Any] = {"connected_peers": [], "mesh": {}, "listen_addrs": []}

    # -- PubSub API -----------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def running(self) -> bool:
        return self._running

    @property
    def failure(self) -> str | None:
        return self._failure

    async def publish(self, topic: str, data: bytes) -> None:
        check_publish(topic, data)
        token, loop = self._token, self._loop
        if not self._running or token is None or loop is None:
            raise P2PUnavailable(self._failure or "the P2P host is not running")
        if self._in_flight >= self.settings.publish_queue:
            self._counters.dropped("publish_queue_full")
            raise QueueFull(f"{self._in_flight} publications already queued")
        fut: asyncio.Future[None] = loop.create_future()
        self._in_flight += 1
        try:
            token.run_sync_soon(self._enqueue_publish, topic, bytes(data), fut)
        except trio.RunFinishedError:
            self._in_flight -= 1
            raise P2PUnavailable("the P2P host stopped") from None
        try:
            await fut
        finally:
            self._in_flight -= 1
        self._counters.published(topic)

    def subscribe(self, topic: str, *, maxsize: int = 1024) -> Subscription:
        if not topic:
            raise ValueError("topic must not be empty")
        sub = Subscription(topic, maxsize, on_close=self._forget, on_drop=self._sub_dropped)
        self._subs.setdefault(topic, []).append(sub)
        if topic not in self._joined:
            self._joined.add(topic)
            if self._running and self._token is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self._enqueue_join, topic)
        return sub

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the trio thread; return once the host listens (else P2PUnavailable)."""
        if self._thread is not None:
            raise RuntimeError("host already started")
        self._loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(started,), name="dchat-libp2p", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.shield(started), START_TIMEOUT_SECS)
        except TimeoutError:
            self._failure = "the P2P host did not start in time"
            await self.stop()
            raise P2PUnavailable(self._failure) from None
        except P2PUnavailable:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the trio thread (bounded wait) and end every subscription."""
        self._running = False
        token, stop = self._token, self._stop
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop.set)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, STOP_TIMEOUT_SECS)
            if thread.is_alive():
                log.warning("the libp2p thread did not stop within %.0f s", STOP_TIMEOUT_SECS)
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
        self._subs.clear()

    def add_dial_target(self, addr: str) -> None:
        """Keep a connection to ``addr`` (a multiaddr with /p2p/<id>); idempotent."""
        if addr in self._targets:
            return
        self._targets.add(addr)
        if self._running and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._enqueue_dial, addr)

    def remove_dial_target(self, addr: str) -> None:
        """Stop keeping ``addr`` connected (its redial task ends at its next check)."""
        self._targets.discard(addr)

    def status(self) -> dict[str, Any]:
        """A snapshot (refreshed every second by the libp2p thread)."""
        snap = dict(self._snapshot)
        snap.update(
            {
                "peer_id": self._peer_id,
                "running": self._running,
                "failure": self._failure,
                "topics": sorted(self._joined),
                "publish_in_flight": self._in_flight,
                "dial_targets": sorted(self._targets),
            }
        )
        return snap

    # -- trio side ------------------------------------------------------------------------

    def _thread_main(self, started: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            trio.run(self._trio_main, started)
        except BaseException as exc:
            while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                exc = exc.exceptions[0]  # the first cause, not trio's nursery wrapper
            self._failure = f"P2P host failed: {type(exc).__name__}: {exc}"[:300]
            log.error("%s", self._failure)
            self._running = False

            def fail() -> None:
                if not started.done():
                    started.set_exception(P2PUnavailable(self._failure or "failed"))

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fail)
        finally:
            self._running = False
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()

    async def _trio_main(self, started: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        s = self.settings
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        listen = multiaddr.Multiaddr(_tcp_addr(s.listen_host, s.port))
        announce = [multiaddr.Multiaddr(a) for a in s.announce] or None
        host = new_host(
            key_pair=self._key,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    self._key, noise_privkey=create_x25519_key_pair().private_key
                )
            },
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            listen_addrs=[listen],
            announce_addrs=announce,
        )
        gossip = _RelayGossipSub(s.gossip, self._counters.dropped)
        pubsub = _RelayPubsub(host, gossip, cache_size=65536, seen_ttl=s.gossip.seen_ttl_secs)
        pubsub.deliver = self._from_network
        pub_send, pub_recv = trio.open_memory_channel[tuple[str, bytes, asyncio.Future[None]]](
            s.publish_queue
        )
        join_send, join_recv = trio.open_memory_channel[str](256)
        dial_send, dial_recv = trio.open_memory_channel[str](256)
        self._pub_send, self._join_send, self._dial_send = pub_send, join_send, dial_send
        try:
            await self._serve(host, pubsub, gossip, listen, started, pub_recv, join_recv, dial_recv)
        finally:
            # py-libp2p's timed caches each run a sweeper thread until stopped
            for owner in (pubsub, gossip):
                for value in list(vars(owner).values()):
                    if isinstance(value, BaseTimedCache):
                        value.stop()

    async def _serve(
        self,
        host: Any,
        pubsub: _RelayPubsub,
        gossip: _RelayGossipSub,
        listen: multiaddr.Multiaddr,
        started: asyncio.Future[None],
        pub_recv: trio.MemoryReceiveChannel[tuple[str, bytes, asyncio.Future[None]]],
        join_recv: trio.MemoryReceiveChannel[str],
        dial_recv: trio.MemoryReceiveChannel[str],
    ) -> None:
        loop = self._loop
        assert loop is not None
        assert self._stop is not None
        async with (
            host.run([listen]),
            background_trio_service(pubsub),
            background_trio_service(gossip),
        ):
            # py-libp2p logs a failed listen (port in use) and carries on: refuse instead
            if not getattr(host.get_network(), "listeners", None):
                raise P2PUnavailable(f"cannot listen on {listen} (address in use?)")
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                for topic in sorted(self._joined):
                    await pubsub.subscribe(topic)
                nursery.start_soon(self._publisher, pubsub, gossip, pub_recv)
                nursery.start_soon(self._joiner, pubsub, join_recv)
                nursery.start_soon(self._dialer, host, nursery, dial_recv)
                nursery.start_soon(self._snapshotter, host, gossip)
                for addr in sorted(self._targets):
                    nursery.start_soon(self._keep_connected, host, addr)
                self._take_snapshot(host, gossip)
                self._running = True
                log.info(
                    "libp2p host %s listening on %s",
                    self._peer_id,
                    [str(a) for a in host.get_addrs()],
                    extra={"event": "p2p_start"},
                )
                loop.call_soon_threadsafe(_set_result, started)
                await self._stop.wait()
                self._running = False
                nursery.cancel_scope.cancel()

    def _enqueue_publish(self, topic: str, data: bytes, fut: asyncio.Future[None]) -> None:
        assert self._pub_send is not None
        assert self._loop is not None
        try:
            self._pub_send.send_nowait((topic, data, fut))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._loop.call_soon_threadsafe(
                _set_exception, fut, QueueFull("the publish queue is full")
            )

    def _enqueue_join(self, topic: str) -> None:
        if self._join_send is not None:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._join_send.send_nowait(topic)

    def _enqueue_dial(self, addr: str) -> None:
        if self._dial_send is not None:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._dial_send.send_nowait(addr)

    async def _publisher(
        self,
        pubsub: Pubsub,
        gossip: _RelayGossipSub,
        recv: trio.MemoryReceiveChannel[tuple[str, bytes, asyncio.Future[None]]],
    ) -> None:
        loop = self._loop
        assert loop is not None
        async for topic, data, fut in recv:
            # back-pressure: wait while the fullest peer queue of the topic is over 3/4
            deadline = trio.current_time() + PUBLISH_BACKPRESSURE_SECS
            while gossip.fullest_queue_ratio(topic) > 0.75 and trio.current_time() < deadline:  # noqa: ASYNC110 - polls py-libp2p queues, which have no event
                await trio.sleep(0.005)
            try:
                if topic not in pubsub.topic_ids:
                    await pubsub.subscribe(topic)
                await pubsub.publish(topic, data)
            except Exception as exc:
                err = P2PUnavailable(f"publish failed: {type(exc).__name__}")
                loop.call_soon_threadsafe(_set_exception, fut, err)
            else:
                loop.call_soon_threadsafe(_set_result, fut)

    async def _joiner(self, pubsub: Pubsub, recv: trio.MemoryReceiveChannel[str]) -> None:
        async for topic in recv:
            if topic not in pubsub.topic_ids:
                await pubsub.subscribe(topic)

    async def _dialer(
        self, host: Any, nursery: trio.Nursery, recv: trio.MemoryReceiveChannel[str]
    ) -> None:
        async for addr in recv:
            nursery.start_soon(self._keep_connected, host, addr)

    async def _keep_connected(self, host: Any, addr: str) -> None:
        """Dial ``addr`` and redial whenever it is not connected (bounded backoff)."""
        backoff = 1.0
        while addr in self._targets:
            try:
                info = await _peer_info(addr)
            except ValueError as exc:
                log.warning("relay peer address %s unusable: %s", addr, exc)
                self._unusable.add(addr)
                return
            except OSError as exc:  # DNS: retried
                log.info("cannot resolve %s (%s); retrying in %.0f s", addr, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)
                continue
            if info.peer_id == host.get_id():
                return  # ourselves (e.g. discovery found our own address)
            if info.peer_id in host.get_connected_peers():
                backoff = 1.0
                await trio.sleep(1.0)
                continue
            # py-libp2p's swarm refuses to dial a peer for 60 s after a failed dial (its
            # "negative cache"); this loop has its own bounded backoff, so forget that
            negative = getattr(host.get_network(), "_negative_peer_cache", None)
            if negative is not None:
                negative.evict(str(info.peer_id))
            try:
                with trio.fail_after(DIAL_TIMEOUT_SECS):
                    await host.connect(info)
                log.info("connected to peer %s", addr, extra={"event": "p2p_connect"})
                backoff = 1.0
            except Exception as exc:
                log.info(
                    "dial %s failed (%s); retrying in %.0f s", addr, type(exc).__name__, backoff
                )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECS)

    async def _snapshotter(self, host: Any, gossip: _RelayGossipSub) -> None:
        while True:
            await trio.sleep(SNAPSHOT_INTERVAL_SECS)
            self._take_snapshot(host, gossip)

    def _take_snapshot(self, host: Any, gossip: _RelayGossipSub) -> None:
        self._snapshot = {
            "connected_peers": sorted(p.to_base58() for p in host.get_connected_peers()),
            "mesh": {topic: len(peers) for topic, peers in gossip.mesh.items()},
            "listen_addrs": [str(a) for a in host.get_addrs()],
            "unusable_addrs": sorted(self._unusable),
            "updated_at": time.time(),
        }

    def _from_network(self, msg: Any) -> None:
        """Called in the trio thread for each new message (ours included)."""
        try:
            from_peer = ID(msg.from_id).to_base58()
        except Exception:
            return
        if from_peer == self._peer_id:
            return  # our own publication
        seqno = int.from_bytes(msg.seqno, "big") if msg.seqno else 0
        loop = self._loop
        if loop is None:
            return
        for topic in msg.topicIDs:
            if topic not in self._joined:
                continue
            message = Message(topic=topic, from_peer=from_peer, data=bytes(msg.data), seqno=seqno)
            with self._handoff_lock:
                if len(self._handoff) >= self.settings.handoff:
                    full = True
                else:
                    full = False
                    self._handoff.append(message)
                    schedule = not self._drain_scheduled
                    self._drain_scheduled = True
            if full:
                self._counters.dropped("handoff_full")
                continue
            if schedule:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._drain)

    # -- asyncio side ---------------------------------------------------------------------

    def _drain(self) -> None:
        with self._handoff_lock:
            batch = list(self._handoff)
            self._handoff.clear()
            self._drain_scheduled = False
        for message in batch:
            self._counters.received(message.topic)
            for sub in list(self._subs.get(message.topic, ())):
                sub.deliver(message)

    def _forget(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs and sub in subs:
            subs.remove(sub)

    def _sub_dropped(self, topic: str) -> None:
        self._counters.dropped("subscriber_full")


def _set_result(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _set_exception(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _tcp_addr(host: str, port: int) -> str:
    proto = "ip6" if ":" in host else "ip4"
    return f"/{proto}/{host}/tcp/{port}"


async def _peer_info(addr: str) -> PeerInfo:
    """PeerInfo of a multiaddr with /p2p/<id>; /dns, /dns4, /dns6 resolved here."""
    if "/p2p/" not in addr:
        raise ValueError("no /p2p/<peer id> in the address")
    parts = addr.strip("/").split("/")
    if len(parts) >= 2 and parts[0] in ("dns", "dns4", "dns6"):
        name = parts[1]
        family = {"dns4": 2, "dns6": 10}.get(parts[0], 0)  # AF_INET, AF_INET6
        infos = await trio.socket.getaddrinfo(name, None, family=family, type=1)  # STREAM
        if not infos:
            raise OSError(f"{name} does not resolve")
        ip = str(infos[0][4][0])
        parts = ["ip6" if ":" in ip else "ip4", ip, *parts[2:]]
        addr = "/" + "/".join(parts)
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:
        raise ValueError(f"not a dialable multiaddr ({type(exc).__name__})") from None
