"""Runtime options of the operator, shared by the CLI and the handlers (via kopf's memo)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 60.0
    metrics_port: int | None = 8081
    watch_server_timeout: int = 300

    @classmethod
    def from_env(cls) -> Options:
        """Defaults, overridable by DCHAT_OPERATOR_* variables (for ``kopf run``)."""
        port = os.environ.get("DCHAT_OPERATOR_METRICS_PORT", "8081")
        return cls(
            resync_seconds=float(os.environ.get("DCHAT_OPERATOR_RESYNC_SECONDS", "60")),
            metrics_port=int(port) if port and port != "0" else None,
            watch_server_timeout=int(os.environ.get("DCHAT_OPERATOR_WATCH_TIMEOUT", "300")),
        )
