"""OpenTelemetry: spans and GenAI metrics per model call, client and server (API.md §9).

The SDK's in-memory span exporter and metric reader, installed as the global providers after
``import aistream`` (as an application would), and removed again after each test. Real uvicorn
and the fault proxy on loopback.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from aistream import AIStream, APIStatusError
from aistream._proxy import FaultProxy
from aistream.server import create_app
from tests.servers import running


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def finished(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        spans = list(self.spans.get_finished_spans())
        return [s for s in spans if kind is None or s.kind == kind]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        out = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        out += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return out


def _reset_globals() -> None:
    """OpenTelemetry sets its global providers once per process; tests put them back."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal = sys.modules["opentelemetry.metrics._internal"]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Global SDK providers with in-memory exporters, set after aistream was imported."""
    got = Telemetry()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(got.spans))
    meter_provider = MeterProvider(metric_readers=[got.reader])
    _reset_globals()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield got
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        _reset_globals()


def test_import_aistream_imports_no_opentelemetry() -> None:
    code = (
        "import sys, aistream, aistream.server\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_without_a_configured_provider_nothing_is_recorded_or_wrapped() -> None:
    from aistream import _otel

    _reset_globals()  # OpenTelemetry's defaults: no-op providers
    assert _otel.available()
    assert _otel.start(model="m", provider="openai") is None
    assert _otel.extract_context({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None


async def test_a_client_turn_is_a_chat_span_with_usage_and_metrics(telemetry: Telemetry) -> None:
    app = create_app(demo_tokens_per_second=None, heartbeat_interval=None)
    async with running(app) as base, AIStream(f"{base}/api/chat", model="demo") as chat:
        reply = await chat.send("Tell me about tracing")
    (span,) = telemetry.finished(SpanKind.CLIENT)
    assert span.name == "chat demo"
    attrs = dict(span.attributes or {})
    assert reply.usage is not None
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "aistream"
    assert attrs["gen_ai.request.model"] == "demo"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.model"] == "demo"
    assert isinstance(attrs["gen_ai.response.id"], str) and attrs["gen_ai.response.id"]
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert span.end_time is not None and span.start_time is not None
    duration = (span.end_time - span.start_time) / 1e9
    assert 0 < attrs["gen_ai.response.time_to_first_chunk"] < duration
    assert attrs["server.address"] == "127.0.0.1" and isinstance(attrs["server.port"], int)
    assert span.status.is_ok

    client = {"gen_ai.provider.name": "aistream", "server.address": "127.0.0.1"}  # not the server
    durations = [
        p for a, p in telemetry.points("gen_ai.client.operation.duration") if _has(a, client)
    ]
    assert len(durations) == 1 and durations[0].count == 1
    tokens = {
        a["gen_ai.token.type"]: p.sum
        for a, p in telemetry.points("gen_ai.client.token.usage")
        if _has(a, client)
    }
    assert tokens == {"input": reply.usage.prompt_tokens, "output": reply.usage.completion_tokens}
    firsts = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert any(_has(a, client) and p.count == 1 for a, p in firsts)


async def test_a_resume_after_a_drop_is_a_span_event(telemetry: Telemetry) -> None:
    app = create_app(demo_tokens_per_second=None, heartbeat_interval=None)
    async with running(app) as base:
        host, port = base.removeprefix("http://").split(":")
        async with FaultProxy(host, int(port), cut_after={0: 600}) as proxy:
            retry = {"initial_delay": 0.0, "jitter": False}
            async with AIStream(f"http://{host}:{proxy.port}/api/chat", retry=retry) as chat:
                reply = await chat.send("A long answer please")
    assert reply.finish_reason == "stop"
    (span,) = telemetry.finished(SpanKind.CLIENT)
    assert span.name == "chat"  # no model asked for
    (event,) = [e for e in span.events if e.name == "aistream.retry"]
    assert dict(event.attributes or {})["aistream.resume"] is True
    assert dict(event.attributes or {})["aistream.retry.attempt"] == 1
    assert dict(span.attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)


async def test_a_failed_turn_is_an_error_span(telemetry: Telemetry) -> None:
    async with AIStream("http://127.0.0.1:9/api/chat", model="m", retry={"max_retries": 0}) as chat:
        with pytest.raises(Exception) as caught:
            await chat.send("hi")
    (span,) = telemetry.finished(SpanKind.CLIENT)
    assert not span.status.is_ok
    assert dict(span.attributes or {})["error.type"] == type(caught.value).__name__
    assert dict(span.attributes or {})["gen_ai.response.finish_reasons"] == ("error",)
    errors = telemetry.points("gen_ai.client.operation.duration")
    assert [a.get("error.type") for a, _ in errors] == [type(caught.value).__name__]
    assert telemetry.points("gen_ai.client.token.usage") == []  # never estimated


async def test_the_server_records_each_stream_under_the_callers_trace(
    telemetry: Telemetry,
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    app = create_app(demo_tokens_per_second=None, heartbeat_interval=None)
    async with running(app) as base, httpx.AsyncClient() as http:
        for path in ("/api/chat", "/api/chat?format=vercel", "/v1/chat/completions"):
            body = {
                "model": "demo",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            response = await http.post(base + path, json=body, headers=headers)
            assert response.status_code == 200, response.text
    spans = telemetry.finished(SpanKind.INTERNAL)
    assert [s.name for s in spans] == ["chat demo"] * 3
    for span in spans:
        assert span.context is not None and span.parent is not None
        assert format(span.context.trace_id, "032x") == trace_id
        assert format(span.parent.span_id, "016x") == parent_id
        attrs = dict(span.attributes or {})
        assert attrs["gen_ai.provider.name"] == "aistream"
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    durations = telemetry.points("gen_ai.client.operation.duration")
    assert sum(p.count for _, p in durations) == 3


async def test_an_upstream_error_is_recorded_by_the_server(telemetry: Telemetry) -> None:
    app = create_app(upstream="http://127.0.0.1:9/v1", protocol="openai", model="gpt-x")
    async with running(app) as base, AIStream(f"{base}/api/chat", retry={"max_retries": 0}) as chat:
        with pytest.raises(APIStatusError):
            await chat.send("hi")
    server = telemetry.finished(SpanKind.CLIENT)
    relayed = [s for s in server if dict(s.attributes or {})["gen_ai.provider.name"] == "openai"]
    assert [s.name for s in relayed] == ["chat gpt-x"]
    assert not relayed[0].status.is_ok


def _has(attrs: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(attrs.get(k) == v for k, v in want.items())
