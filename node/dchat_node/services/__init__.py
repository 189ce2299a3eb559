"""The ``Services`` container the app factory takes (config, storage, metrics, auth,
component registry, one service per domain) and the domain errors (``errors``). Each
domain's service, store and blueprint live in its own package (``dchat_node.chat``,
``dchat_node.accessibility``); this container is the one place that imports them all."""

from __future__ import annotations

from dataclasses import dataclass

from dchat_node.accessibility.service import AccessibilityService
from dchat_node.accessibility.store import SqlPreferencesStore
from dchat_node.chat.service import ChatService
from dchat_node.chat.store import SqlChatStore
from dchat_node.components import ComponentRegistry
from dchat_node.config import NodeConfig
from dchat_node.observability.metrics import NodeMetrics
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
        chat=ChatService(SqlChatStore(storage)),
        accessibility=AccessibilityService(
            config.accessibility, SqlPreferencesStore(storage), metrics.accessibility
        ),
    )
