"""The payment verification interface the marketplace codes against.

This is a local copy of the interface of ``dchat_node.chain.payments`` (built in parallel
on the ``chain`` branch): the same dataclasses, ``PaymentState``, the ``PaymentVerifier``
Protocol, ``reference_for`` (same namespace, same keccak256, so a reference computed here
equals the chain module's) and ``ChainUnavailable``. MERGE NOTE for the lead: once
``dchat_node.chain.payments`` is on main, replace the definitions below by re-exports::

    from dchat_node.chain.client import ChainUnavailable
    from dchat_node.chain.payments import (
        PaymentObservation, PaymentRequest, PaymentState, PaymentVerifier, reference_for,
    )

(the worker catches ``ChainUnavailable`` from here, so it must be the chain's class then).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from eth_utils.crypto import keccak

REFERENCE_NAMESPACE = b"dchat/marketplace/purchase/v1\x00"


class ChainUnavailable(Exception):
    """The currency chain's RPC could not be reached (after the client's own retries)."""


class PaymentState(StrEnum):
    NOT_FOUND = "not_found"
    PENDING = "pending"
    CONFIRMED = "confirmed"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    tx_hash: str  # 0x-hex, 32 bytes
    chain_id: int
    pay_to: str  # the escrow address
    min_value: int  # smallest unit (wei, or token base units)
    token: str | None  # ERC-20 contract address, None = native coin
    reference: bytes  # 32-byte per-purchase reference the payment must carry


@dataclass(frozen=True, slots=True)
class PaymentObservation:
    state: PaymentState
    reason: str
    block_number: int | None
    block_hash: str | None
    value: int | None
    payer: str | None
    confirmations: int


class PaymentVerifier(Protocol):
    async def check(self, request: PaymentRequest) -> PaymentObservation: ...

    async def still_canonical(self, block_number: int, block_hash: str) -> bool: ...


def reference_for(purchase_key: str) -> bytes:
    """The 32-byte reference a payment for this purchase carries (keccak256 of the key in the
    marketplace's namespace)."""
    return keccak(REFERENCE_NAMESPACE + purchase_key.encode("utf-8"))
