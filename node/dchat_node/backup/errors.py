"""Errors of the backup commands: ``SettingsError`` (exit 2) and ``BackupError`` (exit 1).

Every message is one line that says why, in words an operator can act on (``S3
unreachable``, ``access denied``, ``checksum mismatch on <key>``, ``target not empty``, ...),
and never carries a secret: ``scrub`` removes the known secret values from any text that
came from a library or a subprocess before it is shown.
"""

from __future__ import annotations

from collections.abc import Iterable


class BackupError(RuntimeError):
    """A backup command failed (exit 1); ``str()`` is the one-line reason."""


class SettingsError(ValueError):
    """Missing or invalid settings (exit 2): each problem names its variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ChecksumMismatch(BackupError):
    """A downloaded object's size or SHA-256 differs from the manifest."""


class TargetNotEmpty(BackupError):
    """The restore target already holds data."""


def one_line(text: str, limit: int = 600) -> str:
    """Collapse whitespace to one line and cut it to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
