"""Reconcile one DchatCluster: desired children vs live, apply what differs, write status.

Design:
- Runs on the engine (``controllers.engine``): the watch handlers only route events to
  ``cluster_event`` / ``deployment_event``, which note what they saw in the key's
  ``ClusterState`` and trigger the key; the engine runs ``reconcile`` one key at a time per
  key, retries failures with backoff and reruns a key triggered while it ran.
- Level-based: ``reconcile`` reads the CR fresh (a 404 forgets the key: a cluster deleted while
  the operator was down, or whose DELETED event was lost in a watch relist, never comes back),
  builds every child and applies what the live objects do not already hold. It is idempotent,
  so a crash at any point is safe and the next run finishes the job.
- Zero writes when nothing changed: a child is applied only when the live object does not
  cover the desired one (``compare.covers``) or does not exist; the per-child memory of the
  spec hash applied and the generation right after rules out apply loops on values the
  apiserver normalises in ways ``covers`` does not know. Status is written only when the
  fields this controller owns differ; events only on changes.
- Status-only fast path: a Deployment event on a cluster whose last reconcile was clean for
  its current generation, where the Deployment still covers the desired one, refreshes only the
  status (at most one status patch): that is what keeps rollouts of hundreds of clusters
  cheap. Such a run (and a requeue of a clean cluster: soak checks, primary polls) takes the
  CR from the watch instead of a GET: ``ClusterState.body`` is the newest body seen, from the
  watch or from our own status patch's response (the higher resourceVersion wins; a stale
  body costs one 409, after which the status is rebuilt from a fresh GET). So does the first
  run of a cluster just created (the watched body of a CR that has no status yet: no other
  controller has written to it, and a restore's hold is the absence of a finished
  bootstrap). Every other run (a new generation, a resync, a retry) reads the CR fresh.
- The first reads are concurrent: the referenced Secrets (their versions go into the pod
  template) and the live children (looked up by the names of the children built from the
  versions seen before; built again if the versions differ).
- Never takes over: an existing object with a child's name that this cluster does not control
  (no controller reference to it) is left untouched and reported (``Degraded``,
  ``ChildConflict``); only objects it controls are applied with ``force``, new ones without it.
  A retained data PVC of the same cluster (our labels, no controller) is adopted.
- Status is patched with the ``resourceVersion`` it was built from; on 409 the CR is re-read
  and the status rebuilt (bounded). Only the fields this controller owns are sent.
- A restore holds the pods: while ``status.restoreInProgress`` or an unfinished
  ``status.bootstrap`` (written by the restore controllers) is there, everything is built from
  the cluster with 0 replicas (``builders.restore.held``); the restore controllers wake the
  key when they change a hold (status writes trigger nothing here).
- Automatic rollback (``builders.rollout``): a rollout past its progress deadline makes
  ``build_status`` write ``status.rollback``; the run that wrote it requeues at once and
  every run from then builds the children from ``lastGoodRevision`` (``pinned``) until the
  spec's generation changes.
- The soak window (``spec.rollout.analysis``): once a new revision's rollout is complete,
  a reconcile that finds a check due (``soak_check_due``: times from ``status.soak``) reads
  every Ready pod's ``/metrics`` by pod IP (``clients.podmetrics``), ``builders.analysis``
  judges what they served since the previous check (the samples kept in ``ClusterState``),
  and ``build_status`` counts it; the run requeues itself for the next check. A failed
  window rolls back like a stalled rollout.
- Fencing (SQLite, ``builders.fencing``): while the Deployment has fewer Ready pods than
  asked for, the pods are listed and their nodes read; a pod whose node has not reported
  Ready for ``database.sqlite.failoverDelaySeconds`` is force-deleted (Recreate would wait
  for it forever), with a ``Fenced`` Event; otherwise the run requeues for that moment.
- Operator policy (``api.policy``, the cluster admin's allow-lists) is checked before
  anything is applied: a refused spec applies nothing and reports ``PolicyViolation``.
- Secret rotation: the resourceVersions of the referenced Secrets, read on every full
  reconcile (so at the latest at the next resync), go into the pod template as a digest: a
  renewed certificate or a new database password rolls the pods.
- A referenced Secret that does not exist does not crash anything: the Deployment is not
  applied (pods could not start), the cluster goes ``Degraded`` with ``SecretNotFound``, and
  the periodic resync (or a CR change) looks again. Apply errors and conflicts are failures:
  the engine backs off, and the status says which attempt it was and when the next one is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.kinds import (
    CLUSTER,
    CONFIG_MAP,
    DEPLOYMENT,
    NETWORK_POLICY,
    NODE,
    PERSISTENT_VOLUME,
    POD,
    PROMETHEUS_RULE,
    PVC,
    SECRET,
    SERVICE_MONITOR,
    Kind,
    child_kind,
)
from dchat_operator.api.models import DatabaseEngine, DchatCluster
from dchat_operator.api.policy import Policy
from dchat_operator.builders import litestream, postgres, workload
from dchat_operator.builders.analysis import Sample, Scrape, check
from dchat_operator.builders.children import Capabilities, desired_children, prunable
from dchat_operator.builders.common import (
    condition,
    is_true,
    names,
    selector_string,
    with_spec_hash,
)
from dchat_operator.builders.config import secret_references
from dchat_operator.builders.fencing import pinned_to, to_fence
from dchat_operator.builders.patroni import (
    failover_config_map,
    failover_object,
    leader_object,
    leader_of,
    member_selector,
    members_of,
    pending_candidate,
    switchover_step,
)
from dchat_operator.builders.restore import held
from dchat_operator.builders.rollout import pinned
from dchat_operator.builders.status import (
    Observed,
    build_status,
    invalid_status,
    soak_check_due,
    soak_requeue,
    status_patch,
)
from dchat_operator.clients.kube import KubeAPI
from dchat_operator.clients.metrics import (
    CLUSTERS,
    PODS_FENCED,
    PRIMARY_CHANGES,
    ROLLBACKS,
    SOAK_CHECKS,
)
from dchat_operator.clients.podmetrics import PodMetrics, ScrapeError
from dchat_operator.controllers.compare import covers, differences
from dchat_operator.controllers.engine import Attempt, Engine, Key, Outcome, just_created, slim

log = logging.getLogger("dchat_operator.controller")
Obj = dict[str, Any]
STATUS_CONFLICT_RETRIES = 3
ROLLBACK_REQUEUE_SECONDS = 0.2
"""After writing a rollback, the run that applies the last good revision starts this soon."""
SOAK_REQUEUE_MIN_SECONDS = 1.0
CHILD_GONE_REQUEUE_SECONDS = 1.0
"""A child being deleted (a fenced claim) is looked at again this soon, to re-create it."""
PRIMARY_POLL_SECONDS = 5.0
SWITCHOVER_POLL_SECONDS = 1.0
"""How often Patroni's leader object is read for status.currentPrimary (when configured)."""

Scraper = Callable[[str, int], Awaitable[str]]
"""(pod IP, port) -> the text of its /metrics; raises ``ScrapeError``."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ref(child: Obj) -> str:
    """``Kind/name`` of a desired child (as the Applied event names it)."""
    return f"{child['kind']}/{child['metadata']['name']}"


@dataclass
class _Applied:
    spec_hash: str
    uid: str
    version: str


@dataclass
class ClusterState:
    """What the controller remembers about one cluster between reconciles."""

    uid: str = ""
    requested_generation: int = 0
    """Newest generation a reconcile was requested for (own status writes do not request)."""
    clean_generation: int | None = None
    """Generation of the last reconcile that applied everything it wanted."""
    deployment: Obj | None = None
    """Newest Deployment seen on its watch, not yet used by a reconcile."""
    secret_versions: dict[str, str] = field(default_factory=dict)
    """resourceVersion of each referenced Secret at the last full reconcile."""
    applied: dict[tuple[str, str], _Applied] = field(default_factory=dict)
    """Per child (kind, name): what was applied and the object's version right after."""
    rollback_request: str = ""
    """The rollback-request annotation's value last seen on the watch."""
    switchover_request: str = ""
    """The switchover-request annotation's value last seen on the watch."""
    body: Obj | None = None
    """The newest CR seen (watch event or our status patch's response), slimmed."""
    samples: dict[str, Sample] = field(default_factory=dict)
    """Per pod: its request counters at the previous soak check."""
    samples_generation: int = 0
    """The generation those samples were taken for."""
    pruned: tuple[int, Capabilities] | None = None
    """(generation, capabilities) of the last prune that left nothing unwanted behind."""


def _version(obj: Obj) -> str:
    """What changes when someone else changes the object's spec or metadata.

    The generation where the kind has one (status updates do not bump it) plus labels and
    annotations (they do not bump it either); else the resourceVersion.
    """
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    if not generation:
        return f"r{meta.get('resourceVersion', '')}"
    marks = json.dumps([meta.get("labels") or {}, meta.get("annotations") or {}], sort_keys=True)
    return f"g{generation}:{hash(marks)}"


def _hash(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH))


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))


@dataclass
class Result:
    """What one reconcile did (for logs, metrics and tests)."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    phase: str = ""
    rolled_back: bool = False
    """This run wrote a new automatic rollback into the status."""
    status: Obj | None = None
    """The owned status as this run left it."""
    body: Obj | None = None
    """The CR as our status patch returned it (when this run wrote the status)."""
    requeue: float | None = None
    """Run again this soon (a pod on a NotReady node not fenced yet, a child going away)."""
    children_changed: bool = False
    """A child was deleted outside the apply path (fencing): the next run re-applies all."""


def _position(children: list[Obj], ref: str) -> int:
    """Index of the child named by ``Kind/name`` (keeps the Applied event in build order)."""
    for i, child in enumerate(children):
        if _ref(child) == ref:
            return i
    return len(children)


class _Refused(Exception):
    """An action the CR asks for that the operator will not take (the message says why)."""


class _Gone(Exception):
    """The CR was deleted during the reconcile."""


class ClusterController:
    """Reconciles DchatClusters; one instance serves all of them through an ``Engine``."""

    kind = c.KIND

    def __init__(
        self,
        kube: KubeAPI,
        *,
        capabilities_ttl: float = 60.0,
        clock: Callable[[], dt.datetime] = _utcnow,
        policy: Policy | None = None,
        scrape: Scraper | None = None,
    ) -> None:
        self.kube = kube
        self.policy = policy or Policy()
        self._pod_metrics = PodMetrics() if scrape is None else None
        self._scrape: Scraper = scrape or self._pod_metrics.scrape  # type: ignore[union-attr]
        self._caps: Capabilities | None = None
        self._caps_at = 0.0
        self._caps_ttl = capabilities_ttl
        self._clock = clock

    def new_state(self) -> ClusterState:
        return ClusterState()

    # --- watch events -----------------------------------------------------------------------

    def cluster_event(
        self, engine: Engine[ClusterState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        """A DchatCluster was added, changed or deleted (only its metadata is read)."""
        key = key_of(body)
        if event_type == "DELETED":
            engine.forget(key)
            CLUSTERS.set(len(engine.keys))
            return
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        generation = int(meta.get("generation") or 0)
        state = engine.ensure(key)
        CLUSTERS.set(len(engine.keys))
        if uid != state.uid:  # new, or deleted and created again under the same name
            engine.keys[key].data = state = ClusterState(uid=uid)
        state.body = _newer(state.body, slim(body))
        annotations = meta.get("annotations") or {}
        request = str(annotations.get(c.ANNOTATION_ROLLBACK_REQUEST) or "")
        switchover = str(annotations.get(c.ANNOTATION_SWITCHOVER_REQUEST) or "")
        if (
            generation > state.requested_generation
            or request != state.rollback_request
            or switchover != state.switchover_request
        ):
            state.requested_generation = max(generation, state.requested_generation)
            state.rollback_request = request
            state.switchover_request = switchover
            engine.trigger(key, "spec", urgent=True)

    def deployment_event(
        self, engine: Engine[ClusterState], event_type: str, body: Mapping[str, Any]
    ) -> None:
        """A Deployment labelled as ours changed; reconcile the cluster that owns it."""
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(c.LABEL_INSTANCE)
        key = (str(meta.get("namespace") or "default"), str(owner or ""))
        state = engine.state(key) if owner else None
        if state is None:
            return
        if event_type == "DELETED":
            state.deployment = None
            engine.trigger(key, "child")
            return
        state.deployment = slim(body)
        engine.trigger(key, "deployment")

    # --- the reconcile ----------------------------------------------------------------------

    async def reconcile(self, key: Key, state: ClusterState, attempt: Attempt) -> Outcome:
        namespace, name = key
        body = self._watched(state, attempt)
        if body is None:
            body = await self.kube.get(CLUSTER, namespace, name)
        if body is None:
            log.info("DchatCluster %s/%s is gone; forgetting it", namespace, name)
            return Outcome(forget=True, result="gone")
        meta = body.get("metadata") or {}
        if meta.get("uid") != state.uid:
            state.uid = str(meta.get("uid") or "")
            state.applied.clear()
            state.clean_generation = None
        generation = int(meta.get("generation") or 0)
        state.requested_generation = max(state.requested_generation, generation)
        result = Result()
        try:
            outcome = await self._reconcile(body, state, attempt, result)
        except _Gone:
            return Outcome(forget=True, result="gone")
        if result.body is not None:
            state.body = _newer(state.body, slim(result.body))
        return outcome

    @staticmethod
    def _watched(state: ClusterState, attempt: Attempt) -> Obj | None:
        """The watched CR when this run can only be a status refresh, or is the first run of
        a cluster just created (see the design)."""
        body = state.body
        if body is None or attempt.failures:
            return None
        meta = body.get("metadata") or {}
        if meta.get("uid") != state.uid:
            return None
        generation = int(meta.get("generation") or 0)
        if generation < state.requested_generation:
            return None
        if just_created(body, attempt):
            return body
        if not attempt.reasons <= {"deployment", "requeue"}:
            return None
        if state.clean_generation != generation:
            return None
        return body

    async def _reconcile(
        self, body: Obj, state: ClusterState, attempt: Attempt, result: Result
    ) -> Outcome:
        now = self._clock()
        try:
            cluster = DchatCluster.parse(body)
        except ValidationError as exc:
            return await self._invalid(body, state, exc, now, result)
        # an automatic rollback builds from the last good revision until the spec changes;
        # a restore (DchatRestore or spec.bootstrap) holds the pods at 0 while it runs
        cluster = held(pinned(cluster, body.get("status")), body.get("status"))
        seen, state.deployment = state.deployment, None
        refused = self.policy.violations(cluster)
        primary, lock = await self._primary(cluster, now)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        request = str(annotations.get(c.ANNOTATION_ROLLBACK_REQUEST) or "")
        switchover = await self._switchover(
            body,
            cluster,
            str(annotations.get(c.ANNOTATION_SWITCHOVER_REQUEST) or ""),
            primary,
            lock,
            now,
        )
        if refused:
            live = await self.kube.get(DEPLOYMENT, cluster.namespace, names(cluster).deployment)
            state.clean_generation = None
            await self._finish_cluster(
                body,
                cluster,
                Observed(
                    deployment=live,
                    policy=refused,
                    primary=primary,
                    rollback_request=request,
                    switchover=switchover,
                ),
                now,
                result,
            )
            return Outcome(result="PolicyViolation")
        if self._status_only(cluster, state, attempt, seen):
            if seen is None:  # a requeue (soak check, primary poll): the Deployment as it is
                seen = await self.kube.get(
                    DEPLOYMENT, cluster.namespace, names(cluster).deployment, cached=True
                )
            soak = await self._soak_check(cluster, state, body, seen, now)
            await self._fence(body, cluster, seen, now, result)
            observed = Observed(
                deployment=seen,
                check=soak,
                primary=primary,
                rollback_request=request,
                switchover=switchover,
            )
            await self._finish_cluster(body, cluster, observed, now, result)
            return self._after_status(cluster, state, result, now)

        caps = await self.capabilities()
        generated = await self._postgres_secret(cluster, result)
        missing, children, lives, conflicts = await self._read_live(cluster, state, caps)
        if generated:
            missing.append(generated)
        errors: list[str] = []
        deployment: Obj | None = None
        if conflicts:  # apply nothing: the pods would mount or expose someone else's object
            deployment = next(
                (
                    live
                    for d, live in zip(children, lives, strict=True)
                    if d["kind"] == "Deployment"
                ),
                None,
            )
        else:
            deployment, errors = await self._apply_children(
                cluster, state, children, lives, result, skip_deployment=bool(missing)
            )
            await self._prune(body, cluster, state, caps, result)

        failed = bool(errors or conflicts)
        clean = not missing and not failed
        soak = await self._soak_check(cluster, state, body, deployment, now) if clean else None
        await self._fence(body, cluster, deployment, now, result)
        observed = Observed(
            deployment=deployment,
            missing_secrets=missing,
            errors=errors,
            conflicts=conflicts,
            retry=(attempt.failures + 1, attempt.next_backoff) if failed else None,
            check=soak,
            primary=primary,
            rollback_request=request,
            switchover=switchover,
        )
        await self._applied_event(body, result, now)
        await self._finish_cluster(body, cluster, observed, now, result)
        state.clean_generation = cluster.metadata.generation if clean else None
        if failed:
            return Outcome(failed=True, result=result.phase)
        return self._after_status(cluster, state, result, now)

    @staticmethod
    def _after_status(
        cluster: DchatCluster, state: ClusterState, result: Result, now: dt.datetime
    ) -> Outcome:
        """A rollback written just now: run again at once, building the last good revision;
        a soak window running: run again for its next check."""
        if result.rolled_back:
            state.clean_generation = None
            return Outcome(requeue_after=ROLLBACK_REQUEUE_SECONDS, result="RolledBack")
        if result.children_changed:
            state.clean_generation = None
            result.requeue = min(
                result.requeue or CHILD_GONE_REQUEUE_SECONDS, CHILD_GONE_REQUEUE_SECONDS
            )
        delays = [soak_requeue(cluster, result.status, _rfc3339(now)), result.requeue]
        if _patroni_scope(cluster):
            switching = (result.status or {}).get("switchover") or {}
            running = switching.get("phase") == "Running"
            delays.append(SWITCHOVER_POLL_SECONDS if running else PRIMARY_POLL_SECONDS)
        due = [d for d in delays if d is not None]
        if due:
            return Outcome(
                requeue_after=max(SOAK_REQUEUE_MIN_SECONDS, min(due)), result=result.phase
            )
        return Outcome(result=result.phase)

    async def _primary(
        self, cluster: DchatCluster, now: dt.datetime
    ) -> tuple[tuple[str, str] | None, Obj | None]:
        """Patroni's leader (and its transitions count) when database.postgres.patroni is
        set, and the leader ConfigMap it was read from."""
        scope = _patroni_scope(cluster)
        if not scope:
            return None, None
        found = await self.kube.get(CONFIG_MAP, cluster.namespace, leader_object(scope))
        return leader_of(found, now), found

    async def _switchover(
        self,
        body: Obj,
        cluster: DchatCluster,
        request: str,
        primary: tuple[str, str] | None,
        lock: Obj | None,
        now: dt.datetime,
    ) -> Obj | None:
        """The switchover-request annotation: the new status.switchover (None: unchanged);
        asks Patroni (its failover ConfigMap) when a new request passes the checks."""
        if not request:
            return None
        previous = (body.get("status") or {}).get("switchover")
        if not isinstance(previous, dict):
            previous = None
        handled = previous is not None and previous.get("request") == request[:63]
        if handled and previous is not None and previous.get("phase") != "Running":
            return None
        scope = _patroni_scope(cluster)
        ns = cluster.namespace
        members = None
        pending = ""
        if scope and not handled and lock is not None:
            pods = await self.kube.list_objects(POD, ns, member_selector(lock))
            members = members_of(pods)
        if scope and handled:
            failover = await self.kube.get(CONFIG_MAP, ns, failover_object(scope))
            pending = pending_candidate(failover)
        leader = primary[0] if primary else ""
        step = switchover_step(
            request,
            previous,
            scope=scope,
            leader=leader,
            members=members,
            pending=pending,
            now=now,
        )
        if step.ask is not None and lock is not None:
            try:
                await self._ask_switchover(lock, ns, scope, *step.ask)
            except (ApiException, _Refused) as exc:
                why = _api_error(exc) if isinstance(exc, ApiException) else str(exc)
                return {
                    **(step.status or {}),
                    "phase": "Failed",
                    "finishedAt": _rfc3339(now),
                    "message": f"could not ask Patroni: {why}",
                }
        return step.status

    async def _ask_switchover(
        self, lock: Obj, namespace: str, scope: str, leader: str, candidate: str
    ) -> None:
        """Write the request on ``<scope>-failover`` (created, or its annotations patched:
        Patroni owns and clears that object; no apply, no ownership taken)."""
        desired = failover_config_map(lock, namespace, scope, leader, candidate)
        name = failover_object(scope)
        live = await self.kube.get(CONFIG_MAP, namespace, name)
        if live is None:
            await self.kube.create(desired, CONFIG_MAP)
            return
        # an object of that name that does not carry Patroni's labels is someone else's: the
        # operator adds no annotation to it for the CR's author
        theirs = (live.get("metadata") or {}).get("labels") or {}
        ours = desired["metadata"]["labels"]
        if not ours or any(theirs.get(k) != v for k, v in ours.items()):
            raise _Refused(f"ConfigMap {name} exists without the labels of Patroni's objects")
        version = str((live.get("metadata") or {}).get("resourceVersion") or "")
        patch = {"metadata": {"annotations": desired["metadata"]["annotations"]}}
        await self.kube.patch(CONFIG_MAP, namespace, name, patch, version)

    async def _soak_check(
        self,
        cluster: DchatCluster,
        state: ClusterState,
        body: Obj,
        deployment: Obj | None,
        now: dt.datetime,
    ) -> Obj | None:
        """One check of the soak window when one is due: every Ready pod's /metrics, judged
        against what it had served at the previous check."""
        stamp = _rfc3339(now)
        if not soak_check_due(cluster, deployment, body.get("status"), stamp):
            return None
        generation = cluster.metadata.generation
        if state.samples_generation != generation:
            state.samples, state.samples_generation = {}, generation
        pods = await self.kube.list_objects(POD, cluster.namespace, selector_string(cluster))
        port = cluster.spec.server.metrics_port
        serving = [p for p in pods if _serving(p)]
        texts = await asyncio.gather(*(self._scrape_pod(p, port) for p in serving))
        found, state.samples = check(cluster.spec.rollout.analysis, texts, state.samples, stamp)
        SOAK_CHECKS.labels("passed" if found["passed"] else "failed").inc()
        log.info(
            "soak check of %s/%s generation %d: %s",
            cluster.namespace,
            cluster.name,
            generation,
            found,
        )
        return found

    async def _fence(
        self,
        body: Obj,
        cluster: DchatCluster,
        deployment: Obj | None,
        now: dt.datetime,
        result: Result,
    ) -> None:
        """SQLite: force-delete the pod of a node that stopped reporting Ready (see
        ``builders.fencing``); only looked at while fewer pods are Ready than asked for."""
        if cluster.spec.database.engine != DatabaseEngine.sqlite or deployment is None:
            return
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        if ready >= cluster.spec.replicas:
            return
        pods = [
            p
            for p in await self.kube.list_objects(POD, cluster.namespace, selector_string(cluster))
            if any(
                ref.get("kind") == "ReplicaSet"
                for ref in p["metadata"].get("ownerReferences") or []
            )
        ]
        wanted = sorted({str(p["spec"].get("nodeName")) for p in pods if p["spec"].get("nodeName")})
        found = await asyncio.gather(*(self.kube.get(NODE, "", n, cached=True) for n in wanted))
        fence, soonest = to_fence(
            pods,
            dict(zip(wanted, found, strict=True)),
            cluster.spec.database.sqlite.failover_delay_seconds,
            now,
        )
        result.requeue = soonest
        for f in fence:
            if await self.kube.delete(POD, cluster.namespace, f.pod, grace_period_seconds=0):
                since = f"not Ready since {f.since}" if f.since else "Node object gone"
                message = (
                    f"pod {f.pod} on node {f.node} ({since}) force-deleted so that its "
                    "replacement starts on a healthy node"
                )
                log.warning("fenced %s/%s: %s", cluster.namespace, cluster.name, message)
                PODS_FENCED.labels(cluster.namespace, cluster.name).inc()
                await self._event(body, "Warning", "Fenced", message, now)
            if await self._replace_lost_claim(body, cluster, f.node, now):
                result.children_changed = True  # the next run applies the new claim

    async def _replace_lost_claim(
        self, body: Obj, cluster: DchatCluster, node: str, now: dt.datetime
    ) -> bool:
        """Delete the data claim when its volume is pinned to the dead ``node`` and /data has
        a continuous replica to restore from (see ``builders.fencing``)."""
        claim_name = names(cluster).pvc
        claim = await self.kube.get(PVC, cluster.namespace, claim_name)
        volume_name = str(((claim or {}).get("spec") or {}).get("volumeName") or "")
        if claim is None or not volume_name or not self._may_write(cluster, PVC, claim):
            return False
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            return True  # deleted already: wait for it to go
        volume = await self.kube.get(PERSISTENT_VOLUME, "", volume_name)
        if not pinned_to(volume, node):
            return False
        if litestream.target(cluster) is None:
            message = (
                f"claim {claim_name} is on a volume of the dead node {node}: kept, as there is "
                "no continuous replica to restore from (spec.backup); the pod waits for the node"
            )
            await self._event(body, "Warning", "VolumeLost", message, now)
            return False
        await self.kube.delete(PVC, cluster.namespace, claim_name)
        message = (
            f"claim {claim_name} was on a volume of the dead node {node}: deleted; the new "
            "claim's pod restores /data from the continuous S3 replica before it serves"
        )
        log.warning("fenced %s/%s: %s", cluster.namespace, cluster.name, message)
        await self._event(body, "Warning", "VolumeReplaced", message, now)
        return True

    async def _scrape_pod(self, pod: Obj, port: int) -> Scrape:
        name = str((pod.get("metadata") or {}).get("name") or "")
        try:
            return Scrape(name, await self._scrape(str(pod["status"]["podIP"]), port))
        except ScrapeError as exc:
            return Scrape(name, error=str(exc))

    async def close(self) -> None:
        if self._pod_metrics is not None:
            await self._pod_metrics.close()

    async def _invalid(
        self,
        body: Obj,
        state: ClusterState,
        exc: ValidationError,
        now: dt.datetime,
        result: Result,
    ) -> Outcome:
        """A spec the apiserver accepted and the model refuses: say why; nothing to retry."""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        await self._finish(
            body,
            lambda previous: invalid_status(generation, previous, problems, _rfc3339(now)),
            now,
            result,
        )
        state.clean_generation = None
        return Outcome(result="InvalidSpec")

    @staticmethod
    def _status_only(
        cluster: DchatCluster, state: ClusterState, attempt: Attempt, seen: Obj | None
    ) -> bool:
        """Only a Deployment event, on a cluster clean at this generation, and the Deployment
        still holds what we want: refreshing the status is all there is to do. "Still holds"
        is first asked of the apply memory (the very object we applied or checked, unchanged
        since: same uid, generation, labels and annotations), which costs no build; else the
        desired Deployment is built and compared."""
        if not (
            attempt.reasons <= {"deployment", "requeue"}
            and attempt.failures == 0
            and state.clean_generation == cluster.metadata.generation
        ):
            return False
        if seen is None:  # a requeue of a clean cluster: its children were just checked
            return "deployment" not in attempt.reasons
        meta = seen.get("metadata") or {}
        known = state.applied.get((DEPLOYMENT.kind, str(meta.get("name"))))
        if known is not None and known.uid == meta.get("uid") and known.version == _version(seen):
            return True
        desired = with_spec_hash(workload.deployment(cluster, state.secret_versions))
        return covers(desired, seen)

    async def _read_live(
        self, cluster: DchatCluster, state: ClusterState, caps: Capabilities
    ) -> tuple[list[str], list[Obj], list[Obj | None], list[str]]:
        """(missing Secrets, the desired children, their live objects, conflicts): the
        Secrets and the children are read at once (the children's names do not depend on the
        Secrets' versions; the pod template does, so it is built again when they moved)."""
        guess = desired_children(cluster, caps, state.secret_versions)
        (missing, versions), (lives, conflicts) = await asyncio.gather(
            self.read_secrets(cluster), self._read_children(cluster, state, guess)
        )
        if versions == state.secret_versions:
            return missing, guess, lives, conflicts
        state.secret_versions = versions
        children = desired_children(cluster, caps, versions)
        if [_ref(d) for d in children] != [_ref(d) for d in guess]:
            lives, conflicts = await self._read_children(cluster, state, children)
        return missing, children, lives, conflicts

    async def _read_children(
        self, cluster: DchatCluster, state: ClusterState, children: list[Obj]
    ) -> tuple[list[Obj | None], list[str]]:
        """(the live object of each child or None, the children it may not write)."""
        lives = list(
            await asyncio.gather(
                *(
                    self.kube.get(
                        child_kind(d), cluster.namespace, d["metadata"]["name"], cached=True
                    )
                    for d in children
                )
            )
        )
        conflicts: list[str] = []
        for desired, live in zip(children, lives, strict=True):
            kind, name = child_kind(desired), desired["metadata"]["name"]
            if live is not None and not self._may_write(cluster, kind, live):
                state.applied.pop((kind.kind, name), None)
                conflicts.append(f"{kind.kind}/{name} exists and is not controlled by this cluster")
        return lives, conflicts

    async def _apply_children(
        self,
        cluster: DchatCluster,
        state: ClusterState,
        children: list[Obj],
        lives: list[Obj | None],
        result: Result,
        *,
        skip_deployment: bool,
    ) -> tuple[Obj | None, list[str]]:
        """Apply what differs; (the Deployment as it now is, apply errors).

        In three stages, each applied concurrently: what comes before the Deployment in
        ``desired_children`` (managed PostgreSQL, ServiceAccount, ConfigMap, PVC) and the
        NetworkPolicy, then the Deployment, then the rest (the node's Services, PDB, Ingress,
        monitoring). The pods' ServiceAccount must exist before the ReplicaSet creates them,
        so the Deployment never goes first, and no pod runs before its NetworkPolicy."""
        at = next((i for i, d in enumerate(children) if child_kind(d) == DEPLOYMENT), len(children))

        def stage_of(i: int) -> int:
            if i == at:
                return 1
            return 0 if i < at or child_kind(children[i]) == NETWORK_POLICY else 2

        stages = [[i for i in range(len(children)) if stage_of(i) == s] for s in range(3)]
        outcomes: list[tuple[Obj | None, str | None]] = [(None, None)] * len(children)
        for stage in stages:
            done = await asyncio.gather(
                *(
                    self._sync_child(
                        cluster,
                        state,
                        children[i],
                        lives[i],
                        result,
                        apply=not (i == at and skip_deployment),
                    )
                    for i in stage
                )
            )
            for i, outcome in zip(stage, done, strict=True):
                outcomes[i] = outcome
        result.applied.sort(key=lambda ref: _position(children, ref))
        errors = [error for _, error in outcomes if error]
        deployment = outcomes[at][0] if at < len(children) else None
        return deployment, errors

    async def _prune(
        self,
        body: Obj,
        cluster: DchatCluster,
        state: ClusterState,
        caps: Capabilities,
        result: Result,
    ) -> None:
        """Delete optional children the spec no longer asks for, if this cluster controls them.

        Nothing to read (one GET per candidate, ~14) when nothing can be unwanted: a cluster
        whose spec never changed and that no reconcile has finished yet (generation 1, no
        observedGeneration: whatever it controls was built from this very spec), or one
        already pruned for this generation and these capabilities by this process."""
        generation = cluster.metadata.generation
        status = body.get("status") or {}
        if state.pruned == (generation, caps) or (
            generation == 1 and not status.get("observedGeneration")
        ):
            state.pruned = (generation, caps)
            return
        candidates = prunable(cluster, caps)
        found_all = await asyncio.gather(
            *(self.kube.get(kind, cluster.namespace, n, cached=True) for kind, n in candidates)
        )
        for (kind, child_name), found in zip(candidates, found_all, strict=True):
            if found is not None and self._controls(cluster, found):
                if await self.kube.delete(kind, cluster.namespace, child_name):
                    result.deleted.append(f"{kind.kind}/{child_name}")
                state.applied.pop((kind.kind, child_name), None)
        state.pruned = (generation, caps)

    async def _applied_event(self, body: Obj, result: Result, now: dt.datetime) -> None:
        if result.applied or result.deleted:
            deleted = "; deleted " + ", ".join(result.deleted) if result.deleted else ""
            message = "applied " + ", ".join(result.applied) + deleted
            await self._event(body, "Normal", "Applied", message, now)

    # --- children ---------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        if self._caps is None or time.monotonic() - self._caps_at > self._caps_ttl:
            served = await self.kube.api_resources(SERVICE_MONITOR.api_version)
            self._caps = Capabilities(
                monitoring_crds={SERVICE_MONITOR.plural, PROMETHEUS_RULE.plural} <= served
            )
            self._caps_at = time.monotonic()
        return self._caps

    async def read_secrets(self, cluster: DchatCluster) -> tuple[list[str], dict[str, str]]:
        """(referenced Secrets or keys that do not exist, resourceVersion of each found)."""
        missing: list[str] = []
        refs = secret_references(cluster)
        wanted = list(dict.fromkeys(name for name, _ in refs))
        found = await asyncio.gather(*(self._secret(cluster.namespace, n) for n in wanted))
        seen: dict[str, Obj | None] = dict(zip(wanted, found, strict=True))
        for name, key in refs:
            secret = seen[name]
            if secret is None:
                if name not in missing:
                    missing.append(name)
            elif (
                key
                and key not in (secret.get("data") or {})
                and key not in (secret.get("stringData") or {})
            ):
                missing.append(f"{name} (key {key})")
        versions = {
            name: str((found.get("metadata") or {}).get("resourceVersion") or "")
            for name, found in seen.items()
            if found is not None
        }
        return missing, versions

    async def _postgres_secret(self, cluster: DchatCluster, result: Result) -> str:
        """Managed PostgreSQL's Secret of generated passwords: created once, never rewritten
        (the passwords open the data). "" when it is there and ours; else why not."""
        if postgres.managed(cluster) is None:
            return ""
        name = postgres.secret_name(cluster)
        live = await self._secret(cluster.namespace, name)
        if live is None:
            passwords = {
                key: secrets.token_urlsafe(24)
                for key in (
                    postgres.SUPERUSER_PASSWORD,
                    postgres.REPLICATION_PASSWORD,
                    postgres.APP_PASSWORD,
                )
            }
            try:
                await self.kube.create(postgres.secret(cluster, passwords), SECRET)
            except ApiException as exc:
                if exc.status != 409:  # 409: made meanwhile (another reconcile): read it next
                    return f"{name} (not created: {_api_error(exc)})"
            result.applied.append(f"Secret/{name}")
            # read_secrets reads from the watch cache: let it see the new Secret (bounded)
            for _ in range(40):
                if await self._secret(cluster.namespace, name) is not None:
                    break
                await asyncio.sleep(0.05)
            return ""
        labels = (live.get("metadata") or {}).get("labels") or {}
        if (labels.get(c.LABEL_MANAGED_BY), labels.get(c.LABEL_INSTANCE)) != (
            c.MANAGED_BY,
            cluster.name,
        ):
            return f"{name} (exists, but was not generated by the operator for this cluster)"
        return ""

    async def _secret(self, namespace: str, name: str) -> Obj | None:
        """The Secret ``namespace/name``: None unless the answer really is that Secret."""
        found = await self.kube.get(SECRET, namespace, name, cached=True)
        if found is None:
            return None
        meta = found.get("metadata") or {}
        if found.get("kind", "Secret") != "Secret" or (meta.get("name"), meta.get("namespace")) != (
            name,
            namespace,
        ):
            log.warning("asked for Secret %s/%s, got something else; ignoring it", namespace, name)
            return None
        return found

    @staticmethod
    def _controls(cluster: DchatCluster, live: Obj) -> bool:
        """Does ``live`` carry a controller reference to this cluster?"""
        refs = (live.get("metadata") or {}).get("ownerReferences") or []
        return any(ref.get("controller") and ref.get("uid") == cluster.metadata.uid for ref in refs)

    @staticmethod
    def _adoptable(cluster: DchatCluster, kind: Kind, live: Obj) -> bool:
        """A retained data PVC of this cluster: our labels and no controller at all."""
        if kind != PVC:
            return False
        meta = live.get("metadata") or {}
        labels = meta.get("labels") or {}
        refs = meta.get("ownerReferences") or []
        return (
            labels.get(c.LABEL_MANAGED_BY) == c.MANAGED_BY
            and labels.get(c.LABEL_INSTANCE) == cluster.name
            and not any(ref.get("controller") for ref in refs)
        )

    @classmethod
    def _may_write(cls, cluster: DchatCluster, kind: Kind, live: Obj) -> bool:
        return cls._controls(cluster, live) or cls._adoptable(cluster, kind, live)

    async def _sync_child(
        self,
        cluster: DchatCluster,
        state: ClusterState,
        desired: Obj,
        live: Obj | None,
        result: Result,
        *,
        apply: bool,
    ) -> tuple[Obj | None, str | None]:
        """(the object as it now is, apply error) for one child this cluster may write."""
        kind = child_kind(desired)
        name = desired["metadata"]["name"]
        ident = (kind.kind, name)
        if not apply:
            return live, None
        want_hash = _hash(desired)
        if live is not None and (live.get("metadata") or {}).get("deletionTimestamp"):
            # going away (a fenced claim): nothing to apply to; created anew once it is gone
            state.applied.pop(ident, None)
            result.children_changed = True
            return live, None
        if live is not None:
            seen = state.applied.get(ident)
            uid = (live.get("metadata") or {}).get("uid", "")
            if (
                seen is not None
                and seen.spec_hash == want_hash
                and seen.uid == uid
                and seen.version == _version(live)
            ):
                return live, None
            if covers(desired, live):
                state.applied[ident] = _Applied(want_hash, uid, _version(live))
                return live, None
            log.info(
                "%s %s/%s differs at %s; applying",
                kind.kind,
                cluster.namespace,
                name,
                ", ".join(differences(desired, live)[:5]),
            )
        try:
            applied = await self.kube.apply(desired, kind, force=live is not None)
        except ApiException as exc:
            reason = f"{kind.kind}/{name}: {_api_error(exc)}"
            log.warning("apply failed: %s", reason)
            state.applied.pop(ident, None)
            return live, reason
        meta = applied.get("metadata") or {}
        state.applied[ident] = _Applied(want_hash, meta.get("uid", ""), _version(applied))
        result.applied.append(f"{kind.kind}/{name}")
        return applied, None

    # --- status and events: one finish path --------------------------------------------------

    async def _finish_cluster(
        self, body: Obj, cluster: DchatCluster, observed: Observed, now: dt.datetime, result: Result
    ) -> None:
        await self._finish(
            body,
            lambda previous: build_status(cluster, observed, previous, _rfc3339(now)),
            now,
            result,
        )

    async def _finish(
        self,
        body: Obj,
        build: Callable[[Obj | None], Obj],
        now: dt.datetime,
        result: Result,
    ) -> None:
        """Write the owned status (optimistic lock, bounded retry on 409), then the events of
        the transitions it made. The only place the status is written."""
        for _ in range(STATUS_CONFLICT_RETRIES):
            previous = body.get("status") or None
            owned = build(previous)
            result.phase = str(owned.get("phase") or "")
            result.status = owned
            patch = status_patch(previous, owned)
            if patch is None:
                return
            meta = body.get("metadata") or {}
            namespace, name = str(meta.get("namespace")), str(meta.get("name"))
            try:
                written = await self.kube.patch_status(
                    CLUSTER, namespace, name, patch, str(meta.get("resourceVersion") or "")
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise _Gone from exc
                if exc.status != 409:
                    raise
                fresh = await self.kube.get(CLUSTER, namespace, name)
                if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
                    raise _Gone from exc
                body = fresh
                continue
            result.status_written = True
            result.body = written
            new_rollback = owned.get("rollback")
            result.rolled_back = bool(new_rollback) and new_rollback != (previous or {}).get(
                "rollback"
            )
            if result.rolled_back:
                soaked = str((new_rollback or {}).get("reason", "")).startswith("soak")
                ROLLBACKS.labels(namespace, name, "soak" if soaked else "progress_deadline").inc()
            await self._transition_events(body, previous, owned, now)
            return
        raise RuntimeError(f"status of {body['metadata'].get('name')}: conflicts on every retry")

    async def _transition_events(
        self, body: Obj, previous: Obj | None, status: Obj, now: dt.datetime
    ) -> None:
        new, old = condition(status, "Degraded"), condition(previous, "Degraded")
        if new and (
            old is None or (old["status"], old["reason"]) != (new["status"], new["reason"])
        ):
            if new["status"] == "True":
                await self._event(body, "Warning", new["reason"], new["message"], now)
            elif old is not None and old["status"] == "True":
                await self._event(body, "Normal", "Recovered", "no longer degraded", now)
        await self._primary_event(body, previous, status, now)
        await self._switchover_event(body, previous, status, now)
        ready_new, ready_old = condition(status, "Ready"), condition(previous, "Ready")
        if (
            ready_new
            and ready_new["status"] == "True"
            and (not ready_old or ready_old["status"] != "True")
        ):
            await self._event(body, "Normal", "Ready", ready_new["message"], now)

    async def _primary_event(
        self, body: Obj, previous: Obj | None, status: Obj, now: dt.datetime
    ) -> None:
        new = (status.get("currentPrimary") or {}).get("name")
        old = ((previous or {}).get("currentPrimary") or {}).get("name")
        if new is None or new == old:
            return
        if new:
            was = f" (was {old})" if old else ""
            if old:
                meta = body.get("metadata") or {}
                PRIMARY_CHANGES.labels(meta.get("namespace", ""), meta.get("name", "")).inc()
            await self._event(body, "Normal", "PrimaryChanged", f"primary is now {new}{was}", now)
        else:
            message = f"no PostgreSQL primary: Patroni's leader lock is free (was {old})"
            await self._event(body, "Warning", "NoPrimary", message, now)

    async def _switchover_event(
        self, body: Obj, previous: Obj | None, status: Obj, now: dt.datetime
    ) -> None:
        new = status.get("switchover") or {}
        old = (previous or {}).get("switchover") or {}
        if not new or (new.get("request"), new.get("phase")) == (
            old.get("request"),
            old.get("phase"),
        ):
            return
        phase = new.get("phase")
        reason = {"Running": "SwitchoverRequested", "Completed": "SwitchoverCompleted"}
        type_ = "Warning" if phase == "Failed" else "Normal"
        message = str(new.get("message") or "")
        await self._event(body, type_, reason.get(str(phase), "SwitchoverFailed"), message, now)

    async def _event(
        self, body: Obj, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None:
        try:
            await self.kube.post_event(body, type_=type_, reason=reason, message=message, now=now)
        except ApiException as exc:  # events are best effort
            log.warning("could not post event %s: %s", reason, _api_error(exc))


def _newer(old: Obj | None, new: Obj) -> Obj:
    """Of two bodies of one object, the one with the higher resourceVersion (etcd's revision:
    an integer in practice; when one is not, the newest arrival wins)."""
    if old is None:
        return new
    a = str((old.get("metadata") or {}).get("resourceVersion") or "")
    b = str((new.get("metadata") or {}).get("resourceVersion") or "")
    if a.isdigit() and b.isdigit() and int(a) > int(b):
        return old
    return new


def _patroni_scope(cluster: DchatCluster) -> str:
    """The Patroni cluster to follow: the managed one's, or the one the spec names."""
    if postgres.managed(cluster) is not None:
        return postgres.scope(cluster)
    spec = cluster.spec.database.postgres
    return spec.patroni.scope if spec is not None and spec.patroni else ""


def _serving(pod: Obj) -> bool:
    """A pod that serves: Ready, not terminating, with an IP."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or not status.get("podIP"):
        return False
    return is_true(status, "Ready")


def _api_error(exc: ApiException) -> str:
    raw: Any = exc.body
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
    if text.startswith("{"):
        try:
            return str(json.loads(text).get("message", text))[:500]
        except ValueError:
            pass
    return f"{exc.status} {exc.reason}"
