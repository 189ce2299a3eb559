"""The node process: two hypercorn servers in one asyncio loop, signals, graceful drain.

Design:
- ``run_node(config)``: preflight (TLS files, JWT key) -> open storage -> apply migrations
  (unless told not to) -> build services and the two apps -> serve the API app on
  ``server.host:api_port`` (TLS when enabled) and the ops app on ``metrics_port`` with
  ``hypercorn.asyncio.serve`` -> on SIGTERM/SIGINT drain -> close background tasks, storage
  and the tracer.
- Drain, in order: ``/ready`` answers 503 at once (``NodeState.draining``); the API
  server's shutdown trigger fires, so hypercorn closes its listener (new connections are
  refused) and waits up to ``server.shutdown_grace_secs`` for in-flight requests to
  finish; only then does the ops server stop (so probes can watch the drain), then
  background tasks are cancelled and the pool is closed. A second signal exits at once
  (status 1) without waiting for in-flight requests.
  ``shutdown_grace_secs`` must stay below the pod's terminationGracePeriodSeconds (30 s).
- One process per pod: one Prometheus registry, one P2P identity. The libp2p host
  (``relay.enabled``) runs in its own trio thread (``p2p.host``), started after the apps
  are built and stopped after the servers and background tasks. Blocking helpers
  (``asyncio.to_thread``) use a pool of ``server.worker_threads`` threads.
- Just before serving, the start-up heap is frozen (``lifecycle.freeze_startup_heap``): the
  garbage collector stops rescanning the objects the process keeps until exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HyperConfig
from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.bridge.service import check_bridge
from dchat_node.config import ConfigError, ConfigProblem, NodeConfig
from dchat_node.health import ChainComponent
from dchat_node.lifecycle import NodeState, freeze_startup_heap
from dchat_node.marketplace.service import check_marketplace
from dchat_node.marketplace.worker import MarketplaceWorker
from dchat_node.observability.metrics import NodeMetrics
from dchat_node.observability.push import push_loop
from dchat_node.observability.tracing import setup_tracing
from dchat_node.p2p.pubsub import P2PUnavailable
from dchat_node.relay.service import RelayComponent
from dchat_node.security.auth import check_keys
from dchat_node.security.tls import check_tls
from dchat_node.services import Services, build_services

if TYPE_CHECKING:
    from dchat_node.bridge.runtime import BridgeRuntime
    from dchat_node.chain import ChainClient
    from dchat_node.marketplace.payments import PaymentVerifier
    from dchat_node.p2p.host import Libp2pHost
from dchat_node.storage import Storage, StorageError, create_storage
from dchat_node.storage.sqlite import sqlite_path

log = logging.getLogger("dchat_node.server")

AppHook = Callable[[Quart, Quart, Services], None]
OPS_GRACE_SECS = 2.0
EXIT_FORCED = 1


def preflight(config: NodeConfig) -> list[ConfigProblem]:
    """Checks that need the filesystem (not just the config model)."""
    return (
        check_tls(config.security)
        + check_keys(config.security)
        + check_marketplace(config)
        + check_bridge(config)
    )


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(config: NodeConfig, *, api: bool) -> HyperConfig:
    s = config.server
    hc = HyperConfig()
    hc.bind = [_bind(s.host, s.api_port if api else s.metrics_port)]
    hc.graceful_timeout = s.shutdown_grace_secs if api else OPS_GRACE_SECS
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    hc.keep_alive_timeout = 5
    if api and config.security.tls_enabled:
        hc.certfile = config.security.tls_cert_path
        hc.keyfile = config.security.tls_key_path
    return hc


async def _health_loop(services: Services, interval: float) -> None:
    """Background dependency check: a failing database is logged and counted."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(services.storage.ping(), timeout=min(interval, 10))
        except (StorageError, TimeoutError, OSError) as exc:
            services.metrics.errors.labels(component="storage").inc()
            if not failing:
                log.error("database health check failed: %s", type(exc).__name__)
            failing = True
        else:
            if failing:
                log.info("database health check recovered")
            failing = False


async def prepare_storage(config: NodeConfig, *, migrate: bool) -> Storage:
    storage = create_storage(config.database)
    await storage.open()
    try:
        if migrate:
            applied = await storage.migrate()
            if applied:
                log.info(
                    "applied migrations %s",
                    [m.version for m in applied],
                    extra={"event": "migrate"},
                )
        else:
            pending = await storage.pending_migrations()
            if pending:
                log.warning(
                    "%d migrations pending and --no-migrate given: /ready stays 503 until "
                    "`dchat migrate` runs",
                    len(pending),
                )
    except BaseException:
        await storage.close()
        raise
    return storage


class _Drain:
    """The two servers' shutdown triggers and the signals that pull them.

    The first SIGTERM/SIGINT starts the drain by stopping the API server; whichever
    server stops, for any reason, drains the node and stops the other one.
    """

    def __init__(self, config: NodeConfig, state: NodeState, metrics: NodeMetrics) -> None:
        self.config = config
        self.state = state
        self.metrics = metrics
        self.api_stop = asyncio.Event()
        self.ops_stop = asyncio.Event()

    def on_signal(self, name: str) -> None:
        if not self.state.draining:
            log.info(
                "%s received: draining (grace %.1f s)",
                name,
                self.config.server.shutdown_grace_secs,
                extra={"event": "drain_start"},
            )
            self.state.begin_drain()
            self.metrics.draining.set(1)
            self.api_stop.set()
        else:
            # the operator (or a human pressing Ctrl-C twice) wants out now: in-flight
            # requests are abandoned; SQLite/PostgreSQL transactions are atomic either way
            log.warning("%s received again: exiting without waiting for the drain", name)
            logging.shutdown()
            os._exit(EXIT_FORCED)

    async def serve(self, api: Quart, ops: Quart) -> None:
        """Serve both apps until both have stopped; re-raise the first failure."""
        results = await asyncio.gather(
            self._serve_api(api), self._serve_ops(ops), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _serve_api(self, api: Quart) -> None:
        try:
            await serve(
                api, hypercorn_config(self.config, api=True), shutdown_trigger=self.api_stop.wait
            )
        finally:
            self.state.begin_drain()
            self.ops_stop.set()

    async def _serve_ops(self, ops: Quart) -> None:
        try:
            await serve(
                ops, hypercorn_config(self.config, api=False), shutdown_trigger=self.ops_stop.wait
            )
        finally:
            self.state.begin_drain()
            self.api_stop.set()


def _start_background(
    loop: asyncio.AbstractEventLoop, services: Services, metrics: NodeMetrics, config: NodeConfig
) -> list[asyncio.Task[None]]:
    """The health loop, the marketplace worker (payment checks, expiries, automatic
    release: only when payments are enabled, i.e. a currency chain, an escrow address and a
    chain id are configured; without them no purchase can be created, so there is nothing
    to advance and no query is made) and, when a push gateway is configured, the metrics
    push loop; the relay's loop (gossip in and out when the P2P host runs, purge of expired
    envelopes always)."""
    background: list[asyncio.Task[None]] = [
        loop.create_task(_health_loop(services, config.observability.health_check_interval_secs)),
    ]
    if services.marketplace.payments_enabled:
        background.append(loop.create_task(MarketplaceWorker(services.marketplace, metrics).run()))
    background.append(loop.create_task(services.relay.run()))
    obs = config.observability
    if obs.prometheus_pushgateway:
        background.append(
            loop.create_task(
                push_loop(metrics, obs.prometheus_pushgateway, obs.prometheus_push_interval_secs)
            )
        )
    return background


def _log_start(config: NodeConfig, storage: Storage) -> None:
    frozen = freeze_startup_heap()
    log.debug("start-up heap frozen: %d objects", frozen)
    log.info(
        "dchat node starting: api %s, ops %s, storage %s",
        _bind(config.server.host, config.server.api_port),
        _bind(config.server.host, config.server.metrics_port),
        storage.engine,
        extra={"event": "start"},
    )


async def _close(
    loop: asyncio.AbstractEventLoop,
    signals: tuple[signal.Signals, ...],
    background: list[asyncio.Task[None]],
    storage: Storage,
    provider: TracerProvider | None,
) -> None:
    """Release what start-up acquired, in this order: signal handlers, background tasks,
    storage, then the tracer."""
    for sig in signals:
        loop.remove_signal_handler(sig)
    for task in background:
        task.cancel()
    for task in background:
        with suppress(asyncio.CancelledError):
            await task
    await storage.close()
    if provider is not None:
        await asyncio.to_thread(provider.shutdown)


async def run_node(
    config: NodeConfig,
    *,
    migrate: bool = True,
    app_hook: AppHook | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain. Raises ConfigError / StorageError on
    startup failure and OSError when a port cannot be bound."""
    problems = preflight(config)
    if problems:
        raise ConfigError(problems)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=config.server.worker_threads))
    metrics = NodeMetrics(
        purchase_confirmation_timeout_secs=config.marketplace.payment_confirmation_timeout_secs
    )
    provider = setup_tracing(config.observability, metrics.observability_errors)
    storage = await prepare_storage(config, migrate=migrate)
    chain, verifier = _payment_verifier(config)
    host, p2p_failure = _p2p_host(config, metrics)
    p2p_status = _p2p_status(host, p2p_failure)
    services = build_services(
        config,
        storage,
        metrics=metrics,
        payment_verifier=verifier,
        pubsub=host,
        p2p_status=p2p_status,
    )
    chain_clients = _chain_clients(config, chain)
    services.components.register(ChainComponent(chain_clients))
    if config.relay.enabled:
        services.components.register(RelayComponent(services.relay, config.relay))
    state = NodeState()
    api = create_api_app(services, provider)
    ops = create_ops_app(services, state)
    if app_hook is not None:
        app_hook(api, ops, services)

    drain = _Drain(config, state, metrics)
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, drain.on_signal, sig.name)
    background = _start_background(loop, services, metrics, config)
    if host is not None:
        background += await _start_p2p(loop, host, config, metrics)
    bridge = _start_bridge(loop, services, config, background, host)
    _log_start(config, storage)
    try:
        await drain.serve(api, ops)
        log.info("servers stopped; closing background tasks and storage", extra={"event": "stop"})
    finally:
        await _close(loop, signals, background, storage, provider)
        if host is not None:
            await host.stop()
        for client in chain_clients.values():  # the currency chain's too
            await client.aclose()
        if bridge is not None:
            await bridge.aclose()
        log.info("dchat node stopped", extra={"event": "stopped"})


def _p2p_status(
    host: Libp2pHost | None, failure: str | None
) -> Callable[[], Mapping[str, Any]] | None:
    """What /health/relay reports: the running host's status, or why it is not running."""
    if host is not None:
        return host.status
    if failure is not None:
        failed = {"running": False, "failure": failure}
        return lambda: failed
    return None


def p2p_key_path(config: NodeConfig) -> Path:
    """``relay.identity_key_path``, else ``p2p/identity.key`` beside the SQLite file (the
    data volume), else ``/data/p2p/identity.key``."""
    if config.relay.identity_key_path:
        return Path(config.relay.identity_key_path)
    if config.database.engine == "sqlite":
        return Path(sqlite_path(config.database.url)).parent / "p2p" / "identity.key"
    return Path("/data/p2p/identity.key")


def _p2p_host(config: NodeConfig, metrics: NodeMetrics) -> tuple[Libp2pHost | None, str | None]:
    """The libp2p host (not started) when ``relay.enabled``; (None, why) when its identity
    key cannot be read or written (logged, shown by /health/relay; the node serves without
    the relay); (None, None) when disabled."""
    if not config.relay.enabled:
        return None, None
    # py-libp2p (and what it pulls in: trio, httpx, ...) is loaded only when the relay runs
    from dchat_node.p2p.host import GossipSettings, HostSettings, Libp2pHost

    r = config.relay
    settings = HostSettings(
        key_path=p2p_key_path(config),
        listen_host=config.server.host,
        port=config.server.p2p_port,
        bootstrap=tuple(r.bootstrap_nodes),
        announce=tuple(r.external_addresses),
        gossip=GossipSettings(
            degree=r.gossip_degree,
            degree_low=r.gossip_degree_low,
            degree_high=r.gossip_degree_high,
            heartbeat_secs=r.gossip_heartbeat_secs,
            max_messages_per_peer_per_sec=r.gossip_max_messages_per_peer_per_sec,
        ),
    )
    m = metrics.relay
    try:
        host = Libp2pHost(
            settings,
            on_drop=lambda reason: m.messages_dropped.labels(reason=reason).inc(),
            on_published=lambda topic: m.messages_published.labels(topic=topic).inc(),
            on_received=lambda topic: m.messages_received.labels(topic=topic).inc(),
        )
    except (OSError, P2PUnavailable) as exc:
        why = f"cannot load the P2P identity key {settings.key_path}: {exc}"
        log.error("relay disabled: %s", why)
        metrics.errors.labels(component="relay").inc()
        return None, why
    return host, None


async def _p2p_gauges(host: Libp2pHost, metrics: NodeMetrics) -> None:
    """Copy the host's snapshot into the peer and mesh gauges every second."""
    m = metrics.relay
    while True:
        status = host.status()
        m.peers_connected.set(len(status.get("connected_peers", [])))
        for topic, size in status.get("mesh", {}).items():
            m.mesh_peers.labels(topic=topic).set(size)
        await asyncio.sleep(1)


async def _start_p2p(
    loop: asyncio.AbstractEventLoop, host: Libp2pHost, config: NodeConfig, metrics: NodeMetrics
) -> list[asyncio.Task[None]]:
    """Start the host (a failure is logged and shown by /health/relay; the node still
    serves), its gauges, DNS discovery when configured, and the relay's gossip/purge loop."""
    try:
        await host.start()
    except P2PUnavailable as exc:
        log.error("P2P host not started: %s", exc, extra={"event": "p2p_failed"})
        metrics.errors.labels(component="relay").inc()
    tasks = [loop.create_task(_p2p_gauges(host, metrics))]
    if config.relay.bootstrap_dns:
        from dchat_node.p2p.discovery import DnsDiscovery

        discovery = DnsDiscovery(
            host,
            config.relay.bootstrap_dns,
            info_port=config.server.metrics_port,
            p2p_port=config.server.p2p_port,
            interval=config.relay.bootstrap_dns_interval_secs,
        )
        tasks.append(loop.create_task(discovery.run()))
    return tasks


def _start_bridge(
    loop: asyncio.AbstractEventLoop,
    services: Services,
    config: NodeConfig,
    background: list[asyncio.Task[None]],
    host: Libp2pHost | None,
) -> BridgeRuntime | None:
    """When both vault addresses are set: the bridge runtime (gossiping on the P2P host;
    without one, ``relay.enabled`` false, it observes and signs/submits only with what it
    holds itself) as the ``bridge`` component of ``/health/bridge``, and its task."""
    if not config.bridge.enabled:
        return None
    from dchat_node.bridge.runtime import BridgeRuntime
    from dchat_node.bridge.store import SqlBridgeStore

    runtime = BridgeRuntime(
        config,
        SqlBridgeStore(services.storage),
        services.metrics.bridge,
        host,
        on_chains=services.bridge.set_chains,
    )
    services.components.register(runtime)
    background.append(loop.create_task(runtime.run()))
    return runtime


def _chain_clients(config: NodeConfig, currency: ChainClient | None) -> dict[str, ChainClient]:
    """The clients ``/health/chain`` asks: the payment verifier's currency chain client and,
    when ``chain.chat_chain_rpc`` is set, one for the chat chain; all closed at shutdown."""
    clients = {} if currency is None else {"currency": currency}
    if config.chain.chat_chain_rpc:
        from dchat_node.chain import ChainClient

        clients["chat"] = ChainClient.from_config(config.chain, "chat")
    return clients


def _payment_verifier(config: NodeConfig) -> tuple[ChainClient | None, PaymentVerifier | None]:
    """The currency chain's payment verifier when ``chain.currency_chain_rpc`` is set (else
    purchases are refused with 503 and say why); its client is closed at shutdown."""
    if not config.chain.currency_chain_rpc:
        return None, None
    from dchat_node.chain import ChainClient, FinalityPolicy, Web3PaymentVerifier

    client = ChainClient.from_config(config.chain, "currency")
    policy = FinalityPolicy.from_config(config.chain, "currency")
    return client, Web3PaymentVerifier(client, policy)
