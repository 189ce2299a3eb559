"""Versioned schema migrations shared by both storage engines.

Design:
- Files live in ``dchat_node/storage/migrations/`` and are named ``NNNN_name.sql`` (one file
  for both engines) or ``NNNN_name.<engine>.sql`` (``sqlite`` / ``postgresql``) when the SQL
  dialect differs. There is one version sequence: every version must exist for every
  engine, either as a shared file or as one file per engine, never both. Versions ascend
  but may leave gaps: domains reserve ranges (marketplace 0005..0009, relay 0010, bridge
  0011) and a version filled in later is applied then (pending = not yet applied, by set).
- Each applied migration is recorded in ``schema_migrations`` with a SHA-256 checksum of its
  SQL, so ``dchat verify`` can detect an edited migration or a database newer than the code.
- Loading is pure (reads package files); applying is each engine's job (transactionally).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Engine = Literal["sqlite", "postgresql"]
ENGINES: tuple[Engine, ...] = ("sqlite", "postgresql")

_NAME = re.compile(
    r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<engine>sqlite|postgresql))?\.sql$"
)

BOOTSTRAP_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)
"""


class MigrationLayoutError(RuntimeError):
    """The migrations directory breaks the naming or sequence rules."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str


def _files() -> dict[str, str]:
    root = resources.files("dchat_node.storage") / "migrations"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in root.iterdir()
        if entry.name.endswith(".sql")
    }


def load_migrations(engine: Engine, files: dict[str, str] | None = None) -> list[Migration]:
    """The ordered migrations for ``engine``; raises MigrationLayoutError on a bad layout."""
    files = _files() if files is None else files
    shared: dict[int, tuple[str, str]] = {}
    per_engine: dict[Engine, dict[int, tuple[str, str]]] = {e: {} for e in ENGINES}
    for filename, sql in sorted(files.items()):
        match = _NAME.match(filename)
        if match is None:
            raise MigrationLayoutError(
                f"{filename}: expected NNNN_name.sql or NNNN_name.<engine>.sql"
            )
        version = int(match["version"])
        target = shared if match["engine"] is None else per_engine[match["engine"]]  # type: ignore[index]
        if version in target:
            raise MigrationLayoutError(f"{filename}: version {version} appears twice")
        target[version] = (match["name"], sql)
    for eng in ENGINES:
        both = set(shared) & set(per_engine[eng])
        if both:
            raise MigrationLayoutError(f"versions {sorted(both)} are both shared and {eng}-only")
    versions = set(shared) | {v for e in ENGINES for v in per_engine[e]}
    for eng in ENGINES:
        missing = versions - set(shared) - set(per_engine[eng])
        if missing:
            raise MigrationLayoutError(f"versions {sorted(missing)} have no {eng} migration")
    if 0 in versions:
        raise MigrationLayoutError("versions start at 0001")
    out: list[Migration] = []
    for version in sorted(versions):
        name, sql = shared.get(version) or per_engine[engine][version]
        out.append(Migration(version, name, sql))
    return out


def check_applied(known: list[Migration], applied: list[AppliedMigration]) -> list[str]:
    """Problems with what the database says is applied, compared with the code's list."""
    problems: list[str] = []
    by_version = {m.version: m for m in known}
    for row in applied:
        mig = by_version.get(row.version)
        if mig is None:
            problems.append(
                f"schema version {row.version} ({row.name}) is applied but unknown to this "
                "build (database is newer than the code)"
            )
        elif mig.checksum != row.checksum:
            problems.append(
                f"migration {row.version} ({row.name}) was changed after it was applied"
            )
    return problems
