"""PostgreSQL: a consistent logical backup streamed to S3, and its restore.

Backup: one connection opens a REPEATABLE READ, READ ONLY transaction and exports its
snapshot (``pg_export_snapshot()``); ``pg_dump --snapshot`` dumps exactly that snapshot
(custom format, uncompressed) while the same transaction counts the rows of every table of
the node's schema, so the manifest's row counts are those of the dump. pg_dump's stdout
goes through zstd (multi-threaded) and a SHA-256 hasher straight into the multipart upload;
nothing is written to local disk. A pg_dump that fails part-way fails the upload (aborted,
no manifest).

Restore (``pgstream``): streamed from S3 through ``pg_restore -f -`` into psql, in ONE
transaction of the target that commits only after the object's size and SHA-256 and the
row counts matched the manifest; the target must have no table in its schema, or with
``--replace`` (a DchatRestore into an existing cluster, the node stopped) its tables are
dropped in that same transaction: any failure rolls back to the old tables.

The password of the database URL reaches pg_dump/pg_restore as ``PGPASSWORD`` in their
environment, never on their command line.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote

import asyncpg

from dchat_node.backup.errors import BackupError, TargetNotEmpty, one_line, scrub
from dchat_node.backup.streams import HashingReader, ProcessOutput, compressing_reader

# scheme://user:password@ (also several hosts: postgresql://u:p@h1,h2/db)
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/?#]*)@")
_TABLES_SQL = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.relname"
)


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password, and the password (decoded), if any."""
    match = _USERINFO.match(url)
    if not match or ":" not in match["userinfo"]:
        return url, None
    user, _, password = match["userinfo"].partition(":")
    rest = url[match.end() :]
    return f"{match['head']}{user}@{rest}", unquote(password)


def libpq_env(url: str) -> tuple[str, dict[str, str]]:
    """(dsn for ``-d``, environment) for a libpq program."""
    dsn, password = split_password(url)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return dsn, env


def secrets_of(url: str) -> list[str]:
    _, password = split_password(url)
    return [password] if password else []


def with_database(url: str, database: str) -> str:
    """``url`` naming another database (same hosts, user, parameters)."""
    match = re.match(r"^(?P<base>[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)(?:/[^?#]*)?(?P<rest>.*)$", url)
    if not match:
        raise BackupError("database URL has no host part")
    return f"{match['base']}/{database}{match['rest']}"


async def connect(url: str, connect_timeout: float) -> asyncpg.Connection:
    dsn = url.replace("postgresql://", "postgres://", 1)
    try:
        return await asyncpg.connect(dsn, timeout=connect_timeout)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        text = scrub(one_line(str(exc), 300), secrets_of(url))
        raise BackupError(f"database unreachable: {type(exc).__name__}: {text}") from None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def table_counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in await conn.fetch(_TABLES_SQL):
        table = row[0]
        counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {quote_ident(table)}"))  # noqa: S608
    return counts


async def schema_version(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def server_version(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW server_version"))


class Snapshot:
    """What the exporting transaction saw: the snapshot id and the facts of the manifest."""

    def __init__(self, snapshot_id: str, version: str, schema: int) -> None:
        self.id = snapshot_id
        self.server_version = version
        self.schema_version = schema


@asynccontextmanager
async def exported_snapshot(
    url: str, connect_timeout: float
) -> AsyncIterator[tuple[Snapshot, asyncpg.Connection]]:
    conn = await connect(url, connect_timeout)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot_id = str(await conn.fetchval("SELECT pg_export_snapshot()"))
            snap = Snapshot(snapshot_id, await server_version(conn), await schema_version(conn))
            yield snap, conn
    except asyncpg.PostgresError as exc:
        raise BackupError(f"database error: {one_line(str(exc), 300)}") from None
    finally:
        await conn.close()


def start_dump(url: str, snapshot_id: str) -> ProcessOutput:
    dsn, env = libpq_env(url)
    process = subprocess.Popen(
        [
            "pg_dump",
            "--format=custom",
            "--compress=0",
            f"--snapshot={snapshot_id}",
            "--no-password",
            "-d",
            dsn,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        bufsize=1024 * 1024,
    )
    return ProcessOutput(process, "pg_dump")


def dump_reader(output: ProcessOutput, threads: int) -> HashingReader:
    return HashingReader(compressing_reader(output, threads=threads))


async def check_empty(conn: asyncpg.Connection, where: str) -> None:
    tables = [r[0] for r in await conn.fetch(_TABLES_SQL)]
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise TargetNotEmpty(
            f"target not empty: database {where} already has {len(tables)} tables ({shown}); "
            "restore into an empty database"
        )


# Drops every view, table and sequence of the target's schema; runs in the same transaction
# as the restore that follows it (pgstream), so a restore that fails leaves the old tables
# as they were.
DROP_SCHEMA_OBJECTS = """
DO $dchat$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind IN ('v', 'm') LOOP
    EXECUTE format(CASE r.relkind WHEN 'm' THEN 'DROP MATERIALIZED VIEW IF EXISTS %I.%I CASCADE'
                   ELSE 'DROP VIEW IF EXISTS %I.%I CASCADE' END, r.nspname, r.relname);
  END LOOP;
  FOR r IN SELECT n.nspname, c.relname FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition LOOP
    EXECUTE format('DROP TABLE IF EXISTS %I.%I CASCADE', r.nspname, r.relname);
  END LOOP;
  FOR r IN SELECT n.nspname, c.relname FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind = 'S' LOOP
    EXECUTE format('DROP SEQUENCE IF EXISTS %I.%I CASCADE', r.nspname, r.relname);
  END LOOP;
END
$dchat$;
"""


async def can_create_databases(conn: asyncpg.Connection) -> tuple[str, bool]:
    row = await conn.fetchrow(
        "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    assert row is not None
    return str(row[0]), bool(row[1])


@asynccontextmanager
async def throwaway_database(url: str, connect_timeout: float) -> AsyncIterator[str]:
    """A new empty database ``dchat_verify_<random>`` on the server of ``url`` (needs
    CREATEDB); dropped on exit. Yields its URL."""
    name = f"dchat_verify_{secrets.token_hex(6)}"
    conn = await connect(url, connect_timeout)
    try:
        role, allowed = await can_create_databases(conn)
        if not allowed:
            raise BackupError(
                f"verify needs a temporary database, and role {role} lacks CREATEDB "
                f"(ALTER ROLE {quote_ident(role)} CREATEDB, or verify with another role)"
            )
        await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await conn.close()
    try:
        yield with_database(url, name)
    finally:
        conn = await connect(url, connect_timeout)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()


def dump_version_hint(error: str) -> str:
    if "server version mismatch" in error:
        return f"{error} (this image's pg_dump supports servers up to its own major version)"
    return error


async def stop_process(output: ProcessOutput) -> None:
    """Kill pg_dump if it still runs (a failed upload stops reading it) and reap it."""
    await asyncio.to_thread(output.stop)
