"""PostgreSQL restore streamed from S3 into ONE transaction that commits only after the
object's size and SHA-256 matched the manifest.

The pipeline, every stage running at once (nothing is written to local disk)::

    S3 (parallel ranged GETs, s3transfer) -> in order: SHA-256 + size, zstd decompression
      -> pg_restore (archive on stdin, SQL on stdout) -> psql (one session, one transaction)

psql runs, in order and in one session: ``BEGIN`` and the load settings (``SET LOCAL``);
with ``replace`` the drop of the schema's views, tables and sequences; the dump's SQL from
``pg_restore -f -`` (``--file=-``, psql's stdin); and last a *gate*: ``--file`` of a pipe
this process holds. Only when every object was downloaded whole, its size and SHA-256
equal the manifest's and pg_restore exited 0, this process writes into the gate the row
counts check (a ``DO`` block raising unless every table of the schema has the manifest's
row count) and ``COMMIT``. On any failure (checksum mismatch, an object that does not
decompress, pg_restore or psql failing, S3 failing) the gate is closed empty: psql reaches
the end of its input inside the open transaction and disconnects, and PostgreSQL rolls
everything back; the backend is also terminated at once (``pg_terminate_backend``, by its
unique ``application_name``), so a long statement (an index build) does not hold the
target's locks until it ends. If this process dies, the kernel closes the gate's write end
and the archive pipe: pg_restore fails on the truncated archive, psql reads an empty gate,
nothing is committed. ``ON_ERROR_STOP`` stops psql at the first SQL error (a failed row
count check included), again without a commit. SIGTERM (``STOP``: the Job's pod deleted)
fails the download and kills pg_restore and psql at once (a download blocked on a full pipe
included), until the gate is opened: from then on the object's checks have passed, and
only the row counts in the gate can still stop the commit. The target therefore holds the
restored data only when all checks passed, and otherwise is exactly as before (empty, or
with ``replace`` its old tables).

Server work is what bounds a restore (one large table: ``COPY`` then index builds and
foreign-key validation). The settings for the load are measured, see docs/backups.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import zstandard

from dchat_node.backup.errors import BackupError, ChecksumMismatch, one_line, scrub
from dchat_node.backup.postgres import DROP_SCHEMA_OBJECTS, libpq_env, secrets_of
from dchat_node.backup.streams import STOP, STOPPED

log = logging.getLogger("dchat.backup")

PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux)


@dataclass(frozen=True)
class ObjectToLoad:
    """One data object of the backup: its S3 key and what the manifest says of it."""

    key: str
    size: int
    sha256: str


@dataclass
class LoadTimings:
    """Seconds from the start until each stage ended (for the log and the benchmark)."""

    downloaded: float = 0.0
    pg_restore: float = 0.0
    committed: float = 0.0


class _Tail:
    """Drains a stream in a thread, keeping its last lines."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._lines: deque[str] = deque(maxlen=20)
        self._thread = threading.Thread(target=self._drain, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        with stream:
            for line in stream:
                self._lines.append(line.decode("utf-8", "replace").rstrip())

    def line_with(self, marker: str) -> str | None:
        self._thread.join(timeout=5)
        return next((ln for ln in self._lines if marker in ln), None)

    def text(self) -> str:
        self._thread.join(timeout=5)
        lines = [ln for ln in self._lines if ln.strip()]
        return one_line(" | ".join(lines[-3:])) if lines else "no message"


class StreamingSink:
    """The download's sink: SHA-256 and size of the compressed bytes in order, and their
    decompression into ``out`` (pg_restore's stdin). A decompression error or a closed
    ``out`` (pg_restore died) is remembered and stops feeding ``out``, but the hash goes on
    over the whole object, so a corrupted object is reported as the checksum mismatch."""

    def __init__(self, out: IO[bytes]) -> None:
        self._sha = hashlib.sha256()
        self.size = 0
        self._decompressor = zstandard.ZstdDecompressor().decompressobj(
            write_size=PIPE_SIZE, read_across_frames=True
        )
        self._out = out
        self.error: str | None = None

    def write(self, data: bytes) -> int:
        if STOP.is_set():
            raise BackupError(STOPPED)  # fails the download: the load rolls back
        self._sha.update(data)
        self.size += len(data)
        if self.error is None:
            try:
                chunk = self._decompressor.decompress(data)
                if chunk:
                    self._out.write(chunk)
            except zstandard.ZstdError as exc:
                self.error = f"does not decompress: {one_line(str(exc), 200)}"
            except OSError as exc:  # BrokenPipe: pg_restore ended early
                self.error = f"pg_restore stopped reading ({exc.strerror})"
        return len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def _count_check_sql(row_counts: dict[str, int]) -> str:
    """A DO block raising unless the tables of the schema and their row counts are exactly
    the manifest's (run inside the load's transaction, before the commit)."""
    expected = ",".join(
        f"({_literal(table)},{int(rows)})" for table, rows in sorted(row_counts.items())
    )
    values = expected or "(NULL::text, NULL::bigint)"
    return f"""
DO $dchat$
DECLARE r record; got bigint; problems text[] := '{{}}';
BEGIN
  FOR r IN
    WITH want(relname, rows) AS (VALUES {values}),
    have AS (SELECT c.relname::text AS relname FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p'))
    SELECT coalesce(w.relname, h.relname) AS relname, w.rows, h.relname IS NOT NULL AS present
    FROM (SELECT * FROM want WHERE relname IS NOT NULL) w
    FULL JOIN have h ON h.relname = w.relname
    ORDER BY 1
  LOOP
    IF r.present THEN
      EXECUTE format('SELECT count(*) FROM %I', r.relname) INTO got;
    ELSE
      got := NULL;
    END IF;
    IF got IS DISTINCT FROM r.rows THEN
      problems := problems || format('rows in %s: manifest %s, restored %s', r.relname,
                                     coalesce(r.rows::text, 'None'), coalesce(got::text, 'None'));
    END IF;
  END LOOP;
  IF cardinality(problems) > 0 THEN
    RAISE EXCEPTION 'dchat-verification: %', array_to_string(problems[1:5], '; ');
  END IF;
END
$dchat$;
"""  # noqa: S608 - table names are quoted literals, counts are ints


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class VerificationFailed(BackupError):
    """The restored rows do not match the manifest (raised before the commit)."""


def load_settings(jobs: int) -> tuple[str, ...]:
    """Settings of the load's transaction (``SET LOCAL``: they end with it). ``jobs``
    processes per index build: the session and ``jobs - 1`` parallel maintenance workers
    (the server's ``max_parallel_workers`` still caps them). Nothing else is changed:
    ``synchronous_commit`` stays the server's (the restore is reported done only when its
    commit is durable), and the measured alternatives (``maintenance_work_mem``, ``COPY
    FREEZE``) made no difference beyond the noise (docs/backups.md)."""
    return (f"max_parallel_maintenance_workers = {max(0, jobs - 1)}",)


@dataclass
class StreamedLoad:
    """One restore: see the module docstring. ``download(key, sink)`` writes the object's
    bytes, in order, into ``sink`` (``S3Store.download``)."""

    url: str
    objects: list[ObjectToLoad]
    row_counts: dict[str, int]
    download: Callable[[str, StreamingSink], None]
    replace: bool = False
    settings: tuple[str, ...] = ()
    timings: LoadTimings = field(default_factory=LoadTimings)

    def run(self) -> LoadTimings:
        dsn, env = libpq_env(self.url)
        app = f"dchat-restore-{secrets.token_hex(6)}"
        pipeline = _Pipeline(dsn, {**env, "PGAPPNAME": app}, self._commands())
        watcher = _StopWatcher(pipeline)
        started = time.monotonic()
        try:
            self._feed(pipeline)
            self.timings.downloaded = time.monotonic() - started
            watcher.check()
            self._check_pg_restore(pipeline, watcher)
            self.timings.pg_restore = time.monotonic() - started
            # the dump's SQL emptied search_path: back to the session's for the checks.
            # From here on the commit is decided (the checks passed): a SIGTERM no longer
            # stops it, SIGKILL before psql reaches the gate still rolls back.
            watcher.stop()
            checks = "RESET search_path;\n" + _count_check_sql(self.row_counts)
            pipeline.open_gate(checks + "\nCOMMIT;\n")
            self._check_psql(pipeline)
            self.timings.committed = time.monotonic() - started
            return self.timings
        except BaseException as exc:
            watcher.stop()
            pipeline.abort()
            _terminate_backend(dsn, env, app)
            if (watcher.fired or STOP.is_set()) and not isinstance(exc, ChecksumMismatch):
                raise BackupError(f"restore {STOPPED}; rolled back") from None
            raise
        finally:
            pipeline.close()

    def _commands(self) -> list[str]:
        commands = ["BEGIN", *(f"SET LOCAL {s}" for s in self.settings)]
        if self.replace:
            commands.append(DROP_SCHEMA_OBJECTS)
        return commands

    def _feed(self, pipeline: _Pipeline) -> None:
        """Download every object into pg_restore, checking each one's size and SHA-256."""
        for obj in self.objects:
            sink = StreamingSink(pipeline.archive)
            self.download(obj.key, sink)
            if sink.size != obj.size or sink.sha256 != obj.sha256:
                raise ChecksumMismatch(
                    f"checksum mismatch on {obj.key}: the manifest says {obj.size} bytes, "
                    f"sha256 {obj.sha256}; S3 has {sink.size} bytes, sha256 {sink.sha256}"
                    " (nothing committed: the target is as it was)"
                )
            if sink.error and sink.error.startswith("does not decompress"):
                raise BackupError(f"{obj.key} matches its checksum but {sink.error}")
            if sink.error:
                return  # pg_restore ended early: its own error says why
        with contextlib.suppress(OSError):
            pipeline.archive.close()

    def _check_pg_restore(self, pipeline: _Pipeline, watcher: _StopWatcher) -> None:
        code = pipeline.restore.wait()
        watcher.check()
        if code == 0:
            return
        if pipeline.psql.poll() not in (None, 0):  # psql stopped first: pg_restore's EPIPE
            text = scrub(pipeline.psql_err.text(), secrets_of(self.url))
            raise BackupError(f"restore failed (psql), rolled back: {text}")
        text = scrub(pipeline.restore_err.text(), secrets_of(self.url))
        raise BackupError(f"pg_restore failed (exit {code}), rolled back: {text}")

    def _check_psql(self, pipeline: _Pipeline) -> None:
        code = pipeline.psql.wait()
        if code == 0:
            return
        found = pipeline.psql_err.line_with("dchat-verification:")
        if found:
            detail = found.split("dchat-verification:", 1)[1].strip()
            raise VerificationFailed(f"{detail} (rolled back)")
        text = scrub(pipeline.psql_err.text(), secrets_of(self.url))
        raise BackupError(f"restore failed (psql exit {code}), rolled back: {text}")


class _Pipeline:
    """psql (reading its commands, then its stdin, then the gate pipe) fed by pg_restore
    (archive on stdin, SQL on stdout)."""

    def __init__(self, dsn: str, env: dict[str, str], commands: list[str]) -> None:
        self._gate_r, self._gate_w = os.pipe()
        sql_r, sql_w = os.pipe()
        for fd in (sql_r, self._gate_r):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        argv = [
            "psql",
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={dsn}",
            *(f"--command={c}" for c in commands),
            "--file=-",
            f"--file=/dev/fd/{self._gate_r}",
        ]
        try:
            self.psql = subprocess.Popen(
                argv,
                stdin=sql_r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=(self._gate_r,),
            )
        finally:
            os.close(sql_r)
            os.close(self._gate_r)
        assert self.psql.stderr is not None
        self.psql_err = _Tail(self.psql.stderr, "psql-stderr")
        try:
            self.restore = subprocess.Popen(
                ["pg_restore", "--no-owner", "--no-privileges", "--file=-"],
                stdin=subprocess.PIPE,
                stdout=sql_w,
                stderr=subprocess.PIPE,
                env=env,
                bufsize=PIPE_SIZE,
            )
        except BaseException:
            self.psql.kill()
            raise
        finally:
            os.close(sql_w)
        assert self.restore.stdin is not None
        assert self.restore.stderr is not None
        self.archive: IO[bytes] = self.restore.stdin
        self.restore_err = _Tail(self.restore.stderr, "pg_restore-stderr")

    def open_gate(self, sql: str) -> None:
        """The last input psql reads (after all of the dump): the checks and COMMIT."""
        with contextlib.suppress(OSError):  # psql already ended: its exit code says why
            _write_all(self._gate_w, sql.encode())
        self._close_gate()

    def _close_gate(self) -> None:
        if self._gate_w >= 0:
            os.close(self._gate_w)
            self._gate_w = -1

    def abort(self) -> None:
        """No COMMIT: the gate closes empty and both processes are killed."""
        self._close_gate()
        for process in (self.restore, self.psql):
            if process.poll() is None:
                process.kill()

    def close(self) -> None:
        self._close_gate()
        with contextlib.suppress(OSError):
            self.archive.close()
        for process in (self.restore, self.psql):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)


class _StopWatcher:
    """SIGTERM (``STOP``) while the load runs: kill pg_restore and psql at once (a download
    blocked on a full pipe then fails too), so the load rolls back within the pod's grace
    period."""

    def __init__(self, pipeline: _Pipeline) -> None:
        self.fired = False
        self._done = threading.Event()
        self._pipeline = pipeline
        self._thread = threading.Thread(target=self._watch, name="restore-stop", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            if STOP.is_set():
                self.fired = True
                self._pipeline.abort()
                return

    def check(self) -> None:
        if self.fired or STOP.is_set():
            self.fired = True
            raise BackupError(STOPPED)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _terminate_backend(dsn: str, env: dict[str, str], app: str) -> None:
    """End the aborted load's backend now (its transaction rolls back at once instead of
    when its current statement, e.g. an index build, would notice the lost client)."""
    subprocess.run(
        [
            "psql",
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            f"--dbname={dsn}",
            # app is "dchat-restore-" + hex digits: nothing to quote
            "--command=SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
            f"WHERE application_name = '{app}' AND pid <> pg_backend_pid()",
        ],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
