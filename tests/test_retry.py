"""Retry policy: schedules from backoff's generators, jitter, Retry-After forms, classification."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from aistream import (
    AIStreamError,
    APIStatusError,
    ConnectionLostError,
    ProtocolError,
    RetryConfig,
    StreamTimeoutError,
)
from aistream._retry import (
    GiveUp,
    Retry,
    RetryBudget,
    decide,
    is_retryable,
    parse_retry_after,
    wait_schedule,
)


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


# --- the decision after a failed attempt (_retry.decide), as a table ----------------------------

DROP = ConnectionLostError("the stream dropped")
IN_STREAM = APIStatusError("overloaded", status_code=200, code="overloaded", retryable=True)
IN_STREAM_FATAL = APIStatusError("bad input", status_code=200, retryable=False)
GONE = APIStatusError("404 Not Found", status_code=404)
LIMITED = APIStatusError("429 Too Many Requests", status_code=429, retry_after=7.0)
BAD = ProtocolError("unreadable")

# Each row: the failure; the attempt (resumable, resumed_from, reached, events); the budget
# before it (retries used, best events); then what decide() says: ("retry", delay, attempt,
# resume, error) or ("give up", error class, "gave up" in the message, the cause).
R, G, Lost, Status = "retry", "give up", ConnectionLostError, APIStatusError
DECISIONS = [
    ("first drop, no ids", DROP, (False, "", "", 0), (0, 0), (R, 1.0, 1, False, DROP)),
    ("drop after ids: resume", DROP, (True, "", "s:4", 4), (0, 0), (R, 1.0, 1, True, DROP)),
    ("a later id is progress", DROP, (True, "s:4", "s:6", 2), (2, 4), (R, 1.0, 1, True, DROP)),
    ("more events: progress", DROP, (False, "", "", 5), (2, 4), (R, 1.0, 1, False, DROP)),
    ("no progress, spent", DROP, (True, "s:4", "s:4", 0), (2, 4), (G, Lost, True, DROP)),
    ("fewer events than best", DROP, (False, "", "", 3), (2, 5), (G, Lost, True, DROP)),
    ("second retry", DROP, (False, "", "", 0), (1, 0), (R, 2.0, 2, False, DROP)),
    ("in-stream: restart", IN_STREAM, (True, "", "s:4", 4), (0, 0), (R, 1.0, 1, False, IN_STREAM)),
    ("in-stream, fatal", IN_STREAM_FATAL, (True, "", "s:4", 4), (0, 0), (G, Status, False, None)),
    ("404 on a resume", GONE, (True, "s:4", "s:4", 0), (0, 4), (R, 1.0, 1, False, Lost)),
    ("404 on a fresh stream", GONE, (True, "", "", 0), (0, 0), (G, Status, False, None)),
    ("server's delay wins", LIMITED, (False, "", "", 0), (0, 0), (R, 7.0, 1, False, LIMITED)),
    ("not retryable", BAD, (False, "", "", 0), (0, 0), (G, ProtocolError, False, None)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("failure", "attempt", "before", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in DECISIONS],
)
def test_decide(
    failure: Exception,
    attempt: tuple[bool, str, str, int],
    before: tuple[int, int],
    expected: tuple[object, ...],
) -> None:
    assert isinstance(failure, AIStreamError)
    budget = RetryBudget(RetryConfig(max_retries=2, initial_delay=1.0, jitter=False))
    for _ in range(before[0]):
        budget.next_delay(DROP)
    budget.best = before[1]
    resumable, resumed_from, reached, events = attempt
    decision = decide(
        failure,
        budget,
        resumable=resumable,
        resumed_from=resumed_from,
        reached=reached,
        events=events,
    )
    if expected[0] == "retry":
        _, delay, number, resume, error = expected
        assert isinstance(decision, Retry)
        assert (decision.delay, decision.attempt, decision.resume) == (delay, number, resume)
        if isinstance(error, type):  # a rewritten error: it names the failure as its cause
            assert type(decision.error) is error and decision.error.__cause__ is failure
        else:
            assert decision.error is error
    else:
        _, kind, gave_up, cause = expected
        assert isinstance(decision, GiveUp)
        assert type(decision.error) is kind
        assert ("gave up after 2 retries" in str(decision.error)) is gave_up
        assert decision.cause is cause
        assert gave_up or decision.error is failure  # otherwise the failure, unchanged
