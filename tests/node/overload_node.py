"""A real node process whose SQLite statements each take ``DCHAT_TEST_STATEMENT_DELAY_SECS``
(default 0.02 s) on the database thread, so the database, not the event loop, is the
bottleneck (capacity ~1/delay statements per second), as with a slow disk or heavy
queries. The delay is a SQLite trace callback: it runs on aiosqlite's thread once per
statement actually executed (a skipped, cancelled statement costs nothing). Used by the
load-shedding test and by ``tests/node/loadgen.py``'s measurements. Configuration comes
from the environment (and ``--config``), exactly as for ``dchat``."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from quart import Quart

from dchat_node.config import load_config
from dchat_node.observability.logging import configure_logging
from dchat_node.server import run_node
from dchat_node.services import Services
from dchat_node.storage.sqlite import SqliteStorage

DELAY = float(os.environ.get("DCHAT_TEST_STATEMENT_DELAY_SECS", "0.02"))


def hook(api: Quart, ops: Quart, services: Services) -> None:
    storage = services.storage
    assert isinstance(storage, SqliteStorage)

    @api.before_serving
    async def slow_down() -> None:
        assert storage._conn is not None
        await storage._conn.set_trace_callback(lambda _sql: time.sleep(DELAY))


def main() -> None:
    path = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--config" else None
    config = load_config(path)
    configure_logging(config.logging)
    asyncio.run(run_node(config, app_hook=hook))


if __name__ == "__main__":
    main()
