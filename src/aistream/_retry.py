"""Time and the decision to retry: schedules from backoff's wait generators, jitter, Retry-After.

Imports backoff, `errors`, `models`, and `_wire` for the one list of retryable statuses. The
retry loop itself lives in `_stream` (it must wrap the whole open-and-consume of a stream,
which backoff's decorators cannot do for generators).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import backoff

from ._wire._dialect import RETRYABLE_STATUS
from .errors import AIStreamError, APIStatusError, ConnectionLostError, StreamTimeoutError
from .models import RetryConfig

#: The longest server-requested delay we obey; a longer one gives up with a clear error.
MAX_SERVER_DELAY: Final = 60.0


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
    """Delays for one turn's retries; `reset()` after a stream that delivered events.

    Args:
        config: The schedule and the number of retries allowed.
        rng: Returns a float in [0, 1); used for jitter (injected for tests).
    """

    def __init__(self, config: RetryConfig, rng: Callable[[], float] = random.random) -> None:
        self._config = config
        self._rng = rng
        self.reset()

    def reset(self) -> None:
        """Start counting from the first retry again."""
        self.attempt = 0
        self._schedule: Iterator[float] | None = (
            None  # made at the first retry: most turns have none
        )

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
