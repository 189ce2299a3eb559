"""Storage: one interface (``Storage``), two engines chosen by the URL scheme.

``open_storage(config)`` returns an opened SQLite (``sqlite://``) or PostgreSQL
(``postgresql://``) implementation; see ``base`` for the design. Domain queries are not
here: each domain's store (``dchat_node.<domain>.store``) runs on a ``Storage``.
"""

from __future__ import annotations

from dchat_node.config import DatabaseConfig
from dchat_node.storage.base import PoolStats, Storage
from dchat_node.storage.errors import (
    Conflict,
    NotPrimary,
    ReferenceMissing,
    StorageBusy,
    StorageError,
    StorageUnavailable,
)


def create_storage(config: DatabaseConfig) -> Storage:
    """An unopened storage for ``config.url``."""
    if config.engine == "sqlite":
        from dchat_node.storage.sqlite import SqliteStorage

        return SqliteStorage(config)
    from dchat_node.storage.postgres import PostgresStorage

    return PostgresStorage(config)


async def open_storage(config: DatabaseConfig) -> Storage:
    storage = create_storage(config)
    await storage.open()
    return storage


__all__ = [
    "Conflict",
    "NotPrimary",
    "PoolStats",
    "ReferenceMissing",
    "Storage",
    "StorageBusy",
    "StorageError",
    "StorageUnavailable",
    "create_storage",
    "open_storage",
]
