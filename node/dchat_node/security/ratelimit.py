"""Rate limiting with quart-rate-limiter (GCRA), ``rate_limit_requests_per_sec`` per client.

Design:
- Default limit on every API route: N requests per second per client address and route
  (quart-rate-limiter keys limits by endpoint), burst N. Excess requests get 429 with
  ``Retry-After`` and a JSON body.
- The client key is the TCP peer address (``request.remote_addr``), not X-Forwarded-For,
  which any client can forge to dodge the limit.
- Off when ``security.rate_limit_enabled`` is false. The ops app is never limited.
- The draft ``RateLimit-*`` headers are not sent (see ``NodeRateLimiter``).
- The check runs in one pass: per limit the key is built once and the stored theoretical
  arrival time (TAT) read once; quart-rate-limiter's own ``before_request`` builds every
  key and reads the store twice (once to check, once to update). Same GCRA arithmetic,
  same decisions, same ``Retry-After``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from math import ceil

from quart import Quart, current_app, request
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded

from dchat_node.config import SecurityConfig


async def peer_address() -> str:
    return request.remote_addr or "unknown"


class NodeRateLimiter(RateLimiter):
    """quart-rate-limiter without the informational ``RateLimit-*`` response headers.

    Computing them costs three more store look-ups on every response of the hot read path;
    the limit itself (checked before the request) and ``Retry-After`` on 429 are unchanged.
    """

    def init_app(self, app: Quart, enabled: bool = True) -> None:
        app.before_request(self._before_request)
        app.before_serving(self._before_serving)
        app.after_serving(self._after_serving)
        app.config.setdefault("QUART_RATE_LIMITER_ENABLED", enabled)

    async def _before_request(self) -> None:
        if not current_app.config["QUART_RATE_LIMITER_ENABLED"]:
            return
        endpoint = request.endpoint
        view_func = current_app.view_functions.get(endpoint) if endpoint else None
        if view_func is None or endpoint is None:
            return
        blueprint = current_app.blueprints.get(request.blueprint or "")
        limits = [
            limit
            for limit in self._get_limits_for_view_function(view_func, blueprint)
            if not await self._should_skip(limit)
        ]
        now = datetime.now(UTC)
        updates: list[tuple[str, datetime]] = []
        for limit in limits:
            key = await self._create_key(endpoint, limit)
            stored = await self.store.get(key, now)
            if stored.tzinfo is None:
                stored = stored.astimezone(UTC)
            # GCRA: tat is the theoretical arrival time of the next conforming request
            tat = max(stored, now)
            max_interval = limit.period.total_seconds() - limit.inverse
            if (tat - now).total_seconds() > max_interval:
                retry_after = ((tat - timedelta(seconds=max_interval)) - now).total_seconds()
                raise RateLimitExceeded(ceil(retry_after))
            updates.append((key, tat + timedelta(seconds=limit.inverse)))
        # only a request that no limit rejects consumes capacity
        for key, new_tat in updates:
            await self.store.set(key, new_tat)


def apply_rate_limit(app: Quart, config: SecurityConfig) -> RateLimiter:
    limiter = NodeRateLimiter(
        key_function=peer_address,
        default_limits=[RateLimit(config.rate_limit_requests_per_sec, timedelta(seconds=1))],
    )
    limiter.init_app(app, enabled=config.rate_limit_enabled)
    return limiter
