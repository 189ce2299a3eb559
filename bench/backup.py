#!/usr/bin/env python3
"""Benchmark: `dchat backup create/restore` against the deployment guide's pipeline, side by
side in one run, on the same PostgreSQL and the same S3 server.

    .venv/bin/python bench/backup.py [--size-mib 1024] [--jobs 2] [--runs 3]
                                     [--keep DIR] [--json]

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
  the sizes and the ratios guide/ours (goal: >= 1.5 for backup and for restore);
- ``--runs N`` repeats the four measurements N times on the same database and S3 server,
  alternating which of ours and the guide's goes first, and prints every run and the
  min/median of each (the machine is shared: single numbers vary);
- ``--keep DIR`` keeps the PostgreSQL data directory with the generated database in DIR
  and reuses it on the next run with the same ``--size-mib`` (building 1 GiB takes
  minutes); without it everything lives in a temporary directory removed at the end.

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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.net import free_port  # noqa: E402
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
    ours_backup_s: list[float]
    guide_backup_s: list[float]
    ours_restore_s: list[float]
    guide_restore_s: list[float]
    ours_object_bytes: int
    guide_object_bytes: int
    jobs: int

    def ratios(self, what: str) -> list[float]:
        ours, guide = getattr(self, f"ours_{what}_s"), getattr(self, f"guide_{what}_s")
        return [g / o for o, g in zip(ours, guide, strict=True)]


def source_server(keep: Path | None, base: Path, size_mib: int) -> tuple[PostgresServer, int]:
    """The server with the populated ``src`` database: reused from ``keep`` when it holds
    one of ``size_mib``, else made (in ``keep`` or ``base``)."""
    home = keep or base
    marker = home / "pg-source.json"
    data_dir = home / "pg" / "primary"
    if keep is not None and marker.exists() and data_dir.exists():
        built = json.loads(marker.read_text())
        if built.get("size_mib") == size_mib:
            server = PostgresServer(data_dir=data_dir, port=free_port())
            with (data_dir / "postgresql.conf").open("a") as conf:
                conf.write(f"port = {server.port}\n")
            server.pg_ctl_start()
            for database in ("ours", "guide"):
                server.drop_database(database)
            log(f"reusing the {size_mib} MiB source database in {data_dir}")
            return server, int(built["bytes"])
        log(f"{marker} is of {built.get('size_mib')} MiB, not {size_mib}: rebuilding")
        shutil.rmtree(home / "pg", ignore_errors=True)
        marker.unlink()
    server = PostgresServer.start(home / "pg")
    psql(server, "postgres", "CREATE DATABASE src")
    size = populate(server, "src", size_mib)
    psql(server, "src", "VACUUM ANALYZE")
    psql(server, "postgres", "CHECKPOINT")
    if keep is not None:
        marker.write_text(json.dumps({"size_mib": size_mib, "bytes": size}))
    return server, size


@dataclass
class Pipelines:
    """The four measured commands, for backup number ``i``."""

    pg: PostgresServer
    bucket: str
    jobs: int
    ours_env: dict[str, str]
    guide_env: dict[str, str]
    aws_cp: str

    def object_url(self, i: int) -> str:
        return f"s3://{self.bucket}/guide/db{i}.sql.gz"

    def ours_backup(self, i: int) -> Timing:
        return timed(
            [DCHAT, "backup", "create", "--name", f"b{i}"],
            {**self.ours_env, "DATABASE_URL": self.pg.url("src")},
            "ours: backup",
        )

    def guide_backup(self, i: int) -> Timing:
        src = shlex.quote(self.pg.url("src"))
        return timed(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"pg_dump -d {src} | gzip | {self.aws_cp} - {self.object_url(i)}",
            ],
            self.guide_env,
            "guide: pg_dump | gzip | aws s3 cp",
        )

    def ours_restore(self, i: int) -> Timing:
        return timed(
            [DCHAT, "backup", "restore", "--name", f"b{i}", "--jobs", str(self.jobs)],
            {**self.ours_env, "DATABASE_URL": self.pg.url("ours")},
            "ours: restore",
        )

    def guide_restore(self, i: int) -> Timing:
        return timed(
            [
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"{self.aws_cp} {self.object_url(i)} - | gunzip | psql -X -q -v ON_ERROR_STOP=1 "
                f"-d {shlex.quote(self.pg.url('guide'))} > /dev/null",
            ],
            self.guide_env,
            "guide: aws s3 cp | gunzip | psql",
        )


def one_run(bench: Pipelines, i: int, report: Report, s3: S3Server) -> None:
    """Backups then restores, ours and the guide's, alternating which goes first."""
    pg = bench.pg
    ours_first = i % 2 == 1
    log(f"run {i} ({'ours' if ours_first else 'the guide'} first)")
    if ours_first:
        created, guided = bench.ours_backup(i), bench.guide_backup(i)
    else:
        guided, created = bench.guide_backup(i), bench.ours_backup(i)
    for database in ("ours", "guide"):
        pg.drop_database(database)
        psql(pg, "postgres", f"CREATE DATABASE {database}")
    psql(pg, "postgres", "CHECKPOINT")
    if ours_first:
        restored, guide_restored = bench.ours_restore(i), bench.guide_restore(i)
    else:
        guide_restored, restored = bench.guide_restore(i), bench.ours_restore(i)
    for database in ("ours", "guide"):
        got = counts(pg, database)
        if got != report.rows:
            raise RuntimeError(f"restored {database} has {got}, the source {report.rows}")
    assert json.loads(restored.detail)["verified"] is True
    head = s3.client().head_object(Bucket=bench.bucket, Key=f"guide/db{i}.sql.gz")
    report.ours_backup_s.append(created.seconds)
    report.guide_backup_s.append(guided.seconds)
    report.ours_restore_s.append(restored.seconds)
    report.guide_restore_s.append(guide_restored.seconds)
    report.ours_object_bytes = int(json.loads(created.detail)["size"])
    report.guide_object_bytes = int(head["ContentLength"])
    log(
        f"run {i}: backup {created.seconds:.1f} vs {guided.seconds:.1f} s, restore "
        f"{restored.seconds:.1f} vs {guide_restored.seconds:.1f} s"
    )


def run(size_mib: int, jobs: int, base: Path, runs: int, keep: Path | None) -> Report:
    aws = aws_cli()
    pg, size = source_server(keep, base, size_mib)
    s3 = S3Server.start(base)
    try:
        bucket = s3.create_bucket(f"bench-{uuid.uuid4().hex[:8]}")
        creds = base / "s3-credentials"
        creds.mkdir()
        (creds / "AWS_ACCESS_KEY_ID").write_text(s3.access_key)
        (creds / "AWS_SECRET_ACCESS_KEY").write_text(s3.secret_key)
        work = base / "work"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
        bench = Pipelines(
            pg=pg,
            bucket=bucket,
            jobs=jobs,
            ours_env={
                **env,
                "DCHAT_BACKUP_BUCKET": bucket,
                "DCHAT_BACKUP_PREFIX": "dchat/bench/",
                "DCHAT_BACKUP_ENDPOINT": s3.endpoint,
                "DCHAT_BACKUP_REGION": s3.region,
                "DCHAT_BACKUP_CREDENTIALS_DIR": str(creds),
                "DCHAT_TERMINATION_LOG": str(base / "termination-log"),
                "TMPDIR": str(work),
            },
            guide_env={
                **env,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_DEFAULT_REGION": s3.region,
                # the AWS CLI's defaults: moto accepts its CRC checksums. (With
                # AWS_RESPONSE_CHECKSUM_VALIDATION=when_required, `aws s3 cp s3://... -` of
                # awscli 1.46.2 hangs on a 150 MiB object here: seen while writing this.)
            },
            aws_cp=f"{shlex.quote(str(aws))} --endpoint-url {shlex.quote(s3.endpoint)} s3 cp",
        )
        report = Report(size_mib, size, counts(pg, "src"), [], [], [], [], 0, 0, jobs)
        for i in range(1, runs + 1):
            one_run(bench, i, report, s3)
        return report
    finally:
        s3.stop()
        pg.stop("fast" if keep is not None else "immediate")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="database size (MiB)")
    parser.add_argument("--jobs", type=int, default=2, help="--jobs of ours")
    parser.add_argument("--runs", type=int, default=1, help="measurements of each (alternating)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep and reuse the source database in DIR"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    keep = args.keep.resolve() if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        os.chmod(keep, 0o755)  # noqa: S103 - the harness's server user must traverse it
    base = Path(tempfile.mkdtemp(prefix="dchat-bench-backup-"))
    os.chmod(base, 0o755)  # noqa: S103 - the harness's server user must traverse it
    try:
        report = run(args.size_mib, args.jobs, base, args.runs, keep)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    mib = report.database_bytes / MIB
    print(f"database: {mib:.0f} MiB, {report.rows['messages']} messages ({os.cpu_count()} CPUs)")
    print(f"{'run':6}{'what':10}{'ours':>10}{'guide':>10}{'guide/ours':>12}")
    for what in ("backup", "restore"):
        ours, guide = getattr(report, f"ours_{what}_s"), getattr(report, f"guide_{what}_s")
        for i, (o, g) in enumerate(zip(ours, guide, strict=True), 1):
            print(f"{i:<6}{what:10}{o:>9.1f}s{g:>9.1f}s{g / o:>11.2f}x")
    print(f"{'':6}{'':10}{'min':>10}{'median':>10}   (of the ratios; times: min / median)")
    for what in ("backup", "restore"):
        ours, guide = getattr(report, f"ours_{what}_s"), getattr(report, f"guide_{what}_s")
        ratios = report.ratios(what)
        print(
            f"{what:16}{min(ratios):>9.2f}x{statistics.median(ratios):>9.2f}x   ours "
            f"{min(ours):.1f}/{statistics.median(ours):.1f} s, guide "
            f"{min(guide):.1f}/{statistics.median(guide):.1f} s"
        )
    print(
        f"{'object':16}{report.ours_object_bytes / MIB:>8.0f}MiB"
        f"{report.guide_object_bytes / MIB:>7.0f}MiB  (zstd custom dump vs gzip plain SQL)"
    )
    met = {w: statistics.median(report.ratios(w)) >= 1.5 for w in ("backup", "restore")}
    print(
        f"goal >= 1.5x (median): backup {'met' if met['backup'] else 'NOT met'}, "
        f"restore {'met' if met['restore'] else 'NOT met'}"
    )
    if args.json:
        print(
            json.dumps(
                {
                    **asdict(report),
                    "backup_ratios": report.ratios("backup"),
                    "restore_ratios": report.ratios("restore"),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
