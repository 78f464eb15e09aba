"""OpenTelemetry: a span and the GenAI client metrics per model call, when the `otel` extra is on.

Imports nothing from OpenTelemetry at import time, and nothing at all when the package is not
installed (one ``find_spec`` per process). Providers are looked up per call, so a
``TracerProvider`` / ``MeterProvider`` set after ``import aistream`` is used; while both are
OpenTelemetry's defaults (no-ops), `start` returns None and nothing is measured or wrapped.

Names follow the GenAI semantic conventions (Development status, hard-coded
strings rather than ``opentelemetry.semconv._incubating``): span ``chat {model}``, attributes
``gen_ai.operation.name`` / ``provider.name`` / ``request.model`` / ``request.stream`` /
``response.model`` / ``response.id`` / ``response.finish_reasons`` /
``response.time_to_first_chunk`` / ``usage.input_tokens`` / ``usage.output_tokens``, events for
retries (``aistream.retry``, with ``aistream.resume``), metrics
``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.time_to_first_chunk``. Usage is recorded only when the server
reported it, never estimated (the conventions say so).

The client (`_stream`) holds one `Step` per model call; the server (`server/_app.py`) wraps
each generation's events in `Step.watch_events`, its parent taken from the request's headers.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from ._wire._events import (
    FinishReason,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)

__all__ = ["Step", "available", "extract_context", "provider_name", "start"]

_SCOPE = "aistream"
_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02, … 81.92 (the conventions')
_TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1, 4, 16, … 67108864 (the conventions')

#: Our protocol names → ``gen_ai.provider.name`` (the conventions' values; custom ones allowed).
_PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "responses": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "ollama": "ollama",
    "native": "aistream",
}

_available: bool | None = None


def available() -> bool:
    """Whether opentelemetry-api is installed (looked up once, without importing it)."""
    global _available
    if _available is None:
        _available = importlib.util.find_spec("opentelemetry") is not None
    return _available


def provider_name(protocol: str) -> str:
    """``gen_ai.provider.name`` for one of our protocol names."""
    return _PROVIDERS.get(protocol, protocol)


class _Instruments:
    """The three histograms of one MeterProvider."""

    def __init__(self, meter: Any) -> None:
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(_TOKEN_BUCKETS),
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streaming response",
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        )


_instruments: dict[int, tuple[Any, _Instruments]] = {}  # id(MeterProvider) -> (it, histograms)


def _providers() -> tuple[Any, Any] | None:
    """The tracer and meter providers when at least one is a real one, else None."""
    from opentelemetry import metrics, trace

    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    tracing = not isinstance(tracer_provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
    metering = type(meter_provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
    if not (tracing or metering):
        return None
    return (tracer_provider if tracing else None), (meter_provider if metering else None)


def _histograms(meter_provider: Any) -> _Instruments:
    held = _instruments.get(id(meter_provider))
    if held is None or held[0] is not meter_provider:
        held = _instruments[id(meter_provider)] = (
            meter_provider,
            _Instruments(meter_provider.get_meter(_SCOPE)),
        )
    return held[1]


def extract_context(headers: Mapping[str, str]) -> Any:
    """The trace context of incoming request headers (``traceparent``), or None when off."""
    if not available() or _providers() is None:
        return None
    from opentelemetry import propagate

    return propagate.extract(headers)


def start(
    *,
    model: str | None,
    provider: str,
    server: tuple[str, int | None] | None = None,
    parent: Any = None,
    kind: str = "CLIENT",
) -> Step | None:
    """A `Step` for one model call, or None when OpenTelemetry is absent or unconfigured."""
    if not available():
        return None
    providers = _providers()
    if providers is None:
        return None
    return Step(providers, model, provider, server, parent, kind)


class Step:
    """One model call: its span (``chat {model}``) and metrics, recorded at `end`."""

    __slots__ = (
        "_attrs",
        "_finish",
        "_first",
        "_histograms",
        "_response_id",
        "_response_model",
        "_span",
        "_start",
        "_usage",
    )

    def __init__(
        self,
        providers: tuple[Any, Any],
        model: str | None,
        provider: str,
        server: tuple[str, int | None] | None,
        parent: Any,
        kind: str,
    ) -> None:
        from opentelemetry.trace import SpanKind

        tracer_provider, meter_provider = providers
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
        }
        if model:
            attrs["gen_ai.request.model"] = model
        if server is not None:
            attrs["server.address"] = server[0]
            if server[1] is not None:
                attrs["server.port"] = server[1]
        self._attrs = attrs
        self._histograms = _histograms(meter_provider) if meter_provider is not None else None
        self._span = None
        if tracer_provider is not None:
            tracer = tracer_provider.get_tracer(_SCOPE)
            self._span = tracer.start_span(
                f"chat {model}" if model else "chat",
                context=parent,
                kind=getattr(SpanKind, kind),
                attributes={**attrs, "gen_ai.request.stream": True},
            )
        self._start = time.perf_counter()
        self._first: float | None = None
        self._finish: str | None = None
        self._usage: tuple[int | None, int | None] | None = None
        self._response_id: str | None = None
        self._response_model: str | None = None

    # --- what happened ---------------------------------------------------------------------

    def first_chunk(self) -> None:
        """The first content arrived (text, reasoning or a tool call)."""
        if self._first is None:
            self._first = time.perf_counter() - self._start

    def watch(
        self, sink: Callable[[Sequence[StreamEvent]], None], on_text: Callable[[str], None]
    ) -> tuple[Callable[[Sequence[StreamEvent]], None], Callable[[str], None]]:
        """The client's two event handlers, noting the first content (only while tracing)."""

        def watched_sink(events: Sequence[StreamEvent]) -> None:
            if self._first is None and any(type(e) in _CONTENT for e in events):
                self.first_chunk()
            sink(events)

        def watched_text(text: str) -> None:
            if self._first is None:
                self.first_chunk()
            on_text(text)

        return watched_sink, watched_text

    def response(
        self, *, response_id: str | None = None, response_model: str | None = None
    ) -> None:
        if response_id:
            self._response_id = response_id
        if response_model:
            self._response_model = response_model

    def usage(self, input_tokens: int | None, output_tokens: int | None) -> None:
        """The usage the server reported (a snapshot: replaces what came before)."""
        self._usage = (input_tokens, output_tokens)

    def retry(self, attempt: int, delay: float, resume: bool, error: BaseException) -> None:
        """A failed attempt will be retried (resumed when `resume`): a span event."""
        if self._span is not None:
            self._span.add_event(
                "aistream.retry",
                {
                    "aistream.retry.attempt": attempt,
                    "aistream.retry.delay": delay,
                    "aistream.resume": resume,
                    "error.type": type(error).__name__,
                    "exception.message": str(error)[:500],
                },
            )

    def end(self, finish_reason: str | None, error: BaseException | None = None) -> None:
        """Close the span and record the metrics."""
        duration = time.perf_counter() - self._start
        attrs = dict(self._attrs)
        if self._response_model:
            attrs["gen_ai.response.model"] = self._response_model
        error_type = None
        if error is not None:
            error_type = getattr(error, "code", None) or type(error).__name__
            attrs["error.type"] = str(error_type)
        span = self._span
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            extra: dict[str, Any] = {}
            if self._response_model:
                extra["gen_ai.response.model"] = self._response_model
            if self._response_id:
                extra["gen_ai.response.id"] = self._response_id
            if finish_reason:
                extra["gen_ai.response.finish_reasons"] = [finish_reason]
            if self._first is not None:
                extra["gen_ai.response.time_to_first_chunk"] = self._first
            if self._usage is not None:
                if self._usage[0] is not None:
                    extra["gen_ai.usage.input_tokens"] = self._usage[0]
                if self._usage[1] is not None:
                    extra["gen_ai.usage.output_tokens"] = self._usage[1]
            span.set_attributes(extra)
            if error is not None:
                span.set_attribute("error.type", str(error_type))
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
            span.end()
        histograms = self._histograms
        if histograms is not None:
            histograms.duration.record(duration, attrs)
            if self._first is not None:
                histograms.first_chunk.record(self._first, attrs)
            if self._usage is not None:
                for kind, count in zip(("input", "output"), self._usage, strict=True):
                    if count is not None:
                        histograms.tokens.record(count, {**attrs, "gen_ai.token.type": kind})

    # --- the server's side -----------------------------------------------------------------

    async def watch_events(self, events: AsyncIterator[StreamEvent]) -> AsyncIterator[Any]:
        """A backend's events, passed through unchanged, recorded as they go (the server)."""
        finish: str | None = None
        error: BaseException | None = None
        try:
            async for event in events:
                if isinstance(event, str) or type(event) in _CONTENT:
                    self.first_chunk()
                elif isinstance(event, UsageReport):
                    self.usage(event.prompt_tokens, event.completion_tokens)
                elif isinstance(event, FinishReason):
                    finish = event.reason
                elif isinstance(event, ServerError):
                    error = _ServerError(event.message, event.code)
                    finish = "error"
                elif isinstance(event, StreamStarted):
                    self.response(response_id=event.stream_id, response_model=event.model)
                yield event
        except BaseException as exc:  # a cancel, the consumer closing us, or a failure
            if error is None:
                error = exc
                finish = "stopped" if _cancelled(exc) else "error"
            raise
        finally:
            self.end(finish or "stop", None if _cancelled(error) else error)


_CONTENT = (TextDelta, ReasoningDelta, ToolCallDone)


class _ServerError(Exception):
    """An in-stream error of a backend, as recorded on the span."""

    def __init__(self, message: str, code: str | None) -> None:
        super().__init__(message)
        self.code = code


def _cancelled(error: BaseException | None) -> bool:
    import asyncio

    return isinstance(error, asyncio.CancelledError | GeneratorExit)
