"""Real node processes: start on SQLite and PostgreSQL, TLS, startup failures, CLI
subcommands against real databases."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dchat_node.storage.migrations import load_migrations
from tests.node.conftest import DCHAT, JWT_SECRET, REPO, Recorder, bearer

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "config.toml"


def exercise_api(api: str, **client_args: Any) -> None:
    with httpx.Client(base_url=api, timeout=10, **client_args) as c:
        r = c.post("/api/v1/channels", json={"name": "lobby"}, headers=bearer())
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        r = c.post(f"/api/v1/channels/{cid}/messages", json={"body": "hi"}, headers=bearer())
        assert r.status_code == 201
        page = c.get(f"/api/v1/channels/{cid}/messages").json()
        assert [m["body"] for m in page["items"]] == ["hi"]


def test_example_config_starts_on_sqlite_with_no_other_service(
    start_node: Any, tmp_path: Path
) -> None:
    node = start_node(config=EXAMPLE, own_database=False)
    assert node.wait_ready() == {"status": "ready", "storage_engine": "sqlite"}
    assert (tmp_path / "data" / "dchat.db").is_file()  # ./data/dchat.db, parent created
    assert httpx.get(f"{node.ops}/health").json()["status"] == "ok"
    exercise_api(node.api)
    metrics = httpx.get(f"{node.ops}/metrics").text
    assert "dchat_http_requests_total" in metrics
    assert node.stop() == 0
    logs = node.log()
    assert '"event": "drain_start"' in logs
    assert '"event": "stopped"' in logs
    assert JWT_SECRET not in logs


def test_starts_on_postgresql(start_node: Any, postgres_url: str) -> None:
    node = start_node(config=EXAMPLE, env={"DATABASE_URL": postgres_url}, own_database=False)
    assert node.wait_ready() == {"status": "ready", "storage_engine": "postgresql"}
    exercise_api(node.api)
    version = httpx.get(f"{node.api}/api/v1/version").json()
    assert version["storage_engine"] == "postgresql"
    assert version["schema_version"] == load_migrations("postgresql")[-1].version
    metrics = httpx.get(f"{node.ops}/metrics").text
    assert "database_connections_max 20.0" in metrics
    assert node.stop() == 0


def test_unreachable_postgresql_fails_startup_without_leaking_password(
    start_node: Any,
) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    url = f"postgresql://dchat:sup3rs3cret@127.0.0.1:{closed}/dchat"
    node = start_node(
        env={"DATABASE_URL": url, "DCHAT_DATABASE__CONNECTION_TIMEOUT_SECS": "2"},
        own_database=False,
    )
    assert node.proc.wait(30) == 1
    assert "cannot connect to PostgreSQL" in node.log()
    assert "sup3rs3cret" not in node.log()


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\napi_port = -1\n[database]\nsize = 3\n[logging]\nlevel = 'loud'\n")
    r = subprocess.run([DCHAT, "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()[1:]
    assert len(lines) == 3
    assert any(ln.strip().startswith("server.api_port:") and str(bad) in ln for ln in lines)
    assert any(ln.strip().startswith("database.size: unknown key") for ln in lines)
    assert any(ln.strip().startswith("logging.level:") and "'info'" in ln for ln in lines)


def make_cert(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    crt, pem = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def test_tls_serves_https(start_node: Any, tmp_path: Path) -> None:
    crt, key = make_cert(tmp_path)
    node = start_node(
        env={
            "DCHAT_SECURITY__TLS_ENABLED": "true",
            "TLS_CERT_PATH": str(crt),
            "TLS_KEY_PATH": str(key),
        },
        scheme="https",
    )
    node.wait_ready()
    exercise_api(node.api, verify=ssl.create_default_context(cafile=str(crt)))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{node.api_port}/api/v1/version", timeout=5)
    assert node.stop() == 0


def test_tls_bad_paths_are_a_clear_startup_error(start_node: Any, tmp_path: Path) -> None:
    node = start_node(
        env={
            "DCHAT_SECURITY__TLS_ENABLED": "true",
            "TLS_CERT_PATH": str(tmp_path / "missing.crt"),
            "TLS_KEY_PATH": str(tmp_path / "missing.key"),
        }
    )
    assert node.proc.wait(30) == 2
    log = node.log()
    assert f"security.tls_cert_path: file not found: {tmp_path}/missing.crt" in log
    assert "security.tls_key_path: file not found" in log


def test_port_in_use_exits_1(start_node: Any) -> None:
    first = start_node()
    first.wait_ready()
    second = start_node(env={"DCHAT_API_PORT": str(first.api_port)})
    assert second.proc.wait(30) == 1
    assert "cannot start" in second.log()
    assert first.stop() == 0


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))}
    full.update(env or {})
    return subprocess.run([DCHAT, *args], capture_output=True, text=True, timeout=60, env=full)


def test_migrate_and_verify_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "v" / "dchat.db"
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    r = run_cli("verify", env=env)
    assert r.returncode == 1
    assert "does not exist" in r.stderr
    r = run_cli("migrate", env=env)
    assert r.returncode == 0
    assert "0001_chat, 0002_messages_author_index, 0003_created_at_text" in r.stdout
    assert f"schema version {load_migrations('sqlite')[-1].version}" in r.stdout
    r = run_cli("migrate", env=env)
    assert r.returncode == 0
    assert "applied: none" in r.stdout
    r = run_cli("verify", env=env)
    assert r.returncode == 0
    assert "integrity ok" in r.stdout
    # corrupt the file: verify must fail
    corrupt = tmp_path / "corrupt.db"
    shutil.copy(db, corrupt)
    data = bytearray(corrupt.read_bytes())
    for off in range(4096 + 100, min(len(data), 4096 * 4), 7):
        data[off] = (data[off] + 91) % 256
    corrupt.write_bytes(bytes(data))
    r = run_cli("verify", env={"DATABASE_URL": f"sqlite:///{corrupt}"})
    assert r.returncode == 1, r.stdout + r.stderr


def test_migrate_and_verify_postgresql(postgres_url: str) -> None:
    env = {"DATABASE_URL": postgres_url}
    r = run_cli("verify", env=env)
    assert r.returncode == 1
    assert "not applied" in r.stderr
    r = run_cli("migrate", env=env)
    assert r.returncode == 0
    assert f"schema version {load_migrations('postgresql')[-1].version}" in r.stdout
    r = run_cli("verify", env=env)
    assert r.returncode == 0, r.stderr


def test_no_migrate_start_is_not_ready_until_migrated(start_node: Any, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/nm/dchat.db"
    node = start_node(
        env={"DATABASE_URL": db_url}, argv=[DCHAT, "serve", "--no-migrate"], own_database=False
    )
    deadline = time.monotonic() + 20
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{node.ops}/ready", timeout=2)
            body = r.json()
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    assert r.status_code == 503
    assert "pending" in body["problems"]["migrations"]
    assert run_cli("migrate", env={"DATABASE_URL": db_url}).returncode == 0
    assert node.wait_ready()["status"] == "ready"
    assert node.stop() == 0


def test_real_process_pushes_metrics_and_exports_traces(
    start_node: Any, http_sink: tuple[str, Recorder]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, rec = http_sink
    node = start_node(
        env={
            "JAEGER_ENDPOINT": url,
            "DCHAT_OBSERVABILITY__JAEGER_SAMPLE_RATE": "1",
            "PROMETHEUS_PUSHGATEWAY": url,
            "DCHAT_OBSERVABILITY__PROMETHEUS_PUSH_INTERVAL_SECS": "0.5",
        }
    )
    node.wait_ready()
    assert httpx.get(f"{node.api}/api/v1/version").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(m == "PUT" for m, _, _ in rec.requests):
        time.sleep(0.1)
    pushes = [(p, b) for m, p, b in rec.requests if m == "PUT"]
    assert pushes, rec.requests
    assert pushes[0][0].startswith("/metrics/job/dchat/instance/")
    assert b"dchat_errors_total" in pushes[0][1]
    assert node.stop() == 0  # shutdown flushes the span batch
    names = []
    for method, path, body in rec.requests:
        if method == "POST":
            assert path == "/v1/traces"
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            names += [
                s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]
    assert "GET /api/v1/version" in names
