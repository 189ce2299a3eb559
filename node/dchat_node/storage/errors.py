"""Storage errors, engine-neutral: services never see sqlite3 or asyncpg exceptions."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of storage failures."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or opened."""


class NotPrimary(StorageUnavailable):
    """The database answers but is a standby: it cannot take writes."""


class Conflict(StorageError):
    """A uniqueness constraint was violated (e.g. channel name taken)."""


class ReferenceMissing(StorageError):
    """A referenced row does not exist (foreign key)."""


class StorageBusy(StorageError):
    """The database queue is full (load shedding): retry shortly. Not an outage."""
