"""Shared pieces of the bridge tests: two anvil chains with a BridgeVault each, validator keys,
deposits read back from their receipts, and the vault's custom errors by name.

Validators are anvil's default accounts 5, 6 and 7 (their private keys come from the default
mnemonic); the deployer (account 0) sets the peers and funds both vaults so releases can pay.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from eth_utils.crypto import keccak

from dchat_node.bridge.messages import (
    DEPOSIT_TOPIC,
    Signer,
    Transfer,
    decode_deposit,
    deposit_calldata,
    release_calldata,
)
from tests.harness.chain import Anvil, RpcError, calldata, load_artifact, private_key

VALIDATOR_ACCOUNTS = (5, 6, 7)
WINDOW_SECS = 3600
FUNDING_WEI = 50 * 10**18


def validator_signers() -> list[Signer]:
    return [Signer(private_key(i)) for i in VALIDATOR_ACCOUNTS]


def error_selectors() -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for item in load_artifact("BridgeVault").abi:
        if item["type"] == "error":
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            out[keccak(text=sig)[:4]] = item["name"]
    return out


@dataclass
class Bridge:
    a: Anvil
    b: Anvil
    vault_a: str
    vault_b: str
    validators: list[Signer]

    def vault(self, chain: Anvil) -> str:
        return self.vault_a if chain is self.a else self.vault_b

    def deposit(
        self, src: Anvil, dst: Anvil, amount: int, *, sender: str | None = None, recipient: str
    ) -> Transfer:
        sender = sender or src.accounts[1]
        tx = src.send(
            sender, self.vault(src), value=amount, data=deposit_calldata(dst.chain_id, recipient)
        )
        receipt = src.wait_receipt(tx)
        assert int(receipt["status"], 16) == 1, receipt
        for entry in receipt["logs"]:
            topics = tuple(bytes.fromhex(t.removeprefix("0x")) for t in entry["topics"])
            if topics and topics[0] == DEPOSIT_TOPIC:
                data = bytes.fromhex(entry["data"].removeprefix("0x"))
                return decode_deposit(entry["address"], topics, data, src.chain_id)
        raise AssertionError(f"no Deposit log in {receipt}")

    def sign(self, t: Transfer, kind: str, signers: list[Signer]) -> list[bytes]:
        """Signatures of ``signers`` over ``t`` in the vault domain of ``kind``, sorted by
        signer address (what the vault requires)."""
        dst_vault = self.vault_b if t.dst_chain_id == self.b.chain_id else self.vault_a
        digest = t.digest(kind, dst_vault)  # type: ignore[arg-type]
        pairs = sorted((s.address.lower(), s.sign(digest)) for s in signers)
        return [sig for _, sig in pairs]

    def chain_of(self, chain_id: int) -> Anvil:
        return self.a if chain_id == self.a.chain_id else self.b


def deploy_bridge(a: Anvil, b: Anvil, *, quorum: int = 2, window: int = WINDOW_SECS) -> Bridge:
    art = load_artifact("BridgeVault")
    signers = validator_signers()
    addrs = [s.address for s in signers]
    vault_a = a.deploy(art, addrs, quorum, window)
    vault_b = b.deploy(art, addrs, quorum, window)
    for chain, vault, peer_chain, peer in ((a, vault_a, b, vault_b), (b, vault_b, a, vault_a)):
        chain.send(
            chain.accounts[0],
            vault,
            data=calldata(
                "setPeer(uint256,address)", ["uint256", "address"], [peer_chain.chain_id, peer]
            ),
        )
        chain.send(chain.accounts[0], vault, value=FUNDING_WEI, data=calldata("fund()", [], []))
    return Bridge(a, b, vault_a, vault_b, signers)


def revert_error(chain: Anvil, sender: str, to: str, data: bytes) -> str | None:
    """The vault's custom error name an eth_call of ``data`` reverts with; None if it
    succeeds."""
    try:
        chain.rpc("eth_call", {"from": sender, "to": to, "data": "0x" + data.hex()})
    except RpcError as exc:
        raw = exc.error.get("data")
        if isinstance(raw, dict):
            raw = raw.get("data")
        if not isinstance(raw, str):
            return f"revert without data: {exc}"
        return error_selectors().get(bytes.fromhex(raw.removeprefix("0x"))[:4], raw)
    return None


def submit_release(chain: Anvil, bridge: Bridge, t: Transfer, sigs: list[bytes]) -> int:
    """Sends release() as a mined transaction; the receipt status (1 ok, 0 reverted)."""
    tx = chain.send(
        chain.accounts[2], bridge.vault(chain), data=release_calldata(t, sigs), gas=500_000
    )
    return int(chain.wait_receipt(tx)["status"], 16)


def increase_time(chain: Anvil, secs: int) -> None:
    chain.rpc("evm_increaseTime", hex(secs))
    chain.mine(1)


def http_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
