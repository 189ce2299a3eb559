"""Plain objects the e2e tests apply: small DchatClusters and the database Secret."""

from __future__ import annotations

from typing import Any

SMALL = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
PG = {"engine": "postgres", "postgres": {"primary": {"name": "db", "key": "url"}}}


def db_secret(url: str = "postgresql://dchat:pw@postgres:5432/dchat") -> dict[str, Any]:
    """The Secret ``db`` with the key ``url`` that ``PG`` refers to."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"url": url},
    }


def cluster_cr(name: str, **spec: Any) -> dict[str, Any]:
    """A DchatCluster with small resources and ``spec``."""
    return {
        "apiVersion": "dchat.dev/v1alpha1",
        "kind": "DchatCluster",
        "metadata": {"name": name},
        "spec": {"resources": SMALL, **spec},
    }
