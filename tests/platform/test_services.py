"""Smoke tests of the harness services themselves: real PostgreSQL and a real S3 server."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.harness.postgres import PostgresServer
from tests.harness.s3 import S3Server

pytestmark = pytest.mark.integration


def test_postgres_write_and_read_a_row(postgres_server: PostgresServer, postgres_url: str) -> None:
    db = postgres_url.rsplit("/", 1)[1]
    postgres_server.psql("CREATE TABLE t (id int PRIMARY KEY, v text)", db)
    postgres_server.psql("INSERT INTO t VALUES (1, 'hello dchat')", db)
    assert postgres_server.psql("SELECT v FROM t WHERE id = 1", db) == "hello dchat"
    assert postgres_server.psql("SHOW server_version_num", db).startswith(("15", "16", "17"))


def test_postgres_streaming_standby_receives_writes(postgres_server: PostgresServer) -> None:
    postgres_server.psql("CREATE DATABASE repl_smoke")
    standby = postgres_server.start_standby("standby-smoke")
    try:
        assert standby.is_in_recovery()
        postgres_server.psql("CREATE TABLE r (v int); INSERT INTO r VALUES (42)", "repl_smoke")
        deadline = time.monotonic() + 20
        replicated = ""
        while time.monotonic() < deadline and replicated != "42":
            try:
                replicated = standby.psql("SELECT v FROM r", "repl_smoke")
            except RuntimeError:  # the table has not reached the standby yet
                time.sleep(0.05)
        assert standby.psql("SELECT v FROM r", "repl_smoke") == "42"
        standby.promote()
        assert not standby.is_in_recovery()
    finally:
        standby.stop("immediate")
        postgres_server.drop_database("repl_smoke")


def test_s3_put_and_get_object(s3_server: S3Server, s3_bucket: str) -> None:
    client = s3_server.client()
    body = os.urandom(256 * 1024)
    client.put_object(Bucket=s3_bucket, Key="smoke/blob", Body=body)
    got = client.get_object(Bucket=s3_bucket, Key="smoke/blob")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["smoke/blob"]
