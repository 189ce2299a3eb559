"""A real node process with one extra test route, ``/api/v1/_test/slow?secs=N``, used by
the drain tests to have requests in flight when SIGTERM arrives. Configuration comes from
the environment (and ``--config`` if given), exactly as for ``dchat``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from quart import Quart, request

from dchat_node.config import load_config
from dchat_node.observability.logging import configure_logging
from dchat_node.server import run_node
from dchat_node.services import Services


def hook(api: Quart, ops: Quart, services: Services) -> None:
    @api.get("/api/v1/_test/slow")
    async def slow() -> dict[str, Any]:
        secs = float(request.args.get("secs", "1"))
        await asyncio.sleep(secs)
        return {"slept": secs}


def main() -> None:
    path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--config" else None
    config = load_config(path)
    configure_logging(config.logging)
    asyncio.run(run_node(config, app_hook=hook))


if __name__ == "__main__":
    main()
