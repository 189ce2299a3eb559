"""Bridge service: the API's reads of transfers and snapshots, unsigned deposits, and the
start-up checks of a bridge config.

Design:
- Reads go to the store (the worker writes it), so any node answers for any transfer it has
  observed, whatever its roles; unknown ids are 404, malformed ones 400.
- A snapshot's inclusion proof is recomputed from the store's transfers of the snapshot's
  cut (their states are final, so they still give the stored root; if not, 409).
- ``initiate`` builds the calldata of ``BridgeVault.deposit`` on the other chain's vault for
  a wallet to sign (503 until the runtime has read both chain ids, 422 for a chain id that
  is not one of the bridge's two).
- ``check_bridge`` runs in the server's preflight: an enabled bridge (both vault addresses
  set) needs both chain RPC URLs and, per role, a readable key file holding a valid key; a
  validator key must be one of ``bridge.validators``. Problems name the config key; key
  material is never put into a message.
"""

from __future__ import annotations

import re
from pathlib import Path

from dchat_node.bridge.store import BridgeStore, SnapshotRecord, TransferRecord
from dchat_node.config import ConfigProblem, NodeConfig
from dchat_node.services.errors import DomainError, NotFound, Unavailable

_TRANSFER_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class BadTransferId(DomainError):
    status = 400
    code = "bad_transfer_id"


class BadChain(DomainError):
    status = 422
    code = "bad_chain"


class SnapshotDiverged(DomainError):
    status = 409
    code = "snapshot_diverged"


class BridgeService:
    def __init__(self, store: BridgeStore, quorum: int = 2) -> None:
        self.store = store
        self.quorum = quorum
        self.chains: dict[int, str] = {}  # chain id -> vault, once the runtime learned them

    def set_chains(self, chains: dict[int, str]) -> None:
        """Called by the bridge runtime once it read both chain ids."""
        self.chains = dict(chains)

    async def snapshot(self, seq: int | None) -> tuple[SnapshotRecord, dict[str, str]]:
        """A stored snapshot (None: the latest) and its validator signatures."""
        rec = None if seq is not None and not 1 <= seq < 2**63 else await self.store.snapshot(seq)
        if rec is None:
            raise NotFound("no bridge snapshot yet" if seq is None else f"no bridge snapshot {seq}")
        return rec, await self.store.snapshot_signatures(rec.hash)

    async def proof(self, seq: int, transfer_id: str) -> tuple[str, bytes, list[bytes]]:
        """(state, leaf, proof) of ``transfer_id`` in snapshot ``seq``; 404 when the transfer
        is not in it; 409 if this node's transfers no longer give the stored root."""
        from dchat_node.bridge.snapshots import leaf_hash, merkle_proof, merkle_root

        rec, _ = await self.snapshot(seq)
        if not _TRANSFER_ID.fullmatch(transfer_id):
            raise BadTransferId("a transfer id is 0x followed by 64 hex digits")
        tid = transfer_id.lower()
        states = await self.store.cut_states(rec.cut)
        if "0x" + merkle_root(states).hex() != rec.root:
            raise SnapshotDiverged(f"this node's transfers no longer match snapshot {seq}")
        proof = merkle_proof(states, tid)
        if proof is None:
            raise NotFound(f"transfer {tid} is not in snapshot {seq}")
        state = dict(states)[tid]
        return state, leaf_hash(tid, state), proof

    def initiate(self, dst_chain_id: int, recipient: str, amount: int) -> tuple[int, str, bytes]:
        """(source chain id, source vault, calldata) of the deposit a wallet signs and sends:
        the node builds it, it never holds the user's key."""
        from dchat_node.bridge.messages import deposit_calldata

        if not self.chains:
            raise Unavailable("the bridge is not running on this node (or its chains not read yet)")
        if dst_chain_id not in self.chains:
            raise BadChain(
                f"dst_chain_id {dst_chain_id} is not a chain of this bridge "
                f"(one of {sorted(self.chains)})"
            )
        (src,) = [c for c in self.chains if c != dst_chain_id]
        return src, self.chains[src], deposit_calldata(dst_chain_id, recipient)

    async def get(self, transfer_id: str) -> TransferRecord:
        if not _TRANSFER_ID.fullmatch(transfer_id):
            raise BadTransferId("a transfer id is 0x followed by 64 hex digits")
        rec = await self.store.get(transfer_id.lower())
        if rec is None:
            raise NotFound(f"no transfer {transfer_id.lower()} observed by this node")
        return rec

    async def list(
        self, account: str | None, state: str | None, after_id: int, limit: int
    ) -> tuple[list[TransferRecord], bool]:
        return await self.store.list_transfers(account, state, after_id, limit)


def _key_problem(path: str | None, key: str) -> ConfigProblem | None:
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        return ConfigProblem(key, f"cannot read {path} ({type(exc).__name__})", "<config>")
    if not _KEY.fullmatch(text):
        return ConfigProblem(key, f"{path} must hold 64 hex digits", "<config>")
    return None


def check_bridge(config: NodeConfig) -> list[ConfigProblem]:
    b = config.bridge
    if not b.enabled:
        if b.chat_vault_address or b.currency_vault_address:
            missing = "currency" if b.chat_vault_address else "chat"
            return [
                ConfigProblem(
                    f"bridge.{missing}_vault_address",
                    "both vault addresses are needed to run the bridge",
                    "<config>",
                )
            ]
        return []
    problems = [
        ConfigProblem(f"chain.{name}_chain_rpc", "the bridge needs this chain's RPC", "<config>")
        for name in ("chat", "currency")
        if not getattr(config.chain, f"{name}_chain_rpc")
    ]
    if len(b.validators) < b.validator_quorum:
        problems.append(
            ConfigProblem(
                "bridge.validators",
                f"{len(b.validators)} validators cannot reach validator_quorum "
                f"{b.validator_quorum}",
                "<config>",
            )
        )
    key_problems = {
        key: _key_problem(path, key)
        for path, key in (
            (b.validator_key_path, "bridge.validator_key_path"),
            (b.relayer_key_path, "bridge.relayer_key_path"),
        )
    }
    problems += [p for p in key_problems.values() if p is not None]
    path = b.validator_key_path
    if "validator" in b.roles and path and key_problems["bridge.validator_key_path"] is None:
        from dchat_node.bridge.worker import read_key

        address = read_key(path, "bridge.validator_key_path").address
        if address.lower() not in {v.lower() for v in b.validators}:
            problems.append(
                ConfigProblem(
                    "bridge.validator_key_path",
                    f"its address {address} is not in bridge.validators",
                    "<config>",
                )
            )
    return problems
