"""``LocalPubSub``: the ``PubSub`` Protocol between instances in one process, no network.

For unit tests of domain services (relay, bridge) that need several "nodes" exchanging
messages without libp2p: instances sharing one ``LocalNetwork`` see each other's
publications, with the same semantics as the real host (no delivery to the publisher
itself, bounded subscriptions with counted drops, ``P2PUnavailable`` once closed). All
instances must be used from one event loop.
"""

from __future__ import annotations

import itertools

from dchat_node.p2p.pubsub import (
    Message,
    P2PUnavailable,
    Subscription,
    check_publish,
)


class LocalNetwork:
    """The set of ``LocalPubSub`` instances that can hear each other."""

    def __init__(self) -> None:
        self.members: list[LocalPubSub] = []


class LocalPubSub:
    def __init__(self, network: LocalNetwork, peer_id: str) -> None:
        self._network = network
        self._peer_id = peer_id
        self._subs: dict[str, list[Subscription]] = {}
        self._seq = itertools.count(1)
        self._closed = False
        network.members.append(self)

    @property
    def peer_id(self) -> str:
        return self._peer_id

    async def publish(self, topic: str, data: bytes) -> None:
        check_publish(topic, data)
        if self._closed:
            raise P2PUnavailable("local pubsub is closed")
        msg = Message(topic=topic, from_peer=self._peer_id, data=bytes(data), seqno=next(self._seq))
        for member in self._network.members:
            if member is not self and not member._closed:
                for sub in list(member._subs.get(topic, ())):
                    sub.deliver(msg)

    def subscribe(self, topic: str, *, maxsize: int = 1024) -> Subscription:
        if self._closed:
            raise P2PUnavailable("local pubsub is closed")
        sub = Subscription(topic, maxsize, on_close=self._forget)
        self._subs.setdefault(topic, []).append(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs and sub in subs:
            subs.remove(sub)

    def close(self) -> None:
        self._closed = True
        for subs in list(self._subs.values()):
            for sub in list(subs):
                sub.close()
        self._subs.clear()
