"""The five backup commands: create, restore, verify, delete, list.

Each returns the fields of its result (see the package docstring); failures raise
``BackupError`` (exit 1) with one line saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dchat_node import __version__
from dchat_node.backup import pgstream
from dchat_node.backup import postgres as pg
from dchat_node.backup import sqlite as lite
from dchat_node.backup.errors import BackupError, ChecksumMismatch
from dchat_node.backup.manifest import (
    MANIFEST_NAME,
    BackupEngine,
    Manifest,
    ManifestObject,
    rfc3339,
    utc_now,
)
from dchat_node.backup.store import S3Store
from dchat_node.backup.streams import HashingReader, VerifyingWriter, compressing_reader
from dchat_node.config import DatabaseConfig

log = logging.getLogger("dchat.backup")

PG_OBJECT = "dump.pgcustom.zst"
SQLITE_OBJECT = "dchat.db.zst"
_PENDING = "migrations not applied"


@dataclass(frozen=True)
class Job:
    """What one command works with."""

    store: S3Store
    database: DatabaseConfig
    cluster: str
    work_dir: Path
    jobs: int = 2
    threads: int = -1

    @property
    def engine(self) -> BackupEngine:
        return "sqlite" if self.database.engine == "sqlite" else "postgres"

    @property
    def timeout(self) -> float:
        return self.database.connection_timeout_secs

    def sqlite_file(self) -> Path:
        from dchat_node.storage.sqlite import sqlite_path

        return Path(sqlite_path(self.database.url))


# -- create ------------------------------------------------------------------------------


async def create(job: Job, name: str) -> dict[str, Any]:
    store = job.store
    if await asyncio.to_thread(store.has_manifest, name):
        raise BackupError(f"backup {name} already exists at {store.location(name)}")
    started = utc_now()
    if job.engine == "postgres":
        obj, facts = await _create_postgres(job, name)
    else:
        obj, facts = await asyncio.to_thread(_create_sqlite, job, name)
    manifest = Manifest(
        cluster=job.cluster,
        name=name,
        engine=job.engine,
        server_version=facts[0],
        schema_version=facts[1],
        created_at=started,
        completed_at=utc_now(),
        objects=[obj],
        row_counts=facts[2],
        tool=f"dchat-node {__version__}",
    )
    await asyncio.to_thread(store.put_manifest, manifest)
    log.info("backup %s complete: %s", name, store.location(name))
    return manifest.summary(store.location(name))


Facts = tuple[str, int, dict[str, int]]


async def _create_postgres(job: Job, name: str) -> tuple[ManifestObject, Facts]:
    url = job.database.url
    key = job.store.key(name, PG_OBJECT)
    async with pg.exported_snapshot(url, job.timeout) as (snap, conn):
        output = pg.start_dump(url, snap.id)
        reader = pg.dump_reader(output, job.threads)
        upload = asyncio.create_task(
            asyncio.to_thread(job.store.upload, key, reader, "application/zstd")
        )
        try:
            counts = await pg.table_counts(conn)  # same snapshot as the dump
        except BaseException:
            await pg.stop_process(output)  # kills pg_dump: the upload fails and is aborted
            await asyncio.gather(upload, return_exceptions=True)
            raise
        try:
            await upload
        except BackupError as exc:
            raise BackupError(pg.dump_version_hint(str(exc))) from None
        finally:
            await pg.stop_process(output)
    obj = ManifestObject(
        key=PG_OBJECT, size=reader.size, sha256=reader.sha256, content="pg_dump-custom"
    )
    return obj, (snap.server_version, snap.schema_version, counts)


def _create_sqlite(job: Job, name: str) -> tuple[ManifestObject, Facts]:
    key = job.store.key(name, SQLITE_OBJECT)
    with _scratch(job.work_dir) as scratch:
        copy = scratch / "snapshot.db"
        lite.snapshot_copy(job.sqlite_file(), copy)
        facts = lite.facts(copy)
        if not facts.integrity_ok:
            raise BackupError(f"SQLite integrity_check failed: {facts.integrity[:3]}")
        with copy.open("rb") as raw:
            reader = HashingReader(compressing_reader(raw, threads=job.threads))
            job.store.upload(key, reader, "application/zstd")
    obj = ManifestObject(
        key=SQLITE_OBJECT, size=reader.size, sha256=reader.sha256, content="sqlite-database"
    )
    return obj, (lite.server_version(), facts.schema_version, facts.row_counts)


@contextlib.contextmanager
def _scratch(work_dir: Path) -> Iterator[Path]:
    try:
        path = Path(tempfile.mkdtemp(prefix="dchat-backup-", dir=work_dir))
    except OSError as exc:
        raise BackupError(f"cannot use work directory {work_dir}: {exc.strerror}") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- download ----------------------------------------------------------------------------


def download_verified(store: S3Store, name: str, obj: ManifestObject, dest: Path) -> None:
    """Download ``obj`` of backup ``name`` decompressed to ``dest``; raise ChecksumMismatch
    when its size or SHA-256 differs from the manifest (``dest`` is then removed)."""
    key = store.key(name, obj.key)
    try:
        with dest.open("wb") as sink:
            writer = VerifyingWriter(sink)
            store.download(key, writer)
            writer.finish()
    except OSError as exc:
        dest.unlink(missing_ok=True)
        what = "disk full" if exc.errno == 28 else exc.strerror
        raise BackupError(f"writing {dest} failed: {what}") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if writer.size != obj.size or writer.sha256 != obj.sha256:
        dest.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"checksum mismatch on {key}: the manifest says {obj.size} bytes, sha256 "
            f"{obj.sha256}; S3 has {writer.size} bytes, sha256 {writer.sha256}"
        )
    if writer.decompress_error:
        dest.unlink(missing_ok=True)
        raise BackupError(
            f"{key} matches its checksum but does not decompress: {writer.decompress_error}"
        )


# -- restore and verify --------------------------------------------------------------------


async def resolve(job: Job, name: str | None) -> Manifest:
    """The manifest of ``name``, or of the newest complete backup when ``name`` is None."""
    if name is not None:
        return await asyncio.to_thread(job.store.get_manifest, name)
    manifests = await asyncio.to_thread(_manifests, job.store)
    if not manifests:
        raise BackupError(f"no complete backup at {job.store.settings.location()}")
    return manifests[0]


def _manifests(store: S3Store) -> list[Manifest]:
    complete, _ = store.backup_names()
    found = [store.get_manifest(n) for n in complete]
    return sorted(found, key=lambda m: m.completed_at, reverse=True)


def _check_engine(job: Job, manifest: Manifest) -> None:
    if manifest.engine != job.engine:
        raise BackupError(
            f"backup {manifest.name} is a {manifest.engine} backup; this node's database is "
            f"{job.engine}"
        )


async def restore(job: Job, name: str | None, replace: bool = False) -> dict[str, Any]:
    """Restore into the node's database: an empty one, or with ``replace`` over what it
    holds (the node must be stopped). Either way nothing touches the target before the
    download matched its size and SHA-256; a replace is atomic (PostgreSQL: one
    transaction; SQLite: a checked file renamed over the old one)."""
    manifest = await resolve(job, name)
    _check_engine(job, manifest)
    if job.engine == "postgres":
        detail = await _restore_postgres(job, manifest, job.database.url, replace=replace)
    else:
        detail = await _restore_sqlite(job, manifest, job.sqlite_file(), replace=replace)
    return {**manifest.summary(job.store.location(manifest.name)), **detail}


async def verify(job: Job, name: str | None) -> dict[str, Any]:
    manifest = await resolve(job, name)
    _check_engine(job, manifest)
    if job.engine == "postgres":
        async with pg.throwaway_database(job.database.url, job.timeout) as url:
            detail = await _restore_postgres(job, manifest, url)
    else:
        with _scratch(job.work_dir) as scratch:
            detail = await _restore_sqlite(job, manifest, scratch / "verify.db")
    return {**manifest.summary(job.store.location(manifest.name)), **detail}


async def _restore_postgres(
    job: Job, manifest: Manifest, url: str, replace: bool = False
) -> dict[str, Any]:
    """Stream the backup into ONE transaction of the target, committed only after every
    object matched its size and SHA-256 and the row counts matched the manifest
    (``pgstream``); then the node's own verify on the committed data."""
    conn = await pg.connect(url, job.timeout)
    try:
        if not replace:
            await pg.check_empty(conn, pg.split_password(url)[0])
    finally:
        await conn.close()
    load = pgstream.StreamedLoad(
        url=url,
        objects=[
            pgstream.ObjectToLoad(job.store.key(manifest.name, o.key), o.size, o.sha256)
            for o in manifest.objects
        ],
        row_counts=manifest.row_counts,
        download=job.store.download,
        replace=replace,
        settings=pgstream.load_settings(job.jobs),
    )
    try:
        timings = await asyncio.to_thread(load.run)
    except pgstream.VerificationFailed as exc:
        raise VerificationFailed(str(exc)) from None
    log.info(
        "streamed %d bytes (checked) in %.1f s; pg_restore done at %.1f s; %s and committed "
        "at %.1f s",
        manifest.size,
        timings.downloaded,
        timings.pg_restore,
        "replaced the old tables" if replace else "row counts checked",
        timings.committed,
    )
    started = time.monotonic()
    problems = await _node_verify(job.database.model_copy(update={"url": url}))
    log.info("dchat verify in %.1f s", _since(started))
    return _verdict(problems, manifest)


def _since(started: float) -> float:
    return time.monotonic() - started


async def _restore_sqlite(
    job: Job, manifest: Manifest, target: Path, replace: bool = False
) -> dict[str, Any]:
    if not replace:
        lite.check_absent(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create {target.parent}: {exc.strerror}") from None
    temp = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    try:
        for obj in manifest.objects:
            await asyncio.to_thread(download_verified, job.store, manifest.name, obj, temp)
        facts = await asyncio.to_thread(lite.facts, temp)
        problems = [] if facts.integrity_ok else [f"integrity_check: {facts.integrity[:3]}"]
        problems += _compare_counts(manifest.row_counts, facts.row_counts)
        problems += await _node_verify(
            job.database.model_copy(update={"url": f"sqlite:///{temp.absolute()}"})
        )
        if problems:
            return _verdict(problems, manifest)
        if replace:
            await asyncio.to_thread(lite.replace_file, temp, target)
        else:
            try:
                os.link(temp, target)  # fails if the target appeared meanwhile
            except FileExistsError:
                raise BackupError(
                    f"target not empty: {target} appeared during the restore"
                ) from None
    finally:
        for leftover in (temp, Path(f"{temp}-wal"), Path(f"{temp}-shm")):
            leftover.unlink(missing_ok=True)
    return _verdict([], manifest)


def _compare_counts(expected: dict[str, int], got: dict[str, int]) -> list[str]:
    problems = []
    for table in sorted(set(expected) | set(got)):
        want, have = expected.get(table), got.get(table)
        if want != have:
            problems.append(f"rows in {table}: manifest {want}, restored {have}")
    return problems


async def _node_verify(database: DatabaseConfig) -> list[str]:
    """The node's own ``dchat verify`` checks; a backup older than this node's schema is
    not a defect (the node migrates at start), so pending migrations are not problems."""
    from dchat_node.storage import StorageError, create_storage

    storage = create_storage(database)
    try:
        await storage.open()
        problems = await storage.verify()
    except StorageError as exc:
        return [f"dchat verify: {exc}"]
    finally:
        await storage.close()
    return [f"dchat verify: {p}" for p in problems if not p.startswith(_PENDING)]


def _verdict(problems: list[str], manifest: Manifest) -> dict[str, Any]:
    if problems:
        detail = "; ".join(problems[:5])
        raise VerificationFailed(detail)
    tables = len(manifest.row_counts)
    rows = sum(manifest.row_counts.values())
    return {
        "verified": True,
        "detail": (
            f"checksums ok; {rows} rows in {tables} tables match the manifest; dchat verify ok"
        ),
    }


class VerificationFailed(BackupError):
    """The restored data does not match the manifest or fails the node's verify."""


# -- delete and list -------------------------------------------------------------------------


def delete(job: Job, name: str) -> dict[str, Any]:
    deleted = job.store.delete_backup(name)
    return {"name": name, "location": job.store.location(name), "deletedObjects": deleted}


def list_backups(job: Job) -> dict[str, Any]:
    store = job.store
    complete, incomplete = store.backup_names()
    manifests = sorted(
        (store.get_manifest(n) for n in complete), key=lambda m: m.completed_at, reverse=True
    )
    return {
        "location": store.settings.location(),
        "backups": [
            {
                "name": m.name,
                "location": store.location(m.name),
                "engine": m.engine,
                "size": m.size,
                "sha256": m.sha256,
                "schemaVersion": m.schema_version,
                "startedAt": rfc3339(m.created_at),
                "completedAt": rfc3339(m.completed_at),
            }
            for m in manifests
        ],
        "incomplete": incomplete,
    }


__all__ = [
    "MANIFEST_NAME",
    "Job",
    "VerificationFailed",
    "create",
    "delete",
    "list_backups",
    "restore",
    "verify",
]
