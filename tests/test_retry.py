"""Retry policy: schedules from backoff's generators, jitter, Retry-After forms, classification."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from aistream import (
    APIStatusError,
    ConnectionLostError,
    ProtocolError,
    RetryConfig,
    StreamTimeoutError,
)
from aistream._retry import RetryBudget, is_retryable, parse_retry_after, wait_schedule


def take(config: RetryConfig, n: int) -> list[float]:
    return list(itertools.islice(wait_schedule(config), n))


def test_exponential_schedule_doubles_up_to_max_delay() -> None:
    config = RetryConfig(initial_delay=1.0, max_delay=10.0, jitter=False)
    assert take(config, 6) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_linear_schedule_grows_by_initial_delay_up_to_max() -> None:
    config = RetryConfig(backoff="linear", initial_delay=1.5, max_delay=4.0, jitter=False)
    assert take(config, 4) == [1.5, 3.0, 4.0, 4.0]


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_multiplies_by_a_factor_between_075_and_1(draw: float) -> None:
    budget = RetryBudget(RetryConfig(initial_delay=2.0), rng=lambda: draw)
    delay = budget.next_delay(ConnectionLostError("x"))
    assert delay == pytest.approx(2.0 * (1 - 0.25 * draw))
    assert 1.5 <= delay <= 2.0


def test_server_delay_wins_and_is_not_jittered() -> None:
    budget = RetryBudget(RetryConfig(initial_delay=2.0), rng=lambda: 0.5)
    error = APIStatusError("slow down", status_code=429, retry_after=7.0)
    assert budget.next_delay(error) == 7.0


def test_budget_runs_out_after_max_retries_and_reset_restores_it() -> None:
    budget = RetryBudget(RetryConfig(max_retries=2, jitter=False))
    error = ConnectionLostError("dropped")
    assert [budget.next_delay(error) for _ in range(3)] == [1.0, 2.0, None]
    budget.reset()
    assert budget.next_delay(error) == 1.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "2"}, 2.0, id="seconds"),
        pytest.param({"retry-after": "1.5"}, 1.5, id="fractional"),
        pytest.param({"retry-after-ms": "120"}, 0.12, id="ms"),
        pytest.param({"retry-after-ms": "bad", "retry-after": "3"}, 3.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after": "Sat, 21 Nov 2026 10:00:30 GMT"}, 30.0, id="http-date"),
        pytest.param({"retry-after": "Sat, 21 Nov 2026 09:59:00 GMT"}, 0.0, id="date-in-past"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_parse_retry_after_forms(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(headers, now=lambda: now) == expected


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(APIStatusError("x", status_code=status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422, 501])
def test_other_statuses_are_not_retried(status: int) -> None:
    assert not is_retryable(APIStatusError("x", status_code=status))


def test_classification_of_other_errors() -> None:
    assert is_retryable(ConnectionLostError("dropped"))
    assert is_retryable(StreamTimeoutError("stalled"))
    assert not is_retryable(ProtocolError("garbage"))
    assert is_retryable(APIStatusError("overloaded", status_code=200, retryable=True))
    assert not is_retryable(APIStatusError("bad", status_code=200, retryable=False))
