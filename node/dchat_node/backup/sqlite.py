"""SQLite snapshots: a consistent copy made with SQLite's online backup API, and its checks.

The copy (``sqlite3.Connection.backup`` from a read-only connection: the node keeps
writing meanwhile, WAL lets it) goes to a temporary file in the work directory; row
counts, schema version and ``integrity_check`` are read from that copy, so they describe
exactly what is uploaded. Continuous replication (seconds of RPO) is Litestream's job in
the operator's sidecar; these snapshots are the scheduled, verifiable backups.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

from dchat_node.backup.errors import BackupError, TargetNotEmpty, one_line

_TABLES_SQL = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snapshot_copy(source: Path, dest: Path) -> None:
    """Copy the live database ``source`` to the new file ``dest``, consistently."""
    if not source.is_file():
        raise BackupError(f"database unreachable: SQLite file {source} does not exist")
    try:
        src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst, pages=4096)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {source} failed: {one_line(str(exc), 300)}") from None
    except OSError as exc:
        raise BackupError(f"SQLite backup of {source} failed: {exc.strerror}") from None


class Facts:
    """Row counts, schema version and integrity of one SQLite file."""

    def __init__(self, path: Path) -> None:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in conn.execute(_TABLES_SQL)]
            self.row_counts = {
                t: int(conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0])  # noqa: S608
                for t in tables
            }
            self.schema_version = 0
            if "schema_migrations" in tables:
                row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
                self.schema_version = int(row.fetchone()[0])
            self.integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            raise BackupError(
                f"cannot read SQLite file {path}: {one_line(str(exc), 300)}"
            ) from None
        finally:
            conn.close()

    @property
    def integrity_ok(self) -> bool:
        return self.integrity == ["ok"]


def facts(path: Path) -> Facts:
    return Facts(path)


def check_absent(target: Path) -> None:
    for path in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        if path.exists():
            raise TargetNotEmpty(
                f"target not empty: {path} exists; restore a SQLite backup only to a path that "
                "does not exist yet"
            )


def replace_file(new: Path, target: Path) -> None:
    """Put the checked file ``new`` in place of ``target``; no process may have ``target``
    open (the node is stopped). The old WAL and shared-memory files go first: SQLite would
    otherwise replay the old database's WAL onto the new file. A crash between the two
    steps leaves the old database without its WAL tail (consistent as of its last
    checkpoint), and a retry of the restore replaces it."""
    try:
        for side in (Path(f"{target}-wal"), Path(f"{target}-shm"), Path(f"{target}-journal")):
            side.unlink(missing_ok=True)
        # Litestream's state of the old file (its default meta directory): without it the
        # sidecar starts a new generation of the replica from the new file.
        shutil.rmtree(target.with_name(f".{target.name}-litestream"), ignore_errors=True)
        os.replace(new, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise BackupError(f"cannot replace {target}: {exc.strerror}") from None


def server_version() -> str:
    return sqlite3.sqlite_version
