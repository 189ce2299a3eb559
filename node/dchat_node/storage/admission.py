"""Load shedding in front of the database: a bounded queue of queries.

Design:
- Every domain query of an engine passes ``QueryQueue.admit()`` before it reaches the
  driver and ``done()`` when it returns (or is cancelled). The queue holds the queries
  running plus those waiting: SQLite runs one statement at a time on aiosqlite's thread
  (capacity 1), PostgreSQL ``database.max_connections`` at once (the pool). At most
  ``database.max_pending_queries`` more may wait. A query that finds the queue full is
  refused at once with ``StorageBusy`` (the API answers 503 with ``Retry-After``), so
  under overload the node answers fast 503s instead of letting every request wait until
  its deadline (504) while the backlog grows.
- Admission is a counter compare, no lock and no extra event-loop round trip: queries
  are handed to the driver at once (aiosqlite's queue, asyncpg's pool waiters), which
  keeps the thread or the pool busy without a scheduling gap between queries.
- A query whose request is cancelled (client gone: Quart cancels the handler; deadline
  passed: the envelope's timeout cancels it) is not run: a PostgreSQL query still
  waiting for a pooled connection never gets one (asyncpg's acquire is cancellable, and a
  query already sent is cancelled on the server); a SQLite statement still in aiosqlite's
  queue is skipped by the thread (``Ticket``: the engine marks it cancelled, the thread
  checks the mark just before running it). It leaves the queue at once either way.
- ``ping`` (readiness and the background health check) bypasses the queue: readiness
  asks whether the database answers, not whether the node is busy; failing it under load
  would take every replica out of the Service at the moment all are needed.
- The depth, the limit and the count of refused queries are metrics
  (``dchat_database_queue_depth``, ``dchat_database_queue_limit``,
  ``dchat_database_queries_shed_total``). Choosing the limit: the longest queue wait is
  about ``max_pending_queries`` x the time of one query / the capacity; the default 128
  is ~6 ms of SQLite's ~50 us reads, ~7 ms for 20 PostgreSQL connections at 1 ms per
  query. Keep it well below ``server.request_timeout_secs`` worth of queries.
"""

from __future__ import annotations

from dataclasses import dataclass

from dchat_node.storage.errors import StorageBusy


@dataclass(frozen=True)
class QueueStats:
    depth: int  # queries admitted and not finished (running + waiting)
    limit: int  # capacity + max_pending_queries
    shed_total: int  # queries refused because the queue was full, since start


class QueryQueue:
    """The bounded queue of one storage engine (one event loop; no locking needed)."""

    __slots__ = ("depth", "limit", "shed_total")

    def __init__(self, capacity: int, max_pending: int) -> None:
        self.limit = capacity + max_pending
        self.depth = 0
        self.shed_total = 0

    def admit(self) -> None:
        """Take a place in the queue or raise ``StorageBusy`` at once."""
        if self.depth >= self.limit:
            self.shed_total += 1
            raise StorageBusy(f"database queue full ({self.limit} queries)")
        self.depth += 1

    def done(self) -> None:
        self.depth -= 1

    def stats(self) -> QueueStats:
        return QueueStats(self.depth, self.limit, self.shed_total)


class Ticket:
    """Shared between the event loop and a driver thread: ``cancelled`` is set by the loop
    when the caller gave up, read by the thread before it runs the query."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False
