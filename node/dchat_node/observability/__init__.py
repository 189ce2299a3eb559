"""Observability: Prometheus metrics, OpenTelemetry tracing (OTLP/HTTP), JSON logging,
optional Pushgateway push. See each module's docstring."""
