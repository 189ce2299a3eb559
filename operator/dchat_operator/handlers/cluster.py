"""kopf watch handlers for DchatCluster and the Deployments it owns: route, nothing else.

Design: each handler hands the event to the cluster controller, which notes what it saw and
triggers the cluster's key on the engine; no handler awaits a reconcile, so kopf's per-object
workers never wait behind a slow one and no event is held up.
- DchatCluster events: a new generation (or a new cluster) triggers a reconcile at once, also
  through a backoff; status-only events (our own status writes) trigger nothing; DELETED
  forgets the cluster. The backup schedule and bootstrap controllers get the same events.
- Deployments labelled ``app.kubernetes.io/managed-by=dchat-operator``: status follows
  rollouts at once, and a deleted or hand-edited Deployment is restored immediately.
"""

from __future__ import annotations

from typing import Any

import kopf

from dchat_operator.api import constants as c
from dchat_operator.handlers.runtime import cluster_engine, memo_of


@kopf.on.event(c.GROUP, c.VERSION, c.PLURAL)
async def cluster_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = memo_of(memo).runtime
    controller = runtime.cluster_controller
    if controller is not None:
        controller.cluster_event(cluster_engine(memo), type or "ADDED", body)
    if runtime.schedule_controller is not None and runtime.schedules is not None:
        runtime.schedule_controller.cluster_event(runtime.schedules, type or "ADDED", body)
    if runtime.bootstrap_controller is not None and runtime.bootstraps is not None:
        runtime.bootstrap_controller.cluster_event(runtime.bootstraps, type or "ADDED", body)


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_MANAGED_BY: c.MANAGED_BY})
async def deployment_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    runtime = memo_of(memo).runtime
    controller = runtime.cluster_controller
    if controller is not None:
        controller.deployment_event(cluster_engine(memo), type or "ADDED", body)
    if runtime.schedule_controller is not None and runtime.schedules is not None:
        runtime.schedule_controller.deployment_event(runtime.schedules, body)
