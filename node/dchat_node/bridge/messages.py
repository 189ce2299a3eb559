"""What the bridge signs: transfers, their ids, EIP-712 digests, signatures, the vault's ABI.

Design:
- ``Transfer`` mirrors ``BridgeVault.Transfer`` (contracts/BridgeVault.sol) field by field.
  A transfer's id is ``keccak256(abi.encode(srcChainId, srcVault, nonce))``, as the vault
  computes it.
- Digests are EIP-712 typed-data hashes computed here with keccak + ABI encoding (no web3):
  ``Release`` in the destination vault's domain, ``Refund`` in the source vault's domain
  (name ``DchatBridge``, version ``1``, the chain id and vault address). The unit tests
  compare them with eth_account's ``encode_typed_data`` and with the contract's ``digest``.
- Signatures are 65 bytes r || s || v with v in {27, 28} and low s (eth_keys signs
  canonically), what the vault's ``_recover`` accepts. ``recover`` returns the checksummed
  signer or None for a malformed signature.
- ``decode_deposit`` re-derives a ``Transfer`` from a raw ``Deposit`` log: the validator
  signs only what it read from the chain itself, never what a peer sent.
- Imported only when a bridge is configured (eth_keys and eth_abi take most of a second).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from eth_abi.abi import decode, encode
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

Kind = Literal["release", "refund"]
_TRANSFER_FIELDS = (
    "uint256 srcChainId,address srcVault,uint256 nonce,address depositor,address recipient,"
    "uint256 amount,uint256 dstChainId,uint64 deadline"
)
DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
TYPEHASH: dict[Kind, bytes] = {
    "release": keccak(text=f"Release({_TRANSFER_FIELDS})"),
    "refund": keccak(text=f"Refund({_TRANSFER_FIELDS})"),
}
DOMAIN_NAME = "DchatBridge"
DOMAIN_VERSION = "1"
TRANSFER_TUPLE = "(uint256,address,uint256,address,address,uint256,uint256,uint64)"
DEPOSIT_TOPIC = keccak(text="Deposit(bytes32,uint256,address,address,uint256,uint256,uint64)")
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


@dataclass(frozen=True, slots=True)
class Transfer:
    src_chain_id: int
    src_vault: str  # checksummed
    nonce: int
    depositor: str
    recipient: str
    amount: int  # wei
    dst_chain_id: int
    deadline: int  # unix seconds

    @property
    def id(self) -> str:
        return "0x" + transfer_id(self.src_chain_id, self.src_vault, self.nonce).hex()

    def as_tuple(self) -> tuple[int, str, int, str, str, int, int, int]:
        return (
            self.src_chain_id,
            self.src_vault,
            self.nonce,
            self.depositor,
            self.recipient,
            self.amount,
            self.dst_chain_id,
            self.deadline,
        )

    def domain(self, kind: Kind, dst_vault: str) -> tuple[int, str]:
        """(chain id, vault) of the domain a ``kind`` attestation is signed in."""
        return (
            (self.dst_chain_id, dst_vault)
            if kind == "release"
            else (
                self.src_chain_id,
                self.src_vault,
            )
        )

    def digest(self, kind: Kind, dst_vault: str) -> bytes:
        chain_id, vault = self.domain(kind, dst_vault)
        return typed_digest(kind, self, chain_id, vault)


def transfer_id(src_chain_id: int, src_vault: str, nonce: int) -> bytes:
    return keccak(encode(["uint256", "address", "uint256"], [src_chain_id, src_vault, nonce]))


def domain_separator(chain_id: int, vault: str) -> bytes:
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                chain_id,
                vault,
            ],
        )
    )


def typed_digest(kind: Kind, t: Transfer, chain_id: int, vault: str) -> bytes:
    struct_hash = keccak(
        encode(
            ["bytes32", "uint256", "address", "uint256", "address", "address", "uint256",
             "uint256", "uint64"],
            [TYPEHASH[kind], *t.as_tuple()],
        )
    )  # fmt: skip
    return keccak(b"\x19\x01" + domain_separator(chain_id, vault) + struct_hash)


class Signer:
    """A validator's key. The key bytes never leave this object (no repr, no logging)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a validator key is 32 bytes (64 hex digits)")
        self._key = PrivateKey(key)
        self.address = self._key.public_key.to_checksum_address()

    @classmethod
    def from_hex(cls, text: str) -> Signer:
        raw = text.strip().removeprefix("0x")
        try:
            return cls(bytes.fromhex(raw))
        except ValueError:
            raise ValueError(
                "the key file must hold 64 hex digits (optionally 0x-prefixed)"
            ) from None

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """A signed raw transaction (eth_account, imported on first use)."""
        from eth_account import Account

        signed = Account.sign_transaction(tx, self._key.to_bytes())
        return bytes(signed.raw_transaction)

    def sign(self, digest: bytes) -> bytes:
        v, r, s = self._key.sign_msg_hash(digest).vrs
        return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])


def recover(digest: bytes, signature: bytes) -> str | None:
    """The checksummed signer of a 65-byte signature the vault would accept, else None."""
    if len(signature) != 65 or len(digest) != 32:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28) or s > _SECP256K1_HALF_N or r == 0 or s == 0:
        return None
    try:
        sig = Signature(vrs=(v - 27, r, s))
        return str(sig.recover_public_key_from_msg_hash(digest).to_checksum_address())
    except (BadSignature, ValidationError, ValueError):
        return None


def decode_deposit(address: str, topics: tuple[bytes, ...], data: bytes, chain_id: int) -> Transfer:
    """The transfer a ``Deposit`` log of the vault at ``address`` on ``chain_id`` records;
    ValueError when the log is not one."""
    if len(topics) != 4 or topics[0] != DEPOSIT_TOPIC:
        raise ValueError("not a Deposit log")
    recipient, amount, dst_chain_id, deadline = decode(
        ["address", "uint256", "uint256", "uint64"], data
    )
    nonce = int.from_bytes(topics[2], "big")
    depositor = to_checksum_address(topics[3][-20:])
    t = Transfer(
        src_chain_id=chain_id,
        src_vault=to_checksum_address(address),
        nonce=nonce,
        depositor=depositor,
        recipient=to_checksum_address(recipient),
        amount=int(amount),
        dst_chain_id=int(dst_chain_id),
        deadline=int(deadline),
    )
    if "0x" + topics[1].hex() != t.id:
        raise ValueError("the Deposit log's transfer id does not match its fields")
    return t


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def release_calldata(t: Transfer, signatures: list[bytes]) -> bytes:
    return _selector(f"release({TRANSFER_TUPLE},bytes[])") + encode(
        [TRANSFER_TUPLE, "bytes[]"], [t.as_tuple(), signatures]
    )


def refund_calldata(t: Transfer, signatures: list[bytes]) -> bytes:
    return _selector(f"refund({TRANSFER_TUPLE},bytes[])") + encode(
        [TRANSFER_TUPLE, "bytes[]"], [t.as_tuple(), signatures]
    )


def executed_calldata(tid: str) -> bytes:
    return _selector("executed(bytes32)") + bytes.fromhex(tid.removeprefix("0x"))


def deposit_state_calldata(tid: str) -> bytes:
    return _selector("depositState(bytes32)") + bytes.fromhex(tid.removeprefix("0x"))


def decode_uint(raw: bytes) -> int:
    return int(decode(["uint256"], raw)[0])


def deposit_calldata(dst_chain_id: int, recipient: str) -> bytes:
    return _selector("deposit(uint256,address)") + encode(
        ["uint256", "address"], [dst_chain_id, recipient]
    )
