"""All retry policy: schedules from backoff's wait generators, jitter, Retry-After, and the
decision after a failed attempt.

`decide` is that decision as a pure step: given the failure, what the attempt achieved and the
turn's `RetryBudget`, it says "give up with this error" or "retry after d seconds, resuming or
restarting". It emits, logs and sleeps nothing: `_stream`'s attempts loop does that. (The loop
itself lives there: it must wrap the whole open-and-consume of a stream, which backoff's
decorators cannot do for generators.) Imports backoff, `errors`, `models`, and `_wire` for the
one list of retryable statuses.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import backoff

from ._wire._dialect import RETRYABLE_STATUS
from .errors import AIStreamError, APIStatusError, ConnectionLostError, StreamTimeoutError
from .models import RetryConfig

#: The longest server-requested delay we obey; a longer one gives up with a clear error.
MAX_SERVER_DELAY: Final = 60.0
#: `APIStatusError.status_code` of an error the server sent inside its (200) stream: the
#: public contract (see errors.py), and how the retry policy tells such errors apart.
IN_STREAM_STATUS: Final = 200


def wait_schedule(config: RetryConfig) -> Iterator[float]:
    """The un-jittered delays of attempts 1, 2, 3, … for `config`, from backoff's generators.

    ```py
    list(itertools.islice(wait_schedule(RetryConfig(jitter=False)), 5))  # [1, 2, 4, 8, 10]
    ```
    """
    if config.backoff == "exponential":
        gen = backoff.expo(base=2, factor=config.initial_delay, max_value=config.max_delay)
    else:
        linear = (min(config.initial_delay * n, config.max_delay) for n in itertools.count(1))
        gen = backoff.constant(interval=linear)
    next(gen)  # prime: backoff's generators open with a bare `yield`
    return (float(delay) for delay in gen)


def parse_retry_after(
    headers: Mapping[str, str], now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` in seconds or as an HTTP date.

    Returns None when no header is present or it cannot be read.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now()).total_seconds(), 0.0)


def is_retryable(error: AIStreamError) -> bool:
    """The one place that decides whether a failed attempt is worth another try."""
    if isinstance(error, ConnectionLostError | StreamTimeoutError):
        return True
    if isinstance(error, APIStatusError):
        if error.retryable is not None:
            return error.retryable
        return error.status_code in RETRYABLE_STATUS
    return False


class RetryBudget:
    """Delays for one model call's retries; `reset()` after an attempt that made progress.

    Args:
        config: The schedule and the number of retries allowed.
        rng: Returns a float in [0, 1); used for jitter (injected for tests).

    Attributes:
        attempt: Retries counted since the last reset.
        best: The most content events one attempt delivered; an attempt that beats it made
            progress (it survives `reset()`: a restart must outdo every earlier try).
    """

    def __init__(self, config: RetryConfig, rng: Callable[[], float] = random.random) -> None:
        self._config = config
        self._rng = rng
        self.best = 0
        self.reset()

    def reset(self) -> None:
        """Start counting from the first retry again."""
        self.attempt = 0
        # Made at the first retry: most turns have none.
        self._schedule: Iterator[float] | None = None

    def next_delay(self, error: AIStreamError) -> float | None:
        """Count one retry and return its delay, or None when `error` should end the turn."""
        if not is_retryable(error) or self.attempt >= self._config.max_retries:
            return None
        self.attempt += 1
        if self._schedule is None:
            self._schedule = wait_schedule(self._config)
        computed = next(self._schedule)
        server = error.retry_after if isinstance(error, APIStatusError) else None
        if server is not None:
            return server  # never jittered; the cap is checked where the header is read
        if self._config.jitter:
            return computed * (1.0 - 0.25 * self._rng())
        return computed


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry after `delay` seconds: resume from the last event id, or restart the reply.

    `error` is the failure as the ``retry`` event reports it; `attempt` counts from 1.
    """

    error: AIStreamError
    delay: float
    attempt: int
    resume: bool


@dataclass(frozen=True, slots=True)
class GiveUp:
    """End the model call: raise `error`, chained ``from cause`` (None: the failure as it came)."""

    error: AIStreamError
    cause: AIStreamError | None = None


def decide(
    failure: AIStreamError,
    budget: RetryBudget,
    *,
    resumable: bool,
    resumed_from: str,
    reached: str,
    events: int,
) -> Retry | GiveUp:
    """What to do after a failed attempt. Advances `budget`; emits, logs and sleeps nothing.

    Args:
        failure: What the attempt raised.
        budget: The model call's budget (reset here when the attempt made progress).
        resumable: Whether the dialect resumes from event ids.
        resumed_from: The event id the attempt started from ("" for a fresh stream).
        reached: The id of the last event it delivered (`resumed_from` when none).
        events: Content events it delivered.

    A failure a resume cannot fix becomes a restart (`cannot_resume`). Progress (more events
    than any attempt before, or a later id) resets the budget. A retryable failure past the
    budget gives up saying so (`gave_up`); any other failure gives up as it is.
    """
    error, reached = cannot_resume(failure, reached)
    progressed = reached != resumed_from if resumable else False
    if events > budget.best or progressed:
        budget.best = max(budget.best, events)
        budget.reset()
    delay = budget.next_delay(error)
    if delay is None:
        if budget.attempt and is_retryable(error):
            return GiveUp(gave_up(error, budget.attempt), error)
        return GiveUp(error, None if error is failure else failure)
    return Retry(error, delay, budget.attempt, resumable and bool(reached))


def sent_in_stream(error: AIStreamError) -> bool:
    """Whether `error` is one the server sent inside its stream (not an HTTP refusal)."""
    return isinstance(error, APIStatusError) and error.status_code == IN_STREAM_STATUS


def cannot_resume(error: AIStreamError, reached: str) -> tuple[AIStreamError, str]:
    """`error` and the id to resume from, "" when a resume cannot fix it (a restart then).

    An error the server sent inside the stream ends that stream (a resume would replay it),
    and a 400/404/410 on a resume means the server no longer has the stream or will not
    stream it again (Responses: "more than 5 minutes old").
    """
    if sent_in_stream(error):
        return error, ""
    if reached and isinstance(error, APIStatusError) and error.status_code in (400, 404, 410):
        lost = ConnectionLostError(f"the server cannot resume the stream ({error}); restarting")
        lost.__cause__ = error
        return lost, ""
    return error, reached


def gave_up(error: AIStreamError, retries: int) -> AIStreamError:
    """The same kind of error, its message saying that the retries ran out."""
    message = (
        f"{error} (gave up after {retries} retries; raise RetryConfig.max_retries, or "
        "--retries in `aistream chat`, to try longer)"
    )
    if isinstance(error, APIStatusError):
        return APIStatusError(
            message,
            status_code=error.status_code,
            body=error.body,
            code=error.code,
            retryable=error.retryable,
            retry_after=error.retry_after,
        )
    return type(error)(message)
