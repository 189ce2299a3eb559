#!/usr/bin/env python3
"""Benchmark: `dchat backup create/restore` against the deployment guide's pipeline, side by
side in one run, on the same PostgreSQL and the same S3 server.

    .venv/bin/python bench/backup.py [--size-mib 1024] [--jobs 2] [--json]

What it does:
- starts the test harness's PostgreSQL (Debian's server, tests/harness/postgres.py) and S3
  server (moto on loopback, tests/harness/s3.py; or the endpoint DCHAT_TEST_S3_ENDPOINT
  names);
- makes a database of the node's schema (`dchat migrate`) and fills it with generated chat
  messages (SQL generate_series, bodies of mixed text and hex digests) until
  pg_database_size reaches --size-mib;
- backup, ours: `dchat backup create` (pg_dump custom format of an exported snapshot, zstd
  multi-threaded, streamed into a multipart upload, manifest with SHA-256 and row counts);
- backup, the guide's: `pg_dump | gzip | aws s3 cp - s3://...` (bash, pipefail);
- restore, ours: `dchat backup restore --jobs N` into an empty database (download with
  checksum check, pg_restore --jobs N, row counts and the node's verify afterwards: the
  time includes the verification the guide does not do);
- restore, the guide's: `aws s3 cp s3://... - | gunzip | psql` into another empty database;
- checks both restored databases have the source's row counts, and prints the times,
  the sizes and the ratios guide/ours (goal: >= 1.5 for backup and for restore).

The AWS CLI (PyPI `awscli`, pinned below) lives in its own virtualenv,
${DCHAT_CACHE:-~/.cache/dchat}/awscli-venv, created on first use (like checkov's in
scripts/checkov.sh): it pins a botocore of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.postgres import PostgresServer  # noqa: E402
from tests.harness.s3 import S3Server  # noqa: E402

PY = sys.executable
DCHAT = str(Path(PY).parent / "dchat")
AWSCLI_VERSION = "1.46.2"
MIB = 1024 * 1024
BATCH_ROWS = 1_000_000


def log(message: str) -> None:
    print(f"bench/backup: {message}", file=sys.stderr, flush=True)


def aws_cli() -> Path:
    cache = Path(os.environ.get("DCHAT_CACHE", Path.home() / ".cache" / "dchat"))
    venv = cache / "awscli-venv"
    aws = venv / "bin" / "aws"
    if aws.exists():
        version = subprocess.run([str(aws), "--version"], capture_output=True, text=True)
        if f"aws-cli/{AWSCLI_VERSION} " in version.stdout + version.stderr:
            return aws
    log(f"creating {venv} with awscli=={AWSCLI_VERSION}")
    shutil.rmtree(venv, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-cache-dir",
            "--disable-pip-version-check",
            f"awscli=={AWSCLI_VERSION}",
        ],
        check=True,
    )
    return aws


def psql(server: PostgresServer, database: str, sql: str) -> str:
    """psql as the superuser, without the harness's default timeout (bulk loads)."""
    return server.psql(sql, database, timeout=None)


def populate(server: PostgresServer, database: str, size_mib: int) -> int:
    """Fill the node's schema until the database has ``size_mib``; returns its size."""
    url = server.url(database)
    subprocess.run([DCHAT, "migrate"], env={**os.environ, "DATABASE_URL": url}, check=True)
    psql(
        server,
        database,
        "INSERT INTO users (id, created_at) SELECT 'user-' || i, i FROM generate_series(1, 1000) i;"
        "INSERT INTO channels (name, topic, created_by, created_at, created_at_text) "
        "SELECT 'channel-' || i, 'topic of channel ' || i, 'user-' || (i % 1000 + 1), i, "
        "'2026-11-30T12:00:00Z' FROM generate_series(1, 200) i",
    )
    done = 0
    empty = size = int(psql(server, database, "SELECT pg_database_size(current_database())"))
    while size < size_mib * MIB:
        # the next batch: what the bytes per row measured so far say is missing (+2 %)
        per_row = (size - empty) / done if done else 400
        missing = int((size_mib * MIB - size) / per_row * 1.02) + 1
        first = done + 1
        done += min(max(missing, 1_000), BATCH_ROWS)
        psql(
            server,
            database,
            "INSERT INTO messages (channel_id, author, body, created_at, created_at_text) "  # noqa: S608
            "SELECT i % 200 + 1, 'user-' || (i % 1000 + 1), "
            "'message ' || i || ': ' || md5(i::text) || ' re ' || (i % 977) || ' ' || "
            "substr('the quick brown fox jumps over the lazy dog while the relay gossips', "
            "(1 + i % 30)::int) || ' ' || md5((i * 7)::text), "
            "1764500000000000 + i * 1000, '2026-11-30T12:00:00.' || lpad((i % 999999)::text, 6, "
            f"'0') || 'Z' FROM generate_series({first}::bigint, {done}::bigint) i",
        )
        size = int(psql(server, database, "SELECT pg_database_size(current_database())"))
        log(f"database {size // MIB} MiB of {size_mib} MiB ({done} messages)")
    return size


def counts(server: PostgresServer, database: str) -> dict[str, int]:
    out = {}
    for table in ("users", "channels", "messages"):
        out[table] = int(psql(server, database, f"SELECT count(*) FROM {table}"))  # noqa: S608
    return out


@dataclass
class Timing:
    seconds: float
    detail: str


def timed(argv: list[str], env: dict[str, str], what: str) -> Timing:
    log(f"{what}: {' '.join(argv[:4])} ...")
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr[-2000:]}")
    lines = result.stdout.strip().splitlines()
    log(f"{what}: {seconds:.1f} s")
    for line in result.stderr.strip().splitlines()[-8:]:
        log(f"  {line}")
    return Timing(seconds, lines[-1] if lines else "")


@dataclass
class Report:
    size_mib_requested: int
    database_bytes: int
    rows: dict[str, int]
    ours_backup_s: float
    guide_backup_s: float
    ours_restore_s: float
    guide_restore_s: float
    ours_object_bytes: int
    guide_object_bytes: int
    jobs: int

    @property
    def backup_ratio(self) -> float:
        return self.guide_backup_s / self.ours_backup_s

    @property
    def restore_ratio(self) -> float:
        return self.guide_restore_s / self.ours_restore_s


def run(size_mib: int, jobs: int, base: Path) -> Report:
    aws = aws_cli()
    pg = PostgresServer.start(base / "pg")
    s3 = S3Server.start(base)
    try:
        bucket = s3.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        psql(pg, "postgres", "CREATE DATABASE src")
        size = populate(pg, "src", size_mib)
        rows = counts(pg, "src")
        psql(pg, "postgres", "VACUUM ANALYZE")
        creds = base / "s3-credentials"
        creds.mkdir()
        (creds / "AWS_ACCESS_KEY_ID").write_text(s3.access_key)
        (creds / "AWS_SECRET_ACCESS_KEY").write_text(s3.secret_key)
        work = base / "work"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
        ours_env = {
            **env,
            "DCHAT_BACKUP_BUCKET": bucket,
            "DCHAT_BACKUP_PREFIX": "dchat/bench/",
            "DCHAT_BACKUP_ENDPOINT": s3.endpoint,
            "DCHAT_BACKUP_REGION": s3.region,
            "DCHAT_BACKUP_CREDENTIALS_DIR": str(creds),
            "DCHAT_TERMINATION_LOG": str(base / "termination-log"),
            "TMPDIR": str(work),
        }
        guide_env = {
            **env,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            # the AWS CLI's defaults: moto accepts its CRC checksums. (With
            # AWS_RESPONSE_CHECKSUM_VALIDATION=when_required, `aws s3 cp s3://... -` of
            # awscli 1.46.2 hangs on a 150 MiB object here: seen while writing this.)
        }
        src_url = pg.url("src")
        object_url = f"s3://{bucket}/guide/db.sql.gz"
        aws_cp = f"{shlex.quote(str(aws))} --endpoint-url {shlex.quote(s3.endpoint)} s3 cp"

        created = timed(
            [DCHAT, "backup", "create", "--name", "b1"],
            {**ours_env, "DATABASE_URL": src_url},
            "ours: backup",
        )
        guide_backup = timed(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"pg_dump -d {shlex.quote(src_url)} | gzip | {aws_cp} - {object_url}",
            ],
            guide_env,
            "guide: pg_dump | gzip | aws s3 cp",
        )
        psql(pg, "postgres", "CREATE DATABASE ours")
        psql(pg, "postgres", "CREATE DATABASE guide")
        restored = timed(
            [DCHAT, "backup", "restore", "--name", "b1", "--jobs", str(jobs)],
            {**ours_env, "DATABASE_URL": pg.url("ours")},
            "ours: restore",
        )
        guide_restore = timed(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"{aws_cp} {object_url} - | gunzip | psql -X -q -v ON_ERROR_STOP=1 "
                f"-d {shlex.quote(pg.url('guide'))} > /dev/null",
            ],
            guide_env,
            "guide: aws s3 cp | gunzip | psql",
        )
        for database in ("ours", "guide"):
            got = counts(pg, database)
            if got != rows:
                raise RuntimeError(f"restored {database} has {got}, the source {rows}")
        assert json.loads(restored.detail)["verified"] is True
        head = s3.client().head_object(Bucket=bucket, Key="guide/db.sql.gz")
        return Report(
            size_mib_requested=size_mib,
            database_bytes=size,
            rows=rows,
            ours_backup_s=created.seconds,
            guide_backup_s=guide_backup.seconds,
            ours_restore_s=restored.seconds,
            guide_restore_s=guide_restore.seconds,
            ours_object_bytes=int(json.loads(created.detail)["size"]),
            guide_object_bytes=int(head["ContentLength"]),
            jobs=jobs,
        )
    finally:
        s3.stop()
        pg.stop("immediate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="database size (MiB)")
    parser.add_argument("--jobs", type=int, default=2, help="pg_restore --jobs for ours")
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="dchat-bench-backup-"))
    os.chmod(base, 0o755)  # noqa: S103 - the harness's server user must traverse it
    try:
        report = run(args.size_mib, args.jobs, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mib = report.database_bytes / MIB
    print(f"database: {mib:.0f} MiB, {report.rows['messages']} messages ({os.cpu_count()} CPUs)")
    print(f"{'':10}{'ours':>10}{'guide':>10}{'guide/ours':>12}")
    print(
        f"{'backup':10}{report.ours_backup_s:>9.1f}s{report.guide_backup_s:>9.1f}s"
        f"{report.backup_ratio:>11.2f}x"
    )
    print(
        f"{'restore':10}{report.ours_restore_s:>9.1f}s{report.guide_restore_s:>9.1f}s"
        f"{report.restore_ratio:>11.2f}x"
    )
    print(
        f"{'object':10}{report.ours_object_bytes / MIB:>8.0f}MiB"
        f"{report.guide_object_bytes / MIB:>7.0f}MiB  (zstd custom dump vs gzip plain SQL)"
    )
    print(
        f"goal >= 1.5x: backup {'met' if report.backup_ratio >= 1.5 else 'NOT met'}, "
        f"restore {'met' if report.restore_ratio >= 1.5 else 'NOT met'}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    **asdict(report),
                    "backup_ratio": report.backup_ratio,
                    "restore_ratio": report.restore_ratio,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
