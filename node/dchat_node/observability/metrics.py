"""Prometheus metrics of one node process.

Design:
- One ``CollectorRegistry`` per node (``NodeMetrics``), not the global default registry, so
  tests can build many apps in one process. One process per pod: no multiprocess mode.
- Names are fixed by the alert rules of the deployment guide (5.2). The platform owns
  ``dchat_errors_total``, ``observability_errors_total`` and ``database_connections_active``;
  each domain registers its own family through ``register_*`` functions below (called from
  ``NodeMetrics`` so every series exists from the first scrape, which ``increase()`` and
  ``rate()`` need).
- HTTP: ``dchat_http_requests_total{method,route,status}`` and
  ``dchat_http_request_duration_seconds{method,route,status}``, ``route`` being the URL rule
  template (``/api/v1/channels/<int:channel_id>/messages``), never the raw path, so the label
  set stays bounded. Error ratio = ``sum(rate(..._total{status=~"5.."}[5m])) /
  sum(rate(..._total[5m]))``; p99 = ``histogram_quantile(0.99, sum by (le)
  (rate(..._duration_seconds_bucket[5m])))``.
- The process: ``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
  ``process_start_time_seconds``, ``process_open_fds`` (prometheus_client's
  ``ProcessCollector`` in the node's registry): the pod-memory alert and the restart panels
  read them (one node process per pod).
- ``_ms`` histograms use explicit millisecond buckets (the default buckets are seconds).
- Load shedding (``storage.admission``): ``dchat_database_queue_depth`` (queries running
  or waiting), ``dchat_database_queue_limit`` (capacity + ``max_pending_queries``) and
  ``dchat_database_queries_shed_total`` (refused because the queue was full) are read
  from the storage at scrape time (``track_queue``): no cost per query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from dchat_node.storage.admission import QueueStats
from dchat_node.storage.base import PoolStats

MS_BUCKETS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000)
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip

# The names the alert rules use (guide 5.2); tests assert every one is exposed.
ALERT_METRIC_NAMES: tuple[str, ...] = (
    "dchat_errors_total",
    "observability_errors_total",
    "database_connections_active",
    "marketplace_purchase_latency_ms",
    "bridge_finality_proof_timeout_total",
    "accessibility_validation_failures_total",
)


@dataclass(frozen=True)
class MarketplaceMetrics:
    purchase_latency_ms: Histogram
    purchases: Counter  # marketplace_purchases_total{outcome}
    confirmation_seconds: Histogram
    chain_errors: Counter  # marketplace_chain_errors_total


PURCHASE_OUTCOMES: tuple[str, ...] = (
    "created",
    "confirmed",
    "released",
    "refunded",
    "expired",
    "refund_pending",
    "disputed",
    "reorged",
    "rejected",
)


def purchase_latency_buckets(confirmation_timeout_secs: float) -> tuple[float, ...]:
    """Millisecond buckets: ``MS_BUCKETS`` (dense around the alert's 100 ms), then coarser
    ones up to the payment confirmation timeout, which is the last finite bucket."""
    top = confirmation_timeout_secs * 1000
    coarse = (10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000)
    return (*(b for b in (*MS_BUCKETS, *coarse) if b < top), top)


@dataclass(frozen=True)
class BridgeMetrics:
    finality_proof_timeout_total: Counter
    attestations_signed_total: Counter  # label kind: release | refund
    transactions_submitted_total: Counter  # label kind: release | refund
    deposits_observed_total: Counter  # label chain: chat | currency (the source chain)
    transfers_finished_total: Counter  # label outcome: BRIDGE_OUTCOMES
    transfer_latency_seconds: Histogram  # label stage: final | released
    validators_reachable: Gauge
    validator_quorum: Gauge
    paused: Gauge


BRIDGE_CHAINS: tuple[str, ...] = ("chat", "currency")
BRIDGE_OUTCOMES: tuple[str, ...] = ("released", "refunded", "dropped")  # TERMINAL_STATES
BRIDGE_STAGES: tuple[str, ...] = ("final", "released")
BRIDGE_LATENCY_BUCKETS: tuple[float, ...] = (
    1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200,
)  # fmt: skip


@dataclass(frozen=True)
class AccessibilityMetrics:
    validation_failures_total: Counter


def register_marketplace(
    registry: CollectorRegistry, confirmation_timeout_secs: float = 300
) -> MarketplaceMetrics:
    """``marketplace_purchase_latency_ms``: how long the node takes to handle a purchase
    request (create a purchase, submit its payment, move it: deliver, release, dispute,
    refund), measured around the service call, milliseconds; the guide's alert is its p99
    over 100 ms. ``marketplace_purchases_total{outcome}``: purchases reaching an outcome
    (``PURCHASE_OUTCOMES``; every label exists from the first scrape).
    ``marketplace_payment_confirmation_seconds``: creation to confirmed payment.
    ``marketplace_chain_errors_total``: payment checks that failed on the chain's RPC."""
    purchases = Counter(
        "marketplace_purchases",
        "Marketplace purchases by outcome (created, confirmed, released, refunded, expired, "
        "refund_pending, disputed, reorged, rejected).",
        ["outcome"],
        registry=registry,
    )
    for outcome in PURCHASE_OUTCOMES:
        purchases.labels(outcome=outcome)
    return MarketplaceMetrics(
        Histogram(
            "marketplace_purchase_latency_ms",
            "Latency of a marketplace purchase request (create, pay, move), milliseconds.",
            buckets=purchase_latency_buckets(confirmation_timeout_secs),
            registry=registry,
        ),
        purchases,
        Histogram(
            "marketplace_payment_confirmation_seconds",
            "Time from a purchase's creation to its payment confirmed on chain, seconds.",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
            registry=registry,
        ),
        Counter(
            "marketplace_chain_errors",
            "Payment checks that failed because the currency chain's RPC was unavailable.",
            registry=registry,
        ),
    )


def register_bridge(registry: CollectorRegistry) -> BridgeMetrics:
    """The bridge worker's series (``bridge/worker.py``). Counters of what this node did
    (signed, submitted) and of transfers this node's store saw (observed, finished, timed
    out): with a store shared by the pods of one cluster (PostgreSQL) a transfer is counted
    by the pod whose state transition won, once. ``bridge_transfer_latency_seconds{stage}``
    is measured from this node's observation of the deposit: ``final`` when the deposit's
    block is final on the source chain (the chain's finality policy), ``released`` when the
    release is seen executed on the destination. The gauges say what ``/health/bridge``
    says: validators heard from recently (this node's own validator included) against the
    quorum, and whether signing and submitting are paused. Every label exists from the
    first scrape; a node without a bridge exports them at zero."""
    # prometheus_client appends _total to counters; the exposed name is the alert's name.
    metrics = BridgeMetrics(
        Counter(
            "bridge_finality_proof_timeout",
            "Bridge transactions whose finality proof was not gathered in time.",
            registry=registry,
        ),
        Counter(
            "bridge_attestations_signed",
            "Attestations this node's validator key signed, by kind (release, refund).",
            ["kind"],
            registry=registry,
        ),
        Counter(
            "bridge_transactions_submitted",
            "Release and refund transactions this node sent as relayer, by kind.",
            ["kind"],
            registry=registry,
        ),
        Counter(
            "bridge_deposits_observed",
            "Vault deposits (bridge transfers initiated) first recorded by this node's store, "
            "by source chain (chat, currency).",
            ["chain"],
            registry=registry,
        ),
        Counter(
            "bridge_transfers_finished",
            "Bridge transfers that reached a final state in this node's store, by outcome "
            "(released, refunded, dropped).",
            ["outcome"],
            registry=registry,
        ),
        Histogram(
            "bridge_transfer_latency_seconds",
            "Time from this node's observation of a deposit to its block being final on the "
            "source chain (stage final) or to its release executed (stage released), seconds.",
            ["stage"],
            buckets=BRIDGE_LATENCY_BUCKETS,
            registry=registry,
        ),
        Gauge(
            "bridge_validators_reachable",
            "Registered validators heard from recently (heartbeat or signature), this node's "
            "own validator included.",
            registry=registry,
        ),
        Gauge(
            "bridge_validator_quorum",
            "Signatures a release or refund needs (bridge.validator_quorum); 0 without a bridge.",
            registry=registry,
        ),
        Gauge(
            "bridge_paused",
            "1 while the bridge signs and submits nothing (bridge.paused or the paused file).",
            registry=registry,
        ),
    )
    for kind in ("release", "refund"):  # both series exist from the start
        metrics.attestations_signed_total.labels(kind=kind)
        metrics.transactions_submitted_total.labels(kind=kind)
    for chain in BRIDGE_CHAINS:
        metrics.deposits_observed_total.labels(chain=chain)
    for outcome in BRIDGE_OUTCOMES:
        metrics.transfers_finished_total.labels(outcome=outcome)
    for stage in BRIDGE_STAGES:
        metrics.transfer_latency_seconds.labels(stage=stage)
    return metrics


@dataclass(frozen=True)
class RelayMetrics:
    peers_connected: Gauge  # dchat_p2p_peers_connected
    mesh_peers: Gauge  # dchat_p2p_mesh_peers{topic}
    messages_published: Counter  # dchat_p2p_messages_published_total{topic}
    messages_received: Counter  # dchat_p2p_messages_received_total{topic}
    messages_dropped: Counter  # dchat_p2p_messages_dropped_total{reason}
    envelopes: Counter  # dchat_relay_envelopes_total{event}


P2P_DROP_REASONS: tuple[str, ...] = (
    "subscriber_full",  # a local subscription's bounded queue was full
    "handoff_full",  # the libp2p thread -> event loop hand-over was full
    "publish_queue_full",  # the event loop -> libp2p thread publish queue was full
    "gossip_queue_full",  # GossipSub's per-peer outbound queue refused an RPC
)
RELAY_ENVELOPE_EVENTS: tuple[str, ...] = (
    "accepted_api",  # posted by a client to this node, verified, stored
    "accepted_gossip",  # received from a peer, verified, stored
    "duplicate",  # already stored (dedupe by envelope id)
    "invalid_gossip",  # received from a peer and failed verification
    "rejected",  # refused at the API (bad signature, too large, rate limited, ...)
    "gossip_failed",  # stored but could not be handed to the P2P network
    "delivered_fetch",  # returned to its recipient by a fetch
    "delivered_websocket",  # pushed to its recipient over a WebSocket
    "purged",  # deleted after its ttl
)


def register_relay(registry: CollectorRegistry) -> RelayMetrics:
    """The P2P host (``dchat_p2p_*``) and the envelope relay (``dchat_relay_*``). Topic
    labels are the node's own topics (a handful fixed in code), drop reasons and envelope
    events fixed lists: label sets stay bounded."""
    dropped = Counter(
        "dchat_p2p_messages_dropped",
        "P2P messages dropped by a full bounded queue, by reason.",
        ["reason"],
        registry=registry,
    )
    for reason in P2P_DROP_REASONS:
        dropped.labels(reason=reason)
    envelopes = Counter(
        "dchat_relay_envelopes",
        "Relay envelopes by event (accepted_api, accepted_gossip, duplicate, invalid_gossip, "
        "rejected, gossip_failed, delivered_fetch, delivered_websocket, purged).",
        ["event"],
        registry=registry,
    )
    for event in RELAY_ENVELOPE_EVENTS:
        envelopes.labels(event=event)
    return RelayMetrics(
        Gauge(
            "dchat_p2p_peers_connected", "libp2p peers connected to this node.", registry=registry
        ),
        Gauge(
            "dchat_p2p_mesh_peers",
            "GossipSub mesh peers per topic this node subscribes to.",
            ["topic"],
            registry=registry,
        ),
        Counter(
            "dchat_p2p_messages_published",
            "Messages this node published, by topic.",
            ["topic"],
            registry=registry,
        ),
        Counter(
            "dchat_p2p_messages_received",
            "Messages received from peers on subscribed topics, by topic.",
            ["topic"],
            registry=registry,
        ),
        dropped,
        envelopes,
    )


def register_accessibility(registry: CollectorRegistry) -> AccessibilityMetrics:
    return AccessibilityMetrics(
        Counter(
            "accessibility_validation_failures",
            "UI elements that failed WCAG / keyboard validation.",
            registry=registry,
        )
    )


class _QueueCollector(Collector):
    """The database queue's depth, limit and shed count, read at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], QueueStats] | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(QueueStats(0, 0, 0)))

    def collect(self) -> Iterator[Metric]:
        stats = self.source() if self.source is not None else QueueStats(0, 0, 0)
        return iter(self._families(stats))

    @staticmethod
    def _families(stats: QueueStats) -> list[Metric]:
        return [
            GaugeMetricFamily(
                "dchat_database_queue_depth",
                "Database queries admitted and not finished (running + waiting).",
                value=stats.depth,
            ),
            GaugeMetricFamily(
                "dchat_database_queue_limit",
                "Database queue capacity: queries running at once + database.max_pending_queries.",
                value=stats.limit,
            ),
            CounterMetricFamily(
                "dchat_database_queries_shed",
                "Database queries refused because the queue was full (answered 503).",
                value=stats.shed_total,
            ),
        ]


class NodeMetrics:
    """Every metric of the node, in its own registry."""

    def __init__(self, *, purchase_confirmation_timeout_secs: float = 300) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.errors = Counter(
            "dchat_errors",
            "Errors by component (5xx responses, unhandled exceptions, failed background work).",
            ["component"],
            registry=r,
        )
        self.observability_errors = Counter(
            "observability_errors",
            "Failures of the observability pipeline itself (trace export, metrics push, logs).",
            ["kind"],
            registry=r,
        )
        self.db_connections_active = Gauge(
            "database_connections_active",
            "Database connections in use (checked out of the pool).",
            registry=r,
        )
        self.db_connections_open = Gauge(
            "database_connections_open", "Database connections open.", registry=r
        )
        self.db_connections_max = Gauge(
            "database_connections_max", "Database pool capacity.", registry=r
        )
        self.http_requests = Counter(
            "dchat_http_requests",
            "HTTP requests served by the API, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "dchat_http_request_duration_seconds",
            "HTTP request latency by route template and status, seconds.",
            ["method", "route", "status"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "dchat_http_requests_in_flight", "API requests being handled now.", registry=r
        )
        # a plain counter the event loop bumps (one thread: no lock per request), read by
        # the gauge at scrape time
        self.in_flight = 0
        self.http_in_flight.set_function(lambda: self.in_flight)
        self.draining = Gauge(
            "dchat_draining", "1 while the node drains after SIGTERM.", registry=r
        )
        self.marketplace = register_marketplace(r, purchase_confirmation_timeout_secs)
        self.bridge = register_bridge(r)
        self.accessibility = register_accessibility(r)
        self.relay = register_relay(r)
        self._pool_source: Callable[[], PoolStats] | None = None
        self._queue = _QueueCollector()
        r.register(self._queue)
        # label children cached per (method, route template, status): a bounded set
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Pre-create the label sets the SLO queries divide by.
        self.errors.labels(component="api")

    def track_pool(self, source: Callable[[], PoolStats]) -> None:
        self._pool_source = source

    def track_queue(self, source: Callable[[], QueueStats]) -> None:
        self._queue.source = source

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            code = str(status)
            children = (
                self.http_requests.labels(method, route, code),
                self.http_duration.labels(method, route, code),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status >= 500:
            self.errors.labels(component="api").inc()

    def refresh(self) -> None:
        """Update gauges read from other components (called before each scrape/push)."""
        if self._pool_source is not None:
            try:
                stats = self._pool_source()
            except Exception:
                self.observability_errors.labels(kind="pool_stats").inc()
            else:
                self.db_connections_active.set(stats.active)
                self.db_connections_open.set(stats.size)
                self.db_connections_max.set(stats.max_size)

    def render(self) -> tuple[bytes, str]:
        self.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
