"""Rate limiting with quart-rate-limiter (GCRA), ``rate_limit_requests_per_sec`` per client.

Design:
- Default limit on every API route: N requests per second per client address and route
  (quart-rate-limiter keys limits by endpoint), burst N. Excess requests get 429 with
  ``Retry-After`` and a JSON body.
- The client address (``ClientKeys``): the TCP peer address, unless the peer is one of
  ``security.trusted_proxies`` (CIDRs: the Ingress controller, a load balancer). Only
  then is ``X-Forwarded-For`` read, and the client is the entry ``trusted_proxy_hops``
  from its right: each trusted proxy appends the address it received the request from,
  so entries further left were written by the client and prove nothing (the leftmost
  entry is used when there are fewer). A peer outside those networks cannot choose its
  key by sending the header; an unparsable entry falls back to the peer address.
- The key of an IPv6 client is its /64 (one subscriber's allocation: a host can take any
  address inside it, so per-address keys would give it 2^64 budgets); IPv4-mapped IPv6
  addresses count as their IPv4 address.
- Writes (POST/PUT/PATCH/DELETE) are also limited per authenticated user: at most
  ``rate_limit_writes_per_user_per_sec`` per token ``sub`` across routes, burst the same
  (``UserWriteLimiter``). It is checked right after the token is verified
  (``security.auth.require_auth`` calls ``limit_user_writes``), never on an unverified
  ``sub``, which anyone could forge to spend another user's budget.
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

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from ipaddress import IPv6Address, IPv6Network, ip_address, ip_network
from math import ceil
from typing import cast

from quart import Blueprint, Quart, current_app, request
from quart_rate_limiter import RateLimit, RateLimiter, RateLimitExceeded
from quart_rate_limiter.store import MemoryStore

from dchat_node.config import SecurityConfig

SWEEP_INTERVAL = 4096
IPV6_PREFIX = 64
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
USER_WRITE_LIMITER = "dchat_node.user_write_limiter"


@lru_cache(maxsize=4096)
def address_key(address: str) -> str | None:
    """The rate-limit key of one address: IPv4 as is, IPv6 its /64 (IPv4-mapped: the IPv4
    address); None if ``address`` is not an IP address (brackets and a port are allowed:
    ``[2001:db8::1]:443``, ``192.0.2.1:80``)."""
    text = address.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class ClientKeys:
    """Which client a request counts for (see the module docstring)."""

    def __init__(self, trusted_proxies: Sequence[str], hops: int) -> None:
        self._trusted = tuple(ip_network(cidr, strict=False) for cidr in trusted_proxies)
        self._hops = hops

    def _trusted_peer(self, peer: str) -> bool:
        try:
            ip = ip_address(peer)
        except ValueError:
            return False
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._trusted)  # False across IP versions

    def key_of(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The key for a request from TCP peer ``peer`` with these X-Forwarded-For header
        values (in order)."""
        peer = peer or ""
        peer_key = address_key(peer) or peer or "unknown"
        if not self._trusted or not forwarded_for or not self._trusted_peer(peer):
            return peer_key
        entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
        if not entries:
            return peer_key
        chosen = entries[max(0, len(entries) - self._hops)]
        return address_key(chosen) or peer_key

    async def key(self) -> str:
        """quart-rate-limiter's key function for the current request."""
        if not self._trusted:  # the common case: no header look-up at all
            peer = request.remote_addr or ""
            return address_key(peer) or peer or "unknown"
        return self.key_of(request.remote_addr, request.headers.getlist("X-Forwarded-For"))


def _gcra(
    stored: datetime, now: datetime, max_interval: timedelta, emission: timedelta
) -> datetime:
    """One GCRA step: the new theoretical arrival time, or ``RateLimitExceeded``."""
    if stored.tzinfo is None:
        stored = stored.astimezone(UTC)
    tat = stored if stored > now else now
    if tat - now > max_interval:
        retry_after = (tat - max_interval - now).total_seconds()
        raise RateLimitExceeded(ceil(retry_after))
    return tat + emission


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
            # GCRA: tat is the theoretical arrival time of the next conforming request
            updates.append((key, _gcra(stored, now, rl.max_interval, rl.emission)))
        # only a request that no limit rejects consumes capacity
        for key, new_tat in updates:
            await self.store.set(key, new_tat)


class UserWriteLimiter:
    """``rate`` writes per second per user (token ``sub``), burst ``rate``, across routes."""

    def __init__(self, rate: int, store: ExpiringMemoryStore) -> None:
        self._store = store
        self._emission = timedelta(seconds=1 / rate)
        self._max_interval = timedelta(seconds=1) - self._emission

    async def check(self, subject: str) -> None:
        """Count one write of ``subject`` or raise ``RateLimitExceeded`` (429)."""
        key = "user-writes:" + subject
        now = datetime.now(UTC)
        new_tat = _gcra(await self._store.get(key, now), now, self._max_interval, self._emission)
        await self._store.set(key, new_tat)


async def limit_user_writes(subject: str) -> None:
    """Called once the current request's token is verified: a write counts against its
    user's budget (a no-op for reads, or when rate limiting is off)."""
    if request.method not in WRITE_METHODS:
        return
    limiter: UserWriteLimiter | None = current_app.extensions.get(USER_WRITE_LIMITER)
    if limiter is not None:
        await limiter.check(subject)


def apply_rate_limit(app: Quart, config: SecurityConfig) -> RateLimiter:
    store = ExpiringMemoryStore()
    clients = ClientKeys(config.trusted_proxies, config.trusted_proxy_hops)
    limiter = NodeRateLimiter(
        key_function=clients.key,
        default_limits=[RateLimit(config.rate_limit_requests_per_sec, timedelta(seconds=1))],
        store=store,
    )
    limiter.init_app(app, enabled=config.rate_limit_enabled)
    if config.rate_limit_enabled:
        app.extensions[USER_WRITE_LIMITER] = UserWriteLimiter(
            config.rate_limit_writes_per_user_per_sec, store
        )
    return limiter
