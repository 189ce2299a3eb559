"""Pydantic models of the bridge API (query strings and responses).

Amounts are wei as decimal strings (uint256 does not fit a JSON number); addresses are
checksummed in responses; a transfer id is ``0x`` + 64 hex digits (lower case in responses).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, Self

from eth_utils.address import is_checksum_address, to_checksum_address
from pydantic import Field, field_validator

from dchat_node.api.models import RequestModel, ResponseModel, decode_cursor
from dchat_node.bridge.store import SnapshotRecord, TransferRecord

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
TRANSFER_ID_PATTERN = r"^0x[0-9a-fA-F]{64}$"
State = Literal["observed", "attesting", "released", "refund_pending", "refunded", "dropped"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _when(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _checksummed(value: str) -> str:
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise ValueError("is not a valid EIP-55 checksummed address (check for a typo)")
    return to_checksum_address(value)


class TransferQuery(RequestModel):
    account: str | None = Field(
        None,
        pattern=ADDRESS_PATTERN,
        description="Only transfers this address deposited or receives.",
    )
    state: State | None = Field(None, description="Only transfers in this state.")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=64, description="next_cursor of the last page.")

    @field_validator("account")
    @classmethod
    def _checksum(cls, value: str | None) -> str | None:
        return None if value is None else _checksummed(value)

    @field_validator("cursor")
    @classmethod
    def _cursor(cls, value: str | None) -> str | None:
        if value is not None:
            decode_cursor(value)
        return value

    def after_id(self) -> int:
        return 0 if self.cursor is None else decode_cursor(self.cursor)


class BridgeTransfer(ResponseModel):
    transfer_id: str
    state: State
    src_chain_id: int
    src_vault: str
    nonce: int
    depositor: str
    recipient: str
    amount: str = Field(description="Wei, decimal.")
    dst_chain_id: int
    deadline: datetime = Field(description="Release is possible until then; refund after.")
    src_tx_hash: str
    src_block_number: int
    release_tx_hash: str | None
    refund_tx_hash: str | None
    last_error: str | None
    observed_at: datetime
    final_at: datetime | None = Field(description="When the deposit's block became final.")
    updated_at: datetime

    @classmethod
    def of(cls, r: TransferRecord) -> Self:
        return cls(
            transfer_id=r.transfer_id,
            state=r.state,
            src_chain_id=r.src_chain_id,
            src_vault=r.src_vault,
            nonce=r.nonce,
            depositor=r.depositor,
            recipient=r.recipient,
            amount=str(r.amount),
            dst_chain_id=r.dst_chain_id,
            deadline=_EPOCH + timedelta(seconds=r.deadline),
            src_tx_hash=r.src_tx_hash,
            src_block_number=r.src_block_number,
            release_tx_hash=r.release_tx_hash,
            refund_tx_hash=r.refund_tx_hash,
            last_error=r.last_error,
            observed_at=_EPOCH + timedelta(microseconds=r.observed_at),
            final_at=_when(r.final_at),
            updated_at=_EPOCH + timedelta(microseconds=r.updated_at),
        )


class TransferPage(ResponseModel):
    items: list[BridgeTransfer]
    next_cursor: str | None


class SnapshotCut(ResponseModel):
    chain_id: int
    vault: str
    next_nonce: int = Field(description="Transfers from this vault with a lower nonce are in.")
    last_nonce: int | None = Field(description="next_nonce - 1; null when none is covered.")


class SnapshotSignature(ResponseModel):
    signer: str
    signature: str = Field(description="65 bytes r||s||v over the EIP-191 hash of `hash`.")


class BridgeSnapshot(ResponseModel):
    seq: int
    hash: str
    prev_hash: str = Field(description="The previous snapshot's hash (zeros for seq 1).")
    root: str = Field(description="Merkle root over (transfer id, state) of the cut.")
    leaf_count: int
    cut: list[SnapshotCut]
    created_at: datetime
    signatures: list[SnapshotSignature]
    quorum: int
    signed: bool = Field(description="At least `quorum` registered validators signed it.")

    @classmethod
    def of(cls, r: SnapshotRecord, signatures: dict[str, str], quorum: int) -> Self:
        return cls(
            seq=r.seq,
            hash=r.hash,
            prev_hash=r.prev_hash,
            root=r.root,
            leaf_count=r.leaf_count,
            cut=[
                SnapshotCut(
                    chain_id=c.chain_id,
                    vault=c.vault,
                    next_nonce=c.next_nonce,
                    last_nonce=c.next_nonce - 1 if c.next_nonce else None,
                )
                for c in r.cut
            ],
            created_at=_EPOCH + timedelta(microseconds=r.created_at),
            signatures=[SnapshotSignature(signer=k, signature=v) for k, v in signatures.items()],
            quorum=quorum,
            signed=len(signatures) >= quorum,
        )


class InclusionProof(ResponseModel):
    seq: int
    transfer_id: str
    state: State
    leaf: str = Field(description="keccak256(keccak256(abi.encode(transferId, uint8 state))).")
    proof: list[str] = Field(description="Sibling hashes, leaf to root (sorted-pair keccak).")
    root: str


class InitiateTransfer(RequestModel):
    dst_chain_id: int = Field(ge=1, le=2**256 - 1, description="The chain to receive on.")
    recipient: str = Field(pattern=ADDRESS_PATTERN, description="Receives on dst_chain_id.")
    amount: str = Field(
        pattern=r"^[0-9]{1,78}$", description="Wei, decimal, more than 0 and below 2**256."
    )

    @field_validator("recipient")
    @classmethod
    def _recipient(cls, value: str) -> str:
        address = _checksummed(value)
        if int(address, 16) == 0:
            raise ValueError("must not be the zero address (the vault refuses it)")
        return address

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str) -> str:
        n = int(value)
        if not 0 < n < 2**256:
            raise ValueError("must be more than 0 and below 2**256 wei")
        return str(n)


class UnsignedDeposit(ResponseModel):
    chain_id: int = Field(description="The source chain the transaction must be sent on.")
    to: str = Field(description="The source chain's BridgeVault.")
    value: str = Field(description="Wei, decimal (the amount).")
    data: str = Field(description="Calldata of deposit(dstChainId, recipient), 0x-hex.")
