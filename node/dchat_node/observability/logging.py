"""Logging: JSON lines to stdout by default; a rotating file only when asked.

Design:
- ``logging.format`` json|text, ``logging.level`` (``trace`` maps to DEBUG, ``warn`` to
  WARNING), ``logging.output`` stdout|file. File output uses ``RotatingFileHandler`` with
  ``max_file_size_mb`` / ``max_backups`` and creates the directory (the pod must mount a
  writable volume there: the root filesystem is read-only).
- A redaction filter replaces every configured secret value (JWT secret, database password)
  with ``***`` in messages, arguments and tracebacks, so secrets never reach the logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from dchat_node.config import LogFormat, LoggingConfig, LogOutput

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Replace secret values wherever they appear in a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


def configure_logging(config: LoggingConfig, secrets: Iterable[str] = ()) -> logging.Handler:
    """Install the node's handler on the root logger; returns it (for tests/cleanup)."""
    handler: logging.Handler
    if config.output is LogOutput.file:
        path = Path(config.file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path,
            maxBytes=config.max_file_size_mb * 1024 * 1024,
            backupCount=config.max_backups,
            encoding="utf-8",
        )
    else:
        handler = logging.StreamHandler(sys.stdout)
    if config.format is LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dchat", False):
            root.removeHandler(old)
            old.close()
    setattr(handler, "_dchat", True)  # noqa: B010 - marks our handler for replacement
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    return handler
