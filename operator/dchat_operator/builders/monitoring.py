"""ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1), built only when asked for.

Design: the controller passes whether the monitoring.coreos.com CRDs exist; the rules are the
guide's alerts (section 5.2) corrected: valid names, quantiles over ``rate(..._bucket[5m])``,
the error rate as a ratio of errors to requests, counters through ``increase``, and every
expression scoped to this cluster's pods (namespace + job of the metrics Service).
"""

from __future__ import annotations

from dchat_operator.api.models import DchatCluster
from dchat_operator.builders.common import Obj, metadata, names, selector_labels

REQUESTS_METRIC = "dchat_http_requests_total"
"""Request counter of the node (label ``status``); the error-rate ratio's denominator."""


def service_monitor(cluster: DchatCluster) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(cluster, names(cluster).service_monitor),
        "spec": {
            "selector": {"matchLabels": selector_labels(cluster)},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": cluster.spec.monitoring.scrape_interval,
                }
            ],
        },
    }


def alert_rules(cluster: DchatCluster) -> list[Obj]:
    """The alert rules, as PrometheusRule ``rules`` entries."""
    sel = f'namespace="{cluster.namespace}",job="{names(cluster).metrics_service}"'
    labels = {"dchat_cluster": cluster.name}

    def rule(name: str, expr: str, duration: str, severity: str, summary: str, desc: str) -> Obj:
        return {
            "alert": name,
            "expr": expr,
            "for": duration,
            "labels": {**labels, "severity": severity},
            "annotations": {"summary": summary, "description": desc},
        }

    return [
        rule(
            "MarketplacePurchaseLatencyHigh",
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(marketplace_purchase_latency_ms_bucket{{{sel}}}[5m]))) > 100",
            "5m",
            "warning",
            "Marketplace purchase latency high",
            "p99 purchase latency over 5 minutes is above 100 ms.",
        ),
        rule(
            "BridgeFinalityProofTimeout",
            f"sum(increase(bridge_finality_proof_timeout_total{{{sel}}}[10m])) > 5",
            "2m",
            "critical",
            "Bridge finality proofs timing out",
            "More than 5 finality proofs timed out in 10 minutes.",
        ),
        rule(
            "MetricsRecordingError",
            f"sum(increase(observability_errors_total{{{sel}}}[5m])) > 10",
            "1m",
            "warning",
            "Metrics recording errors",
            "More than 10 observability errors in 5 minutes.",
        ),
        rule(
            "AccessibilityValidationFailure",
            f"sum(increase(accessibility_validation_failures_total{{{sel}}}[5m])) > 20",
            "5m",
            "warning",
            "UI accessibility validation failures",
            "More than 20 accessibility validation failures in 5 minutes.",
        ),
        rule(
            "HighErrorRate",
            f"sum(rate(dchat_errors_total{{{sel}}}[5m])) / "
            f"clamp_min(sum(rate({REQUESTS_METRIC}{{{sel}}}[5m])), 1e-9) > 0.05",
            "5m",
            "critical",
            "Error rate above 5%",
            "Errors are more than 5% of requests over 5 minutes.",
        ),
        rule(
            "PodMemoryUsageHigh",
            f'container_memory_working_set_bytes{{namespace="{cluster.namespace}",'
            f'pod=~"{names(cluster).deployment}-.*",container="dchat"}} > 1.5e9',
            "5m",
            "warning",
            "Pod memory usage above 1.5 GB",
            "A dchat container's working set is above 1.5 GB.",
        ),
        rule(
            "DatabaseConnectionPoolExhausted",
            f"max(database_connections_active{{{sel}}} / "
            f"clamp_min(database_connections_max{{{sel}}}, 1)) >= 0.9",
            "2m",
            "warning",
            "Database connection pool near capacity",
            "At least 90% of a pod's pooled database connections are in use (the guide's "
            f"18 of {cluster.spec.database.max_connections}).",
        ),
    ]


def prometheus_rule(cluster: DchatCluster) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(cluster, names(cluster).prometheus_rule),
        "spec": {
            "groups": [
                {"name": f"dchat-{cluster.name}", "interval": "30s", "rules": alert_rules(cluster)}
            ]
        },
    }
