"""Verifying that an on-chain transaction pays for one purchase.

Design:
- The binding rule: a payment carries the purchase's 32-byte ``reference``
  (``reference_for(purchase_key)``, keccak256 of a namespaced key) in its calldata. Native
  coin: the transaction's input is exactly the reference, sent to ``pay_to`` with value >=
  ``min_value``. ERC-20: the transaction calls the token's ``transfer(pay_to, amount)`` with
  the reference appended after the ABI arguments (Solidity's decoder ignores trailing
  calldata, so any standard token accepts it), and the receipt holds the token's
  ``Transfer(payer, pay_to, value)`` log with value >= ``min_value`` (the log, not the
  calldata, is what moved: a fee-on-transfer token pays less than it was asked).
  ``payment_call`` builds that transaction for clients and tests. The reference binds one
  transaction to one purchase; that a transaction pays for only one purchase at all is the
  marketplace's unique constraint on the transaction hash.
- ``check`` answers with a ``PaymentObservation``: NOT_FOUND (unknown to the node, or dropped
  by a reorg), PENDING (in the mempool, or mined but not final under the ``FinalityPolicy``;
  with the confirmations so far), INVALID (a reason: wrong chain, reverted, wrong recipient or
  token, wrong reference, underpaid), CONFIRMED (final). The static checks run before the
  mined check, so a wrong payment is INVALID even while it is still in the mempool.
- ``still_canonical`` rechecks the block hash at a height: a confirmed payment whose block
  was replaced by a reorg is no longer canonical. ``check`` itself reports CONFIRMED only
  when the receipt's block is still the one at that height after the finality check.
- RPC failures propagate as ``ChainUnavailable`` (after the client's bounded retries); the
  verifier never turns them into a state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

if TYPE_CHECKING:  # annotations only: importing the client imports web3
    from dchat_node.chain.client import ChainClient, ChainLog, ChainReceipt, ChainTransaction
    from dchat_node.chain.finality import FinalityPolicy

REFERENCE_NAMESPACE = b"dchat/marketplace/purchase/v1\x00"
TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]  # 0xa9059cbb
TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")
_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ERC20_PAYMENT_LEN = 4 + 32 + 32 + 32


class PaymentState(StrEnum):
    NOT_FOUND = "not_found"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    tx_hash: str  # 0x-hex, 32 bytes
    chain_id: int
    pay_to: str  # escrow address, checksummed or not
    min_value: int  # smallest unit (wei, or token base units)
    token: str | None  # ERC-20 contract address, None = native coin
    reference: bytes  # 32-byte per-purchase reference the payment must carry

    def __post_init__(self) -> None:
        if not _TX_HASH.fullmatch(self.tx_hash):
            raise ValueError(f"tx_hash must be 0x and 64 hex digits (got {self.tx_hash!r})")
        if self.chain_id < 1:
            raise ValueError(f"chain_id must be >= 1 (got {self.chain_id})")
        if not is_address(self.pay_to):
            raise ValueError(f"pay_to is not an address (got {self.pay_to!r})")
        if self.token is not None and not is_address(self.token):
            raise ValueError(f"token is not an address (got {self.token!r})")
        if self.min_value < 0:
            raise ValueError(f"min_value must be >= 0 (got {self.min_value})")
        if len(self.reference) != 32:
            raise ValueError(f"reference must be 32 bytes (got {len(self.reference)})")


@dataclass(frozen=True, slots=True)
class PaymentObservation:
    state: PaymentState
    reason: str  # human-readable, why INVALID / PENDING
    block_number: int | None
    block_hash: str | None
    value: int | None
    payer: str | None
    confirmations: int


class PaymentVerifier(Protocol):
    async def check(self, request: PaymentRequest) -> PaymentObservation: ...

    async def still_canonical(self, block_number: int, block_hash: str) -> bool: ...


def reference_for(purchase_key: str) -> bytes:
    """The 32-byte reference a payment for this purchase carries: keccak256 of the key in the
    marketplace's namespace (so it never equals a hash some other protocol puts there)."""
    return keccak(REFERENCE_NAMESPACE + purchase_key.encode("utf-8"))


def erc20_payment_data(pay_to: str, amount: int, reference: bytes) -> bytes:
    """``transfer(pay_to, amount)`` calldata followed by the 32-byte reference."""
    if len(reference) != 32:
        raise ValueError(f"reference must be 32 bytes (got {len(reference)})")
    if not 0 <= amount < 2**256:
        raise ValueError(f"amount must fit uint256 (got {amount})")
    recipient = bytes.fromhex(to_checksum_address(pay_to)[2:])
    return TRANSFER_SELECTOR + recipient.rjust(32, b"\0") + amount.to_bytes(32, "big") + reference


@dataclass(frozen=True, slots=True)
class PaymentCall:
    """The transaction a payer sends: to, value (wei) and data."""

    to: str
    value: int
    data: bytes


def payment_call(
    pay_to: str, amount: int, reference: bytes, token: str | None = None
) -> PaymentCall:
    """The transaction that pays ``amount`` to ``pay_to`` for the purchase with ``reference``:
    native coin (``token`` None) or the ERC-20 ``token``."""
    if len(reference) != 32:
        raise ValueError(f"reference must be 32 bytes (got {len(reference)})")
    if token is None:
        return PaymentCall(to=to_checksum_address(pay_to), value=amount, data=reference)
    return PaymentCall(
        to=to_checksum_address(token), value=0, data=erc20_payment_data(pay_to, amount, reference)
    )


def _word_address(word: bytes) -> str | None:
    """The address in a 32-byte ABI word, None when the top 12 bytes are not zero."""
    if len(word) != 32 or any(word[:12]):
        return None
    return to_checksum_address(word[12:])


def _static_reason(request: PaymentRequest, tx: ChainTransaction) -> tuple[str | None, int]:
    """Why the transaction itself cannot be this payment (None: it can), and the value it
    claims to move."""
    pay_to = to_checksum_address(request.pay_to)
    if request.token is None:
        if tx.to != pay_to:
            return f"paid to {tx.to or 'a contract creation'}, not the escrow {pay_to}", tx.value
        if tx.input != request.reference:
            return _reference_reason(tx.input), tx.value
        if tx.value < request.min_value:
            return f"underpaid: value {tx.value} is below {request.min_value}", tx.value
        return None, tx.value
    token = to_checksum_address(request.token)
    if tx.to != token:
        return f"sent to {tx.to or 'a contract creation'}, not the token {token}", 0
    data = tx.input
    if data[:4] != TRANSFER_SELECTOR or len(data) < 68:
        return "not a call of the token's transfer(address,uint256)", 0
    recipient = _word_address(data[4:36])
    amount = int.from_bytes(data[36:68], "big")
    if recipient != pay_to:
        return f"transfer to {recipient or 'a malformed address'}, not the escrow {pay_to}", amount
    if len(data) != _ERC20_PAYMENT_LEN or data[68:] != request.reference:
        return _reference_reason(data[68:]), amount
    if amount < request.min_value:
        return f"underpaid: transfer of {amount} is below {request.min_value}", amount
    return None, amount


def _reference_reason(carried: bytes) -> str:
    if not carried:
        return "the payment carries no purchase reference"
    return "the payment's reference does not match this purchase"


def _transfer_value(request: PaymentRequest, tx: ChainTransaction, receipt: ChainReceipt) -> int:
    """Sum of the token's Transfer(payer, pay_to, value) logs in the receipt."""
    assert request.token is not None
    token = to_checksum_address(request.token)
    pay_to = to_checksum_address(request.pay_to)
    total = 0
    for entry in receipt.logs:
        if _is_transfer(entry, token) and (
            _word_address(entry.topics[1]) == tx.sender and _word_address(entry.topics[2]) == pay_to
        ):
            total += int.from_bytes(entry.data[:32], "big")
    return total


def _is_transfer(entry: ChainLog, token: str) -> bool:
    return (
        entry.address == token
        and len(entry.topics) == 3
        and entry.topics[0] == TRANSFER_TOPIC
        and len(entry.data) == 32
    )


def _observation(
    state: PaymentState,
    reason: str,
    *,
    tx: ChainTransaction | None = None,
    receipt: ChainReceipt | None = None,
    value: int | None = None,
    confirmations: int = 0,
) -> PaymentObservation:
    block_number = receipt.block_number if receipt else (tx.block_number if tx else None)
    block_hash = receipt.block_hash if receipt else (tx.block_hash if tx else None)
    return PaymentObservation(
        state=state,
        reason=reason,
        block_number=block_number,
        block_hash=block_hash,
        value=value,
        payer=tx.sender if tx else None,
        confirmations=confirmations,
    )


class Web3PaymentVerifier:
    """``PaymentVerifier`` over a ``ChainClient`` (the currency chain) and a finality policy."""

    def __init__(self, client: ChainClient, policy: FinalityPolicy) -> None:
        self.client = client
        self.policy = policy

    async def check(self, request: PaymentRequest) -> PaymentObservation:
        chain_id = await self.client.chain_id()
        if request.chain_id != chain_id:
            return _observation(
                PaymentState.INVALID,
                f"wrong chain: the payment is asked on chain {request.chain_id}, this node "
                f"verifies chain {chain_id}",
            )
        tx = await self.client.transaction(request.tx_hash)
        if tx is None:
            return _observation(PaymentState.NOT_FOUND, "the chain does not know this transaction")
        reason, claimed = _static_reason(request, tx)
        if reason is not None:
            return _observation(PaymentState.INVALID, reason, tx=tx, value=claimed)
        receipt = None if tx.block_number is None else await self.client.receipt(request.tx_hash)
        if receipt is None:
            return _observation(
                PaymentState.PENDING, "in the mempool, not mined yet", tx=tx, value=claimed
            )
        if receipt.status != 1:
            return _observation(PaymentState.INVALID, "reverted", tx=tx, receipt=receipt, value=0)
        value = claimed if request.token is None else _transfer_value(request, tx, receipt)
        if value < request.min_value:
            return _observation(
                PaymentState.INVALID,
                f"underpaid: the receipt moves {value} to the escrow, below {request.min_value}",
                tx=tx,
                receipt=receipt,
                value=value,
            )
        status = await self.policy.evaluate(self.client, receipt.block_number)
        state, why = PaymentState.CONFIRMED, f"final ({status.detail})"
        if not status.final:
            state, why = PaymentState.PENDING, f"mined, not final yet ({status.detail})"
        elif not await self.still_canonical(receipt.block_number, receipt.block_hash):
            state, why = PaymentState.PENDING, "its block was replaced (reorg); checking again"
        return _observation(
            state, why, tx=tx, receipt=receipt, value=value, confirmations=status.confirmations
        )

    async def still_canonical(self, block_number: int, block_hash: str) -> bool:
        block = await self.client.block(block_number)
        return block is not None and block.hash == block_hash.lower()
