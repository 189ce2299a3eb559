"""The chain's one error type, in a module of its own so that code naming it (the
marketplace's worker) does not import web3 (about a second of start-up)."""

from __future__ import annotations


class ChainUnavailable(Exception):
    """The chain could not answer: transport failures after every retry, or an error answer."""

    def __init__(self, operation: str, attempts: int, cause: str) -> None:
        super().__init__(
            f"chain unavailable: {operation} failed after {attempts} attempt(s): {cause}"
        )
        self.operation = operation
        self.attempts = attempts
        self.cause = cause
