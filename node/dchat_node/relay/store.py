"""Storage of the relay domain: envelopes and fetch challenges (migration 0006).

``RelayStore`` is the interface the service uses; ``SqlRelayStore`` its one implementation,
written once against ``SqlDatabase`` (``?`` placeholders; both engines run it):
- ``insert_many`` stores a batch in one transaction with ``INSERT ... ON CONFLICT (id) DO
  NOTHING RETURNING seq``: a row comes back only for a new envelope (dedupe by id).
- ``consume_challenge`` is one ``DELETE ... RETURNING``: a challenge is used at most once
  even when two requests race with it.
- Purges delete in bounded batches (``LIMIT`` in a subquery), so one purge never holds the
  database for long.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from dchat_node.storage.base import Row, SqlDatabase


@dataclass(frozen=True, slots=True)
class StoredEnvelope:
    seq: int
    id: str
    recipient: str
    sender: str
    ciphertext: str
    created_at: int
    ttl_secs: int
    expires_at: int
    signature: str
    origin: str


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    id: str
    recipient: str
    sender: str
    ciphertext: str
    created_at: int
    ttl_secs: int
    signature: str
    origin: str  # "api" or "gossip"

    @property
    def expires_at(self) -> int:
        return self.created_at + self.ttl_secs


class RelayStore(Protocol):
    async def insert_many(self, envelopes: list[NewEnvelope]) -> list[StoredEnvelope | None]:
        """Store each; per input the stored row, or None when the id was already held."""
        ...

    async def fetch(
        self, recipient: str, *, after: int, now: int, limit: int
    ) -> list[StoredEnvelope]: ...
    async def purge_expired(self, now: int, *, batch: int = 1000) -> int: ...
    async def add_challenge(self, challenge: str, recipient: str, expires_at: int) -> None: ...
    async def consume_challenge(self, challenge: str, recipient: str, now: int) -> bool: ...
    async def purge_challenges(self, now: int, *, batch: int = 1000) -> int: ...


_COLUMNS = (
    "seq, id, recipient, sender, ciphertext, created_at, ttl_secs, expires_at, signature, origin"
)


def _record(row: Row) -> StoredEnvelope:
    return StoredEnvelope(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        int(row[5]),
        int(row[6]),
        int(row[7]),
        str(row[8]),
        str(row[9]),
    )


class SqlRelayStore:
    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def insert_many(self, envelopes: list[NewEnvelope]) -> list[StoredEnvelope | None]:
        out: list[StoredEnvelope | None] = []
        if not envelopes:
            return out
        now_us = time.time_ns() // 1000
        async with self._db.transaction() as tx:
            for env in envelopes:
                row = await tx.fetchrow(
                    "INSERT INTO relay_envelopes (id, recipient, sender, ciphertext, "  # noqa: S608
                    "created_at, ttl_secs, expires_at, signature, origin, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING "
                    f"RETURNING {_COLUMNS}",
                    env.id,
                    env.recipient,
                    env.sender,
                    env.ciphertext,
                    env.created_at,
                    env.ttl_secs,
                    env.expires_at,
                    env.signature,
                    env.origin,
                    now_us,
                )
                out.append(None if row is None else _record(row))
        return out

    async def fetch(
        self, recipient: str, *, after: int, now: int, limit: int
    ) -> list[StoredEnvelope]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM relay_envelopes "  # noqa: S608
            "WHERE recipient = ? AND seq > ? AND expires_at > ? ORDER BY seq LIMIT ?",
            recipient,
            after,
            now,
            limit,
        )
        return [_record(r) for r in rows]

    async def purge_expired(self, now: int, *, batch: int = 1000) -> int:
        rows = await self._db.fetch(
            "DELETE FROM relay_envelopes WHERE seq IN (SELECT seq FROM relay_envelopes "
            "WHERE expires_at <= ? ORDER BY expires_at LIMIT ?) RETURNING seq",
            now,
            batch,
        )
        return len(rows)

    async def add_challenge(self, challenge: str, recipient: str, expires_at: int) -> None:
        await self._db.execute(
            "INSERT INTO relay_challenges (challenge, recipient, expires_at) VALUES (?, ?, ?)",
            challenge,
            recipient,
            expires_at,
        )

    async def consume_challenge(self, challenge: str, recipient: str, now: int) -> bool:
        row = await self._db.fetchrow(
            "DELETE FROM relay_challenges WHERE challenge = ? AND recipient = ? "
            "AND expires_at > ? RETURNING challenge",
            challenge,
            recipient,
            now,
        )
        return row is not None

    async def purge_challenges(self, now: int, *, batch: int = 1000) -> int:
        rows = await self._db.fetch(
            "DELETE FROM relay_challenges WHERE challenge IN (SELECT challenge FROM "
            "relay_challenges WHERE expires_at <= ? LIMIT ?) RETURNING challenge",
            now,
            batch,
        )
        return len(rows)
