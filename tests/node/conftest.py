"""Fixtures for the node tests: a config on a temp SQLite file, opened storage, the two
apps with their Quart test clients, JWT helpers, and a launcher for real node processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app, create_ops_app
from dchat_node.config import NodeConfig, parse_config
from dchat_node.lifecycle import NodeState
from dchat_node.services import Services, build_services
from dchat_node.storage import Storage, open_storage
from tests.harness.net import free_port

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISSUER = "dchat"
REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DCHAT = str(Path(PYTHON).parent / "dchat")
SLOW_NODE = [PYTHON, str(Path(__file__).with_name("slow_node.py"))]


def make_token(
    sub: str = "alice",
    *,
    scope: str | None = "chat:write",
    secret: str = JWT_SECRET,
    issuer: str | None = ISSUER,
    expires_in: float = 300,
    algorithm: str = "HS256",
    key: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + expires_in)}
    if issuer is not None:
        claims["iss"] = issuer
    if scope is not None:
        claims["scope"] = scope
    claims.update(extra or {})
    return jwt.encode(claims, key if key is not None else secret, algorithm=algorithm)


def bearer(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or make_token()}"}


def config_for(tmp_path: Path, **sections: dict[str, Any]) -> NodeConfig:
    data: dict[str, Any] = {
        "env": "test",
        "database": {"url": f"sqlite:///{tmp_path}/db/dchat.db"},
        "security": {"jwt_secret": JWT_SECRET, "cors_allowed_origins": ["https://app.example"]},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, environ={})


@pytest.fixture
def node_config(tmp_path: Path) -> NodeConfig:
    return config_for(tmp_path)


@pytest.fixture
async def storage(node_config: NodeConfig) -> AsyncIterator[Storage]:
    st = await open_storage(node_config.database)
    await st.migrate()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
def services(node_config: NodeConfig, storage: Storage) -> Services:
    return build_services(node_config, storage)


@pytest.fixture
def api_app(services: Services) -> Quart:
    return create_api_app(services)


@pytest.fixture
def client(api_app: Quart) -> Client:
    return api_app.test_client()


@pytest.fixture
def node_state() -> NodeState:
    return NodeState()


@pytest.fixture
async def ops_client(services: Services, node_state: NodeState) -> AsyncIterator[Any]:
    app = create_ops_app(services, node_state)
    async with app.test_app() as test_app:
        yield test_app.test_client()


# -- real node processes ---------------------------------------------------------------


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    api_port: int
    ops_port: int
    log_path: Path
    scheme: str = "http"

    @property
    def api(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api_port}"

    @property
    def ops(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(f"{self.ops}/ready", timeout=2)
                if r.status_code == 200:
                    body: dict[str, Any] = r.json()
                    return body
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"node not ready after {timeout} s: {last}\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Any]:
    """start_node(argv_prefix=None, env=None, config=None) -> NodeProcess on free ports."""
    started: list[NodeProcess] = []

    def start(
        *,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        argv: list[str] | None = None,
        scheme: str = "http",
        own_database: bool = True,
    ) -> NodeProcess:
        api_port, ops_port = free_port(), free_port()
        n = len(started)
        log_path = tmp_path / f"node{n}.log"
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DCHAT_", "DATABASE_"))
        }
        full_env.update(
            {
                "DCHAT_HOST": "127.0.0.1",
                "DCHAT_API_PORT": str(api_port),
                "DCHAT_METRICS_PORT": str(ops_port),
                "DCHAT_P2P_PORT": str(free_port()),
                "JWT_SECRET": JWT_SECRET,
            }
        )
        if own_database:
            full_env["DATABASE_URL"] = f"sqlite:///{tmp_path}/node{n}/dchat.db"
        full_env.update(env or {})
        cmd = argv or [DCHAT]
        if config is not None:
            cmd = [*cmd, "--config", str(config)]
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
            )
        node = NodeProcess(proc, api_port, ops_port, log_path, scheme)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


# -- a real HTTP sink (OTLP collector / Pushgateway stand-in) -----------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.event = threading.Event()


@pytest.fixture
def http_sink() -> Iterator[tuple[str, Recorder]]:
    """A real HTTP server on loopback that records every request (collector/gateway)."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            rec.requests.append((self.command, self.path, self.rfile.read(length)))
            rec.event.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", rec
    finally:
        server.shutdown()
        server.server_close()


# Microseconds since the epoch that stress timestamp formatting (shared by the renderer
# and storage-contract tests).
EDGE_US = [
    0,
    1,
    -1,
    999_999,
    1_000_000,
    86_399_999_999,
    86_400_000_000,
    951_782_400_000_000,  # 2000-02-29
    1_764_193_899_000_000,  # whole second: no fraction
    1_764_193_899_120_000,  # trailing zeros kept
    1_764_193_899_123_456,
    4_102_444_799_999_999,  # 2099-12-31T23:59:59.999999
    158_881_924_915_256_145,  # 7004
    -62_135_596_800_000_000,  # 0001-01-01
    253_402_300_799_999_999,  # 9999-12-31T23:59:59.999999
]
