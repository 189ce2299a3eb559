"""The relay service's rules on a real SQLite store, with two services joined by the
in-process ``LocalPubSub`` (the same PubSub contract as the libp2p host): checks and their
4xx errors, dedupe, batched gossip, fetch proofs, live listeners, expiry."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dchat_node.config import DatabaseConfig, RelayConfig
from dchat_node.observability.metrics import RelayMetrics, register_relay
from dchat_node.p2p.local import LocalNetwork, LocalPubSub
from dchat_node.p2p.pubsub import Message
from dchat_node.relay.envelope import (
    EnvelopeError,
    b64encode,
    parse_envelope,
    verify_fetch,
)
from dchat_node.relay.models import EnvelopeIn, FetchIn
from dchat_node.relay.service import (
    TOPIC,
    ChallengeRefused,
    EnvelopeTooLarge,
    InvalidEnvelope,
    ProofRefused,
    RelayComponent,
    RelayService,
    SenderRateLimited,
)
from dchat_node.relay.store import SqlRelayStore
from dchat_node.storage import Storage, create_storage
from tests.node.relay_client import Keys, envelope, proof

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def _storage(path: Path) -> Storage:
    st = create_storage(DatabaseConfig(url=f"sqlite:///{path}/dchat.db"))
    await st.open()
    await st.migrate()
    return st


def _metrics() -> RelayMetrics:
    return register_relay(CollectorRegistry())


def count(metrics: RelayMetrics, event: str) -> float:
    value: float = metrics.envelopes.labels(event=event)._value.get()
    return value


@pytest.fixture
async def pair(tmp_path: Path, clock: Clock) -> AsyncIterator[tuple[RelayService, RelayService]]:
    network = LocalNetwork()
    stores = [await _storage(tmp_path / n) for n in ("a", "b")]
    cfg = RelayConfig(sender_rate_per_sec=1, sender_burst=2, max_envelope_bytes=1024)
    services = [
        RelayService(
            SqlRelayStore(st), cfg, _metrics(), pubsub=LocalPubSub(network, n), clock=clock
        )
        for st, n in zip(stores, ("peer-a", "peer-b"), strict=True)
    ]
    tasks = [asyncio.create_task(s.run()) for s in services]
    await asyncio.sleep(0)
    try:
        yield services[0], services[1]
    finally:
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for st in stores:
            await st.close()


def at(
    clock: Clock, sender: Keys, recipient: Keys, body: bytes = b"x" * 32, **kw: int
) -> EnvelopeIn:
    return EnvelopeIn.model_validate(
        envelope(sender, recipient, body, created_at=int(clock.now), **kw)
    )


async def fetch(svc: RelayService, who: Keys, after: int = 0) -> list[str]:
    ch = await svc.challenge(who.b64)
    page = await svc.fetch(
        FetchIn(
            recipient=who.b64,
            challenge=ch.challenge,
            signature=proof(who, ch.challenge),
            after=after,
        )
    )
    return [e.id for e in page.envelopes]


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``predicate`` (a database read: nothing to wait on) for up to 5 s."""
    async with asyncio.timeout(5):
        while not await predicate():  # noqa: ASYNC110 - polls the store
            await asyncio.sleep(0.01)


def test_envelope_id_is_stable_and_tampering_breaks_the_signature() -> None:
    alice, bob = Keys.new(), Keys.new()
    wire = envelope(alice, bob, b"secret", created_at=100, ttl_secs=60)
    env = parse_envelope(**wire)
    env.verify()
    assert env.id == parse_envelope(**wire).id
    assert len(env.id) == 64
    for field, value in (
        ("ciphertext", b64encode(b"Secret")),
        ("recipient", Keys.new().b64),
        ("ttl_secs", 61),
        ("created_at", 101),
    ):
        tampered = parse_envelope(**{**wire, field: value})
        with pytest.raises(EnvelopeError, match="signature"):
            tampered.verify()
    with pytest.raises(EnvelopeError, match="32 bytes"):
        parse_envelope(**{**wire, "sender": b64encode(b"short")})
    with pytest.raises(EnvelopeError, match="base64"):
        parse_envelope(**{**wire, "ciphertext": "***"})


def test_fetch_proof_binds_challenge_and_key() -> None:
    bob, eve = Keys.new(), Keys.new()
    ch = b64encode(os.urandom(32))
    sig = base64.b64decode(proof(bob, ch))
    verify_fetch(bob.public, base64.b64decode(ch), sig)
    with pytest.raises(EnvelopeError):
        verify_fetch(eve.public, base64.b64decode(ch), sig)
    with pytest.raises(EnvelopeError):
        verify_fetch(bob.public, os.urandom(32), sig)


async def test_post_gossips_to_the_other_node_which_serves_it(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    a, b = pair
    alice, bob = Keys.new(), Keys.new()
    result = await a.post(at(clock, alice, bob))
    assert (result.duplicate, result.gossiped) == (False, True)

    async def arrived() -> bool:
        return await fetch(b, bob) == [result.id]

    await wait_until(arrived)
    assert count(b.metrics, "accepted_gossip") == 1
    # the same envelope posted to b: a duplicate, not stored twice, not gossiped again
    again = await b.post(at(clock, alice, bob))
    assert (again.id, again.duplicate, again.gossiped) == (result.id, True, False)
    assert await fetch(b, bob) == [result.id]


async def test_many_posts_travel_in_few_gossip_messages(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    a, b = pair
    bob = Keys.new()
    ids = [(await a.post(at(clock, Keys.new(), bob))).id for _ in range(300)]

    async def arrived() -> bool:
        got: list[str] = []
        after = 0
        while True:
            ch = await b.challenge(bob.b64)
            page = await b.fetch(
                FetchIn(
                    recipient=bob.b64,
                    challenge=ch.challenge,
                    signature=proof(bob, ch.challenge),
                    after=after,
                    limit=500,
                )
            )
            if not page.envelopes:
                return sorted(got) == sorted(ids)
            got += [e.id for e in page.envelopes]
            after = page.next_after

    await wait_until(arrived)
    assert count(b.metrics, "accepted_gossip") == 300


async def test_checks_refuse_with_the_right_errors(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    a, _ = pair
    alice, bob = Keys.new(), Keys.new()
    with pytest.raises(EnvelopeTooLarge, match="max_envelope_bytes"):
        await a.post(at(clock, alice, bob, os.urandom(1025)))
    with pytest.raises(InvalidEnvelope, match="max_ttl_secs"):
        await a.post(at(clock, alice, bob, ttl_secs=10**7))
    stale = EnvelopeIn.model_validate(envelope(alice, bob, created_at=int(clock.now) - 3600))
    with pytest.raises(InvalidEnvelope, match="created_at"):
        await a.post(stale)
    forged = at(clock, alice, bob).model_copy(update={"sender": Keys.new().b64})
    with pytest.raises(InvalidEnvelope, match="signature"):
        await a.post(forged)
    # per-sender bucket: burst 2 at 1/s; refilled by the clock; other senders unaffected
    await a.post(at(clock, alice, bob, b"1" * 8))
    await a.post(at(clock, alice, bob, b"2" * 8))
    with pytest.raises(SenderRateLimited, match="retry in"):
        await a.post(at(clock, alice, bob, b"3" * 8))
    await a.post(at(clock, Keys.new(), bob, b"4" * 8))
    clock.now += 1.0
    await a.post(at(clock, alice, bob, b"5" * 8))
    assert count(a.metrics, "rejected") == 5


async def test_fetch_proofs(pair: tuple[RelayService, RelayService], clock: Clock) -> None:
    a, _ = pair
    bob, eve = Keys.new(), Keys.new()
    ch = await a.challenge(bob.b64)
    with pytest.raises(ProofRefused):
        await a.fetch(
            FetchIn(recipient=bob.b64, challenge=ch.challenge, signature=proof(eve, ch.challenge))
        )
    ok = FetchIn(recipient=bob.b64, challenge=ch.challenge, signature=proof(bob, ch.challenge))
    assert (await a.fetch(ok)).envelopes == []
    with pytest.raises(ChallengeRefused):
        await a.fetch(ok)  # used
    late = await a.challenge(bob.b64)
    clock.now += 61
    with pytest.raises(ChallengeRefused):
        await a.fetch(
            FetchIn(
                recipient=bob.b64, challenge=late.challenge, signature=proof(bob, late.challenge)
            )
        )


async def test_live_listener_gets_new_envelopes_and_is_cut_off_when_behind(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    a, b = pair
    bob = Keys.new()
    listener = b.listen(bob.b64)
    posted = await a.post(at(clock, Keys.new(), bob))
    async with asyncio.timeout(5):
        got = await listener.queue.get()
    assert got is not None
    assert got.id == posted.id
    for _ in range(300):  # LISTENER_QUEUE is 256: the listener overflows
        listener.push(got)
    assert listener.overflowed
    items = [listener.queue.get_nowait() for _ in range(listener.queue.qsize())]
    assert items[-1] is None
    b.unlisten(listener)
    assert b.stats()["live_listeners"] == 0


async def test_invalid_gossip_is_counted_and_dropped(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    _, b = pair
    bob = Keys.new()
    good = envelope(Keys.new(), bob, created_at=int(clock.now))
    bad = {**envelope(Keys.new(), bob, created_at=int(clock.now)), "ttl_secs": 5}
    data = json.dumps({"v": 1, "envelopes": [good, bad, {"junk": 1}]}).encode()
    assert await b.receive(Message(TOPIC, "peer-x", data, 1)) == 1
    assert await b.receive(Message(TOPIC, "peer-x", b"not json", 2)) == 0
    assert count(b.metrics, "invalid_gossip") == 3
    assert count(b.metrics, "accepted_gossip") == 1


async def test_expired_envelopes_are_purged(
    pair: tuple[RelayService, RelayService], clock: Clock
) -> None:
    a, _ = pair
    bob = Keys.new()
    await a.post(at(clock, Keys.new(), bob, ttl_secs=60))
    keep = await a.post(at(clock, Keys.new(), bob, ttl_secs=600))
    clock.now += 120
    assert await a.purge() == 1
    assert await fetch(a, bob) == [keep.id]
    assert count(a.metrics, "purged") == 1


async def test_health_component_reports_isolation_and_failure(tmp_path: Path) -> None:
    st = await _storage(tmp_path)
    try:
        snapshot = {"running": True, "connected_peers": [], "mesh": {}, "peer_id": "p"}
        svc = RelayService(
            SqlRelayStore(st), RelayConfig(), _metrics(), p2p_status=lambda: snapshot
        )
        lone = await RelayComponent(svc, RelayConfig()).status()
        assert (lone.healthy, lone.state) == (True, "isolated")
        expecting = RelayConfig(bootstrap_nodes=["/ip4/127.0.0.1/tcp/1/p2p/x"])
        assert (await RelayComponent(svc, expecting).status()).healthy is False
        # DNS discovery (a cluster's peers Service) that lists only this node: alone, healthy
        by_dns = RelayConfig(bootstrap_dns="c-p2p-peers.ns.svc")
        alone = await RelayComponent(svc, by_dns).status()
        assert (alone.healthy, alone.state) == (True, "isolated")
        assert alone.details["reason"] == "c-p2p-peers.ns.svc lists no other node"
        # ... and once it found another node to dial, not connecting to it is unhealthy
        snapshot.update(dial_targets=["/ip4/10.0.0.2/tcp/7000/p2p/q"])
        assert (await RelayComponent(svc, by_dns).status()).healthy is False
        snapshot.update(dial_targets=[])
        snapshot.update(connected_peers=["q"], mesh={TOPIC: 1})
        ok = await RelayComponent(svc, expecting).status()
        assert (ok.healthy, ok.state, ok.details["connected_peers"]) == (True, "ok", 1)
        snapshot.update(running=False, failure="port in use")
        failed = await RelayComponent(svc, RelayConfig()).status()
        assert (failed.healthy, failed.state, failed.details["failure"]) == (
            False,
            "failed",
            "port in use",
        )
    finally:
        await st.close()
