"""Services: domain logic behind the API, and the ``Services`` container the app factory
takes (config, storage, metrics, auth, component registry, one object per domain)."""

from __future__ import annotations

from dataclasses import dataclass

from dchat_node.accessibility.service import AccessibilityService
from dchat_node.accessibility.store import SqlPreferencesStore
from dchat_node.components import ComponentRegistry
from dchat_node.config import NodeConfig
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
    accessibility: AccessibilityService


def build_services(
    config: NodeConfig,
    storage: Storage,
    *,
    metrics: NodeMetrics | None = None,
    components: ComponentRegistry | None = None,
) -> Services:
    metrics = metrics or NodeMetrics()
    metrics.track_pool(storage.pool_stats)
    metrics.track_queue(storage.queue_stats)
    return Services(
        config=config,
        storage=storage,
        metrics=metrics,
        auth=Authenticator(config.security),
        components=components or ComponentRegistry(),
        chat=ChatService(storage),
        accessibility=AccessibilityService(
            config.accessibility, SqlPreferencesStore(storage), metrics.accessibility
        ),
    )
