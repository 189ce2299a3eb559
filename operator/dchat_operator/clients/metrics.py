"""The operator's own Prometheus metrics (one process, default registry).

Design: declared once here and imported by the clients (API calls, writes) and controllers
(reconciles, durations, errors); ``serve`` exposes them on the metrics port. The write counter
is how "an unchanged cluster costs zero write calls on resync" is measured.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

API_REQUESTS = Counter(
    "dchat_operator_api_requests_total",
    "Kubernetes API requests made by the operator's reconciler.",
    ["verb", "resource", "code"],
)
API_WRITES = Counter(
    "dchat_operator_api_writes_total",
    "Kubernetes API write requests (POST, PUT, PATCH, DELETE) made by the reconciler.",
    ["verb", "resource"],
)
RECONCILES = Counter(
    "dchat_operator_reconciles_total",
    "Reconciles of a DchatCluster, by trigger and result.",
    ["trigger", "result"],
)
RECONCILE_ERRORS = Counter(
    "dchat_operator_reconcile_errors_total",
    "Reconciles that raised (retried on the next event or resync).",
    ["trigger"],
)
RECONCILE_SECONDS = Histogram(
    "dchat_operator_reconcile_duration_seconds",
    "Duration of one reconcile of one DchatCluster.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESYNCS = Counter(
    "dchat_operator_resyncs_total", "Completed periodic resync passes over all clusters."
)
CLUSTERS = Gauge("dchat_operator_managed_clusters", "DchatClusters the operator knows about.")


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``port`` (a daemon thread)."""
    start_http_server(port, addr=addr)
