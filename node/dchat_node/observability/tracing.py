"""OpenTelemetry tracing, exported with OTLP over HTTP.

Design:
- The guide's ``observability.jaeger_endpoint`` is accepted for compatibility and mapped to
  an OTLP/HTTP traces URL: the deprecated Jaeger agent port (6831/6832, UDP) and the legacy
  collector port (14268) become the collector's OTLP/HTTP port 4318; an endpoint without a
  path gets ``/v1/traces``. The Jaeger UDP exporter is not used (it was removed from
  opentelemetry-python).
- Sampling: ``sampler(rate)`` is parent-based, but a *remote* parent's "sampled" flag is
  only a wish: a client sending ``traceparent: ...-01`` on every request must not force
  100% sampling (cost and exporter load it controls). Remote parents, sampled or not,
  and new roots go through ``TraceIdRatioBased(jaeger_sample_rate)``, which decides on
  the trace id, so every service using the same ratio keeps or drops the same traces;
  remote parents marked not sampled stay unsampled; local parents (spans inside this
  process) are followed.
- Unset endpoint: no provider is installed and request handling creates no spans at all.
- Export failures are counted in ``observability_errors_total{kind="trace_export"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from prometheus_client import Counter

from dchat_node import __version__
from dchat_node.config import ObservabilityConfig

_LEGACY_JAEGER_PORTS = {6831, 6832, 14268, 14250}
OTLP_HTTP_PORT = 4318


def otlp_traces_url(endpoint: str) -> str:
    """Map the guide's ``jaeger_endpoint`` to an OTLP/HTTP traces URL."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    scheme = parts.scheme if parts.scheme in ("http", "https") else "http"
    host = parts.hostname or "localhost"
    port = parts.port
    path = parts.path
    if port in _LEGACY_JAEGER_PORTS:
        port = OTLP_HTTP_PORT
        path = ""
    if port is None:
        port = OTLP_HTTP_PORT if scheme == "http" else 443
    if path in ("", "/"):
        path = "/v1/traces"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def sampler(rate: float) -> Sampler:
    """Parent-based sampling in which a remote parent cannot raise the configured ratio."""
    ratio = TraceIdRatioBased(rate)
    return ParentBased(
        root=ratio, remote_parent_sampled=ratio, remote_parent_not_sampled=ALWAYS_OFF
    )


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, failures: Counter) -> None:
        self._inner = inner
        self._failures = failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failures.labels(kind="trace_export").inc()
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def setup_tracing(
    config: ObservabilityConfig, failures: Counter, service_name: str = "dchat-node"
) -> TracerProvider | None:
    """Build (not install globally) a provider; None when tracing is off."""
    if not config.jaeger_endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__}),
        sampler=sampler(config.jaeger_sample_rate),
    )
    exporter = OTLPSpanExporter(endpoint=otlp_traces_url(config.jaeger_endpoint), timeout=5)
    provider.add_span_processor(BatchSpanProcessor(_CountingExporter(exporter, failures)))
    return provider


def get_tracer(provider: TracerProvider | None) -> trace.Tracer | None:
    return None if provider is None else provider.get_tracer("dchat_node")
