"""Bridge storage: the ``BridgeStore`` protocol and its one SQL implementation.

Design:
- Tables of migration 0011: ``bridge_transfers`` (one row per Deposit log, keyed by the
  transfer id, with an integer ``id`` for cursor pagination), ``bridge_signatures`` (release
  and refund attestations by transfer, kind, digest and signer; a signature is stored only
  after the service recovered it to a registered validator) and ``bridge_cursors`` (the next
  block to scan per source chain).
- Everything the worker learns is written before it acts on it, so a restart (or a chain
  outage) resumes where it stopped: deposits and the scan cursor move in one transaction,
  state changes are compare-and-set on the expected states (two tasks or two nodes sharing
  one database never both advance a transfer), inserts are ``ON CONFLICT DO NOTHING``.
- Snapshots (migration 0012, ``bridge_snapshots`` by sequence number and
  ``bridge_snapshot_signatures`` by snapshot hash): the first snapshot a node verifies for a
  sequence number is the one it keeps (``ON CONFLICT DO NOTHING``); the cut is JSON text.
  ``settled_cut`` and ``cut_states`` read what a snapshot covers.
- Written against ``SqlDatabase`` (``?`` placeholders), so SQLite and PostgreSQL run the
  same statements.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dchat_node.storage.base import SqlDatabase, now_us

TERMINAL_STATES = frozenset({"released", "refunded", "dropped"})
STATES = (
    "observed",  # the Deposit log is in a block that is not final yet
    "attesting",  # final on the source chain: validators sign, aggregators collect
    "released",  # executed on the destination chain
    "refund_pending",  # no quorum + finality in time, or the deadline passed unreleased
    "refunded",  # the depositor got the deposit back on the source chain
    "dropped",  # the deposit's transaction left the chain in a reorg
)


@dataclass(frozen=True, slots=True)
class ObservedDeposit:
    transfer_id: str
    src_chain_id: int
    src_vault: str
    nonce: int
    depositor: str
    recipient: str
    amount: int
    dst_chain_id: int
    deadline: int
    tx_hash: str
    block_number: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class TransferRecord:
    id: int
    transfer_id: str
    src_chain_id: int
    src_vault: str
    nonce: int
    depositor: str
    recipient: str
    amount: int
    dst_chain_id: int
    deadline: int
    src_tx_hash: str
    src_block_number: int
    src_block_hash: str
    state: str
    release_tx_hash: str | None
    refund_tx_hash: str | None
    last_error: str | None
    timeout_counted: bool
    observed_at: int
    final_at: int | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class CutEntry:
    chain_id: int
    vault: str  # checksummed
    next_nonce: int  # transfers with nonce < next_nonce from this vault are covered


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    seq: int
    hash: str  # 0x-hex, like prev_hash and root
    prev_hash: str
    root: str
    leaf_count: int
    cut: tuple[CutEntry, ...]  # ascending chain id
    created_at: int


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int  # transfers not in a terminal state
    oldest_observed_at: int | None  # microseconds, of the oldest pending one


_COLS = (
    "id, transfer_id, src_chain_id, src_vault, nonce, depositor, recipient, amount, "
    "dst_chain_id, deadline, src_tx_hash, src_block_number, src_block_hash, state, "
    "release_tx_hash, refund_tx_hash, last_error, timeout_counted, observed_at, final_at, "
    "updated_at"
)
_SETTABLE = frozenset(
    {"release_tx_hash", "refund_tx_hash", "last_error", "final_at", "src_block_number",
     "src_block_hash"}
)  # fmt: skip


def _record(row: Sequence[Any]) -> TransferRecord:
    return TransferRecord(
        id=int(row[0]),
        transfer_id=row[1],
        src_chain_id=int(row[2]),
        src_vault=row[3],
        nonce=int(row[4]),
        depositor=row[5],
        recipient=row[6],
        amount=int(row[7]),
        dst_chain_id=int(row[8]),
        deadline=int(row[9]),
        src_tx_hash=row[10],
        src_block_number=int(row[11]),
        src_block_hash=row[12],
        state=row[13],
        release_tx_hash=row[14],
        refund_tx_hash=row[15],
        last_error=row[16],
        timeout_counted=bool(row[17]),
        observed_at=int(row[18]),
        final_at=None if row[19] is None else int(row[19]),
        updated_at=int(row[20]),
    )


class BridgeStore(Protocol):
    async def cursor(self, chain_id: int) -> int | None: ...

    async def record_scan(
        self, chain_id: int, next_block: int, deposits: Sequence[ObservedDeposit]
    ) -> int:
        """Insert new deposits and move the chain's cursor, atomically; the number new."""
        ...

    async def get(self, transfer_id: str) -> TransferRecord | None: ...

    async def list_transfers(
        self, account: str | None, state: str | None, after_id: int, limit: int
    ) -> tuple[list[TransferRecord], bool]: ...

    async def in_states(self, states: Sequence[str], limit: int) -> list[TransferRecord]: ...

    async def transition(
        self, transfer_id: str, expected: Sequence[str], state: str, **fields: Any
    ) -> bool:
        """Compare-and-set the state (and ``fields``) when it is one of ``expected``."""
        ...

    async def update(self, transfer_id: str, **fields: Any) -> None: ...

    async def claim_timeout(self, transfer_id: str) -> bool:
        """True once per transfer: the finality-proof timeout is counted only once."""
        ...

    async def add_signature(
        self, transfer_id: str, kind: str, digest: str, signer: str, signature: str
    ) -> bool: ...

    async def signatures(self, transfer_id: str, kind: str, digest: str) -> dict[str, str]: ...

    async def backlog(self) -> Backlog: ...

    async def settled_next_nonce(self, chain_id: int) -> int:
        """The highest ``n`` such that every observed transfer from ``chain_id`` with a nonce
        below ``n`` is in a final state (released, refunded, dropped)."""
        ...

    async def cut_states(self, cut: Sequence[CutEntry]) -> list[tuple[str, str]]:
        """(transfer id, state) of every observed transfer the cut covers."""
        ...

    async def cut_count(self, cut: Sequence[CutEntry]) -> int:
        """How many observed transfers the cut covers."""
        ...

    async def add_snapshot(self, snapshot: SnapshotRecord) -> bool:
        """Insert unless this sequence number is taken; True when inserted."""
        ...

    async def snapshot(self, seq: int | None = None) -> SnapshotRecord | None:
        """The snapshot of ``seq``; None: the latest."""
        ...

    async def add_snapshot_signature(
        self, snapshot_hash: str, signer: str, signature: str
    ) -> bool: ...

    async def snapshot_signatures(self, snapshot_hash: str) -> dict[str, str]: ...


class SqlBridgeStore:
    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    async def cursor(self, chain_id: int) -> int | None:
        row = await self.db.fetchrow(
            "SELECT next_block FROM bridge_cursors WHERE chain_id = ?", chain_id
        )
        return None if row is None else int(row[0])

    async def record_scan(
        self, chain_id: int, next_block: int, deposits: Sequence[ObservedDeposit]
    ) -> int:
        now = now_us()
        new = 0
        async with self.db.transaction() as tx:
            for d in deposits:
                before = await tx.fetchrow(
                    "SELECT 1 FROM bridge_transfers WHERE transfer_id = ?", d.transfer_id
                )
                if before is not None:
                    continue
                await tx.execute(
                    "INSERT INTO bridge_transfers (transfer_id, src_chain_id, src_vault, nonce, "
                    "depositor, recipient, amount, dst_chain_id, deadline, src_tx_hash, "
                    "src_block_number, src_block_hash, state, observed_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'observed', ?, ?) "
                    "ON CONFLICT (transfer_id) DO NOTHING",
                    d.transfer_id,
                    d.src_chain_id,
                    d.src_vault,
                    d.nonce,
                    d.depositor,
                    d.recipient,
                    str(d.amount),
                    d.dst_chain_id,
                    d.deadline,
                    d.tx_hash,
                    d.block_number,
                    d.block_hash,
                    now,
                    now,
                )
                new += 1
            await tx.execute(
                "INSERT INTO bridge_cursors (chain_id, next_block, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (chain_id) DO UPDATE SET next_block = excluded.next_block, "
                "updated_at = excluded.updated_at",
                chain_id,
                next_block,
                now,
            )
        return new

    async def get(self, transfer_id: str) -> TransferRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLS} FROM bridge_transfers WHERE transfer_id = ?",  # noqa: S608
            transfer_id,
        )
        return None if row is None else _record(row)

    async def list_transfers(
        self, account: str | None, state: str | None, after_id: int, limit: int
    ) -> tuple[list[TransferRecord], bool]:
        where = ["id > ?"]
        args: list[Any] = [after_id]
        if account is not None:
            where.append("(depositor = ? OR recipient = ?)")
            args += [account, account]
        if state is not None:
            where.append("state = ?")
            args.append(state)
        rows = await self.db.fetch(
            f"SELECT {_COLS} FROM bridge_transfers WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",  # noqa: S608
            *args,
            limit + 1,
        )
        return [_record(r) for r in rows[:limit]], len(rows) > limit

    async def in_states(self, states: Sequence[str], limit: int) -> list[TransferRecord]:
        marks = ", ".join("?" for _ in states)
        rows = await self.db.fetch(
            f"SELECT {_COLS} FROM bridge_transfers WHERE state IN ({marks}) ORDER BY id LIMIT ?",  # noqa: S608
            *states,
            limit,
        )
        return [_record(r) for r in rows]

    def _sets(self, fields: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable: {sorted(unknown)}")
        names = sorted(fields)
        return "".join(f", {n} = ?" for n in names), [fields[n] for n in names]

    async def transition(
        self, transfer_id: str, expected: Sequence[str], state: str, **fields: Any
    ) -> bool:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        sets, values = self._sets(fields)
        marks = ", ".join("?" for _ in expected)
        row = await self.db.fetchrow(
            f"UPDATE bridge_transfers SET state = ?, updated_at = ?{sets} "  # noqa: S608
            f"WHERE transfer_id = ? AND state IN ({marks}) RETURNING id",
            state,
            now_us(),
            *values,
            transfer_id,
            *expected,
        )
        return row is not None

    async def update(self, transfer_id: str, **fields: Any) -> None:
        sets, values = self._sets(fields)
        await self.db.execute(
            f"UPDATE bridge_transfers SET updated_at = ?{sets} WHERE transfer_id = ?",  # noqa: S608
            now_us(),
            *values,
            transfer_id,
        )

    async def claim_timeout(self, transfer_id: str) -> bool:
        row = await self.db.fetchrow(
            "UPDATE bridge_transfers SET timeout_counted = 1 "
            "WHERE transfer_id = ? AND timeout_counted = 0 RETURNING id",
            transfer_id,
        )
        return row is not None

    async def add_signature(
        self, transfer_id: str, kind: str, digest: str, signer: str, signature: str
    ) -> bool:
        row = await self.db.fetchrow(
            "INSERT INTO bridge_signatures (transfer_id, kind, digest, signer, signature, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING signer",
            transfer_id,
            kind,
            digest,
            signer,
            signature,
            now_us(),
        )
        return row is not None

    async def signatures(self, transfer_id: str, kind: str, digest: str) -> dict[str, str]:
        rows = await self.db.fetch(
            "SELECT signer, signature FROM bridge_signatures "
            "WHERE transfer_id = ? AND kind = ? AND digest = ? ORDER BY signer",
            transfer_id,
            kind,
            digest,
        )
        return {r[0]: r[1] for r in rows}

    async def backlog(self) -> Backlog:
        marks = ", ".join("?" for _ in TERMINAL_STATES)
        row = await self.db.fetchrow(
            f"SELECT COUNT(*), MIN(observed_at) FROM bridge_transfers WHERE state NOT IN ({marks})",  # noqa: S608
            *sorted(TERMINAL_STATES),
        )
        assert row is not None
        return Backlog(int(row[0]), None if row[1] is None else int(row[1]))

    async def settled_next_nonce(self, chain_id: int) -> int:
        marks = ", ".join("?" for _ in TERMINAL_STATES)
        row = await self.db.fetchrow(
            f"SELECT MIN(nonce) FROM bridge_transfers WHERE src_chain_id = ? "  # noqa: S608
            f"AND state NOT IN ({marks})",
            chain_id,
            *sorted(TERMINAL_STATES),
        )
        if row is not None and row[0] is not None:
            return int(row[0])
        row = await self.db.fetchrow(
            "SELECT MAX(nonce) FROM bridge_transfers WHERE src_chain_id = ?", chain_id
        )
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    async def cut_states(self, cut: Sequence[CutEntry]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for c in cut:
            rows = await self.db.fetch(
                "SELECT transfer_id, state FROM bridge_transfers "
                "WHERE src_chain_id = ? AND nonce < ? ORDER BY transfer_id",
                c.chain_id,
                c.next_nonce,
            )
            out += [(r[0], r[1]) for r in rows]
        return out

    async def cut_count(self, cut: Sequence[CutEntry]) -> int:
        total = 0
        for c in cut:
            row = await self.db.fetchrow(
                "SELECT COUNT(*) FROM bridge_transfers WHERE src_chain_id = ? AND nonce < ?",
                c.chain_id,
                c.next_nonce,
            )
            total += 0 if row is None else int(row[0])
        return total

    async def add_snapshot(self, snapshot: SnapshotRecord) -> bool:
        cut = json.dumps(
            [{"chain_id": c.chain_id, "vault": c.vault, "next_nonce": c.next_nonce}
             for c in snapshot.cut]
        )  # fmt: skip
        row = await self.db.fetchrow(
            "INSERT INTO bridge_snapshots (seq, hash, prev_hash, root, leaf_count, cut, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING seq",
            snapshot.seq,
            snapshot.hash,
            snapshot.prev_hash,
            snapshot.root,
            snapshot.leaf_count,
            cut,
            snapshot.created_at,
        )
        return row is not None

    async def snapshot(self, seq: int | None = None) -> SnapshotRecord | None:
        cols = "seq, hash, prev_hash, root, leaf_count, cut, created_at"
        if seq is None:
            row = await self.db.fetchrow(
                f"SELECT {cols} FROM bridge_snapshots ORDER BY seq DESC LIMIT 1"  # noqa: S608
            )
        else:
            row = await self.db.fetchrow(
                f"SELECT {cols} FROM bridge_snapshots WHERE seq = ?",  # noqa: S608
                seq,
            )
        if row is None:
            return None
        cut = tuple(
            CutEntry(int(c["chain_id"]), str(c["vault"]), int(c["next_nonce"]))
            for c in json.loads(row[5])
        )
        return SnapshotRecord(int(row[0]), row[1], row[2], row[3], int(row[4]), cut, int(row[6]))

    async def add_snapshot_signature(self, snapshot_hash: str, signer: str, signature: str) -> bool:
        row = await self.db.fetchrow(
            "INSERT INTO bridge_snapshot_signatures (snapshot_hash, signer, signature, "
            "received_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING signer",
            snapshot_hash,
            signer,
            signature,
            now_us(),
        )
        return row is not None

    async def snapshot_signatures(self, snapshot_hash: str) -> dict[str, str]:
        rows = await self.db.fetch(
            "SELECT signer, signature FROM bridge_snapshot_signatures "
            "WHERE snapshot_hash = ? ORDER BY signer",
            snapshot_hash,
        )
        return {r[0]: r[1] for r in rows}
