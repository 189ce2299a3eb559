"""Test helpers for the marketplace: a controllable clock, and a scripted payment verifier.

``ScriptedVerifier`` is a test double of the currency chain's ``PaymentVerifier``: it lets
the unit tests drive every branch of the worker's state machine (mined, final, invalid,
dropped by a reorg, RPC down) deterministically. The real verifier against a real dev
chain is exercised by ``test_marketplace_chain.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dchat_node.config import NodeConfig
from dchat_node.marketplace.payments import (
    ChainUnavailable,
    PaymentObservation,
    PaymentRequest,
    PaymentState,
)
from tests.node.conftest import config_for, make_token

ESCROW = "0x" + "22" * 20
PAYOUT = "0x" + "11" * 20
CHAIN_ID = 31337
CONFIRM_SECS = 300
ESCROW_SECS = 3600


def market_config(tmp_path: Path, **extra: Any) -> NodeConfig:
    values: dict[str, Any] = {
        "escrow_address": ESCROW,
        "chain_id": CHAIN_ID,
        "payment_confirmation_timeout_secs": CONFIRM_SECS,
        "escrow_timeout_secs": ESCROW_SECS,
        "worker_interval_secs": 5,
    }
    values.update(extra)
    return config_for(tmp_path, marketplace=values)


def auth(sub: str, scope: str = "marketplace:write") -> dict[str, str]:
    """A bearer header for ``sub``. Made at import (module constants) and used until the
    module's last test, which in the parallel phase of `make test` can come well over 5
    minutes after collection: valid for 2 hours."""
    return {"Authorization": f"Bearer {make_token(sub, scope=scope, expires_in=7200)}"}


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def observation(
    state: PaymentState,
    *,
    block: int | None = None,
    block_hash: str | None = None,
    reason: str = "",
    value: int | None = None,
    confirmations: int = 0,
) -> PaymentObservation:
    return PaymentObservation(
        state=state,
        reason=reason,
        block_number=block,
        block_hash=block_hash,
        value=value,
        payer="0x" + "44" * 20 if block is not None else None,
        confirmations=confirmations,
    )


NOT_FOUND = observation(PaymentState.NOT_FOUND, reason="unknown transaction")


def mined(block: int = 10, block_hash: str = "0xb10", confirmations: int = 1) -> PaymentObservation:
    return observation(
        PaymentState.PENDING, block=block, block_hash=block_hash, confirmations=confirmations
    )


def final(block: int = 10, block_hash: str = "0xb10") -> PaymentObservation:
    return observation(PaymentState.CONFIRMED, block=block, block_hash=block_hash, confirmations=12)


def invalid(reason: str) -> PaymentObservation:
    return observation(PaymentState.INVALID, reason=reason)


@dataclass
class ScriptedVerifier:
    payments: dict[str, PaymentObservation] = field(default_factory=dict)
    orphaned: set[tuple[int, str]] = field(default_factory=set)
    down: bool = False
    requests: list[PaymentRequest] = field(default_factory=list)
    canonical_checks: int = 0

    async def check(self, request: PaymentRequest) -> PaymentObservation:
        self.requests.append(request)
        if self.down:
            raise ChainUnavailable("eth_getTransactionReceipt", 3, "connection refused")
        return self.payments.get(request.tx_hash, NOT_FOUND)

    async def still_canonical(self, block_number: int, block_hash: str) -> bool:
        self.canonical_checks += 1
        if self.down:
            raise ChainUnavailable("eth_getBlockByNumber", 3, "connection refused")
        return (block_number, block_hash) not in self.orphaned
