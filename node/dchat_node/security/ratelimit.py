"""Rate limiting with quart-rate-limiter (GCRA), ``rate_limit_requests_per_sec`` per client.

Design:
- Default limit on every API route: N requests per second per client address and route
  (quart-rate-limiter keys limits by endpoint), burst N. Excess requests get 429 with
  ``Retry-After`` and a JSON body.
- The client key is the TCP peer address (``request.remote_addr``), not X-Forwarded-For,
  which any client can forge to dodge the limit.
- Off when ``security.rate_limit_enabled`` is false. The ops app is never limited.
- The draft ``RateLimit-*`` headers are not sent (see ``NodeRateLimiter``).
"""

from __future__ import annotations

from datetime import timedelta

from quart import Quart, request
from quart_rate_limiter import RateLimit, RateLimiter

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


def apply_rate_limit(app: Quart, config: SecurityConfig) -> RateLimiter:
    limiter = NodeRateLimiter(
        key_function=peer_address,
        default_limits=[RateLimit(config.rate_limit_requests_per_sec, timedelta(seconds=1))],
    )
    limiter.init_app(app, enabled=config.rate_limit_enabled)
    return limiter
