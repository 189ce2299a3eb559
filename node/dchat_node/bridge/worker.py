"""The bridge worker: observer, validator and aggregator/relayer in one loop per node.

Design:
- Every node observes both vaults (``eth_getLogs`` of ``Deposit`` from each chain's cursor,
  at most ``SCAN_RANGE`` blocks per poll); deposits and the cursor are stored together, so
  a restart or an RPC outage resumes at the first unscanned block and loses nothing. A
  ``ChainUnavailable`` marks that chain unreachable in health and the poll moves on; the
  transfer waits in the store.
- Finality: the source chain's policy (``chain.<name>_chain_finality``: N confirmations or
  ``safe``/``finalized``) plus a recheck of the block hash at the deposit's height; a
  changed hash sends the worker back to the transaction's receipt (re-included elsewhere:
  new block recorded; gone: ``dropped``).
- Validator (``bridge.roles`` has ``validator``): for a final transfer it re-reads the
  transaction's receipt from the source chain, re-derives the ``Transfer`` from the vault's
  Deposit log and signs only if it equals the stored one, then gossips the attestation (and
  again every ``REBROADCAST_SECS`` while the transfer is open, for peers that missed it).
  A refund is signed only when the destination's final block is past the deadline and the
  vault there says not executed at that block.
- Aggregator (every node collects; ``relayer`` submits): a gossiped signature is kept only
  if it recovers to a registered validator; with ``validator_quorum`` signatures over the
  digest this node derived itself, the relayer simulates (``eth_call``) and sends
  ``release`` on the destination (a legacy transaction signed with the relayer key).
  "Already executed" is success: the worker reads ``executed(id)`` before and after.
- ``bridge.paused`` (or the paused file) stops signing and submitting; observing, finality
  and executed checks go on.
- Snapshots (``bridge/snapshots.py``): once the final-state transfers of the current cut
  (per chain, every nonce below the lowest unsettled one) number ``state_snapshot_interval``
  more than the last snapshot covers, the validator that leads that sequence number
  (``sorted(validators)[(seq - 1) % n]``) builds the snapshot, stores it and gossips its
  signature with the snapshot header; any other validator does so only when no valid
  proposal arrived ``SNAPSHOT_GRACE_SECS`` after it became due (a stopped leader). Every node
  keeps a received header only after re-deriving the same root from its own store for the
  same cut with the previous hash equal to its own latest snapshot's; validators then sign it
  (at most one snapshot per sequence number: the one stored). Signatures are stored by
  snapshot hash after recovering to a registered validator, and rebroadcast every
  ``REBROADCAST_SECS`` until every validator's signature is in. Paused: no signing.
- Timeouts: a transfer without finality plus quorum ``finality_proof_timeout_secs`` after it
  was observed counts ``bridge_finality_proof_timeout_total`` once and becomes
  ``refund_pending`` (a late quorum may still release it before the deadline); a transfer open
  longer than ``transaction_timeout_secs`` is reported (health ``overdue``, one log line).
- Metrics (``observability.metrics.register_bridge``): a state change is counted by the
  worker whose transition won in the store (once per store, also with pods sharing one):
  deposits recorded by a scan, transfers finished by outcome, and the latency from
  observation to final (source chain) and to released. The validator gauges (reachable,
  quorum) and ``bridge_paused`` are set on every poll, from what health reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dchat_node.bridge import gossip
from dchat_node.bridge.messages import (
    DEPOSIT_TOPIC,
    Kind,
    Signer,
    Transfer,
    decode_deposit,
    decode_uint,
    deposit_state_calldata,
    executed_calldata,
    recover,
    refund_calldata,
    release_calldata,
)
from dchat_node.bridge.snapshots import (
    ZERO_HASH,
    merkle_root,
    snapshot_hash,
    snapshot_signing_digest,
)
from dchat_node.bridge.store import (
    TERMINAL_STATES,
    BridgeStore,
    CutEntry,
    ObservedDeposit,
    SnapshotRecord,
    TransferRecord,
)
from dchat_node.chain.errors import ChainUnavailable
from dchat_node.components import ComponentStatus
from dchat_node.config import BridgeConfig
from dchat_node.observability.metrics import BridgeMetrics

if TYPE_CHECKING:
    from dchat_node.chain.client import ChainClient
    from dchat_node.chain.finality import FinalityPolicy

log = logging.getLogger("dchat_node.bridge")

SCAN_RANGE = 1000
REBROADCAST_SECS = 5.0
HEARTBEAT_SECS = 2.0
HEARTBEAT_SKEW_SECS = 60
BATCH = 200
LISTEN_QUEUE = 1024
TX_GAS = 500_000
SNAPSHOT_GRACE_SECS = 10.0
PENDING_SNAPSHOTS = 64
_HEARTBEAT_PREFIX = b"dchat-bridge-heartbeat\x00"


def heartbeat_digest(topic: str, when: int) -> bytes:
    from eth_utils.crypto import keccak

    return keccak(_HEARTBEAT_PREFIX + topic.encode() + b"\x00" + str(when).encode())


def read_key(path: str, key_name: str) -> Signer:
    """The key in ``path``; ValueError naming the config key (never the key's content)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key_name}: cannot read {path} ({type(exc).__name__})") from None
    try:
        return Signer.from_hex(text)
    except ValueError as exc:
        raise ValueError(f"{key_name}: {exc}") from None


@dataclass
class ChainSide:
    """One chain the bridge spans: its client, finality policy and vault."""

    name: str  # "chat" or "currency"
    chain_id: int
    vault: str
    client: ChainClient
    policy: FinalityPolicy
    reachable: bool = False
    head: int | None = None
    last_final_block: int | None = None
    last_error: str | None = None


@dataclass
class _Submission:
    tx_hash: str
    sent_at: float


@dataclass
class WorkerState:
    paused: bool = False
    last_seen: dict[str, float] = field(default_factory=dict)  # validator -> monotonic time
    published: dict[tuple[str, str], float] = field(default_factory=dict)
    submissions: dict[tuple[str, str], _Submission] = field(default_factory=dict)
    overdue_reported: set[str] = field(default_factory=set)
    snapshot_due_since: float | None = None  # monotonic, while this node waits for a leader
    pending_snapshots: dict[str, gossip.SnapshotSignature] = field(default_factory=dict)


class BridgeWorker:
    def __init__(
        self,
        config: BridgeConfig,
        store: BridgeStore,
        chains: list[ChainSide],
        pubsub: gossip.PubSub | None,
        metrics: BridgeMetrics,
        *,
        validator: Signer | None = None,
        relayer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(chains) != 2 or chains[0].chain_id == chains[1].chain_id:
            raise ValueError("the bridge spans two chains with different chain ids")
        self.config = config
        self.store = store
        self.chains = {c.chain_id: c for c in chains}
        self.pubsub = pubsub
        self.metrics = metrics
        self.validator = validator if "validator" in config.roles else None
        self.relayer = relayer if "relayer" in config.roles else None
        self.validators = {v.lower(): v for v in config.validators}
        self.clock = clock
        self.state = WorkerState(paused=config.paused)
        self.topic = config.gossip_topic
        metrics.validator_quorum.set(config.validator_quorum)
        metrics.paused.set(int(config.paused))

    # -- run ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll, listen and beat until cancelled."""
        tasks = [asyncio.create_task(self._poll_loop())]
        if self.pubsub is not None:
            tasks.append(asyncio.create_task(self._listen()))
            if self.validator is not None:
                tasks.append(asyncio.create_task(self._heartbeat_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge poll failed; retrying next interval")
            await asyncio.sleep(self.config.poll_interval_secs)

    async def _heartbeat_loop(self) -> None:
        assert self.validator is not None
        while True:
            if not self.paused:
                when = int(self.clock())
                sig = self.validator.sign(heartbeat_digest(self.topic, when))
                msg = gossip.Heartbeat(
                    signer=self.validator.address, time=when, signature="0x" + sig.hex()
                )
                await self._publish(msg)
            await asyncio.sleep(HEARTBEAT_SECS)

    async def _listen(self) -> None:
        """Handle the topic's messages; subscribe again when the subscription ends (the
        host restarted or is not up yet)."""
        assert self.pubsub is not None
        while True:
            try:
                async with self.pubsub.subscribe(self.topic, maxsize=LISTEN_QUEUE) as sub:
                    async for message in sub:
                        try:
                            await self.receive(message.data)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("bridge: handling a gossip message failed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bridge: subscribing failed: %s", type(exc).__name__)
            await asyncio.sleep(self.config.poll_interval_secs)

    async def _publish(self, message: gossip.Message) -> None:
        if self.pubsub is None:
            return
        try:
            await self.pubsub.publish(self.topic, gossip.encode(message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a full queue or no peers: the rebroadcast retries
            log.warning("bridge: publishing failed: %s", type(exc).__name__)

    # -- gossip in ---------------------------------------------------------------------

    async def receive(self, data: bytes) -> bool:
        """Handles one gossip message; True when it was a valid validator's message."""
        try:
            msg = gossip.decode(data)
        except ValueError:
            return False
        if isinstance(msg, gossip.SnapshotSignature):
            return await self._receive_snapshot(msg)
        digest = (
            bytes.fromhex(msg.digest[2:])
            if isinstance(msg, gossip.Attestation)
            else heartbeat_digest(self.topic, msg.time)
        )
        signer = recover(digest, bytes.fromhex(msg.signature[2:]))
        if signer is None or signer.lower() != msg.signer.lower():
            return False
        if signer.lower() not in self.validators:
            return False
        if isinstance(msg, gossip.Heartbeat):
            if abs(msg.time - self.clock()) > HEARTBEAT_SKEW_SECS:
                return False
        else:
            await self.store.add_signature(
                msg.transfer_id, msg.kind, msg.digest, signer, msg.signature
            )
        self.state.last_seen[signer.lower()] = time.monotonic()
        return True

    async def _receive_snapshot(self, msg: gossip.SnapshotSignature) -> bool:
        cut = tuple(CutEntry(c.chain_id, c.vault, c.next_nonce) for c in msg.cut)
        digest = snapshot_hash(
            msg.seq,
            bytes.fromhex(msg.root[2:]),
            bytes.fromhex(msg.prev_hash[2:]),
            msg.leaf_count,
            cut,
        )
        signer = recover(snapshot_signing_digest(digest), bytes.fromhex(msg.signature[2:]))
        if signer is None or signer.lower() != msg.signer.lower():
            return False
        if signer.lower() not in self.validators:
            return False
        key = "0x" + digest.hex()
        await self.store.add_snapshot_signature(key, signer, msg.signature)
        pending = self.state.pending_snapshots
        if key not in pending:
            if len(pending) >= PENDING_SNAPSHOTS:
                del pending[next(iter(pending))]  # the oldest
            pending[key] = msg
        self.state.last_seen[signer.lower()] = time.monotonic()
        return True

    # -- one poll ----------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.state.paused

    def _refresh_paused(self) -> None:
        paused = self.config.paused
        path = self.config.pause_flag_path
        if not paused and path:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                paused = Path(path).read_text(encoding="utf-8").strip().lower() in (
                    "true",
                    "1",
                    "yes",
                )
        if paused != self.state.paused:
            log.warning("bridge %s", "paused: no signing, no submitting" if paused else "resumed")
        self.state.paused = paused
        self.metrics.paused.set(int(paused))

    async def tick(self) -> None:
        self._refresh_paused()
        for side in self.chains.values():
            try:
                await self._scan(side)
                side.reachable, side.last_error = True, None
            except ChainUnavailable as exc:
                self._unreachable(side, exc)
        up = {side.chain_id for side in self.chains.values() if side.reachable}
        for record in await self.store.in_states(
            ("observed", "attesting", "refund_pending"), BATCH
        ):
            if record.src_chain_id not in up or record.dst_chain_id not in up:
                continue  # waits in the store until both chains answer again
            try:
                await self._advance(record)
            except ChainUnavailable as exc:
                # the transfer stays where it is in the store; the next poll retries
                log.warning("bridge: transfer %s waits: %s", record.transfer_id, exc)
        await self.snapshots()
        self.metrics.validators_reachable.set(self._reachability()[1])

    def _unreachable(self, side: ChainSide, exc: ChainUnavailable) -> None:
        if side.reachable or side.last_error is None:
            log.warning("bridge: %s chain unreachable: %s", side.name, exc)
        side.reachable, side.last_error = False, str(exc)

    async def _scan(self, side: ChainSide) -> None:
        head = await side.client.block_number()
        side.head = head
        if side.policy.confirmations is not None:
            side.last_final_block = max(-1, head - side.policy.confirmations + 1)
        else:
            assert side.policy.tag is not None
            tagged = await side.client.block(side.policy.tag)
            side.last_final_block = None if tagged is None else tagged.number
        start = await self.store.cursor(side.chain_id)
        if start is None:
            # first start: from the chain's beginning (a dev chain) or a bounded window back
            start = max(0, head - 10 * SCAN_RANGE)
        if start > head:
            return
        end = min(head, start + SCAN_RANGE - 1)
        found: list[ObservedDeposit] = []
        for entry in await side.client.logs(side.vault, DEPOSIT_TOPIC, start, end):
            try:
                t = decode_deposit(entry.address, entry.topics, entry.data, side.chain_id)
            except ValueError as exc:
                log.warning("bridge: ignoring a malformed Deposit log: %s", exc)
                continue
            if t.dst_chain_id not in self.chains or t.dst_chain_id == side.chain_id:
                continue  # a peer this bridge does not serve
            assert entry.tx_hash is not None
            assert entry.block_number is not None
            assert entry.block_hash is not None
            found.append(
                ObservedDeposit(
                    t.id, t.src_chain_id, t.src_vault, t.nonce, t.depositor, t.recipient,
                    t.amount, t.dst_chain_id, t.deadline, entry.tx_hash, entry.block_number,
                    entry.block_hash,
                )
            )  # fmt: skip
        new = await self.store.record_scan(side.chain_id, end + 1, found)
        if new:
            self.metrics.deposits_observed_total.labels(chain=side.name).inc(new)
            log.info("bridge: %d new deposits on the %s chain", new, side.name)

    # -- one transfer ------------------------------------------------------------------

    def _transfer(self, r: TransferRecord) -> Transfer:
        return Transfer(
            r.src_chain_id, r.src_vault, r.nonce, r.depositor, r.recipient, r.amount,
            r.dst_chain_id, r.deadline,
        )  # fmt: skip

    def _dst_vault(self, r: TransferRecord) -> str:
        return self.chains[r.dst_chain_id].vault

    async def _advance(self, r: TransferRecord) -> None:  # noqa: C901 (one state machine)
        if r.src_chain_id not in self.chains or r.dst_chain_id not in self.chains:
            return
        src, dst = self.chains[r.src_chain_id], self.chains[r.dst_chain_id]
        if r.final_at is None:
            r = await self._check_finality(r, src)
            if r.state == "dropped":
                return
        if await self._executed(dst, r.transfer_id):
            if await self.store.transition(r.transfer_id, (r.state,), "released"):
                self._finished(r, "released")
                log.info("bridge: transfer %s released", r.transfer_id)
            return
        t = self._transfer(r)
        release_digest = "0x" + t.digest("release", dst.vault).hex()
        sigs = await self.store.signatures(r.transfer_id, "release", release_digest)
        quorum = len(sigs) >= self.config.validator_quorum
        now = self.clock()
        proven = r.final_at is not None and quorum
        age = now - r.observed_at / 1e6
        if (
            r.state != "refund_pending"
            and not proven
            and age > self.config.finality_proof_timeout_secs
        ):
            await self._finality_timeout(r)
            return
        dst_head = await dst.client.header("latest")
        past_deadline = dst_head is not None and dst_head.timestamp > r.deadline
        if r.final_at is not None and not past_deadline:
            if self.validator is not None and not self.paused:
                await self._attest(r, t, "release", release_digest, src)
            if quorum and self.relayer is not None and not self.paused:
                await self._submit(r, t, "release", sigs, dst)
        elif past_deadline:
            if r.state != "refund_pending":
                await self.store.transition(r.transfer_id, (r.state,), "refund_pending")
            await self._refund(r, t, src, dst)
        self._report_overdue(r, now)

    async def _check_finality(self, r: TransferRecord, src: ChainSide) -> TransferRecord:
        status = await src.policy.evaluate(src.client, r.src_block_number)
        block = await src.client.block(r.src_block_number)
        if block is None or block.hash != r.src_block_hash:
            receipt = await src.client.receipt(r.src_tx_hash)
            if receipt is None:
                if await self.store.transition(
                    r.transfer_id, (r.state,), "dropped", last_error="deposit left the chain"
                ):
                    self._finished(r, "dropped")
                log.warning("bridge: deposit %s dropped in a reorg", r.transfer_id)
                return await self._reload(r)
            await self.store.update(
                r.transfer_id,
                src_block_number=receipt.block_number,
                src_block_hash=receipt.block_hash,
            )
            return await self._reload(r)
        if status.final:
            target = "attesting" if r.state == "observed" else r.state
            now = self.clock()
            if await self.store.transition(
                r.transfer_id, (r.state,), target, final_at=int(now * 1e6)
            ):
                self._latency(r, "final", now)
            return await self._reload(r)
        return r

    def _latency(self, r: TransferRecord, stage: str, now: float) -> None:
        seconds = max(0.0, now - r.observed_at / 1e6)
        self.metrics.transfer_latency_seconds.labels(stage=stage).observe(seconds)

    def _finished(self, r: TransferRecord, outcome: str) -> None:
        """Counts a transfer this worker moved to a final state (its transition won)."""
        self.metrics.transfers_finished_total.labels(outcome=outcome).inc()
        if outcome == "released":
            self._latency(r, "released", self.clock())

    async def _reload(self, r: TransferRecord) -> TransferRecord:
        fresh = await self.store.get(r.transfer_id)
        return fresh if fresh is not None else r

    async def _finality_timeout(self, r: TransferRecord) -> None:
        if await self.store.claim_timeout(r.transfer_id):
            self.metrics.finality_proof_timeout_total.inc()
            log.warning(
                "bridge: transfer %s has no finality proof (finality + %d signatures) after "
                "%d s: refund_pending",
                r.transfer_id,
                self.config.validator_quorum,
                self.config.finality_proof_timeout_secs,
            )
        await self.store.transition(r.transfer_id, (r.state,), "refund_pending")

    def _report_overdue(self, r: TransferRecord, now: float) -> None:
        if (
            now - r.observed_at / 1e6 > self.config.transaction_timeout_secs
            and r.transfer_id not in self.state.overdue_reported
        ):
            self.state.overdue_reported.add(r.transfer_id)
            log.error(
                "bridge: transfer %s not processed within %d s (state %s)",
                r.transfer_id,
                self.config.transaction_timeout_secs,
                r.state,
            )

    async def _executed(
        self, dst: ChainSide, transfer_id: str, block: int | str = "latest"
    ) -> bool:
        raw = await dst.client.call(dst.vault, executed_calldata(transfer_id), block=block)  # type: ignore[arg-type]
        return decode_uint(raw) != 0

    async def _rederive(self, r: TransferRecord, src: ChainSide) -> Transfer | None:
        """The transfer as the source chain's receipt says, or None when it does not match."""
        receipt = await src.client.receipt(r.src_tx_hash)
        if receipt is None or receipt.status != 1:
            return None
        for entry in receipt.logs:
            if entry.address.lower() != src.vault.lower() or not entry.topics:
                continue
            if entry.topics[0] != DEPOSIT_TOPIC:
                continue
            try:
                t = decode_deposit(entry.address, entry.topics, entry.data, src.chain_id)
            except ValueError:
                continue
            if t.id == r.transfer_id:
                return t
        return None

    async def _attest(
        self, r: TransferRecord, t: Transfer, kind: Kind, digest: str, src: ChainSide
    ) -> None:
        assert self.validator is not None
        key = (r.transfer_id, kind)
        last = self.state.published.get(key)
        if last is not None and time.monotonic() - last < REBROADCAST_SECS:
            return
        own = await self.store.signatures(r.transfer_id, kind, digest)
        signature = own.get(self.validator.address)
        if signature is None:
            derived = await self._rederive(r, src)
            if derived != t:
                log.error(
                    "bridge: transfer %s does not match the chain; not signing", r.transfer_id
                )
                return
            signature = "0x" + self.validator.sign(bytes.fromhex(digest[2:])).hex()
            await self.store.add_signature(
                r.transfer_id, kind, digest, self.validator.address, signature
            )
            self.metrics.attestations_signed_total.labels(kind=kind).inc()
        self.state.published[key] = time.monotonic()
        await self._publish(
            gossip.Attestation(
                kind=kind,
                transfer_id=r.transfer_id,
                digest=digest,
                signer=self.validator.address,
                signature=signature,
            )
        )

    async def _submit(
        self, r: TransferRecord, t: Transfer, kind: Kind, sigs: dict[str, str], chain: ChainSide
    ) -> None:
        """Send ``release`` (on the destination) or ``refund`` (on the source) with a quorum
        of signatures sorted by signer; a pending submission is awaited, not repeated."""
        assert self.relayer is not None
        key = (r.transfer_id, kind)
        pending = self.state.submissions.get(key)
        if pending is not None:
            receipt = await chain.client.receipt(pending.tx_hash)
            if (
                receipt is None
                and time.monotonic() - pending.sent_at < self.config.transaction_timeout_secs
            ):
                return
            del self.state.submissions[key]
            if receipt is not None and receipt.status == 1:
                return  # the next poll sees executed / refunded
        ordered = [sigs[s] for s in sorted(sigs, key=str.lower)][: self.config.validator_quorum]
        raw_sigs = [bytes.fromhex(s[2:]) for s in ordered]
        data = (release_calldata if kind == "release" else refund_calldata)(t, raw_sigs)
        vault = chain.vault
        try:
            await chain.client.call(vault, data, sender=self.relayer.address)
        except ChainUnavailable as exc:
            await self.store.update(r.transfer_id, last_error=f"{kind} simulation: {exc}"[:500])
            return
        tx_hash = await self._send(chain, vault, data)
        self.metrics.transactions_submitted_total.labels(kind=kind).inc()
        self.state.submissions[key] = _Submission(tx_hash, time.monotonic())
        field_name = "release_tx_hash" if kind == "release" else "refund_tx_hash"
        await self.store.update(r.transfer_id, **{field_name: tx_hash})
        log.info(
            "bridge: %s of %s submitted on the %s chain: %s",
            kind,
            r.transfer_id,
            chain.name,
            tx_hash,
        )

    async def _send(self, chain: ChainSide, to: str, data: bytes) -> str:
        assert self.relayer is not None
        nonce = await chain.client.nonce(self.relayer.address)
        gas_price = await chain.client.gas_price()
        tx: dict[str, Any] = {
            "to": to,
            "data": data,
            "value": 0,
            "gas": TX_GAS,
            "gasPrice": gas_price,
            "nonce": nonce,
            "chainId": chain.chain_id,
        }
        return await chain.client.send_raw_transaction(self.relayer.sign_transaction(tx))

    async def _refund(self, r: TransferRecord, t: Transfer, src: ChainSide, dst: ChainSide) -> None:
        """After the deadline: sign a refund once the destination's final block is past the
        deadline and shows no execution; submit with a quorum; notice a done refund."""
        state = decode_uint(await src.client.call(src.vault, deposit_state_calldata(r.transfer_id)))
        if state == 2:
            if await self.store.transition(r.transfer_id, ("refund_pending",), "refunded"):
                self._finished(r, "refunded")
            log.info("bridge: transfer %s refunded", r.transfer_id)
            return
        if self.paused:
            return
        digest = "0x" + t.digest("refund", dst.vault).hex()
        if self.validator is not None and await self._destination_closed(r, dst):
            await self._attest(r, t, "refund", digest, src)
        if self.relayer is not None:
            sigs = await self.store.signatures(r.transfer_id, "refund", digest)
            src_head = await src.client.header("latest")
            if (
                len(sigs) >= self.config.validator_quorum
                and src_head is not None
                and src_head.timestamp > r.deadline
            ):
                await self._submit(r, t, "refund", sigs, src)

    async def _destination_closed(self, r: TransferRecord, dst: ChainSide) -> bool:
        """Whether a final destination block is past the deadline with the transfer not
        executed: then no release can ever happen."""
        policy = dst.policy
        if policy.confirmations is not None:
            head = await dst.client.block_number()
            ref: int | str = head - policy.confirmations + 1
            if isinstance(ref, int) and ref < 0:
                return False
        else:
            assert policy.tag is not None
            ref = policy.tag
        header = await dst.client.header(ref)  # type: ignore[arg-type]
        if header is None or header.timestamp <= r.deadline:
            return False
        return not await self._executed(dst, r.transfer_id, header.number)

    # -- snapshots ---------------------------------------------------------------------

    def _cut_sides(self) -> list[ChainSide]:
        return sorted(self.chains.values(), key=lambda c: c.chain_id)

    async def snapshots(self) -> None:
        """Adopt verified proposals, propose when due (leader or after the grace), sign and
        rebroadcast the latest snapshot."""
        latest = await self.store.snapshot()
        for key, msg in list(self.state.pending_snapshots.items()):
            verdict = await self._adopt(msg, latest)
            if verdict is not None:
                del self.state.pending_snapshots[key]
                if verdict:
                    latest = await self.store.snapshot()
        if self.validator is None or self.paused:
            return
        proposed = await self._propose(latest)
        if proposed is not None:
            latest = proposed
        if latest is not None:
            await self._sign_snapshot(latest)

    async def _adopt(
        self, msg: gossip.SnapshotSignature, latest: SnapshotRecord | None
    ) -> bool | None:
        """True: stored as the next snapshot; False: useless (drop it); None: not yet (the
        cut's transfers are not all observed and final here, or it is ahead of us)."""
        seq = 1 if latest is None else latest.seq + 1
        if msg.seq < seq:
            return False
        if msg.seq > seq:
            return None
        prev = "0x" + ZERO_HASH.hex() if latest is None else latest.hash
        if msg.prev_hash != prev:
            return False
        own = {s.chain_id: s.vault.lower() for s in self.chains.values()}
        if {c.chain_id: c.vault.lower() for c in msg.cut} != own or len(msg.cut) != len(own):
            return False
        cut = tuple(
            CutEntry(c.chain_id, self.chains[c.chain_id].vault, c.next_nonce)
            for c in sorted(msg.cut, key=lambda c: c.chain_id)
        )
        if latest is not None and any(
            c.next_nonce < p.next_nonce for c, p in zip(cut, latest.cut, strict=True)
        ):
            return False
        for c in cut:
            if await self.store.settled_next_nonce(c.chain_id) < c.next_nonce:
                return None
        states = await self.store.cut_states(cut)
        if any(state not in TERMINAL_STATES for _, state in states):
            return None
        root = "0x" + merkle_root(states).hex()
        if root != msg.root or len(states) != msg.leaf_count:
            log.warning(
                "bridge: snapshot %d from %s does not match this node's transfers; ignored",
                msg.seq,
                msg.signer,
            )
            return False
        return await self._store_snapshot(msg.seq, root, prev, cut, len(states)) is not None

    async def _store_snapshot(
        self, seq: int, root: str, prev: str, cut: tuple[CutEntry, ...], count: int
    ) -> SnapshotRecord | None:
        digest = snapshot_hash(seq, bytes.fromhex(root[2:]), bytes.fromhex(prev[2:]), count, cut)
        record = SnapshotRecord(
            seq, "0x" + digest.hex(), prev, root, count, cut, int(self.clock() * 1e6)
        )
        if not await self.store.add_snapshot(record):
            return None
        log.info("bridge: snapshot %d (%d transfers, root %s) stored", seq, count, root)
        return record

    async def _propose(self, latest: SnapshotRecord | None) -> SnapshotRecord | None:
        assert self.validator is not None
        cut = tuple(
            [
                CutEntry(s.chain_id, s.vault, await self.store.settled_next_nonce(s.chain_id))
                for s in self._cut_sides()
            ]
        )
        if latest is not None:
            cut = tuple(
                CutEntry(c.chain_id, c.vault, max(c.next_nonce, p.next_nonce))
                for c, p in zip(cut, latest.cut, strict=True)
            )
        covered = 0 if latest is None else latest.leaf_count
        if await self.store.cut_count(cut) < covered + self.config.state_snapshot_interval:
            self.state.snapshot_due_since = None  # a COUNT per poll; the leaves only when due
            return None
        seq = 1 if latest is None else latest.seq + 1
        now = time.monotonic()
        if self.state.snapshot_due_since is None:
            self.state.snapshot_due_since = now
        order = sorted(self.validators)
        leader = order[(seq - 1) % len(order)]
        if (
            leader != self.validator.address.lower()
            and now - self.state.snapshot_due_since < SNAPSHOT_GRACE_SECS
        ):
            return None
        self.state.snapshot_due_since = None
        states = await self.store.cut_states(cut)
        if any(state not in TERMINAL_STATES for _, state in states):
            return None  # not all final (a transfer changed since the count): next poll
        prev = "0x" + ZERO_HASH.hex() if latest is None else latest.hash
        root = "0x" + merkle_root(states).hex()
        return await self._store_snapshot(seq, root, prev, cut, len(states))

    async def _sign_snapshot(self, snap: SnapshotRecord) -> None:
        assert self.validator is not None
        sigs = await self.store.snapshot_signatures(snap.hash)
        signature = sigs.get(self.validator.address)
        if signature is None:
            raw = self.validator.sign(snapshot_signing_digest(bytes.fromhex(snap.hash[2:])))
            signature = "0x" + raw.hex()
            await self.store.add_snapshot_signature(snap.hash, self.validator.address, signature)
            sigs[self.validator.address] = signature
            log.info("bridge: snapshot %d signed", snap.seq)
        elif len(sigs) >= len(self.validators):
            return  # every validator's signature is in: nothing to rebroadcast
        key = (snap.hash, "snapshot")
        last = self.state.published.get(key)
        if last is not None and time.monotonic() - last < REBROADCAST_SECS:
            return
        self.state.published[key] = time.monotonic()
        await self._publish(
            gossip.SnapshotSignature(
                seq=snap.seq,
                root=snap.root,
                prev_hash=snap.prev_hash,
                leaf_count=snap.leaf_count,
                cut=[gossip.SnapshotCut(chain_id=c.chain_id, vault=c.vault,
                                        next_nonce=c.next_nonce) for c in snap.cut],
                signer=self.validator.address,
                signature=signature,
            )
        )  # fmt: skip

    # -- health ------------------------------------------------------------------------

    async def _snapshot_status(self) -> dict[str, Any] | None:
        snap = await self.store.snapshot()
        if snap is None:
            return None
        sigs = await self.store.snapshot_signatures(snap.hash)
        return {
            "seq": snap.seq,
            "hash": snap.hash,
            "leaf_count": snap.leaf_count,
            "signatures": len(sigs),
        }

    def _reachability(self) -> tuple[list[dict[str, Any]], int]:
        """Each registered validator with whether it was heard from within the window (this
        node's own validator always is), and how many were."""
        now_mono = time.monotonic()
        window = max(3 * HEARTBEAT_SECS, 2 * self.config.poll_interval_secs)
        validators = []
        reachable = 0
        for low, addr in self.validators.items():
            own = self.validator is not None and self.validator.address.lower() == low
            seen = self.state.last_seen.get(low)
            ok = own or (seen is not None and now_mono - seen <= window)
            reachable += ok
            validators.append(
                {
                    "address": addr,
                    "reachable": ok,
                    "last_seen_secs_ago": None if seen is None else round(now_mono - seen, 1),
                }
            )
        return validators, reachable

    async def status(self) -> ComponentStatus:
        backlog = await self.store.backlog()
        validators, reachable = self._reachability()
        self.metrics.validators_reachable.set(reachable)
        oldest = (
            None
            if backlog.oldest_observed_at is None
            else round(self.clock() - backlog.oldest_observed_at / 1e6, 1)
        )
        chains = {
            side.name: {
                "chain_id": side.chain_id,
                "vault": side.vault,
                "reachable": side.reachable,
                "head": side.head,
                "last_finalized_block": side.last_final_block,
                "finality": str(side.policy),
                **({"error": side.last_error} if side.last_error else {}),
            }
            for side in self.chains.values()
        }
        chains_ok = all(side.reachable for side in self.chains.values())
        quorum_ok = reachable >= self.config.validator_quorum
        if self.paused:
            state = "paused"
        elif not chains_ok:
            state = "chain_unreachable"
        elif not quorum_ok:
            state = "no_quorum"
        else:
            state = "ok"
        details: dict[str, Any] = {
            "paused": self.paused,
            "roles": list(self.config.roles),
            "validator": None if self.validator is None else self.validator.address,
            "quorum": self.config.validator_quorum,
            "validators": validators,
            "validators_reachable": reachable,
            "chains": chains,
            "backlog": backlog.pending,
            "oldest_pending_age_secs": oldest,
            "overdue": len(self.state.overdue_reported),
            "snapshot": await self._snapshot_status(),
        }
        return ComponentStatus(healthy=state in ("ok", "paused"), state=state, details=details)
