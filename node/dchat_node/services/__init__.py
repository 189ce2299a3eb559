"""The ``Services`` container the app factory takes (config, storage, metrics, auth,
component registry, one service per domain) and the domain errors (``errors``). Each
domain's service, store and blueprint live in its own package (``dchat_node.chat``,
``dchat_node.accessibility``, ``dchat_node.marketplace``, ``dchat_node.relay``,
``dchat_node.bridge``); this container is the one place that imports them all."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dchat_node.accessibility.service import AccessibilityService
from dchat_node.accessibility.store import SqlPreferencesStore
from dchat_node.bridge.service import BridgeService
from dchat_node.bridge.store import SqlBridgeStore
from dchat_node.chat.service import ChatService
from dchat_node.chat.store import SqlChatStore
from dchat_node.components import ComponentRegistry
from dchat_node.config import NodeConfig
from dchat_node.health import DatabaseComponent
from dchat_node.marketplace.payments import PaymentVerifier
from dchat_node.marketplace.service import Clock, MarketplaceService
from dchat_node.marketplace.store import SqlMarketplaceStore
from dchat_node.observability.metrics import NodeMetrics
from dchat_node.p2p.pubsub import PubSub
from dchat_node.relay.service import RelayService
from dchat_node.relay.store import SqlRelayStore
from dchat_node.security.auth import Authenticator
from dchat_node.storage import Storage


@dataclass(frozen=True)
class Services:
    config: NodeConfig
    storage: Storage
    metrics: NodeMetrics
    auth: Authenticator
    components: ComponentRegistry
    chat: ChatService
    accessibility: AccessibilityService
    marketplace: MarketplaceService
    bridge: BridgeService
    relay: RelayService


def build_services(
    config: NodeConfig,
    storage: Storage,
    *,
    metrics: NodeMetrics | None = None,
    components: ComponentRegistry | None = None,
    clock: Clock | None = None,
    payment_verifier: PaymentVerifier | None = None,
    pubsub: PubSub | None = None,
    p2p_status: Callable[[], Mapping[str, Any]] | None = None,
) -> Services:
    """``payment_verifier``: the currency chain's payment checks (None: purchases are
    refused with 503); the server builds it from ``chain.currency_chain_rpc``. ``pubsub``: the
    P2P network the relay gossips on (None: the relay stores and serves locally only) and
    ``p2p_status`` its status snapshot; the server builds both from ``[relay]``."""
    metrics = metrics or NodeMetrics(
        purchase_confirmation_timeout_secs=config.marketplace.payment_confirmation_timeout_secs
    )
    metrics.track_pool(storage.pool_stats)
    metrics.track_queue(storage.queue_stats)
    components = components or ComponentRegistry()
    if components.get(DatabaseComponent.name) is None:
        components.register(DatabaseComponent(storage))
    return Services(
        config=config,
        storage=storage,
        metrics=metrics,
        auth=Authenticator(config.security),
        components=components,
        chat=ChatService(SqlChatStore(storage)),
        accessibility=AccessibilityService(
            config.accessibility, SqlPreferencesStore(storage), metrics.accessibility
        ),
        marketplace=MarketplaceService(
            SqlMarketplaceStore(storage),
            config.marketplace,
            metrics.marketplace,
            clock=clock,
            verifier=payment_verifier,
        ),
        bridge=BridgeService(SqlBridgeStore(storage), config.bridge.validator_quorum),
        relay=RelayService(
            SqlRelayStore(storage),
            config.relay,
            metrics.relay,
            pubsub=pubsub,
            p2p_status=p2p_status,
        ),
    )
