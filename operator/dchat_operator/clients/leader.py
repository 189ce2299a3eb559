"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection.

Design:
- Several operator replicas may run (the install bundle runs two); only the holder of the Lease
  reconciles. The others keep their watches and caches warm and take over when the holder
  stops renewing: within ``lease_duration`` + ``retry_period`` of its last renewal (15 s + 2 s
  by default), or at once when the holder releases the Lease on a clean shutdown.
- Expiry is judged on this replica's own clock, from when it last saw the record change (the
  holder's ``renewTime`` is not compared with our clock, so clock skew between nodes does not
  matter); a replica that has just started waits one full ``lease_duration`` before taking a
  Lease someone else holds.
- Every write carries the ``resourceVersion`` it read (PUT), so two candidates cannot both win.
- The leader that cannot renew for ``renew_deadline`` (the apiserver is down or unreachable)
  steps down (``on_stopped_leading``) and becomes a candidate again; it does not exit, so its
  liveness stays healthy and it takes the Lease back when the apiserver returns and nobody
  else did.
- Lease traffic is not counted as reconciler writes (the zero-write resync stays zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from dchat_operator.api.kinds import LEASE
from dchat_operator.clients.kube import Kube
from dchat_operator.clients.metrics import LEADER, LEADER_TRANSITIONS

log = logging.getLogger("dchat_operator.leader")
Obj = dict[str, Any]


def _micro_time(now: dt.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "dchat-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        config: LeaseConfig,
        identity: str,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.config = config
        self.identity = identity
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self.leading = False

    async def run(self) -> None:
        """Campaign and lead, forever (cancel to stop)."""
        retry = self.config.retry_period
        while True:
            await self._campaign(retry)
            self._set_leading(True)
            last_renew = self._clock()
            while True:
                await asyncio.sleep(retry)
                left = self.config.renew_deadline - (self._clock() - last_renew)
                if await self._attempt(max(left, 0.5)):
                    last_renew = self._clock()
                elif self._clock() - last_renew >= self.config.renew_deadline:
                    log.warning(
                        "lost the leader Lease %s/%s (no renewal for %.0f s); stepping down",
                        self.config.namespace,
                        self.config.name,
                        self._clock() - last_renew,
                    )
                    self._set_leading(False)
                    break

    async def _campaign(self, retry: float) -> None:
        """Until this replica holds the Lease."""
        acquired = await self._attempt(self.config.renew_deadline)
        while not acquired:
            await asyncio.sleep(retry)
            acquired = await self._attempt(self.config.renew_deadline)

    async def release(self) -> None:
        """Give the Lease up at once (clean shutdown), so a standby takes over immediately."""
        if not self.leading:
            return
        self._set_leading(False)
        with contextlib.suppress(ApiException, TimeoutError, OSError):
            async with asyncio.timeout(5):
                lease = await self.kube.get(
                    LEASE, self.config.namespace, self.config.name, counted=False
                )
                if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                    lease["spec"]["holderIdentity"] = None
                    lease["spec"]["leaseDurationSeconds"] = 1
                    await self.kube.replace(lease, LEASE, counted=False)
                    log.info("released the leader Lease")

    def _set_leading(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        LEADER.set(1 if leading else 0)
        LEADER_TRANSITIONS.inc()
        if leading:
            log.info("became the leader (%s)", self.identity)
            self._on_started()
        else:
            self._on_stopped()

    async def _attempt(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout(deadline):
                return await self._try_acquire_or_renew()
        except (ApiException, TimeoutError, OSError) as exc:
            log.debug("lease attempt failed: %s", exc)
            return False

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        now = dt.datetime.now(dt.UTC)
        lease = await self.kube.get(LEASE, cfg.namespace, cfg.name, counted=False)
        if lease is None:
            body: Obj = {
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(cfg.lease_duration),
                    "acquireTime": _micro_time(now),
                    "renewTime": _micro_time(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.kube.create(body, LEASE, counted=False)
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            self._observe(self.identity, _micro_time(now))
            return True
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observe(*record)
        duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        held_by_other = holder and holder != self.identity
        if held_by_other and self._clock() < self._observed_at + duration:
            return False
        if holder != self.identity:
            spec["acquireTime"] = _micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = int(cfg.lease_duration)
        spec["renewTime"] = _micro_time(now)
        try:
            await self.kube.replace(lease, LEASE, counted=False)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(self.identity, spec["renewTime"])
        return True

    def _observe(self, holder: str, renew_time: str) -> None:
        self._observed = (holder, renew_time)
        self._observed_at = self._clock()
