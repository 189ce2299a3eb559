"""Services: domain logic behind the API, and the ``Services`` container the app factory
takes (config, storage, metrics, auth, component registry, one object per domain)."""

from __future__ import annotations

from dataclasses import dataclass

from dchat_node.components import ComponentRegistry
from dchat_node.config import NodeConfig
from dchat_node.marketplace.payments import PaymentVerifier
from dchat_node.marketplace.service import Clock, MarketplaceService
from dchat_node.marketplace.store import SqlMarketplaceStore
from dchat_node.observability.metrics import NodeMetrics
from dchat_node.security.auth import Authenticator
from dchat_node.services.chat import ChatService
from dchat_node.storage import Storage


@dataclass(frozen=True)
class Services:
    config: NodeConfig
    storage: Storage
    metrics: NodeMetrics
    auth: Authenticator
    components: ComponentRegistry
    chat: ChatService
    marketplace: MarketplaceService


def build_services(
    config: NodeConfig,
    storage: Storage,
    *,
    metrics: NodeMetrics | None = None,
    components: ComponentRegistry | None = None,
    clock: Clock | None = None,
    payment_verifier: PaymentVerifier | None = None,
) -> Services:
    """``payment_verifier``: the currency chain's payment checks (None: purchases are
    refused with 503). MERGE NOTE: with ``dchat_node.chain`` on main, build its verifier
    here when ``chain.currency_chain_rpc`` is set and none is given."""
    metrics = metrics or NodeMetrics(
        purchase_confirmation_timeout_secs=config.marketplace.payment_confirmation_timeout_secs
    )
    metrics.track_pool(storage.pool_stats)
    metrics.track_queue(storage.queue_stats)
    return Services(
        config=config,
        storage=storage,
        metrics=metrics,
        auth=Authenticator(config.security),
        components=components or ComponentRegistry(),
        chat=ChatService(storage),
        marketplace=MarketplaceService(
            SqlMarketplaceStore(storage),
            config.marketplace,
            metrics.marketplace,
            clock=clock,
            verifier=payment_verifier,
        ),
    )
