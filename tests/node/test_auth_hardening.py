"""JWT hardening: keys of the wrong kind and a missing RS256 audience stop the node at
start (naming the key); tokens with an unexpected audience or claims of the wrong type are
401, never 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from quart.typing import TestClientProtocol as Client

from dchat_node.app import create_api_app
from dchat_node.cli import main
from dchat_node.config import ConfigError
from dchat_node.security.auth import Authenticator
from dchat_node.services import build_services
from dchat_node.storage import open_storage
from tests.node.conftest import bearer, config_for, make_token

pytestmark = pytest.mark.unit

CREATE = "/api/v1/channels"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: Any) -> bytes:
    out: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return out


def problems(tmp_path: Path, **security: Any) -> dict[str, str]:
    cfg = config_for(tmp_path, security=security)
    with pytest.raises(ConfigError) as exc:
        Authenticator(cfg.security)
    return {p.key: p.message for p in exc.value.problems}


def test_rs256_without_audience_is_a_config_error(tmp_path: Path) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(pem(RSA_KEY))
    found = problems(tmp_path, jwt_public_key_path=str(pub))
    assert "required when security.jwt_public_key_path is set" in found["security.jwt_audience"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"an-hmac-secret-that-is-long-enough-0123456789", "is not a PEM public key"),
        (
            b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQ\n-----END PUBLIC KEY-----\n",
            "is not a PEM public key",
        ),
        (
            RSA_KEY.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "is not a PEM public key",
        ),
        (pem(ec.generate_private_key(ec.SECP256R1())), "RS256 needs an RSA public key"),
        (pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "at least 2048 bits"),  # noqa: S505
    ],
    ids=["hmac-secret", "malformed-pem", "private-key", "ec-key", "short-rsa"],
)
def test_wrong_kind_of_public_key_is_a_config_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(content)
    found = problems(tmp_path, jwt_public_key_path=str(pub), jwt_audience="dchat-api")
    assert expected in found["security.jwt_public_key_path"]
    assert str(pub) in found["security.jwt_public_key_path"]


def test_a_public_key_given_as_the_hmac_secret_is_a_config_error(tmp_path: Path) -> None:
    found = problems(tmp_path, jwt_secret=pem(RSA_KEY).decode())
    assert "not an HMAC secret" in found["security.jwt_secret"]
    assert "BEGIN" not in found["security.jwt_secret"]


def test_check_config_reports_the_missing_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(pem(RSA_KEY))
    monkeypatch.setenv("DCHAT_SECURITY__JWT_PUBLIC_KEY_PATH", str(pub))
    monkeypatch.delenv("JWT_SECRET", raising=False)
    config = tmp_path / "config.toml"
    config.write_text("")
    assert main(["--config", str(config), "check-config"]) == 2
    assert "security.jwt_audience: required when" in capsys.readouterr().err


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    pub = tmp_path / "pub.pem"
    pub.write_bytes(pem(RSA_KEY))
    cfg = config_for(
        tmp_path, security={"jwt_public_key_path": str(pub), "jwt_audience": "dchat-api"}
    )
    storage = await open_storage(cfg.database)
    await storage.migrate()
    try:
        yield create_api_app(build_services(cfg, storage)).test_client()
    finally:
        await storage.close()


async def post(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    r = await client.post(CREATE, json={"name": "hardening"}, headers=bearer(token))
    return r.status_code, await r.get_json()


def rs(**extra: Any) -> str:
    claims: dict[str, Any] = {"aud": "dchat-api", **extra}
    scope = claims.pop("scope", "chat:write")
    return make_token(algorithm="RS256", key=RSA_KEY, scope=scope, extra=claims)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (lambda: rs(aud="another-api"), "invalid_audience"),
        (lambda: rs(aud=["another-api", "third"]), "invalid_audience"),
        (lambda: make_token(algorithm="RS256", key=RSA_KEY), "missing_claim"),  # no aud
        (lambda: rs(scope=7), "invalid_scope"),
        (lambda: rs(scope=["chat:write"]), "invalid_scope"),
        (lambda: rs(scope=None, scp={"chat:write": True}), "invalid_scope"),
        (lambda: rs(scope=None, scp=[1, 2]), "invalid_scope"),
        (lambda: rs(sub=12345), "invalid_subject"),
        (lambda: rs(sub={"id": "alice"}), "invalid_subject"),
        (lambda: rs(sub=""), "invalid_subject"),
    ],
    ids=[
        "other-aud", "other-aud-list", "no-aud", "int-scope", "list-scope", "dict-scp",
        "int-scp", "int-sub", "dict-sub", "empty-sub",
    ],
)  # fmt: skip
async def test_bad_claims_are_401_not_500(client: Client, token: Any, code: str) -> None:
    status, body = await post(client, token())
    assert status == 401, body
    assert body["error"]["code"] == code


async def test_good_rs256_tokens_still_pass(client: Client) -> None:
    assert (await post(client, rs()))[0] == 201
    status, body = await post(client, rs(scope=None, scp=["chat:write"]))
    assert status == 409  # accepted; the name is taken by the first
    assert body["error"]["code"] == "conflict"


async def test_hs256_token_naming_an_audience_is_refused_without_one_configured(
    tmp_path: Path,
) -> None:
    cfg = config_for(tmp_path)
    storage = await open_storage(cfg.database)
    await storage.migrate()
    try:
        hs = create_api_app(build_services(cfg, storage)).test_client()
        status, body = await post(hs, make_token(extra={"aud": "someone-else"}))
        assert (status, body["error"]["code"]) == (401, "invalid_audience")
        assert (await post(hs, make_token()))[0] == 201
    finally:
        await storage.close()
