"""When a block counts as final: N confirmations, or the chain's ``safe``/``finalized`` tag.

Design:
- Finality is a per-chain policy (``chain.currency_chain_finality``,
  ``chain.chat_chain_finality``), because chains differ: Ethereum mainnet's ``finalized`` is
  about 13 minutes behind the head, longer than the marketplace's default payment timeout,
  while a chain with fast finality or a trusted sequencer may need only a few blocks.
- ``N`` confirmations: the block at height ``h`` has ``head - h + 1`` confirmations, final
  when that is at least N (1 = the block itself). A tag: final when the chain's tagged block
  (``eth_getBlockByNumber("safe" | "finalized")``) is at height ``h`` or above.
- The policy says nothing about the block's identity: callers recheck the block hash at
  that height (``PaymentVerifier.still_canonical``) to detect a reorg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: importing the client imports web3
    from dchat_node.chain.client import ChainClient, ChainName
from dchat_node.config import FINALITY_PATTERN, ChainConfig

FinalityTag = Literal["safe", "finalized"]
_PATTERN = re.compile(FINALITY_PATTERN)


@dataclass(frozen=True, slots=True)
class FinalityStatus:
    final: bool
    confirmations: int  # head - block + 1, 0 when the head is below the block
    detail: str  # what was compared, for PENDING reasons and logs


@dataclass(frozen=True, slots=True)
class FinalityPolicy:
    """Exactly one of ``confirmations`` (>= 1) and ``tag``."""

    confirmations: int | None = None
    tag: FinalityTag | None = None

    def __post_init__(self) -> None:
        if (self.confirmations is None) == (self.tag is None):
            raise ValueError("a finality policy is either N confirmations or a block tag")
        if self.confirmations is not None and self.confirmations < 1:
            raise ValueError(f"confirmations must be >= 1 (got {self.confirmations})")

    @classmethod
    def parse(cls, text: str | int) -> FinalityPolicy:
        """``"12"`` / ``12`` (confirmations), ``"safe"`` or ``"finalized"``."""
        value = str(text).strip().lower()
        if not _PATTERN.fullmatch(value):
            raise ValueError(
                f"finality must be a number of confirmations (1 to 9999), safe or finalized "
                f"(got {text!r})"
            )
        if value == "safe":
            return cls(tag="safe")
        if value == "finalized":
            return cls(tag="finalized")
        return cls(confirmations=int(value))

    @classmethod
    def from_config(cls, config: ChainConfig, chain: ChainName) -> FinalityPolicy:
        key = f"{chain}_chain_finality"
        try:
            return cls.parse(getattr(config, key))
        except ValueError as exc:
            raise ValueError(f"chain.{key}: {exc}") from exc

    def __str__(self) -> str:
        return self.tag if self.tag is not None else f"{self.confirmations} confirmations"

    async def evaluate(self, client: ChainClient, block_number: int) -> FinalityStatus:
        """Whether the block at ``block_number`` is final now; raises ChainUnavailable."""
        head = await client.block_number()
        confirmations = max(0, head - block_number + 1)
        if self.confirmations is not None:
            return FinalityStatus(
                final=confirmations >= self.confirmations,
                confirmations=confirmations,
                detail=f"{confirmations} of {self.confirmations} confirmations",
            )
        assert self.tag is not None
        tagged = await client.block(self.tag)
        if tagged is None:
            return FinalityStatus(False, confirmations, f"the chain has no {self.tag} block yet")
        return FinalityStatus(
            final=tagged.number >= block_number,
            confirmations=confirmations,
            detail=f"block {block_number}, {self.tag} block {tagged.number}",
        )
