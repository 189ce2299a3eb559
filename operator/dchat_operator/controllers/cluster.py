"""Reconcile one DchatCluster: desired children vs live, apply what differs, write status.

Design:
- Level-based: every trigger (CR event, child Deployment event, periodic resync) runs the same
  ``reconcile`` on the latest known CR body; it is idempotent, so a crash at any point is
  safe and the next trigger finishes the job.
- Zero writes when nothing changed: a child is applied (server-side apply, field manager
  ``dchat-operator``, force) only when the live object does not already cover the desired one
  (``compare.covers``) or does not exist. To rule out apply loops on a value the apiserver
  normalises in a way ``covers`` does not know, the controller remembers, per child, the
  spec hash it applied and the object's generation (or resourceVersion) right after the
  apply: while both are unchanged the child is not compared again. Status is written only
  when the built status differs from the live one; events only on changes.
- One cluster is reconciled by one task at a time (a lock per cluster); triggers that arrive
  while a reconcile waits for the lock coalesce into it.
- A referenced Secret that does not exist does not crash anything: the Deployment is not
  applied (pods could not start), the cluster goes ``Degraded`` with reason
  ``SecretNotFound``, and the next resync (or CR change) retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from dchat_operator.api import constants as c
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders import workload
from dchat_operator.builders.children import (
    DEPLOYMENT,
    PROMETHEUS_RULE,
    SERVICE_MONITOR,
    Capabilities,
    desired_children,
    kind_of,
    prunable,
)
from dchat_operator.builders.common import digest, with_spec_hash
from dchat_operator.builders.config import secret_references
from dchat_operator.builders.status import Observed, build_status, condition, invalid_status
from dchat_operator.clients.kube import Kube
from dchat_operator.clients.metrics import (
    CLUSTERS,
    RECONCILE_ERRORS,
    RECONCILE_SECONDS,
    RECONCILES,
)
from dchat_operator.controllers.compare import covers, differences

log = logging.getLogger("dchat_operator.controller")
Obj = dict[str, Any]
Key = tuple[str, str]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(value: Any) -> Any:
    """A deep copy of a kopf Body (or any mapping/sequence) as plain dicts and lists."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass
class _Applied:
    spec_hash: str
    uid: str
    version: str


def _version(obj: Obj) -> str:
    """What changes when someone else changes the object's spec or metadata.

    The generation where the kind has one (status updates do not bump it) plus a digest of
    labels and annotations (they do not bump it either); else the resourceVersion.
    """
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    if not generation:
        return f"r{meta.get('resourceVersion', '')}"
    marks = digest([meta.get("labels") or {}, meta.get("annotations") or {}])[:16]
    return f"g{generation}:{marks}"


def _hash(obj: Obj) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(c.ANNOTATION_SPEC_HASH))


def _status_equal(a: Obj | None, b: Obj | None) -> bool:
    return (a or {}) == (b or {})


@dataclass
class Result:
    """What one reconcile did (for logs, metrics and tests)."""

    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    phase: str = ""


class ClusterController:
    """Owns the reconcile of every DchatCluster the operator watches."""

    def __init__(
        self,
        kube: Kube,
        *,
        capabilities_ttl: float = 60.0,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.kube = kube
        self.bodies: dict[Key, Obj] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._waiting: set[Key] = set()
        self._waiting_status: set[Key] = set()
        self._latest_deployment: dict[Key, Obj] = {}
        self._applied: dict[tuple[str, str, str, str], _Applied] = {}
        self._clean_generation: dict[Key, int] = {}
        self._caps: Capabilities | None = None
        self._caps_at = 0.0
        self._caps_ttl = capabilities_ttl
        self._clock = clock

    # --- the cache of CR bodies (fed by the watch) ------------------------------------------

    def observe(self, body: Obj) -> tuple[Key, bool]:
        """Remember the latest body; returns (key, whether its spec/generation is new)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", "default"), meta.get("name", ""))
        generation = int(meta.get("generation") or 0)
        self.bodies[key] = body
        CLUSTERS.set(len(self.bodies))
        return key, self._clean_generation.get(key) != generation

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self._clean_generation.pop(key, None)
        self._latest_deployment.pop(key, None)
        self._locks.pop(key, None)
        namespace, name = key
        for ident in list(self._applied):
            if ident[2] == namespace and (ident[3] == name or ident[3].startswith(f"{name}-")):
                self._applied.pop(ident, None)
        CLUSTERS.set(len(self.bodies))

    # --- triggers ---------------------------------------------------------------------------

    async def request(self, key: Key, trigger: str) -> Result | None:
        """Reconcile ``key`` now, or fold into a reconcile of it that is already waiting."""
        if key in self._waiting:
            return None
        self._waiting.add(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._waiting.discard(key)
            body = self.bodies.get(key)
            if body is None:
                return None
            started = time.monotonic()
            try:
                result = await self.reconcile(body)
            except Exception:
                RECONCILE_ERRORS.labels(trigger).inc()
                RECONCILES.labels(trigger, "error").inc()
                raise
            finally:
                RECONCILE_SECONDS.observe(time.monotonic() - started)
            RECONCILES.labels(trigger, result.phase or "none").inc()
            return result

    async def deployment_changed(self, key: Key, deployment: Obj | None) -> Result | None:
        """A child Deployment changed (``None``: it was deleted).

        When the cluster's last reconcile was clean for its current generation and the
        Deployment still covers the desired one, only the status is refreshed from the event's
        body (no reads); otherwise (deleted, edited, or an unclean cluster) a full reconcile
        runs.
        """
        body = self.bodies.get(key)
        if body is None:
            return None
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        if deployment is None or self._clean_generation.get(key) != generation:
            return await self.request(key, "deployment")
        try:
            cluster = DchatCluster.parse(body)
        except ValidationError:
            return await self.request(key, "deployment")
        if not covers(with_spec_hash(workload.deployment(cluster)), deployment):
            return await self.request(key, "deployment")
        self._latest_deployment[key] = deployment
        if key in self._waiting or key in self._waiting_status:
            return None
        self._waiting_status.add(key)
        async with self._locks.setdefault(key, asyncio.Lock()):
            self._waiting_status.discard(key)
            latest = self._latest_deployment.pop(key, None)
            body = self.bodies.get(key)
            if latest is None or body is None:
                return None
            result = Result()
            now = self._clock()
            previous = body.get("status") or None
            status = build_status(cluster, Observed(deployment=latest), previous, _rfc3339(now))
            result.phase = status["phase"]
            result.status_written = await self._write_status(body, status)
            if result.status_written:
                await self._degraded_event(body, previous, status, now)
            RECONCILES.labels("deployment-status", result.phase).inc()
            return result

    async def resync_all(self) -> int:
        """One pass over every known cluster; returns how many were reconciled."""
        done = 0
        for key in list(self.bodies):
            try:
                await self.request(key, "resync")
                done += 1
            except Exception:
                log.exception("resync of %s/%s failed", *key)
        return done

    # --- the reconcile ----------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        if self._caps is None or time.monotonic() - self._caps_at > self._caps_ttl:
            served = await self.kube.api_resources(SERVICE_MONITOR.api_version)
            self._caps = Capabilities(
                monitoring_crds={SERVICE_MONITOR.plural, PROMETHEUS_RULE.plural} <= served
            )
            self._caps_at = time.monotonic()
        return self._caps

    async def missing_secrets(self, cluster: DchatCluster) -> list[str]:
        missing: list[str] = []
        seen: dict[str, Obj | None] = {}
        for name, key in secret_references(cluster):
            if name not in seen:
                seen[name] = await self.kube.get_secret(cluster.namespace, name)
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
        return missing

    async def _sync_child(self, cluster: DchatCluster, desired: Obj, result: Result) -> Obj:
        kind = kind_of(desired)
        name = desired["metadata"]["name"]
        ident = (kind.api_version, kind.kind, cluster.namespace, name)
        live = await self.kube.get(kind, cluster.namespace, name)
        want_hash = _hash(desired)
        if live is not None:
            seen = self._applied.get(ident)
            uid = (live.get("metadata") or {}).get("uid", "")
            if (
                seen is not None
                and seen.spec_hash == want_hash
                and seen.uid == uid
                and seen.version == _version(live)
            ):
                return live
            if covers(desired, live):
                self._applied[ident] = _Applied(want_hash, uid, _version(live))
                return live
            log.info(
                "%s %s/%s differs at %s; applying",
                kind.kind,
                cluster.namespace,
                name,
                ", ".join(differences(desired, live)[:5]),
            )
        applied = await self.kube.apply(desired, kind)
        meta = applied.get("metadata") or {}
        self._applied[ident] = _Applied(want_hash, meta.get("uid", ""), _version(applied))
        result.applied.append(f"{kind.kind}/{name}")
        return applied

    async def reconcile(self, body: Obj) -> Result:
        """Bring one cluster's children to the desired state and write its status."""
        result = Result()
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", "default"), meta.get("name", "")
        previous_status = body.get("status") or None
        now = self._clock()
        try:
            cluster = DchatCluster.parse(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            await self._invalid(body, previous_status, problems, now, result)
            return result

        caps = await self.capabilities()
        missing = await self.missing_secrets(cluster)
        errors: list[str] = []
        deployment: Obj | None = None
        for desired in desired_children(cluster, caps):
            is_deployment = kind_of(desired) == DEPLOYMENT
            if is_deployment and missing:
                deployment = await self.kube.get(DEPLOYMENT, namespace, desired["metadata"]["name"])
                continue
            try:
                live = await self._sync_child(cluster, desired, result)
            except ApiException as exc:
                reason = f"{desired['kind']}/{desired['metadata']['name']}: {_api_error(exc)}"
                log.warning("apply failed: %s", reason)
                errors.append(reason)
                continue
            if is_deployment:
                deployment = live
        for kind, child_name in prunable(cluster, caps):
            found = await self.kube.get(kind, namespace, child_name)
            owners = (found or {}).get("metadata", {}).get("ownerReferences") or []
            ours = any(o.get("uid") == cluster.metadata.uid for o in owners)
            if ours and await self.kube.delete(kind, namespace, child_name):
                result.deleted.append(f"{kind.kind}/{child_name}")

        status = build_status(
            cluster,
            Observed(deployment=deployment, missing_secrets=missing, errors=errors),
            previous_status,
            _rfc3339(now),
        )
        result.phase = status["phase"]
        result.status_written = await self._write_status(body, status)
        if result.applied or result.deleted:
            await self._event(
                body,
                "Normal",
                "Applied",
                "applied "
                + ", ".join(result.applied)
                + ("; deleted " + ", ".join(result.deleted) if result.deleted else ""),
                now,
            )
        await self._degraded_event(body, previous_status, status, now)
        if not missing and not errors:
            self._clean_generation[(namespace, name)] = cluster.metadata.generation
        else:
            self._clean_generation.pop((namespace, name), None)
        return result

    async def _invalid(
        self, body: Obj, previous: Obj | None, problems: str, now: dt.datetime, result: Result
    ) -> None:
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        status = invalid_status(generation, previous, problems, _rfc3339(now))
        result.phase = status["phase"]
        result.status_written = await self._write_status(body, status)
        await self._degraded_event(body, previous, status, now)

    async def _write_status(self, body: Obj, status: Obj) -> bool:
        """The one place the status is written: only when it differs from the live one."""
        if _status_equal(status, body.get("status")):
            return False
        meta = body.get("metadata") or {}
        await self.kube.patch_status(meta.get("namespace", "default"), meta["name"], status)
        body["status"] = status
        return True

    async def _degraded_event(
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
        ready_new, ready_old = condition(status, "Ready"), condition(previous, "Ready")
        if (
            ready_new
            and ready_new["status"] == "True"
            and (not ready_old or ready_old["status"] != "True")
        ):
            await self._event(body, "Normal", "Ready", ready_new["message"], now)

    async def _event(
        self, body: Obj, type_: str, reason: str, message: str, now: dt.datetime
    ) -> None:
        try:
            await self.kube.post_event(body, type_=type_, reason=reason, message=message, now=now)
        except ApiException as exc:  # events are best effort
            log.warning("could not post event %s: %s", reason, _api_error(exc))


def _api_error(exc: ApiException) -> str:
    raw: Any = exc.body
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
    if text.startswith("{"):
        try:
            return str(json.loads(text).get("message", text))[:500]
        except ValueError:
            pass
    return f"{exc.status} {exc.reason}"
