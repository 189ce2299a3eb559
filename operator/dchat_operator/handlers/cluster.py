"""kopf handlers for DchatCluster and the Deployments it owns.

Design:
- ``on.startup`` configures kopf (standalone, watch timeouts, no progress annotations needed)
  and creates the one ``ClusterController`` (kept in the operator memo), plus the periodic
  resync task. ``on.cleanup`` stops both.
- ``on.event`` for DchatCluster feeds the controller's body cache and reconciles when the
  generation is new (or the last reconcile was not clean); status-only events (our own
  status writes) do not trigger work.
- ``on.event`` for Deployments labelled ``app.kubernetes.io/managed-by=dchat-operator``
  reconciles the owning cluster: status follows rollouts at once, and a deleted or hand-edited
  Deployment is restored immediately.
- The periodic resync is a plain asyncio task, not ``kopf.timer``: kopf puts a finalizer on
  every object that has timers, which would make deleting a DchatCluster depend on the
  operator running. The resync re-reconciles every known cluster; on an unchanged cluster it
  makes only reads.
- ``on.probe`` reports the reconcile loop's liveness (the last completed resync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from dchat_operator.api import constants as c
from dchat_operator.clients.kube import Kube
from dchat_operator.clients.metrics import RESYNCS, serve
from dchat_operator.controllers.cluster import ClusterController, plain
from dchat_operator.handlers.options import Options

log = logging.getLogger("dchat_operator.handlers")


def _options(memo: Any) -> Options:
    options = getattr(memo, "options", None)
    return options if isinstance(options, Options) else Options.from_env()


async def _resync_loop(controller: ClusterController, every: float, memo: Any) -> None:
    while True:
        await asyncio.sleep(every)
        started = time.monotonic()
        count = await controller.resync_all()
        RESYNCS.inc()
        memo.last_resync = time.time()
        log.debug("resync of %d clusters took %.3f s", count, time.monotonic() - started)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    options = _options(memo)
    settings.peering.standalone = True
    settings.watching.server_timeout = options.watch_server_timeout
    settings.watching.client_timeout = options.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = logging.WARNING
    if options.metrics_port and not getattr(memo, "metrics_started", False):
        serve(options.metrics_port)
        memo.metrics_started = True
    kube = await Kube.connect()
    controller = ClusterController(kube)
    memo.controller = controller
    memo.last_resync = time.time()
    memo.resync_seconds = options.resync_seconds
    memo.resync_task = asyncio.create_task(
        _resync_loop(controller, options.resync_seconds, memo), name="dchat-resync"
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "resync_task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    controller = getattr(memo, "controller", None)
    if isinstance(controller, ClusterController):
        await controller.kube.close()


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def cluster_event(
    type: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    controller: ClusterController = memo.controller
    if type == "DELETED":
        meta = body.get("metadata") or {}
        controller.forget((meta.get("namespace", "default"), meta.get("name", "")))
        return
    key, changed = controller.observe(plain(body))
    if changed:
        await controller.request(key, "cluster")


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
async def deployment_event(
    type: str,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    controller: ClusterController = memo.controller
    meta = body.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
    key = (meta.get("namespace", "default"), owner or "")
    if owner and key in controller.bodies:
        await controller.deployment_changed(key, None if type == "DELETED" else plain(body))


@kopf.on.probe(id="resync")
def resync_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    """Liveness: fails when the resync loop stopped (no pass in 3 intervals)."""
    task = getattr(memo, "resync_task", None)
    if task is not None and task.done():
        raise RuntimeError("the resync task has stopped")
    age = time.time() - getattr(memo, "last_resync", time.time())
    limit = 3 * float(getattr(memo, "resync_seconds", 60.0)) + 60
    if age > limit:
        raise RuntimeError(f"no resync for {age:.0f} s")
    controller = getattr(memo, "controller", None)
    clusters = len(controller.bodies) if isinstance(controller, ClusterController) else 0
    return {"seconds_since_resync": round(age, 1), "clusters": clusters}
