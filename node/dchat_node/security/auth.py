"""JWT bearer authentication (pyjwt).

Design:
- Keys by algorithm, never chosen by the token: HS256 with ``security.jwt_secret``
  (``JWT_SECRET`` / ``JWT_SECRET_FILE``) and, when ``security.jwt_public_key_path`` is set,
  RS256 with that PEM public key. A token whose header names any other algorithm (``none``,
  HS384, an HS256 token against an RS-only node, ...) is rejected, so algorithm-confusion
  attacks do not apply.
- Required claims: ``exp``, ``iss`` (must equal ``security.jwt_issuer``) and ``sub`` (the
  user id); ``aud`` is checked when ``security.jwt_audience`` is set. 30 s leeway for clock
  skew.
- Scopes come from ``scope`` (space-separated, OAuth 2 style) or ``scp`` (list). Mutating
  chat routes require ``chat:write``.
- Failures: 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a JSON body
  saying why (missing header, malformed, expired, wrong issuer, bad signature); 403
  ``insufficient_scope`` for a valid token lacking the scope. Bodies never echo the token
  or the key. A node with no key configured answers 401 ``auth_not_configured``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import jwt
from quart import g, request

from dchat_node.config import ConfigProblem, SecurityConfig

P = ParamSpec("P")
R = TypeVar("R")

SCOPE_CHAT_WRITE = "chat:write"
MIN_HS256_SECRET_BYTES = 32


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def headers(self) -> dict[str, str]:
        if self.status == 401:
            return {
                "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{self.code}"'
            }
        if self.status == 403:
            return {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}
        return {}


def load_public_key(path: str) -> Any:
    """Load a PEM public key; raises ConfigProblem-carrying ValueError on failure."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = Path(path).read_bytes()
    return load_pem_public_key(data)


def check_keys(config: SecurityConfig) -> list[ConfigProblem]:
    """Startup validation of the configured verification keys."""
    problems: list[ConfigProblem] = []
    secret = config.jwt_secret.get_secret_value() if config.jwt_secret is not None else ""
    if secret and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        problems.append(
            ConfigProblem(
                "security.jwt_secret",
                f"too short: HS256 needs at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 3.2)",
                "JWT_SECRET",
            )
        )
    if config.jwt_public_key_path:
        try:
            load_public_key(config.jwt_public_key_path)
        except OSError as exc:
            problems.append(
                ConfigProblem(
                    "security.jwt_public_key_path",
                    f"cannot read {config.jwt_public_key_path}: {exc.strerror}",
                    "startup",
                )
            )
        except ValueError:
            problems.append(
                ConfigProblem(
                    "security.jwt_public_key_path",
                    f"{config.jwt_public_key_path} is not a PEM public key",
                    "startup",
                )
            )
    return problems


class Authenticator:
    def __init__(self, config: SecurityConfig) -> None:
        self._config = config
        self._keys: dict[str, Any] = {}
        if config.jwt_secret is not None and config.jwt_secret.get_secret_value():
            self._keys["HS256"] = config.jwt_secret.get_secret_value()
        if config.jwt_public_key_path:
            self._keys["RS256"] = load_public_key(config.jwt_public_key_path)

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self._keys:
            raise AuthError(401, "auth_not_configured", "this node has no token verification key")
        if not authorization:
            raise AuthError(401, "missing_token", "Authorization: Bearer <token> is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "malformed_header", "expected 'Authorization: Bearer <token>'")
        token = token.strip()
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise AuthError(401, "malformed_token", "the token is not a JWT") from None
        key = self._keys.get(str(alg))
        if key is None:
            raise AuthError(401, "unsupported_algorithm", f"algorithm {alg!s:.16} is not accepted")
        cfg = self._config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(alg)],
                issuer=cfg.jwt_issuer,
                audience=cfg.jwt_audience,
                leeway=30,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": cfg.jwt_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token_expired", "the token has expired") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_issuer", "the token's issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                401, "invalid_audience", "the token's audience is not accepted"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                401, "missing_claim", f"the token lacks the {exc.claim!r} claim"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "invalid_signature", "the token's signature is invalid") from None
        except jwt.InvalidTokenError:
            raise AuthError(401, "invalid_token", "the token is invalid") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128 or not sub.isprintable():
            raise AuthError(401, "invalid_subject", "the token's sub claim must be a short string")
        raw_scope = claims.get("scope", claims.get("scp", ""))
        scopes = raw_scope.split() if isinstance(raw_scope, str) else list(raw_scope or [])
        return Principal(sub, frozenset(str(s) for s in scopes))


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def require_auth(
    authenticator_of: Callable[[], Authenticator], scope: str | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Route decorator: authenticate the bearer token (and check ``scope``) before the view."""

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = authenticator_of().authenticate(request.headers.get("Authorization"))
            if scope is not None and scope not in principal.scopes:
                raise AuthError(403, "insufficient_scope", f"the token lacks the {scope!r} scope")
            g.principal = principal
            return await view(*args, **kwargs)

        return wrapper

    return decorator
