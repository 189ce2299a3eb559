"""``dchat backup ...``: run one command and report it.

The last line of stdout is the result as one JSON object, also written to the termination
log (``/dev/termination-log``, or ``DCHAT_TERMINATION_LOG``) when that file is writable,
cut to fit its 4 KiB. Progress and warnings go to stderr. Exit 0 ok, 1 failed, 2 bad
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dchat_node.backup.errors import BackupError, SettingsError, one_line, scrub
from dchat_node.backup.settings import (
    TERMINATION_LOG,
    BackupSettings,
    check_backup_name,
    load_settings,
    read_credentials,
)
from dchat_node.config import NodeConfig

if TYPE_CHECKING:
    from dchat_node.backup.service import Job

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_SETTINGS = 2
TERMINATION_LIMIT = 4096


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``backup`` and its subcommands to the ``dchat`` parser."""
    backup = sub.add_parser("backup", parents=[common], help="backups to S3 and restores")
    cmds = backup.add_subparsers(dest="backup_command", required=True)
    create = cmds.add_parser("create", parents=[common], help="back up the node's database")
    create.add_argument("--name", required=True)
    for verb, text in (
        ("restore", "restore a backup into the node's (empty) database, or --replace"),
        ("verify", "restore a backup into a throw-away database and check it"),
    ):
        cmd = cmds.add_parser(verb, parents=[common], help=text)
        which = cmd.add_mutually_exclusive_group(required=True)
        which.add_argument("--name")
        which.add_argument("--latest", action="store_true", help="the newest complete backup")
        cmd.add_argument(
            "--work-dir",
            type=Path,
            default=None,
            help="SQLite: for the download (default $TMPDIR); PostgreSQL streams, writes nothing",
        )
        cmd.add_argument(
            "--jobs",
            type=int,
            default=2,
            help="PostgreSQL: processes per index build (parallel maintenance workers + 1)",
        )
        if verb == "restore":
            cmd.add_argument(
                "--replace",
                action="store_true",
                help="replace what the database holds (stop the node first): PostgreSQL in one "
                "transaction, SQLite by renaming the checked file over the old one",
            )
    delete = cmds.add_parser("delete", parents=[common], help="delete one backup")
    delete.add_argument("--name", required=True)
    cmds.add_parser("list", parents=[common], help="complete backups, newest first (JSON)")


def run(
    args: argparse.Namespace, config: NodeConfig, environ: Mapping[str, str] | None = None
) -> int:
    env = os.environ if environ is None else environ
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="dchat backup: %(message)s")
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    command: str = args.backup_command
    name: str | None = getattr(args, "name", None)
    termination = Path(env.get("DCHAT_TERMINATION_LOG") or TERMINATION_LOG)
    result: dict[str, Any] = {"ok": False, "command": command, "name": name}
    secrets = _database_secrets(config)
    if command in {"create", "restore", "verify"}:
        _stop_on_sigterm()
    try:
        settings = load_settings(env)
        termination = settings.termination_log
        if name is not None:
            check_backup_name(name)
        job = _job(args, config, settings)
        secrets += job.store.secrets
        result = {"ok": True, "command": command, **asyncio.run(_dispatch(job, args))}
        code = EXIT_OK
    except SettingsError as exc:
        result["error"] = one_line("invalid settings: " + "; ".join(exc.problems))
        code = EXIT_SETTINGS
    except BackupError as exc:
        result["error"] = one_line(scrub(str(exc), secrets))
        if command in {"restore", "verify"}:
            result["verified"] = False
            result["detail"] = result["error"]
        code = EXIT_FAILURE
    report(result, termination)
    return code


def _stop_on_sigterm() -> None:
    """SIGTERM (the Job's pod deleted or evicted) stops a command cleanly: a backup's upload
    is cancelled and aborted, pg_dump killed; a restore's (or verify's) download fails and
    its load rolls back (PostgreSQL; once all checks passed, the commit goes ahead); the
    result says why, the exit code is 1. A second SIGTERM, or the end of the grace period
    (SIGKILL), ends it at once."""
    from dchat_node.backup.streams import STOP

    def handler(signum: int, frame: object) -> None:
        if STOP.is_set():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        STOP.set()
        logging.getLogger("dchat_node.backup").warning("SIGTERM: stopping the backup")

    signal.signal(signal.SIGTERM, handler)


def _database_secrets(config: NodeConfig) -> list[str]:
    from dchat_node.backup.postgres import secrets_of

    return secrets_of(config.database.url) if config.database.engine == "postgresql" else []


def _job(args: argparse.Namespace, config: NodeConfig, settings: BackupSettings) -> Job:
    from dchat_node.backup.service import Job
    from dchat_node.backup.store import S3Store

    jobs = getattr(args, "jobs", 2)
    if jobs < 1 or jobs > 64:
        raise SettingsError([f"--jobs: {jobs} is not in 1..64"])
    work_dir: Path = getattr(args, "work_dir", None) or Path(tempfile.gettempdir())
    if not work_dir.is_dir():
        raise SettingsError([f"--work-dir: {work_dir} is not a directory"])
    credentials = read_credentials(settings.credentials_dir)
    store = S3Store(settings, credentials)
    return Job(store, config.database, settings.cluster, work_dir, jobs=jobs)


async def _dispatch(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    from dchat_node.backup import service

    command = args.backup_command
    name: str | None = getattr(args, "name", None)
    if command == "create":
        assert name is not None
        return await service.create(job, name)
    if command == "restore":
        return await service.restore(job, name, replace=bool(args.replace))
    if command == "verify":
        return await service.verify(job, name)
    if command == "delete":
        assert name is not None
        return await asyncio.to_thread(service.delete, job, name)
    return await asyncio.to_thread(service.list_backups, job)


def _compact(result: dict[str, Any]) -> str:
    return json.dumps(result, separators=(",", ":"), sort_keys=False)


def termination_text(result: dict[str, Any]) -> str:
    """The result, cut to fit Kubernetes' termination message (4 KiB)."""
    text = _compact(result)
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    smaller = {k: v for k, v in result.items() if k not in {"rowCounts", "backups", "incomplete"}}
    if "backups" in result:
        smaller["count"] = len(result["backups"])
    text = _compact(smaller)
    if len(text.encode()) <= TERMINATION_LIMIT:
        return text
    core = {k: result.get(k) for k in ("ok", "command", "name")}
    core["error" if not result.get("ok") else "detail"] = "result too long; see the pod log"
    return _compact(core)


def report(result: dict[str, Any], termination: Path) -> None:
    sys.stdout.write(_compact(result) + "\n")
    sys.stdout.flush()
    if termination.exists() and not os.access(termination, os.W_OK):
        return
    if not termination.exists() and termination == TERMINATION_LOG:
        return  # outside Kubernetes: no /dev/termination-log to create
    try:
        termination.write_text(termination_text(result), encoding="utf-8")
    except OSError as exc:
        print(f"dchat backup: cannot write {termination}: {exc.strerror}", file=sys.stderr)
