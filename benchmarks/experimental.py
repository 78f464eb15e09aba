"""Patches for variants that run aistream differently from its defaults, in the same run.

Nothing here changes aistream itself: each patch is a context manager that swaps one setting
for the span of a benchmark run.

- `stdlib_json`: the dialects parse event JSON with the standard library's ``json`` even when
  orjson is installed (aistream uses orjson when it can import it), so the suite shows both.
- `without_otel`: aistream behaves as if opentelemetry-api were not installed (the `otel`
  extra absent); `with_otel`: global OpenTelemetry SDK providers are set (spans recorded, not
  exported; metrics aggregated), so a turn is traced. Against the main row (the API installed,
  no provider set) they show what the token path pays in each case.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aistream import _otel
from aistream._wire import _json


@contextlib.contextmanager
def stdlib_json() -> Iterator[None]:
    """Parse with ``json.loads`` for the span of the block, then restore the accelerator."""
    with _json.parser("json"):
        yield


@contextlib.contextmanager
def without_otel() -> Iterator[None]:
    """As if opentelemetry-api were not installed."""
    saved = _otel._available
    _otel._available = False
    try:
        yield
    finally:
        _otel._available = saved


@contextlib.contextmanager
def with_otel() -> Iterator[None]:
    """Global SDK tracer and meter providers for the span of the block."""
    import sys

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.util._once import Once

    internal = sys.modules["opentelemetry.metrics._internal"]

    def reset() -> None:
        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        internal._METER_PROVIDER_SET_ONCE = Once()
        internal._METER_PROVIDER = None

    reset()
    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    try:
        yield
    finally:
        reset()
