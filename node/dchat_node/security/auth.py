"""JWT bearer authentication (pyjwt).

Design:
- Keys by algorithm, never chosen by the token: HS256 with ``security.jwt_secret``
  (``JWT_SECRET`` / ``JWT_SECRET_FILE``) and, when ``security.jwt_public_key_path`` is set,
  RS256 with that PEM public key. A token whose header names any other algorithm (``none``,
  HS384, an HS256 token against an RS-only node, ...) is rejected, so algorithm-confusion
  attacks do not apply.
- Keys are checked once, at start (``load_keys``, used by ``dchat check-config`` and by
  ``Authenticator``): the HS256 secret must be at least 32 bytes and not a PEM/SSH key;
  the RS256 key file must hold a PEM RSA public key of at least 2048 bits, prepared by
  pyjwt as ``jwt.decode`` would; RS256 requires ``security.jwt_audience`` (tokens of an
  identity provider are minted for many audiences). Each problem is a config error naming
  its key, so a wrong key stops the node instead of failing every request with a 500.
- Required claims: ``exp``, ``iss`` (must equal ``security.jwt_issuer``) and ``sub`` (the
  user id: a short printable string). ``aud`` is always verified: it must match
  ``security.jwt_audience`` when set, and a token carrying an ``aud`` is refused when no
  audience is configured. 30 s leeway for clock skew.
- Scopes come from ``scope`` (a space-separated string, OAuth 2 style) or ``scp`` (a
  string or a list of strings); any other shape is 401 ``invalid_scope``. Mutating chat
  routes require ``chat:write``.
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

from dchat_node.config import ConfigError, ConfigProblem, SecurityConfig
from dchat_node.security.ratelimit import limit_user_writes

P = ParamSpec("P")
R = TypeVar("R")

SCOPE_CHAT_WRITE = "chat:write"
MIN_HS256_SECRET_BYTES = 32
MIN_RSA_KEY_BITS = 2048


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
    """Load a PEM public key (OSError if unreadable, ValueError if not a PEM public key)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = Path(path).read_bytes()
    return load_pem_public_key(data)


def load_keys(config: SecurityConfig) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The verification key of each accepted algorithm, each prepared by pyjwt exactly as
    ``jwt.decode`` would prepare it, so a key of the wrong kind is found here, at start,
    and not as an exception on every request. Returns ``(keys, problems)``."""
    keys: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    secret = config.jwt_secret.get_secret_value() if config.jwt_secret is not None else ""
    if secret:
        hs256 = _hs256_key(secret, problems)
        if hs256 is not None:
            keys["HS256"] = hs256
    path = config.jwt_public_key_path
    if path:
        rs256 = _rs256_key(path, problems)
        if rs256 is not None:
            keys["RS256"] = rs256
        if not config.jwt_audience:
            problems.append(
                ConfigProblem(
                    "security.jwt_audience",
                    "required when security.jwt_public_key_path is set: tokens of an "
                    "identity provider must name this API as their audience (aud)",
                    "startup",
                )
            )
    return keys, problems


def _hs256_key(secret: str, problems: list[ConfigProblem]) -> Any | None:
    """The HS256 key prepared from ``secret``; None, with the problem appended, when the
    secret is too short or is not an HMAC secret at all."""
    from jwt.algorithms import HMACAlgorithm

    if len(secret.encode()) < MIN_HS256_SECRET_BYTES:
        problems.append(
            ConfigProblem(
                "security.jwt_secret",
                f"too short: HS256 needs at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 3.2)",
                "JWT_SECRET",
            )
        )
        return None
    try:
        return HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError:
        problems.append(
            ConfigProblem(
                "security.jwt_secret",
                "is a PEM/SSH public key or certificate, not an HMAC secret (an "
                "RS256 public key belongs in security.jwt_public_key_path)",
                "JWT_SECRET",
            )
        )
        return None


def _rs256_key(path: str, problems: list[ConfigProblem]) -> Any | None:
    """The RS256 key prepared from the PEM file at ``path``; None, with the problem
    appended, when the file cannot be read or holds no RSA public key of enough bits."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt.algorithms import RSAAlgorithm

    key_problem = "security.jwt_public_key_path"
    try:
        public_key = load_public_key(path)
    except OSError as exc:
        problems.append(
            ConfigProblem(key_problem, f"cannot read {path}: {exc.strerror}", "startup")
        )
        return None
    except (ValueError, TypeError):
        problems.append(
            ConfigProblem(
                key_problem,
                f"{path} is not a PEM public key (expected -----BEGIN PUBLIC KEY-----, "
                "an RSA key for RS256)",
                "startup",
            )
        )
        return None
    if not isinstance(public_key, RSAPublicKey):
        problems.append(
            ConfigProblem(
                key_problem,
                f"{path} holds a {type(public_key).__name__.removeprefix('_')}, "
                "but RS256 needs an RSA public key",
                "startup",
            )
        )
        return None
    if public_key.key_size < MIN_RSA_KEY_BITS:
        problems.append(
            ConfigProblem(
                key_problem,
                f"{path} holds a {public_key.key_size}-bit RSA key; RS256 needs at "
                f"least {MIN_RSA_KEY_BITS} bits",
                "startup",
            )
        )
        return None
    return RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(public_key)


def check_keys(config: SecurityConfig) -> list[ConfigProblem]:
    """Startup validation of the configured verification keys."""
    return load_keys(config)[1]


class Authenticator:
    """Verifies bearer tokens with the configured keys; raises ``ConfigError`` at
    construction when a key is unusable (see ``load_keys``)."""

    def __init__(self, config: SecurityConfig) -> None:
        self._config = config
        self._keys, problems = load_keys(config)
        if problems:
            raise ConfigError(problems)

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self._keys:
            raise AuthError(401, "auth_not_configured", "this node has no token verification key")
        token = _bearer_token(authorization)
        alg, key = self._key_for(token)
        claims = self._decode(token, alg, key)
        return Principal(_subject(claims), _scopes(claims))

    def _key_for(self, token: str) -> tuple[str, Any]:
        """The token's algorithm (from its unverified header) and this node's key for it;
        the token never chooses a key this node does not hold for that algorithm."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise AuthError(401, "malformed_token", "the token is not a JWT") from None
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise AuthError(401, "unsupported_algorithm", f"algorithm {alg!s:.16} is not accepted")
        return str(alg), key

    def _decode(self, token: str, alg: str, key: Any) -> dict[str, Any]:
        """The verified claims; every pyjwt failure becomes a 401 saying why."""
        cfg = self._config
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=cfg.jwt_issuer,
                # no audience configured: a token that names one was minted for another
                # service and is refused (pyjwt's rule for audience=None)
                audience=cfg.jwt_audience,
                leeway=30,
                options={"require": ["exp", "iss", "sub"], "verify_aud": True},
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
        except jwt.exceptions.InvalidSubjectError:
            raise AuthError(
                401, "invalid_subject", "the token's sub claim must be a short string"
            ) from None
        except jwt.PyJWTError:
            # every other token problem (and, defensively, a key pyjwt refuses): the
            # client's token is not accepted; never a 500
            raise AuthError(401, "invalid_token", "the token is invalid") from None


def _bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise AuthError(401, "missing_token", "Authorization: Bearer <token> is required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed_header", "expected 'Authorization: Bearer <token>'")
    return token.strip()


def _subject(claims: dict[str, Any]) -> str:
    """The ``sub`` claim: the user id, a short printable string."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 128 or not sub.isprintable():
        raise AuthError(401, "invalid_subject", "the token's sub claim must be a short string")
    return sub


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """``scope`` (a space-separated string, RFC 8693 / OAuth 2) or ``scp`` (a string or a
    list of strings); any other shape is a malformed token (401), not a 500."""
    if "scope" in claims:
        raw = claims["scope"]
        if not isinstance(raw, str):
            raise AuthError(401, "invalid_scope", "the token's scope claim must be a string")
        return frozenset(raw.split())
    if "scp" in claims:
        raw = claims["scp"]
        if isinstance(raw, str):
            return frozenset(raw.split())
        if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
            return frozenset(raw)
        raise AuthError(
            401, "invalid_scope", "the token's scp claim must be a string or a list of strings"
        )
    return frozenset()


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
            await limit_user_writes(principal.subject)  # 429 past the user's write budget
            return await view(*args, **kwargs)

        return wrapper

    return decorator
