"""The relay service: store-and-forward of end-to-end encrypted envelopes.

Design:
- ``post``: a client posts a signed envelope (``envelope`` module) to any node. The node
  checks size (413 beyond ``relay.max_envelope_bytes``), ttl (at most
  ``relay.max_ttl_secs``), the sender's clock (``created_at`` within
  ``MAX_CLOCK_SKEW_SECS``), the signature, then the sender's rate (token bucket per
  sender key: ``relay.sender_rate_per_sec``, ``relay.sender_burst``; 429), stores it
  (dedupe by id) and queues it for gossip. The node never sees plaintext: the ciphertext
  is stored and relayed as it came.
- Gossip: envelopes are published on ``TOPIC`` in batches (up to ``BATCH_MAX`` envelopes
  or ``BATCH_BYTES``, collected for ``BATCH_WAIT_SECS``): py-libp2p spends milliseconds
  of CPU per message and hop, so one message per envelope would cap the relay at a few
  hundred envelopes/s. The outbox is bounded (``OUTBOX``); a full outbox, a full publish
  queue after retries, or a stopped host count ``gossip_failed`` (the envelope stays
  stored here and is still served by this node). Received batches are checked envelope
  by envelope exactly like posts (minus the rate limit and the clock check on the past:
  an envelope may travel late), stored (dedupe), and pushed to live listeners; invalid
  ones are counted (``invalid_gossip``) and dropped.
- Fetch: the recipient asks for a challenge (32 random bytes, ``CHALLENGE_TTL_SECS``,
  stored in the database so any replica of a cluster sharing PostgreSQL accepts it),
  signs it with its key and fetches with a cursor. A bad signature is 403, an unknown,
  expired or used challenge 401; a challenge is consumed by its first valid use.
- Live delivery: a WebSocket listener registered after the same proof receives every new
  envelope for its key stored from then on (through a bounded queue of
  ``LISTENER_QUEUE``; a listener that falls behind is closed so it refetches, counted).
  At most ``MAX_LISTENERS`` listeners per node.
- Expiry: ``run`` purges expired envelopes and challenges every ``PURGE_INTERVAL_SECS``
  in bounded batches.
- Limitation: no backfill: a node that was not connected when an envelope was gossiped
  does not get it later (the recipient can fetch from the node it was posted to).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dchat_node.components import ComponentStatus
from dchat_node.config import RelayConfig
from dchat_node.observability.metrics import RelayMetrics
from dchat_node.p2p.pubsub import Message, P2PUnavailable, PubSub, QueueFull
from dchat_node.relay.envelope import (
    CHALLENGE_BYTES,
    KEY_BYTES,
    SIGNATURE_BYTES,
    Envelope,
    EnvelopeError,
    b64decode,
    b64encode,
    max_b64_len,
    parse_envelope,
    verify_fetch,
)
from dchat_node.relay.models import (
    ChallengeOut,
    EnvelopeIn,
    EnvelopeOut,
    EnvelopePage,
    FetchIn,
    P2PInfo,
    PostResult,
)
from dchat_node.relay.store import NewEnvelope, RelayStore, StoredEnvelope
from dchat_node.services.errors import DomainError

log = logging.getLogger("dchat_node.relay")

TOPIC = "/dchat/relay/envelopes/1"
MAX_CLOCK_SKEW_SECS = 300
CHALLENGE_TTL_SECS = 60
OUTBOX = 8192
BATCH_MAX = 256
BATCH_BYTES = 512 * 1024
BATCH_WAIT_SECS = 0.005
PUBLISH_RETRIES = 100
PUBLISH_RETRY_SECS = 0.05
SUBSCRIPTION_QUEUE = 1024
LISTENER_QUEUE = 256
MAX_LISTENERS = 4096
MAX_RATE_KEYS = 100_000
PURGE_INTERVAL_SECS = 30.0

Clock = Callable[[], float]


class InvalidEnvelope(DomainError):
    status = 400
    code = "invalid_envelope"


class EnvelopeTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


class SenderRateLimited(DomainError):
    status = 429
    code = "rate_limited"


class ChallengeRefused(DomainError):
    status = 401
    code = "unauthorized"


class ProofRefused(DomainError):
    status = 403
    code = "forbidden"


class TooManyListeners(DomainError):
    status = 503
    code = "unavailable"


class _SenderLimiter:
    """Token bucket per sender key, at most ``MAX_RATE_KEYS`` keys (least recently used
    evicted: an evicted sender starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def take(self, key: bytes) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > MAX_RATE_KEYS:
            self._buckets.popitem(last=False)
        return wait


class Listener:
    """One live subscriber (a WebSocket) for a recipient key: a bounded queue."""

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        self.queue: asyncio.Queue[EnvelopeOut | None] = asyncio.Queue(LISTENER_QUEUE)
        self.overflowed = False

    def push(self, env: EnvelopeOut) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(env)
        except asyncio.QueueFull:
            self.overflowed = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(None)  # tells the reader to close


@dataclass(frozen=True)
class _Checked:
    envelope: Envelope
    wire: dict[str, Any]


def _out(row: StoredEnvelope) -> EnvelopeOut:
    return EnvelopeOut(
        id=row.id,
        recipient=row.recipient,
        sender=row.sender,
        ciphertext=row.ciphertext,
        created_at=row.created_at,
        ttl_secs=row.ttl_secs,
        expires_at=row.expires_at,
        signature=row.signature,
    )


class RelayService:
    def __init__(
        self,
        store: RelayStore,
        config: RelayConfig,
        metrics: RelayMetrics,
        *,
        pubsub: PubSub | None = None,
        p2p_status: Callable[[], Mapping[str, Any]] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.pubsub = pubsub
        self.p2p_status = p2p_status
        self.clock = clock
        self._limiter = _SenderLimiter(config.sender_rate_per_sec, config.sender_burst, clock)
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(OUTBOX)
        self._listeners: dict[str, set[Listener]] = {}
        self._listener_count = 0
        self._max_ciphertext_b64 = max_b64_len(config.max_envelope_bytes)

    # -- checks -----------------------------------------------------------------------

    def _check(self, data: EnvelopeIn, *, from_api: bool) -> _Checked:
        if len(data.ciphertext) > self._max_ciphertext_b64:
            raise EnvelopeTooLarge(
                f"ciphertext exceeds relay.max_envelope_bytes ({self.config.max_envelope_bytes} "
                "bytes)"
            )
        try:
            env = parse_envelope(
                recipient=data.recipient,
                sender=data.sender,
                ciphertext=data.ciphertext,
                created_at=data.created_at,
                ttl_secs=data.ttl_secs,
                signature=data.signature,
            )
        except EnvelopeError as exc:
            raise InvalidEnvelope(str(exc)) from None
        if len(env.ciphertext) > self.config.max_envelope_bytes:
            raise EnvelopeTooLarge(
                f"ciphertext of {len(env.ciphertext)} bytes exceeds relay.max_envelope_bytes "
                f"({self.config.max_envelope_bytes})"
            )
        if env.ttl_secs > self.config.max_ttl_secs:
            raise InvalidEnvelope(
                f"ttl_secs: {env.ttl_secs} exceeds relay.max_ttl_secs ({self.config.max_ttl_secs})"
            )
        now = int(self.clock())
        if env.created_at > now + MAX_CLOCK_SKEW_SECS or (
            from_api and env.created_at < now - MAX_CLOCK_SKEW_SECS
        ):
            raise InvalidEnvelope(
                f"created_at: {env.created_at} is more than {MAX_CLOCK_SKEW_SECS} s from the "
                f"node's clock ({now})"
            )
        if env.expires_at <= now:
            raise InvalidEnvelope("the envelope has already expired (created_at + ttl_secs)")
        try:
            env.verify()
        except EnvelopeError as exc:
            raise InvalidEnvelope(str(exc)) from None
        return _Checked(env, data.model_dump())

    # -- API ----------------------------------------------------------------------------

    async def post(self, data: EnvelopeIn) -> PostResult:
        try:
            checked = self._check(data, from_api=True)
            wait = self._limiter.take(checked.envelope.sender)
            if wait > 0:
                raise SenderRateLimited(
                    f"sender exceeds relay.sender_rate_per_sec ({self.config.sender_rate_per_sec}"
                    f"/s, burst {self.config.sender_burst}); retry in {wait:.2f} s"
                )
        except DomainError:
            self.metrics.envelopes.labels(event="rejected").inc()
            raise
        env = checked.envelope
        [row] = await self.store.insert_many([self._new(checked, "api")])
        if row is None:
            self.metrics.envelopes.labels(event="duplicate").inc()
            return PostResult(id=env.id, expires_at=env.expires_at, duplicate=True, gossiped=False)
        self.metrics.envelopes.labels(event="accepted_api").inc()
        self._notify(row)
        gossiped = self._queue_gossip(checked.wire)
        return PostResult(id=env.id, expires_at=env.expires_at, duplicate=False, gossiped=gossiped)

    async def challenge(self, recipient: str) -> ChallengeOut:
        try:
            b64decode(recipient, "recipient", size=KEY_BYTES)
        except EnvelopeError as exc:
            raise InvalidEnvelope(str(exc)) from None
        challenge = b64encode(os.urandom(CHALLENGE_BYTES))
        expires_at = int(self.clock()) + CHALLENGE_TTL_SECS
        await self.store.add_challenge(challenge, recipient, expires_at)
        return ChallengeOut(challenge=challenge, expires_at=expires_at)

    async def authenticate(self, recipient: str, challenge: str, signature: str) -> None:
        """Check a recipient's proof; consume the challenge (401/403 otherwise)."""
        try:
            key = b64decode(recipient, "recipient", size=KEY_BYTES)
            raw_challenge = b64decode(challenge, "challenge", size=CHALLENGE_BYTES)
            sig = b64decode(signature, "signature", size=SIGNATURE_BYTES)
        except EnvelopeError as exc:
            raise InvalidEnvelope(str(exc)) from None
        try:
            verify_fetch(key, raw_challenge, sig)
        except EnvelopeError as exc:
            raise ProofRefused(str(exc)) from None
        if not await self.store.consume_challenge(challenge, recipient, int(self.clock())):
            raise ChallengeRefused(
                "challenge unknown, already used or expired: request a new one from "
                "POST /api/v1/relay/challenges"
            )

    async def fetch(self, data: FetchIn) -> EnvelopePage:
        await self.authenticate(data.recipient, data.challenge, data.signature)
        rows = await self.store.fetch(
            data.recipient, after=data.after, now=int(self.clock()), limit=data.limit
        )
        if rows:
            self.metrics.envelopes.labels(event="delivered_fetch").inc(len(rows))
        return EnvelopePage(
            envelopes=[_out(r) for r in rows], next_after=rows[-1].seq if rows else data.after
        )

    def listen(self, recipient: str) -> Listener:
        """Register a live listener (after ``authenticate``); ``unlisten`` when done."""
        if self._listener_count >= MAX_LISTENERS:
            raise TooManyListeners(f"this node serves at most {MAX_LISTENERS} live listeners")
        listener = Listener(recipient)
        self._listeners.setdefault(recipient, set()).add(listener)
        self._listener_count += 1
        return listener

    def unlisten(self, listener: Listener) -> None:
        group = self._listeners.get(listener.recipient)
        if group is not None and listener in group:
            group.discard(listener)
            self._listener_count -= 1
            if not group:
                del self._listeners[listener.recipient]

    def delivered_live(self) -> None:
        self.metrics.envelopes.labels(event="delivered_websocket").inc()

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _new(checked: _Checked, origin: str) -> NewEnvelope:
        w = checked.wire
        return NewEnvelope(
            id=checked.envelope.id,
            recipient=w["recipient"],
            sender=w["sender"],
            ciphertext=w["ciphertext"],
            created_at=w["created_at"],
            ttl_secs=w["ttl_secs"],
            signature=w["signature"],
            origin=origin,
        )

    def _notify(self, row: StoredEnvelope) -> None:
        for listener in list(self._listeners.get(row.recipient, ())):
            listener.push(_out(row))

    def _queue_gossip(self, wire: dict[str, Any]) -> bool:
        if self.pubsub is None:
            return False
        try:
            self._outbox.put_nowait(wire)
        except asyncio.QueueFull:
            self.metrics.envelopes.labels(event="gossip_failed").inc()
            return False
        return True

    def p2p_info(self) -> P2PInfo | None:
        if self.pubsub is None:
            return None
        status = self.p2p_status() if self.p2p_status is not None else {}
        return P2PInfo(peerId=self.pubsub.peer_id, addrs=list(status.get("listen_addrs", [])))

    def stats(self) -> dict[str, Any]:
        return {
            "topic": TOPIC,
            "outbox": self._outbox.qsize(),
            "outbox_capacity": OUTBOX,
            "live_listeners": self._listener_count,
        }

    # -- background ---------------------------------------------------------------------

    async def run(self) -> None:
        """Gossip in and out (when a P2P network is attached) and purge, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._purge_loop())
            if self.pubsub is not None:
                sub = self.pubsub.subscribe(TOPIC, maxsize=SUBSCRIPTION_QUEUE)
                tg.create_task(self._consume(sub))
                tg.create_task(self._flush())

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL_SECS)
            try:
                await self.purge()
            except Exception as exc:  # database trouble: counted, retried next round
                log.warning("relay purge failed: %s", type(exc).__name__)

    async def purge(self) -> int:
        now = int(self.clock())
        total = 0
        while True:
            n = await self.store.purge_expired(now)
            total += n
            if n < 1000:
                break
        while await self.store.purge_challenges(now) >= 1000:
            pass
        if total:
            self.metrics.envelopes.labels(event="purged").inc(total)
        return total

    async def _flush(self) -> None:
        assert self.pubsub is not None
        while True:
            first = await self._outbox.get()
            await asyncio.sleep(BATCH_WAIT_SECS)
            batch = [first]
            size = len(first["ciphertext"]) + 512
            while len(batch) < BATCH_MAX and not self._outbox.empty():
                nxt = self._outbox.get_nowait()
                size += len(nxt["ciphertext"]) + 512
                batch.append(nxt)
                if size >= BATCH_BYTES:
                    break
            data = json.dumps({"v": 1, "envelopes": batch}, separators=(",", ":")).encode()
            await self._publish(data, len(batch))

    async def _publish(self, data: bytes, count: int) -> None:
        assert self.pubsub is not None
        for _ in range(PUBLISH_RETRIES):
            try:
                await self.pubsub.publish(TOPIC, data)
                return
            except QueueFull:
                await asyncio.sleep(PUBLISH_RETRY_SECS)
            except P2PUnavailable as exc:
                log.warning("relay gossip of %d envelopes failed: %s", count, exc)
                break
        self.metrics.envelopes.labels(event="gossip_failed").inc(count)

    async def _consume(self, sub: Any) -> None:
        async for message in sub:
            try:
                await self.receive(message)
            except Exception as exc:  # one bad batch or a database error never stops it
                log.warning("relay: batch from %s not stored: %s", message.from_peer, exc)

    async def receive(self, message: Message) -> int:
        """Store a gossiped batch; returns how many envelopes were new."""
        try:
            doc = json.loads(message.data)
            items = doc["envelopes"] if doc.get("v") == 1 else None
        except (ValueError, TypeError, KeyError, AttributeError):
            items = None
        if not isinstance(items, list):
            self.metrics.envelopes.labels(event="invalid_gossip").inc()
            return 0
        fresh: list[_Checked] = []
        for item in items[:BATCH_MAX]:
            try:
                fresh.append(self._check(EnvelopeIn.model_validate(item), from_api=False))
            except (ValidationError, DomainError):
                self.metrics.envelopes.labels(event="invalid_gossip").inc()
        rows = await self.store.insert_many([self._new(c, "gossip") for c in fresh])
        new = 0
        for row in rows:
            if row is None:
                self.metrics.envelopes.labels(event="duplicate").inc()
            else:
                new += 1
                self._notify(row)
        if new:
            self.metrics.envelopes.labels(event="accepted_gossip").inc(new)
        return new


class RelayComponent:
    """``/health/relay``: the host's real state. Healthy while the host runs; with no peer
    it is ``isolated``: unhealthy while peers are expected (bootstrap nodes configured, or
    DNS discovery found other nodes to dial), healthy otherwise (a lone node, or a one-pod
    cluster whose peers Service lists only itself, is a valid deployment). ``/ready`` never
    looks at it."""

    name = "relay"

    def __init__(self, service: RelayService, config: RelayConfig) -> None:
        self.service = service
        self.config = config

    async def status(self) -> ComponentStatus:
        host = dict(self.service.p2p_status()) if self.service.p2p_status is not None else {}
        details: dict[str, Any] = {
            "peer_id": host.get("peer_id"),
            "connected_peers": len(host.get("connected_peers", [])),
            "peers": host.get("connected_peers", []),
            "mesh_peers": host.get("mesh", {}),
            "listen_addrs": host.get("listen_addrs", []),
            "dial_targets": host.get("dial_targets", []),
            "unusable_addrs": host.get("unusable_addrs", []),
            **self.service.stats(),
        }
        if not host.get("running"):
            details["failure"] = host.get("failure") or "the P2P host is not running"
            return ComponentStatus(False, "failed", details)
        if details["connected_peers"] == 0:
            # peers are expected from bootstrap nodes, or from DNS discovery once it found
            # another node under the name (a one-pod cluster finds only itself: alone is fine)
            expects_peers = bool(self.config.bootstrap_nodes or details["dial_targets"])
            if not expects_peers and self.config.bootstrap_dns:
                details["reason"] = f"{self.config.bootstrap_dns} lists no other node"
            return ComponentStatus(not expects_peers, "isolated", details)
        return ComponentStatus(True, "ok", details)
