"""Tracing (OTLP/HTTP to a real HTTP collector stand-in), Pushgateway push, JSON logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dchat_node.app import create_api_app
from dchat_node.config import LoggingConfig, ObservabilityConfig
from dchat_node.observability.logging import configure_logging
from dchat_node.observability.metrics import NodeMetrics
from dchat_node.observability.push import push_once
from dchat_node.observability.tracing import otlp_traces_url, setup_tracing
from dchat_node.services import Services
from tests.harness.net import free_port
from tests.node.conftest import Recorder

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://jaeger:6831", "http://jaeger:4318/v1/traces"),
        ("jaeger:6831", "http://jaeger:4318/v1/traces"),
        ("http://jaeger:14268/api/traces", "http://jaeger:4318/v1/traces"),
        ("http://otel:4318", "http://otel:4318/v1/traces"),
        ("https://otel.example/custom/path", "https://otel.example:443/custom/path"),
        ("http://collector", "http://collector:4318/v1/traces"),
    ],
)
def test_jaeger_endpoint_maps_to_otlp_http(given: str, expected: str) -> None:
    assert otlp_traces_url(given) == expected


def _spans(rec: Recorder) -> list[Any]:
    spans: list[Any] = []
    for method, path, body in rec.requests:
        assert (method, path) == ("POST", "/v1/traces")
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                spans.extend(ss.spans)
    return spans


async def test_request_spans_exported_with_route_template(
    services: Services, http_sink: tuple[str, Recorder]
) -> None:
    url, rec = http_sink
    provider = setup_tracing(
        ObservabilityConfig(jaeger_endpoint=f"{url}/v1/traces", jaeger_sample_rate=1.0),
        services.metrics.observability_errors,
    )
    assert provider is not None
    client = create_api_app(services, provider).test_client()
    assert (
        await client.get(
            "/api/v1/channels/5",
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
    ).status_code == 404
    assert provider.force_flush(10_000)
    provider.shutdown()
    spans = _spans(rec)
    assert len(spans) == 1
    span = spans[0]
    assert span.name == "GET /api/v1/channels/<int(max=9223372036854775807):channel_id>"
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"  # parent propagated
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["http.response.status_code"].int_value == 404


def _zero_ratio_client(
    services: Services, http_sink: tuple[str, Recorder]
) -> tuple[Any, Any, Recorder]:
    """(tracer provider, API test client, the collector's recorder) at sample ratio 0."""
    url, rec = http_sink
    provider = setup_tracing(
        ObservabilityConfig(jaeger_endpoint=url, jaeger_sample_rate=0.0),
        services.metrics.observability_errors,
    )
    assert provider is not None
    return provider, create_api_app(services, provider).test_client(), rec


async def test_sample_rate_zero_exports_nothing(
    services: Services, http_sink: tuple[str, Recorder]
) -> None:
    provider, client, rec = _zero_ratio_client(services, http_sink)
    for _ in range(5):
        await client.get("/api/v1/version")
    provider.force_flush(5_000)
    provider.shutdown()
    assert rec.requests == []


def test_no_endpoint_means_no_tracing() -> None:
    assert setup_tracing(ObservabilityConfig(), NodeMetrics().observability_errors) is None


async def test_pushgateway_push(http_sink: tuple[str, Recorder]) -> None:
    url, rec = http_sink
    metrics = NodeMetrics()
    metrics.errors.labels(component="api").inc()
    assert await push_once(metrics, url, "node-a")
    method, path, body = rec.requests[0]
    assert method == "PUT"
    assert path == "/metrics/job/dchat/instance/node-a"
    assert b"dchat_errors_total" in body
    assert b"database_connections_active" in body


async def test_pushgateway_failure_is_counted() -> None:
    metrics = NodeMetrics()
    assert not await push_once(metrics, f"http://127.0.0.1:{free_port()}", "node-a")
    assert metrics.observability_errors.labels(kind="pushgateway")._value.get() == 1


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


def test_json_logs_to_stdout_with_redaction(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(LoggingConfig(level="info"), secrets=["topsecret-value-123"])
    log = logging.getLogger("dchat_node.test")
    log.debug("hidden at info level")
    log.info("hello %s", "topsecret-value-123", extra={"event": "greet"})
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "info"
    assert record["logger"] == "dchat_node.test"
    assert record["msg"] == "hello ***"
    assert record["event"] == "greet"


def test_file_output_rotates(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "logs" / "dchat.log"
    configure_logging(
        LoggingConfig(output="file", file_path=str(path), max_file_size_mb=1, max_backups=2)
    )
    log = logging.getLogger("dchat_node.test")
    for i in range(6000):
        log.info("line %d %s", i, "x" * 500)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["dchat.log", "dchat.log.1", "dchat.log.2"]
    assert all(p.stat().st_size <= 1024 * 1024 + 1024 for p in path.parent.iterdir())


SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_sampled_remote_parent_cannot_force_sampling(
    services: Services, http_sink: tuple[str, Recorder]
) -> None:
    """Ratio 0: a client's ``traceparent`` with the sampled flag still exports nothing."""
    provider, client, rec = _zero_ratio_client(services, http_sink)
    for i in range(5):
        parent = f"00-{i + 1:032x}-b7ad6b7169203331-01"
        assert (
            await client.get("/api/v1/version", headers={"traceparent": parent})
        ).status_code == 200
    provider.force_flush(5_000)
    provider.shutdown()
    assert rec.requests == []


def test_remote_parents_go_through_the_ratio() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision

    from dchat_node.observability.tracing import sampler

    def decide(rate: float, trace_id: int, sampled: bool, remote: bool) -> Decision:
        flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if sampled else 0)
        parent = trace.set_span_in_context(
            trace.NonRecordingSpan(
                trace.SpanContext(trace_id, 0xB7AD6B7169203331, is_remote=remote, trace_flags=flags)
            )
        )
        return sampler(rate).should_sample(parent, trace_id, "GET").decision

    low, high = 1, (1 << 64) - 1  # the ratio sampler compares the low 64 bits
    assert decide(0.0, low, sampled=True, remote=True) is Decision.DROP
    assert decide(0.5, high, sampled=True, remote=True) is Decision.DROP
    assert decide(0.5, low, sampled=True, remote=True) is Decision.RECORD_AND_SAMPLE
    assert decide(1.0, low, sampled=False, remote=True) is Decision.DROP
    # spans inside this process follow their (local) parent
    assert decide(0.0, low, sampled=True, remote=False) is Decision.RECORD_AND_SAMPLE
