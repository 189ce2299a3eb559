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

from dchat_node.chain.client import (
    BlockRef,
    ChainClient,
    ChainLog,
    ChainReceipt,
    ChainTransaction,
    ChainUnavailable,
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

__all__ = [
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
