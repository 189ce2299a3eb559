"""Bridge service: the API's reads of transfers, and the start-up checks of a bridge config.

Design:
- Reads go to the store (the worker writes it), so any node answers for any transfer it has
  observed, whatever its roles; unknown ids are 404, malformed ones 400.
- ``check_bridge`` runs in the server's preflight: an enabled bridge (both vault addresses
  set) needs both chain RPC URLs and, per role, a readable key file holding a valid key; a
  validator key must be one of ``bridge.validators``. Problems name the config key; key
  material is never put into a message.
"""

from __future__ import annotations

import re
from pathlib import Path

from dchat_node.bridge.store import BridgeStore, TransferRecord
from dchat_node.config import ConfigProblem, NodeConfig
from dchat_node.services.errors import DomainError, NotFound

_TRANSFER_ID = re.compile(r"^0x[0-9a-fA-F]{64}$")
_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class BadTransferId(DomainError):
    status = 400
    code = "bad_transfer_id"


class BridgeService:
    def __init__(self, store: BridgeStore) -> None:
        self.store = store

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
