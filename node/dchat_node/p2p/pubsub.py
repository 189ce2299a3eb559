"""The publish/subscribe API of the node's P2P network (what domains program against).

Design (the contract; keep it small and stable, the relay and bridge domains both use it):

- ``PubSub.publish(topic, data)`` hands ``data`` (at most ``MAX_MESSAGE_BYTES``) to the
  GossipSub router for ``topic`` and returns once the router accepted it (it is then in
  flight to the mesh; there is no delivery receipt in gossip). It raises ``P2PUnavailable``
  when the host is not running (not started, stopping, its thread died) and ``QueueFull``
  when the bounded hand-over queue to the libp2p thread is full: the caller decides whether
  to retry, nothing is buffered without bound. ``ValueError`` for an empty topic or an
  oversize message.
- ``PubSub.subscribe(topic, maxsize=1024)`` returns a ``Subscription`` at once (the
  network-side subscription is made in the background; publishing to a topic does not need
  a local subscription). A ``Subscription`` is an async iterator of ``Message`` over a
  bounded queue of ``maxsize``: when a consumer falls behind, new messages for it are
  dropped and counted (``Subscription.dropped`` and the ``dchat_p2p_messages_dropped_total``
  metric with ``reason="subscriber_full"``), never buffered without bound. Every message
  the router delivers on the topic reaches every local subscription of that topic; the
  node's own publications are not delivered back to it. ``close()`` (or leaving an
  ``async with``) ends it; iteration then stops. When the host stops, every subscription
  ends (iteration stops).
- ``Message``: ``topic``, ``from_peer`` (the base58 peer id that signed/originated it, as
  GossipSub reports), ``data`` (bytes) and ``seqno`` (the originator's sequence number as
  an int; with ``from_peer`` it identifies the message).
- ``PubSub.peer_id``: this node's base58 peer id (persistent across restarts).
- Messages are signed by the originating host (libp2p strict signing); authenticity of the
  *content* (who wrote it) is the domain's job: bridge attestations and relay envelopes
  carry their own signatures.

``LocalPubSub`` in ``dchat_node.p2p.local`` is a second, in-process implementation of the
same Protocol that connects instances in one process (no network): for unit tests of
domain services. The real one is ``dchat_node.p2p.host.Libp2pHost``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

MAX_MESSAGE_BYTES = 1 << 20
"""Largest payload ``publish`` accepts (GossipSub's own default maximum is 1 MiB)."""


class P2PError(Exception):
    """Base class of the P2P errors."""


class P2PUnavailable(P2PError):
    """The P2P host is not running (not started, stopping, or failed)."""


class QueueFull(P2PError):
    """The bounded queue towards the libp2p thread is full; retry later."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message received on a topic."""

    topic: str
    from_peer: str
    data: bytes
    seqno: int


class Subscription:
    """A bounded, async-iterable stream of ``Message`` for one topic.

    Made by a ``PubSub``; ``deliver`` is called by it (on the subscriber's event loop) for
    each message; ``close`` ends the stream. Drops (queue full) are counted in
    ``dropped`` and reported to ``on_drop``.
    """

    def __init__(
        self,
        topic: str,
        maxsize: int = 1024,
        *,
        on_close: Callable[[Subscription], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.topic = topic
        self.dropped = 0
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize)
        self._closed = False
        self._on_close = on_close
        self._on_drop = on_drop

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        return self._queue.qsize()

    def deliver(self, message: Message) -> bool:
        """Queue ``message``; False (and a drop counted) when the queue is full or closed."""
        if self._closed:
            return False
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(self.topic)
            return False
        return True

    def close(self) -> None:
        """End the stream: a waiting ``__anext__`` returns, later ones stop iteration."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close(self)
        # wake a waiting reader; if the queue is full the reader sees _closed after it
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    async def get(self) -> Message:
        """The next message; raises ``StopAsyncIteration`` once closed and drained."""
        while True:
            if self._closed and self._queue.empty():
                raise StopAsyncIteration
            item = await self._queue.get()
            if item is not None:
                return item

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        return await self.get()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@runtime_checkable
class PubSub(Protocol):
    """Topic-based publish/subscribe over the node's P2P network (see the module doc)."""

    @property
    def peer_id(self) -> str: ...

    async def publish(self, topic: str, data: bytes) -> None: ...

    def subscribe(self, topic: str, *, maxsize: int = 1024) -> Subscription: ...


def check_publish(topic: str, data: bytes) -> None:
    """The argument checks every implementation applies before publishing."""
    if not topic:
        raise ValueError("topic must not be empty")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
