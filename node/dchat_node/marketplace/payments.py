"""The payment verification interface the marketplace codes against: re-exported from
``dchat_node.chain`` (the chain client's own ``ChainUnavailable``, which the worker catches,
and its payment binding rule ``reference_for``)."""

from __future__ import annotations

from dchat_node.chain.errors import ChainUnavailable
from dchat_node.chain.payments import (
    REFERENCE_NAMESPACE,
    PaymentObservation,
    PaymentRequest,
    PaymentState,
    PaymentVerifier,
    reference_for,
)

__all__ = [
    "REFERENCE_NAMESPACE",
    "ChainUnavailable",
    "PaymentObservation",
    "PaymentRequest",
    "PaymentState",
    "PaymentVerifier",
    "reference_for",
]
