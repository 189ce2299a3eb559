"""The relay store's contract on both engines (SQLite unit, PostgreSQL integration):
dedupe by envelope id, this node's order as the cursor, expiry, single-use challenges
(also under a race), bounded purges."""

from __future__ import annotations

import asyncio

from dchat_node.relay.store import NewEnvelope, SqlRelayStore
from dchat_node.storage import Storage
from tests.node.test_storage_contract import db, db_config, fresh  # noqa: F401 (fixtures)


def env(n: int, recipient: str = "r1", *, created_at: int = 1000, ttl: int = 100) -> NewEnvelope:
    return NewEnvelope(
        id=f"{n:064x}",
        recipient=recipient,
        sender="s1",
        ciphertext=f"c{n}",
        created_at=created_at,
        ttl_secs=ttl,
        signature=f"sig{n}",
        origin="api",
    )


async def test_insert_dedupes_by_id_and_fetch_pages_in_order(db: Storage) -> None:  # noqa: F811
    store = SqlRelayStore(db)
    first = await store.insert_many([env(1), env(2), env(3, "r2")])
    assert all(row is not None for row in first)
    again = await store.insert_many([env(2), env(4)])
    assert again[0] is None
    assert again[1] is not None
    assert again[1].ciphertext == "c4"
    rows = await store.fetch("r1", after=0, now=1050, limit=10)
    assert [r.id for r in rows] == [env(1).id, env(2).id, env(4).id]
    assert [r.expires_at for r in rows] == [1100, 1100, 1100]
    page = await store.fetch("r1", after=rows[0].seq, now=1050, limit=1)
    assert [r.id for r in page] == [env(2).id]
    assert await store.fetch("r2", after=0, now=1050, limit=10) != []
    assert await store.fetch("nobody", after=0, now=1050, limit=10) == []


async def test_expired_envelopes_are_hidden_then_purged_in_batches(db: Storage) -> None:  # noqa: F811
    store = SqlRelayStore(db)
    await store.insert_many([env(n, ttl=10 if n % 2 else 1000) for n in range(1, 8)])
    assert len(await store.fetch("r1", after=0, now=1020, limit=50)) == 3
    assert await store.purge_expired(1020, batch=2) == 2
    assert await store.purge_expired(1020, batch=100) == 2
    assert await store.purge_expired(1020) == 0
    assert len(await store.fetch("r1", after=0, now=0, limit=50)) == 3


async def test_challenges_are_single_use_bound_to_the_key_and_expire(db: Storage) -> None:  # noqa: F811
    store = SqlRelayStore(db)
    await store.add_challenge("ch1", "r1", expires_at=1060)
    await store.add_challenge("ch2", "r1", expires_at=1060)
    assert not await store.consume_challenge("ch1", "r2", now=1000)  # other key
    assert not await store.consume_challenge("ch2", "r1", now=1060)  # expired
    assert await store.consume_challenge("ch1", "r1", now=1000)
    assert not await store.consume_challenge("ch1", "r1", now=1000)  # used
    assert await store.purge_challenges(now=2000) == 1  # ch2


async def test_a_challenge_raced_by_many_requests_is_used_once(db: Storage) -> None:  # noqa: F811
    store = SqlRelayStore(db)
    await store.add_challenge("race", "r1", expires_at=1060)
    results = await asyncio.gather(
        *(store.consume_challenge("race", "r1", now=1000) for _ in range(8))
    )
    assert results.count(True) == 1
