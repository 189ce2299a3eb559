"""The node follows a PostgreSQL failover without a restart (real PostgreSQL primary and hot
standby from Debian's binaries, the real node process).

The node's ``database.url`` names both servers with ``target_session_attrs=read-write``;
the primary stops, the standby is promoted, and writes that ran throughout resume on the new
primary: no acknowledged write lost (a fast shutdown sends all WAL to the standby), ``/ready``
false while no primary is writable, the outage measured. A node whose only server is a
standby is not ready.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.postgres import PostgresServer
from tests.harness.writer import Writer

from .conftest import DCHAT, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def pair() -> Iterator[tuple[PostgresServer, PostgresServer, str]]:
    """(primary, hot standby, database name): a pair of its own (the test stops one)."""
    base = Path(tempfile.mkdtemp(prefix="dchat-pg-failover-"))
    primary = PostgresServer.start(base)
    standby: PostgresServer | None = None
    try:
        primary.psql("CREATE DATABASE failover")
        standby = primary.start_standby()
        yield primary, standby, "failover"
    finally:
        for server in (standby, primary):
            if server is not None:
                with contextlib.suppress(Exception):  # already stopped by the test
                    server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


def _url(servers: list[PostgresServer], db: str, attrs: str = "read-write") -> str:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    query = f"?target_session_attrs={attrs}" if attrs else ""
    return f"postgresql://dchat@{hosts}/{db}{query}"


def _errors(log: str) -> str:
    """The node's error lines (what a 500 was)."""
    return "\n".join(line for line in log.splitlines() if '"error"' in line)[-4000:]


def _ready(node: Any) -> tuple[int, str]:
    try:
        r = httpx.get(f"{node.ops}/ready", timeout=2)
        return r.status_code, r.text
    except httpx.HTTPError as exc:
        return 0, repr(exc)


@pytest.mark.timeout(180)
def test_the_node_follows_a_promoted_standby_without_a_restart(
    pair: tuple[PostgresServer, PostgresServer, str], start_node: Any
) -> None:
    primary, standby, db = pair
    # the standby first: target_session_attrs makes the node skip it for the primary
    node = start_node(env={"DATABASE_URL": _url([standby, primary], db)})
    node.wait_ready(timeout=60)
    writer = Writer(node.api, bearer(), rate=20).start()
    try:
        writer.wait_acked(20)
        stopped = time.monotonic()
        primary.stop("fast")  # sends every WAL record to the standby before it exits
        # no primary now: the node says so instead of serving errors as if ready
        deadline = time.monotonic() + 20
        seen = _ready(node)
        while seen[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = _ready(node)
        assert seen[0] == 503, seen
        time.sleep(1)  # an outage of some length: writes fail meanwhile
        standby.promote()
        promoted = time.monotonic()
        writer.wait_acked(20, timeout=30)
    finally:
        writer.stop()
    resumed = writer.first_ack_after(promoted)
    assert resumed is not None
    print(
        f"writes resumed {resumed - promoted:.2f} s after the promotion "
        f"({resumed - stopped:.2f} s after the primary stopped); "
        f"{len(writer.failures)} attempts failed meanwhile, {len(writer.acked)} acknowledged"
    )
    assert resumed - promoted < 5
    assert node.proc.poll() is None  # the same process throughout
    unexpected = [code for _, code in writer.failures if code not in {"503", "ReadTimeout"}]
    if unexpected:  # pytest cuts a long assertion message: the node's errors in full
        print("node errors:\n" + _errors(node.log()))
    assert unexpected == [], (writer.failures, _errors(node.log()))
    stored = set(writer.bodies())
    lost = [body for _, body in writer.acked if body not in stored]
    assert lost == [], lost
    assert _ready(node)[0] == 200


@pytest.mark.timeout(120)
def test_a_node_connected_only_to_a_standby_is_not_ready(
    pair: tuple[PostgresServer, PostgresServer, str], start_node: Any
) -> None:
    primary, standby, db = pair
    node = start_node(env={"DATABASE_URL": _url([primary], db)})
    node.wait_ready(timeout=60)  # migrations ran on the primary
    node.stop()
    # the standby alone, no target_session_attrs: it answers, but cannot take writes
    follower = start_node(
        env={"DATABASE_URL": _url([standby], db, attrs="")}, argv=[DCHAT, "--no-migrate"]
    )
    deadline = time.monotonic() + 30
    code, body = _ready(follower)
    while code != 503 and time.monotonic() < deadline:
        time.sleep(0.2)
        code, body = _ready(follower)
    assert code == 503, (body, follower.log()[-2000:])
    assert "standby" in body, body
