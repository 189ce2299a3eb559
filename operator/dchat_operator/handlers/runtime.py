"""Operator-wide kopf handlers: login, startup, cleanup, liveness probe.

Design:
- ``OperatorMemo`` is the typed memo (kopf shallow-copies the memo per watched object, so the
  mutable ``Runtime`` it points to is shared by all of them and filled at startup).
- ``on.login`` gives kopf the credentials the operator's own client uses (same kubeconfig or
  service account), so kopf's watches and the controllers act as one identity.
- ``on.startup`` configures kopf (standalone: kopf's peering pauses every replica of the same
  priority, so it is no leader election), creates the API client, one ``Engine`` per
  controller, the periodic resync task and, unless disabled, the ``LeaderElector``: the
  engines start paused and run only while this replica holds the Lease. Watches run in every
  replica, so a standby's view is current when it takes over.
- The periodic resync is a plain asyncio task, not ``kopf.timer``: kopf puts a finalizer on
  every object that has timers, which would make deleting a DchatCluster depend on the
  operator running. It only triggers keys; the engines' workers do the work, so a hung
  reconcile never stops the resync or the probe.
- ``on.probe`` (liveness) fails when the resync task or an engine's workers died or no resync
  ran for three intervals; it reports leadership and queue sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import kopf

from dchat_operator.clients.kube import Kube, credentials, load_configuration
from dchat_operator.clients.leader import LeaderElector, LeaseConfig
from dchat_operator.clients.metrics import LEADER, RESYNCS, serve
from dchat_operator.controllers.backup import BackupController, BackupState
from dchat_operator.controllers.cluster import ClusterController, ClusterState
from dchat_operator.controllers.engine import Engine
from dchat_operator.controllers.restore import (
    BootstrapController,
    RestoreController,
    RestoreState,
)
from dchat_operator.controllers.schedule import ScheduleController, ScheduleState
from dchat_operator.handlers.options import Options

log = logging.getLogger("dchat_operator.handlers")


@dataclass
class Runtime:
    """What startup creates; shared by every per-object copy of the memo."""

    kube: Kube | None = None
    clusters: Engine[ClusterState] | None = None
    cluster_controller: ClusterController | None = None
    backups: Engine[BackupState] | None = None
    backup_controller: BackupController | None = None
    schedules: Engine[ScheduleState] | None = None
    schedule_controller: ScheduleController | None = None
    restores: Engine[RestoreState] | None = None
    restore_controller: RestoreController | None = None
    bootstraps: Engine[RestoreState] | None = None
    bootstrap_controller: BootstrapController | None = None
    elector: LeaderElector | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    last_resync: float = field(default_factory=time.time)
    metrics_started: bool = False

    def engines(self) -> list[Engine[Any]]:
        engines = (self.clusters, self.backups, self.schedules, self.restores, self.bootstraps)
        return [e for e in engines if e is not None]


@dataclass
class OperatorMemo:
    options: Options = field(default_factory=Options.from_env)
    runtime: Runtime = field(default_factory=Runtime)


def memo_of(memo: Any) -> OperatorMemo:
    """The typed memo; ``kopf run`` without our CLI passes a plain ``kopf.Memo``."""
    if isinstance(memo, OperatorMemo):
        return memo
    found = getattr(memo, "dchat", None)
    if not isinstance(found, OperatorMemo):
        found = OperatorMemo()
        memo.dchat = found
    return found


def cluster_engine(memo: Any) -> Engine[ClusterState]:
    engine = memo_of(memo).runtime.clusters
    if engine is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return engine


def _backup_engines(
    runtime: Runtime, kube: Kube, options: Options, clusters: Engine[ClusterState]
) -> None:
    """The backup, schedule, restore and bootstrap controllers, each on its own engine."""

    def wake(key: tuple[str, str]) -> None:
        clusters.trigger(key, "child")

    few = max(1, options.workers // 4)
    timeout = options.reconcile_timeout
    runtime.schedule_controller = ScheduleController(kube)
    runtime.schedules = Engine(runtime.schedule_controller, workers=few, reconcile_timeout=timeout)
    runtime.restore_controller = RestoreController(kube, wake=wake)
    runtime.restores = Engine(runtime.restore_controller, workers=few, reconcile_timeout=timeout)
    runtime.bootstrap_controller = BootstrapController(kube, wake=wake)
    runtime.bootstraps = Engine(
        runtime.bootstrap_controller, workers=few, reconcile_timeout=timeout
    )


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(**credentials(await load_configuration()))


BATCH_WINDOW_SECONDS = 0.01


async def _resync_loop(runtime: Runtime, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        count = sum(engine.resync() for engine in runtime.engines())
        RESYNCS.inc()
        runtime.last_resync = time.time()
        log.debug("resync triggered %d objects", count)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    typed = memo_of(memo)
    options, runtime = typed.options, typed.runtime
    settings.peering.standalone = True
    settings.watching.server_timeout = options.watch_server_timeout
    settings.watching.client_timeout = options.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.WARNING
    # kopf waits this long after each watch event for a newer one of the same object before
    # calling the handler (default 0.1 s); ours only route to the engine, which coalesces
    # triggers itself, so the wait is pure latency on every hop of a rollout
    settings.queueing.batch_window = BATCH_WINDOW_SECONDS
    if options.metrics_port and not runtime.metrics_started:
        serve(options.metrics_port)
        runtime.metrics_started = True
    kube = await Kube.connect(request_timeout=options.request_timeout)
    controller = ClusterController(kube, policy=options.policy)
    engine: Engine[ClusterState] = Engine(
        controller, workers=options.workers, reconcile_timeout=options.reconcile_timeout
    )
    runtime.kube, runtime.cluster_controller, runtime.clusters = kube, controller, engine
    runtime.backup_controller = BackupController(kube)
    runtime.backups = Engine(
        runtime.backup_controller,
        workers=max(1, options.workers // 2),
        reconcile_timeout=options.reconcile_timeout,
    )
    _backup_engines(runtime, kube, options, engine)
    runtime.last_resync = time.time()
    if options.leader_election:

        def lead() -> None:
            for e in runtime.engines():
                e.resume()

        def follow() -> None:
            for e in runtime.engines():
                e.pause()

        follow()
        identity = f"{os.environ.get('HOSTNAME', 'dchat-operator')}-{uuid.uuid4().hex[:8]}"
        runtime.elector = LeaderElector(
            kube,
            LeaseConfig(
                namespace=options.lease_namespace,
                name=options.lease_name,
                lease_duration=options.lease_duration,
                renew_deadline=options.lease_duration * 2 / 3,
                retry_period=max(0.5, options.lease_duration / 7.5),
            ),
            identity,
            on_started_leading=lead,
            on_stopped_leading=follow,
        )
        runtime.tasks.append(asyncio.create_task(runtime.elector.run(), name="dchat-leader"))
    else:
        LEADER.set(1)
    for e in runtime.engines():
        e.start()
    runtime.tasks.append(
        asyncio.create_task(_resync_loop(runtime, options.resync_seconds), name="dchat-resync")
    )
    # What exists now (modules, kopf, the models and clients) lives as long as the process:
    # out of the cyclic collector's sight, its full collections scan only what came later
    gc.collect()
    gc.freeze()


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    runtime = memo_of(memo).runtime
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    runtime.tasks = []
    for engine in runtime.engines():
        await engine.stop()
    if runtime.elector is not None:
        await runtime.elector.release()
    if runtime.cluster_controller is not None:
        await runtime.cluster_controller.close()
    if runtime.kube is not None:
        await runtime.kube.close()


@kopf.on.probe(id="resync")
def resync_probe(memo: Any, **_: Any) -> dict[str, Any]:
    """Liveness: fails when the resync loop or a worker stopped, or no resync in 3 intervals."""
    typed = memo_of(memo)
    runtime = typed.runtime
    for task in runtime.tasks:
        if task.done():
            raise RuntimeError(f"the {task.get_name()} task has stopped")
    for engine in runtime.engines():
        if not engine.healthy():
            raise RuntimeError(f"the {engine.kind} workers have stopped")
    age = time.time() - runtime.last_resync
    limit = 3 * typed.options.resync_seconds + 60
    if age > limit:
        raise RuntimeError(f"no resync for {age:.0f} s")
    clusters = runtime.clusters
    return {
        "seconds_since_resync": round(age, 1),
        "clusters": len(clusters.keys) if clusters else 0,
        "leader": runtime.elector.leading if runtime.elector else True,
    }
