"""Runtime options of the operator, shared by the CLI and the handlers (via kopf's memo).

Design: one frozen dataclass; ``dchat-operator`` fills it from flags, ``kopf run -m
dchat_operator.handlers`` from ``DCHAT_OPERATOR_*`` variables (``from_env``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

from dchat_operator.api.policy import DEFAULT_ANNOTATION_PREFIXES, DEFAULT_SERVICE_TYPES, Policy
from dchat_operator.api.rbac import LEASE_NAME


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


N = TypeVar("N", int, float)


def _number(kind: type[N], name: str, default: str) -> N:
    raw = os.environ.get(name, default)
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _list(name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def policy_from_env() -> Policy:
    """The allow-lists from DCHAT_OPERATOR_ALLOWED_* (comma-separated)."""
    return Policy(
        allowed_registries=_list("DCHAT_OPERATOR_ALLOWED_REGISTRIES"),
        allowed_service_types=_list("DCHAT_OPERATOR_ALLOWED_SERVICE_TYPES", DEFAULT_SERVICE_TYPES),
        allowed_annotation_prefixes=_list(
            "DCHAT_OPERATOR_ALLOWED_ANNOTATION_PREFIXES", DEFAULT_ANNOTATION_PREFIXES
        ),
        allowed_cluster_issuers=_list("DCHAT_OPERATOR_ALLOWED_CLUSTER_ISSUERS"),
    )


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 60.0
    metrics_port: int | None = 8081
    watch_server_timeout: int = 300
    workers: int = 16
    """Reconciles that run at once (per kind)."""
    reconcile_timeout: float = 60.0
    """Deadline of one reconcile; past it the reconcile is cancelled and retried with backoff."""
    request_timeout: float = 15.0
    """Deadline of one Kubernetes API request."""
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = LEASE_NAME
    lease_duration: float = 15.0
    policy: Policy = field(default_factory=Policy)
    """Allow-lists for shared clusters (``api.policy``)."""

    @classmethod
    def from_env(cls) -> Options:
        """Defaults, overridable by DCHAT_OPERATOR_* variables (for ``kopf run``); a value
        that is not a number fails naming the variable."""
        env = os.environ.get
        port = env("DCHAT_OPERATOR_METRICS_PORT", "8081")
        return cls(
            resync_seconds=_number(float, "DCHAT_OPERATOR_RESYNC_SECONDS", "60"),
            metrics_port=(
                _number(int, "DCHAT_OPERATOR_METRICS_PORT", "8081")
                if port and port != "0"
                else None
            ),
            watch_server_timeout=_number(int, "DCHAT_OPERATOR_WATCH_TIMEOUT", "300"),
            workers=max(1, _number(int, "DCHAT_OPERATOR_WORKERS", "16")),
            reconcile_timeout=_number(float, "DCHAT_OPERATOR_RECONCILE_TIMEOUT", "60"),
            request_timeout=_number(float, "DCHAT_OPERATOR_REQUEST_TIMEOUT", "15"),
            leader_election=_flag(env("DCHAT_OPERATOR_LEADER_ELECT", "true")),
            lease_namespace=env("DCHAT_OPERATOR_LEASE_NAMESPACE", "")
            or env("POD_NAMESPACE", "")
            or "default",
            lease_name=env("DCHAT_OPERATOR_LEASE_NAME", LEASE_NAME),
            lease_duration=_number(float, "DCHAT_OPERATOR_LEASE_DURATION", "15"),
            policy=policy_from_env(),
        )
