"""TLS startup checks: a bad certificate or key path is a clear startup error."""

from __future__ import annotations

import ssl
from pathlib import Path

from dchat_node.config import ConfigProblem, SecurityConfig


def check_tls(config: SecurityConfig) -> list[ConfigProblem]:
    if not config.tls_enabled:
        return []
    problems: list[ConfigProblem] = []
    for key, path in (
        ("security.tls_cert_path", config.tls_cert_path),
        ("security.tls_key_path", config.tls_key_path),
    ):
        p = Path(path)
        if not p.is_file():
            problems.append(ConfigProblem(key, f"file not found: {path}", "startup"))
        else:
            try:
                p.read_bytes()
            except OSError as exc:
                problems.append(
                    ConfigProblem(key, f"cannot read {path}: {exc.strerror}", "startup")
                )
    if problems:
        return problems
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(config.tls_cert_path, config.tls_key_path)
    except (ssl.SSLError, OSError) as exc:
        problems.append(
            ConfigProblem(
                "security.tls_cert_path",
                f"certificate/key pair cannot be loaded: {exc}",
                "startup",
            )
        )
    return problems
