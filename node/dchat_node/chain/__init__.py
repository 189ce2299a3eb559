"""The node's EVM chain side: a JSON-RPC client, finality policies, payment verification.

Design:
- ``client.ChainClient``: web3.py's async API (``AsyncWeb3(AsyncHTTPProvider)``), timeouts
  from ``chain.rpc_timeout_secs``, bounded retries with exponential backoff
  (``chain.rpc_retries``), every failure surfaced as ``ChainUnavailable``.
- ``finality.FinalityPolicy``: N confirmations, or the ``safe`` / ``finalized`` block tags
  (``chain.<name>_chain_finality``).
- ``payments``: the ``PaymentVerifier`` protocol the marketplace codes against, its web3
  implementation, and the payment binding rule (``reference_for``, ``payment_call``).
- Independent of the API, the services and the storage (an import-linter contract): the
  marketplace and the bridge use it, it uses only ``dchat_node.config``.
"""

import importlib
from typing import TYPE_CHECKING, Any

from dchat_node.chain.errors import ChainUnavailable

if TYPE_CHECKING:
    from dchat_node.chain.client import (
        BlockHeader,
        BlockRef,
        ChainClient,
        ChainLog,
        ChainReceipt,
        ChainTransaction,
    )
    from dchat_node.chain.finality import FinalityPolicy, FinalityStatus
    from dchat_node.chain.payments import (
        PaymentCall,
        PaymentObservation,
        PaymentRequest,
        PaymentState,
        PaymentVerifier,
        Web3PaymentVerifier,
        erc20_payment_data,
        payment_call,
        reference_for,
    )

# loaded on first use (PEP 562): the client imports web3, about a second of start-up that a
# node without a chain never needs
_LAZY = {
    **dict.fromkeys(
        ("BlockHeader", "BlockRef", "ChainClient", "ChainLog", "ChainReceipt", "ChainTransaction"),
        "client",
    ),
    **dict.fromkeys(("FinalityPolicy", "FinalityStatus"), "finality"),
    **dict.fromkeys(
        (
            "PaymentCall",
            "PaymentObservation",
            "PaymentRequest",
            "PaymentState",
            "PaymentVerifier",
            "Web3PaymentVerifier",
            "erc20_payment_data",
            "payment_call",
            "reference_for",
        ),
        "payments",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "BlockHeader",
    "BlockRef",
    "ChainClient",
    "ChainLog",
    "ChainReceipt",
    "ChainTransaction",
    "ChainUnavailable",
    "FinalityPolicy",
    "FinalityStatus",
    "PaymentCall",
    "PaymentObservation",
    "PaymentRequest",
    "PaymentState",
    "PaymentVerifier",
    "Web3PaymentVerifier",
    "erc20_payment_data",
    "payment_call",
    "reference_for",
]
