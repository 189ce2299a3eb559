"""A real node process whose marketplace has a payment verifier that cannot reach any
chain (every check raises ``ChainUnavailable``, as when ``chain.currency_chain_rpc`` is
down), so purchases can be created and moved by the API without a dev chain. Used by the
schemathesis run and bench/marketplace.py; the request paths never call the verifier (only
the worker does, and it records the outage on the purchase).

(``dchat serve`` builds the real verifier from ``chain.currency_chain_rpc``.)
Configuration comes from the environment (and ``--config`` if given), as for ``dchat``."""

from __future__ import annotations

import asyncio
import sys

from quart import Quart

from dchat_node.config import load_config
from dchat_node.marketplace.payments import (
    ChainUnavailable,
    PaymentObservation,
    PaymentRequest,
)
from dchat_node.observability.logging import configure_logging
from dchat_node.server import run_node
from dchat_node.services import Services


class UnreachableChain:
    async def check(self, request: PaymentRequest) -> PaymentObservation:
        raise ChainUnavailable("check", 1, "no currency chain configured for this test node")

    async def still_canonical(self, block_number: int, block_hash: str) -> bool:
        raise ChainUnavailable("still_canonical", 1, "no currency chain for this test node")


def hook(api: Quart, ops: Quart, services: Services) -> None:
    services.marketplace.verifier = UnreachableChain()


def main() -> None:
    path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--config" else None
    config = load_config(path)
    configure_logging(config.logging)
    asyncio.run(run_node(config, app_hook=hook))


if __name__ == "__main__":
    main()
