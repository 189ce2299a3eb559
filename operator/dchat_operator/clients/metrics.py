"""The operator's own Prometheus metrics (one process, default registry).

Design: declared once here and imported by the clients (API calls, writes, leader election)
and the engine (reconciles, durations, errors, backoff, queue); ``serve`` exposes them on the
metrics port. The write counter is how "an unchanged cluster costs zero write calls on resync"
is measured; it counts the reconcilers' writes, not the leader election's lease renewals.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

API_REQUESTS = Counter(
    "dchat_operator_api_requests_total",
    "Kubernetes API requests made by the operator (code: 2xx, an HTTP status, or timeout).",
    ["verb", "resource", "code"],
)
API_WRITES = Counter(
    "dchat_operator_api_writes_total",
    "Kubernetes API write requests (POST, PUT, PATCH, DELETE) made by the reconcilers.",
    ["verb", "resource"],
)
RECONCILES = Counter(
    "dchat_operator_reconciles_total",
    "Reconciles, by kind, main trigger and result.",
    ["kind", "trigger", "result"],
)
RECONCILE_ERRORS = Counter(
    "dchat_operator_reconcile_errors_total",
    "Reconciles that raised or timed out (retried with backoff).",
    ["kind", "trigger"],
)
RETRIES = Counter(
    "dchat_operator_reconcile_retries_total",
    "Failed reconciles scheduled for a retry with exponential backoff.",
    ["kind"],
)
BACKOFF_SECONDS = Histogram(
    "dchat_operator_backoff_seconds",
    "Delay chosen before retrying a failed reconcile.",
    ["kind"],
    buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128, 300),
)
QUEUE_DEPTH = Gauge(
    "dchat_operator_work_queue",
    "Keys of a kind by state: queued (waiting for a worker), backoff (failed, waiting to "
    "retry), known (all).",
    ["kind", "state"],
)
RECONCILE_SECONDS = Histogram(
    "dchat_operator_reconcile_duration_seconds",
    "Duration of one reconcile of one object.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESYNCS = Counter(
    "dchat_operator_resyncs_total", "Periodic resync passes (every known object triggered)."
)
CLUSTERS = Gauge("dchat_operator_managed_clusters", "DchatClusters the operator knows about.")
LEADER = Gauge(
    "dchat_operator_leader", "1 while this replica holds the leader Lease (or runs without one)."
)
LEADER_TRANSITIONS = Counter(
    "dchat_operator_leader_transitions_total", "Times this replica gained or lost leadership."
)

SOAK_CHECKS = Counter(
    "dchat_operator_soak_checks_total",
    "Checks of rollout soak windows (the new pods' /metrics), by result (passed, failed).",
    ["result"],
)
ROLLBACKS = Counter(
    "dchat_operator_rollbacks_total",
    "Automatic rollbacks to the last good revision, by namespace, cluster and cause "
    "(progress_deadline, soak).",
    ["namespace", "cluster", "cause"],
)
PRIMARY_CHANGES = Counter(
    "dchat_operator_primary_changes_total",
    "PostgreSQL primary changes seen in Patroni's leader lock (a PrimaryChanged Event from "
    "one known primary to another: a failover or a switchover).",
    ["namespace", "cluster"],
)
PODS_FENCED = Counter(
    "dchat_operator_pods_fenced_total",
    "SQLite node pods force-deleted because their node stopped reporting Ready (a Fenced "
    "Event: the pod fails over to a healthy node).",
    ["namespace", "cluster"],
)
BACKUP_HEALTHY = Gauge(
    "dchat_operator_backup_healthy",
    "A cluster's BackupHealthy condition: 1 True, 0 False (the last scheduled backup failed, "
    "or none completed within a period of the schedule); no series while it is Unknown "
    "(suspended, no backup yet) or backups are not scheduled.",
    ["namespace", "cluster"],
)
CONTINUOUS_ARCHIVING = Gauge(
    "dchat_operator_continuous_archiving_ready",
    "1 while the Litestream sidecar is ready in every node pod of a SQLite cluster with "
    "backups on (its ContinuousArchiving condition), else 0.",
    ["namespace", "cluster"],
)
BACKUP_RESULTS = Counter(
    "dchat_operator_backups_total",
    "Backups that finished, by namespace, cluster and result (Completed or Failed).",
    ["namespace", "cluster", "result"],
)
BACKUP_SECONDS = Histogram(
    "dchat_operator_backup_duration_seconds",
    "Duration of completed backups (startedAt to completedAt as the backup pod reported).",
    ["namespace", "cluster"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
)
BACKUP_SIZE = Gauge(
    "dchat_operator_backup_size_bytes",
    "Size of the last completed backup.",
    ["namespace", "cluster"],
)
BACKUP_LAST_SUCCESS = Gauge(
    "dchat_operator_backup_last_success_timestamp_seconds",
    "Completion time of the newest completed DchatBackup of a cluster (Unix time); set by the "
    "backup controller when one completes and by the schedule controller from the cluster's "
    "DchatBackups on each run (so an operator restart keeps it).",
    ["namespace", "cluster"],
)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``port`` (a daemon thread)."""
    start_http_server(port, addr=addr)
