"""Platform package: the node's libp2p host and its publish/subscribe API.

``dchat_node.p2p.pubsub`` is the small, stable interface domains use (relay, bridge);
``dchat_node.p2p.host`` runs the real py-libp2p host in its own trio thread. Domains import
``pubsub`` only; the server builds the host and hands it to them.
"""

from dchat_node.p2p.pubsub import (
    Message,
    P2PError,
    P2PUnavailable,
    PubSub,
    QueueFull,
    Subscription,
)

__all__ = ["Message", "P2PError", "P2PUnavailable", "PubSub", "QueueFull", "Subscription"]
