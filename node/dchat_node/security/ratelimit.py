"""Rate limiting with quart-rate-limiter (GCRA), ``rate_limit_requests_per_sec`` per client.

Design:
- Default limit on every API route: N requests per second per client address and route
  (quart-rate-limiter keys limits by endpoint), burst N. Excess requests get 429 with
  ``Retry-After`` and a JSON body.
- The client key is the TCP peer address (``request.remote_addr``), not X-Forwarded-For,
  which any client can forge to dodge the limit.
- Off when ``security.rate_limit_enabled`` is false. The ops app is never limited.
- The draft ``RateLimit-*`` headers are not sent (see ``NodeRateLimiter``).
- quart-rate-limiter supplies the limits (``RateLimit``, ``rate_limit``/``rate_exempt``
  decorators, blueprint and default limits), the store interface and ``RateLimitExceeded``
  (429 + ``Retry-After``). ``NodeRateLimiter`` replaces only its ``before_request`` hook,
  which is on every API request's path, with one that makes the same decisions cheaper:
  the limits of an endpoint (view + blueprint + default, with their store-key prefixes and
  GCRA intervals) are resolved once per endpoint instead of per request; the client key is
  computed once per request (not once per limit); the stored theoretical arrival time
  (TAT) is read once per limit (the library reads it twice); a request that any limit
  rejects consumes no capacity. Same GCRA arithmetic, same ``Retry-After``.
- ``ExpiringMemoryStore``: quart-rate-limiter's ``MemoryStore`` keeps one entry per
  (client, route) forever, so memory grows with every address that ever called. A TAT in
  the past carries no state (it means "full burst available"), so entries whose TAT has
  passed are swept, at most once per ``SWEEP_INTERVAL`` of stores: memory is bounded by the
  clients active within about one rate-limit period.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from typing import cast

from quart import Blueprint, Quart, request
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import MemoryStore

from dchat_node.config import SecurityConfig

SWEEP_INTERVAL = 4096


async def peer_address() -> str:
    return request.remote_addr or "unknown"


class ExpiringMemoryStore(MemoryStore):
    """``MemoryStore`` whose entries are dropped once their TAT has passed."""

    def __init__(self) -> None:
        super().__init__()
        self._sets = 0

    async def set(self, key: str, tat: datetime) -> None:
        self._tats[key] = tat
        self._sets += 1
        if self._sets >= SWEEP_INTERVAL:
            self.sweep(datetime.now(UTC))

    def sweep(self, now: datetime) -> int:
        """Drop entries whose TAT is not after ``now``; return how many were dropped."""
        self._sets = 0
        expired = [key for key, tat in self._tats.items() if tat <= now]
        for key in expired:
            del self._tats[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._tats)


@dataclass(frozen=True, slots=True)
class _ResolvedLimit:
    """One limit of one endpoint, with what the check needs precomputed."""

    limit: RateLimit
    key_prefix: str  # quart-rate-limiter's store key up to the client key
    key_function: Callable[[], Awaitable[str]]
    skip_function: Callable[[], Awaitable[bool]] | None
    max_interval: timedelta  # period - emission interval: how far ahead the TAT may run
    emission: timedelta  # period / count: what one request adds to the TAT


class NodeRateLimiter(RateLimiter):
    """quart-rate-limiter with a cheaper ``before_request`` and no ``RateLimit-*`` headers.

    The informational headers would cost three more store look-ups on every response of
    the hot read path; the limit itself and ``Retry-After`` on 429 are unchanged.
    """

    def init_app(self, app: Quart, enabled: bool = True) -> None:
        self._app = app
        self._resolved: dict[str, tuple[_ResolvedLimit, ...]] = {}
        app.before_request(self._before_request)
        app.before_serving(self._before_serving)
        app.after_serving(self._after_serving)
        app.config.setdefault("QUART_RATE_LIMITER_ENABLED", enabled)

    def _resolve(self, endpoint: str) -> tuple[_ResolvedLimit, ...]:
        app = self._app
        view_func = app.view_functions.get(endpoint)
        if view_func is None:
            return ()
        name = endpoint.rpartition(".")[0]
        blueprint = cast("Blueprint | None", app.blueprints.get(name) if name else None)
        resolved = []
        for limit in self._get_limits_for_view_function(view_func, blueprint):
            resolved.append(
                _ResolvedLimit(
                    limit=limit,
                    key_prefix=f"{app.import_name}-{endpoint}-{limit.key}-",
                    key_function=limit.key_function or self.key_function,
                    skip_function=limit.skip_function or self.skip_function,
                    max_interval=timedelta(seconds=limit.period.total_seconds() - limit.inverse),
                    emission=timedelta(seconds=limit.inverse),
                )
            )
        return tuple(resolved)

    async def _before_request(self) -> None:
        if not self._app.config["QUART_RATE_LIMITER_ENABLED"]:
            return
        endpoint = request.endpoint
        if endpoint is None:
            return
        limits = self._resolved.get(endpoint)
        if limits is None:
            limits = self._resolved[endpoint] = self._resolve(endpoint)
        if not limits:
            return
        now = datetime.now(UTC)
        client_keys: dict[Callable[[], Awaitable[str]], str] = {}
        updates: list[tuple[str, datetime]] = []
        for rl in limits:
            if rl.skip_function is not None and await rl.skip_function():
                continue
            client = client_keys.get(rl.key_function)
            if client is None:
                client = client_keys[rl.key_function] = await rl.key_function()
            key = rl.key_prefix + client
            stored = await self.store.get(key, now)
            if stored.tzinfo is None:
                stored = stored.astimezone(UTC)
            # GCRA: tat is the theoretical arrival time of the next conforming request
            tat = stored if stored > now else now
            if tat - now > rl.max_interval:
                retry_after = (tat - rl.max_interval - now).total_seconds()
                raise RateLimitExceeded(ceil(retry_after))
            updates.append((key, tat + rl.emission))
        # only a request that no limit rejects consumes capacity
        for key, new_tat in updates:
            await self.store.set(key, new_tat)


def apply_rate_limit(app: Quart, config: SecurityConfig) -> RateLimiter:
    limiter = NodeRateLimiter(
        key_function=peer_address,
        default_limits=[RateLimit(config.rate_limit_requests_per_sec, timedelta(seconds=1))],
        store=ExpiringMemoryStore(),
    )
    limiter.init_app(app, enabled=config.rate_limit_enabled)
    return limiter
