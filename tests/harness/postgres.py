"""PostgreSQL from the Debian package, as an unprivileged user in a temporary directory.

``PostgresServer.start(base_dir)`` runs initdb (trust auth on loopback, superuser
``dchat``) and ``pg_ctl start`` on a free 127.0.0.1 port with its socket in the data
directory; ``start_standby()`` makes a streaming-replication standby with pg_basebackup
(``-R`` writes primary_conninfo and standby.signal), for failover tests. When the tests
run as root (CI does), the server runs as the ``nobody`` user: PostgreSQL refuses root.

``start(..., also_listen=("10.88.0.1",), password_networks=("10.88.0.0/16",))`` also
binds the real node's bridge address, so pods reach it; clients from those networks must
log in with a password (``create_login_database``), loopback stays trust.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .net import free_port

SUPERUSER = "dchat"


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin directory."""
    env = os.environ.get("DCHAT_PG_BIN")
    if env:
        return Path(env)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        found = shutil.which("postgres")
        if found:
            return Path(found).resolve().parent
        raise RuntimeError(
            "PostgreSQL server not found: install the Debian package `postgresql` "
            "(make deps does) or set DCHAT_PG_BIN"
        )
    return candidates[-1].parent


def _run_as() -> str | None:
    return "nobody" if os.geteuid() == 0 else None


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


@dataclass
class PostgresServer:
    """One running PostgreSQL instance."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str | None = field(default_factory=_run_as)

    def _cmd(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), user=self.user, capture_output=True, text=True, check=check, timeout=timeout
        )

    @classmethod
    def start(
        cls,
        base_dir: Path,
        name: str = "primary",
        also_listen: Sequence[str] = (),
        password_networks: Sequence[str] = (),
    ) -> PostgresServer:
        bindir = pg_bin_dir()
        base_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(base_dir, 0o755)  # noqa: S103 - the unprivileged server user must traverse it
        server = cls(data_dir=base_dir / name, port=free_port())
        server.data_dir.mkdir()
        _chown_tree(server.data_dir, server.user)
        server._cmd(
            [
                str(bindir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# dchat test harness\n"
                f"listen_addresses = '{','.join([server.host, *also_listen])}'\n"
                f"port = {server.port}\n"
                f"unix_socket_directories = '{server.data_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '64MB'\n"
                "hot_standby = on\nmax_connections = 200\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        if password_networks:
            with (server.data_dir / "pg_hba.conf").open("a") as hba:
                for net in password_networks:
                    hba.write(f"host all all {net} scram-sha-256\n")
        server.pg_ctl_start()
        return server

    def pg_ctl_start(self) -> None:
        bindir = pg_bin_dir()
        result = self._cmd(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data_dir / "server.log"),
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode: smart, fast or immediate — immediate simulates a crash)."""
        self._cmd(
            [str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
            check=False,
        )

    @property
    def _client_args(self) -> list[str]:
        """Where psql / pg_basebackup reach this server, as the superuser."""
        return ["-h", self.host, "-p", str(self.port), "-U", SUPERUSER]

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres", timeout: float | None = 120) -> str:
        """Run SQL with psql; return its unaligned, tuples-only output (``timeout=None``:
        no limit, for bulk loads)."""
        result = self._cmd(
            [
                str(pg_bin_dir() / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                *self._client_args,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_login_database(
        self, name: str, password: str, host: str, createdb: bool = False
    ) -> str:
        """A role ``name`` with a password owning a new database ``name``; its URL via ``host``.
        ``createdb``: the role may create databases (a backup's verification needs one)."""
        extra = " CREATEDB" if createdb else ""
        self.psql(f"CREATE ROLE \"{name}\" LOGIN{extra} PASSWORD '{password}'")
        self.psql(f'CREATE DATABASE "{name}" OWNER "{name}"')
        return f"postgresql://{name}:{password}@{host}:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def start_standby(self, name: str = "standby") -> PostgresServer:
        """A hot standby streaming from this server (for failover tests)."""
        bindir = pg_bin_dir()
        standby = PostgresServer(
            data_dir=self.data_dir.parent / name, port=free_port(), user=self.user
        )
        standby.data_dir.mkdir()
        os.chmod(standby.data_dir, 0o700)
        _chown_tree(standby.data_dir, standby.user)
        self._cmd(
            [
                str(bindir / "pg_basebackup"),
                *self._client_args,
                "-D",
                str(standby.data_dir),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",  # the default "spread" checkpoint takes ~90 s here
                "--no-sync",
            ]
        )
        with (standby.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.data_dir}'\n")
        with contextlib.suppress(FileNotFoundError):
            (standby.data_dir / "server.log").unlink()
        standby.pg_ctl_start()
        return standby

    def promote(self) -> None:
        self._cmd([str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-w", "promote"])

    def is_in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"


def bulk_messages(server: PostgresServer, db: str, rows: int) -> None:
    """Fill a migrated node database with ``rows`` messages of ~330 bytes of barely
    compressible text in one channel (120,000 rows: ~40 MB of pg_dump, ~20 MB zstd)."""
    server.psql(
        "INSERT INTO users (id, created_at) VALUES ('bulk', 0);"  # noqa: S608 - rows is an int
        "INSERT INTO channels (name, topic, created_by, created_at) VALUES ('bulk', '', 'bulk', 0);"
        "INSERT INTO messages (channel_id, author, body, created_at) "
        "SELECT (SELECT id FROM channels WHERE name = 'bulk'), 'bulk', "
        "encode(sha512(i::text::bytea), 'base64') || "
        "encode(sha512((i + 1)::text::bytea), 'hex'), i "
        f"FROM generate_series(1, {int(rows)}) AS i",
        db,
    )
