"""JWT auth, CORS and rate limiting: positive and negative cases; secrets stay secret."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from tests.node.conftest import JWT_SECRET, bearer, config_for, make_token

pytestmark = pytest.mark.unit

CREATE = "/api/v1/channels"
OTHER_SECRET = "another-secret-0123456789abcdef-0123456789"


async def post(client: Client, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    r = await client.post(CREATE, json={"name": "sec"}, headers=headers)
    return r.status_code, await r.get_json(), r.headers


async def test_valid_token_is_accepted(client: Client) -> None:
    status, body, _ = await post(client, bearer())
    assert status == 201
    assert body["created_by"] == "alice"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "malformed_header"),
        ({"Authorization": "Bearer not.a.jwt"}, "malformed_token"),
        ({"Authorization": f"Bearer {make_token(expires_in=-120)}"}, "token_expired"),
        ({"Authorization": f"Bearer {make_token(issuer='evil')}"}, "invalid_issuer"),
        ({"Authorization": f"Bearer {make_token(issuer=None)}"}, "missing_claim"),
        (
            {"Authorization": f"Bearer {make_token(secret=OTHER_SECRET)}"},
            "invalid_signature",
        ),
        (
            {"Authorization": f"Bearer {make_token(algorithm='HS384')}"},
            "unsupported_algorithm",
        ),
        (
            {"Authorization": "Bearer " + jwt.encode({"sub": "x", "iss": "dchat"}, "", "none")},
            "unsupported_algorithm",
        ),
    ],
)
async def test_bad_tokens_are_401_with_reason(
    client: Client, headers: dict[str, str], code: str
) -> None:
    status, body, resp_headers = await post(client, headers)
    assert status == 401
    assert body["error"]["code"] == code
    assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    assert JWT_SECRET not in str(body)


async def test_missing_scope_is_403(client: Client) -> None:
    status, body, headers = await post(client, bearer(make_token(scope="chat:read")))
    assert status == 403
    assert body["error"]["code"] == "insufficient_scope"
    assert "insufficient_scope" in headers["WWW-Authenticate"]


async def test_reads_need_no_token(client: Client) -> None:
    r = await client.get("/api/v1/channels")
    assert r.status_code == 200


async def test_rs256_with_public_key(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cfg = config_for(
        tmp_path, security={"jwt_public_key_path": str(pub), "jwt_audience": "dchat-api"}
    )
    storage = await open_storage(cfg.database)
    await storage.migrate()
    try:
        client = create_api_app(build_services(cfg, storage)).test_client()
        good = make_token(algorithm="RS256", key=key, extra={"aud": "dchat-api"})
        assert (await post(client, bearer(good)))[0] == 201
        wrong_aud = make_token(algorithm="RS256", key=key, extra={"aud": "other"})
        status, body, _ = await post(client, bearer(wrong_aud))
        assert status == 401
        assert body["error"]["code"] == "invalid_audience"
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = make_token(algorithm="RS256", key=other_key, extra={"aud": "dchat-api"})
        assert (await post(client, bearer(forged)))[0] == 401
    finally:
        await storage.close()


async def test_node_without_keys_refuses_writes(tmp_path: Path) -> None:
    cfg = config_for(tmp_path, security={"jwt_secret": None})
    storage = await open_storage(cfg.database)
    await storage.migrate()
    try:
        client = create_api_app(build_services(cfg, storage)).test_client()
        status, body, _ = await post(client, bearer())
        assert status == 401
        assert body["error"]["code"] == "auth_not_configured"
    finally:
        await storage.close()


# -- CORS ------------------------------------------------------------------------------


async def test_cors_allows_listed_origin(client: Client) -> None:
    r = await client.get("/api/v1/version", headers={"Origin": "https://app.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    pre = await client.options(
        CREATE,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()


async def test_cors_refuses_other_origins(client: Client) -> None:
    r = await client.get("/api/v1/version", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers
    pre = await client.options(
        CREATE,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in pre.headers


async def test_empty_cors_list_allows_nobody(tmp_path: Path) -> None:
    cfg = config_for(tmp_path, security={"cors_allowed_origins": []})
    storage = await open_storage(cfg.database)
    try:
        client = create_api_app(build_services(cfg, storage)).test_client()
        r = await client.get("/api/v1/version", headers={"Origin": "https://app.example"})
        assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        await storage.close()


# -- rate limiting ---------------------------------------------------------------------


async def _limited_client(tmp_path: Path, enabled: bool) -> tuple[Client, Any]:
    cfg = config_for(
        tmp_path, security={"rate_limit_enabled": enabled, "rate_limit_requests_per_sec": 5}
    )
    storage = await open_storage(cfg.database)
    await storage.migrate()
    return create_api_app(build_services(cfg, storage)).test_client(), storage


async def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    client, storage = await _limited_client(tmp_path, True)
    try:
        statuses = [(await client.get("/api/v1/channels")).status_code for _ in range(5)]
        assert statuses == [200] * 5
        r = await client.get("/api/v1/channels")
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.get_json())["error"]["code"] == "rate_limited"
    finally:
        await storage.close()


async def test_rate_limit_disabled(tmp_path: Path) -> None:
    client, storage = await _limited_client(tmp_path, False)
    try:
        statuses = {(await client.get("/api/v1/channels")).status_code for _ in range(20)}
        assert statuses == {200}
    finally:
        await storage.close()


# -- secrets ---------------------------------------------------------------------------


async def test_secrets_not_in_errors_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dchat_node.observability.logging import RedactingFilter

    flt = RedactingFilter([JWT_SECRET, "pg-password-xyz"])
    record = logging.LogRecord(
        "t",
        logging.ERROR,
        __file__,
        1,
        "connect %s failed",
        ("postgres://u:pg-password-xyz@h",),
        None,
    )
    assert flt.filter(record)
    assert "pg-password-xyz" not in record.getMessage()
    assert "***" in record.getMessage()
    try:
        raise RuntimeError(f"boom with {JWT_SECRET}")
    except RuntimeError:
        import sys

        rec2 = logging.LogRecord("t", logging.ERROR, __file__, 1, "x", None, sys.exc_info())
    flt.filter(rec2)
    assert JWT_SECRET not in (rec2.exc_text or "")
    assert "***" in (rec2.exc_text or "")


async def test_rate_limit_is_per_route_and_rejections_do_not_consume(tmp_path: Path) -> None:
    """The one-pass limiter: limits are per route; a 429 does not push the client's
    theoretical arrival time further out (GCRA, as quart-rate-limiter does it)."""
    client, storage = await _limited_client(tmp_path, True)
    try:
        for _ in range(5):
            assert (await client.get("/api/v1/channels")).status_code == 200
        first = await client.get("/api/v1/channels")
        assert first.status_code == 429
        for _ in range(3):
            again = await client.get("/api/v1/channels")
            assert again.status_code == 429
            assert int(again.headers["Retry-After"]) <= int(first.headers["Retry-After"])
        # another route has its own budget
        assert (await client.get("/api/v1/version")).status_code == 200
        # ops-style 404s (no view) are not limited by the API limiter
        assert (await client.get("/nope")).status_code == 404
    finally:
        await storage.close()


async def test_rate_limit_store_forgets_clients_whose_budget_is_full() -> None:
    """quart-rate-limiter's MemoryStore keeps an entry per client address forever; ours
    sweeps entries whose theoretical arrival time has passed (they carry no state)."""
    from datetime import UTC, datetime, timedelta

    from dchat_node.security.ratelimit import SWEEP_INTERVAL, ExpiringMemoryStore

    store = ExpiringMemoryStore()
    now = datetime.now(UTC)
    await store.set("active", now + timedelta(hours=1))
    for i in range(SWEEP_INTERVAL - 2):
        await store.set(f"gone-{i}", now - timedelta(seconds=1))
    assert len(store) == SWEEP_INTERVAL - 1
    await store.set("last", now - timedelta(seconds=1))  # the SWEEP_INTERVAL-th store
    assert len(store) == 1
    assert await store.get("active", now) == now + timedelta(hours=1)
    assert await store.get("gone-0", now) == now  # forgotten = full budget, as before


async def test_rate_limit_keeps_per_client_budgets(tmp_path: Path) -> None:
    """Two client addresses have separate budgets on the same route."""
    client, storage = await _limited_client(tmp_path, True)
    try:
        one = {"scope_base": {"client": ("10.0.0.1", 1)}}
        two = {"scope_base": {"client": ("10.0.0.2", 1)}}
        for _ in range(5):
            assert (await client.get("/api/v1/channels", **one)).status_code == 200
        assert (await client.get("/api/v1/channels", **one)).status_code == 429
        assert (await client.get("/api/v1/channels", **two)).status_code == 200
    finally:
        await storage.close()
