"""What one caller, and the whole app, may spend: `Limits` and the counters that enforce them.

The stdlib and `_wire`'s events only, the clock injected. `RateLimiter` is a token bucket per
principal (requests per minute, bursts up to the minute's worth); `Slots` counts running
generations per principal and for the whole app, in every output format (a slot is taken
before a generation starts and given back when it ends, however it ends);
`request_size_problem` bounds a conversation's size and `bounded_reply` a reply's.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

from .._wire._events import ReasoningDelta, ServerError, StreamEvent, TextDelta, ToolCallDone

__all__ = [
    "Busy",
    "Limits",
    "RateLimiter",
    "Slot",
    "Slots",
    "bounded_reply",
    "request_size_problem",
]

_PRUNE_AT: Final = 4096  # buckets kept before full ones are dropped


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what callers may spend. None is no limit.

    Attributes:
        requests_per_minute: Requests per principal per minute, every route but ``/healthz``
            (429 with ``Retry-After`` beyond; bursts up to a minute's worth).
        concurrent_streams: Generations one principal may have running at once, in every
            output format, a native one running on after its client left included (429).
        max_streams: Generations the whole app runs at once, every format (503).
        max_messages: Messages in one request (413 beyond).
        max_chars: Characters of one request's messages and system prompt together (413).
        max_followers: Clients following one stream at once (429 beyond).
        max_reply_chars: Characters one reply may stream (text, reasoning and tool call
            arguments together); beyond, the reply ends with an in-stream ``reply_too_large``
            error and the generation stops, in every output format. It bounds what a replay
            log holds and what an upstream can make the server relay.

    ```py
    Limits(requests_per_minute=60, concurrent_streams=4, max_streams=200)
    ```
    """

    requests_per_minute: int | None = None
    concurrent_streams: int | None = None
    max_streams: int | None = None
    max_messages: int | None = 1000
    max_chars: int | None = 200_000
    max_followers: int | None = 16
    max_reply_chars: int | None = 1_000_000

    def __post_init__(self) -> None:
        for name in (
            "requests_per_minute",
            "concurrent_streams",
            "max_streams",
            "max_messages",
            "max_chars",
            "max_followers",
            "max_reply_chars",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"Limits.{name} must be a whole number >= 1, or None for no limit; "
                    f"got {value!r}"
                )


class Busy(Exception):
    """A limit refused a generation: the HTTP status, code and seconds to wait."""

    def __init__(self, status: int, code: str, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class RateLimiter:
    """A token bucket per key: `per_minute` requests a minute, up to a minute's worth at once.

    ```py
    limiter = RateLimiter(60)
    limiter.hit("alice")     # None: allowed; else the whole seconds to wait
    ```
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def hit(self, key: str) -> int | None:
        """Take one request for `key`: None when allowed, else whole seconds until it would be."""
        now = self._clock()
        capacity = float(self.per_minute)
        tokens, when = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - when) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > _PRUNE_AT:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def _prune(self, now: float) -> None:
        """Forget keys whose bucket has refilled: they would start full anyway."""
        capacity = float(self.per_minute)
        for key, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * self._rate >= capacity:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class Slot:
    """One running generation's place; `release` is idempotent."""

    __slots__ = ("_key", "_slots")

    def __init__(self, slots: Slots, key: str) -> None:
        self._slots: Slots | None = slots
        self._key = key

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._release(self._key)


class Slots:
    """Running generations per principal (`per_principal`) and in all (`total`).

    ```py
    slots = Slots(per_principal=4, total=200)
    slot = slots.acquire("alice")       # raises Busy when a limit is reached
    ...
    slot.release()
    ```
    """

    def __init__(self, per_principal: int | None, total: int | None) -> None:
        self.per_principal = per_principal
        self.total = total
        self.running = 0
        self._by_key: dict[str, int] = {}

    def count(self, key: str) -> int:
        """Generations `key` has running now."""
        return self._by_key.get(key, 0)

    def acquire(self, key: str) -> Slot:
        """A slot for one more generation of `key`.

        Raises:
            Busy: 429 when `key` is at `per_principal`, 503 when the app is at `total`.
        """
        mine = self._by_key.get(key, 0)
        if self.per_principal is not None and mine >= self.per_principal:
            raise Busy(
                429,
                "too_many_streams",
                f"you have {mine} replies generating, the most one caller may have at once "
                "(concurrent_streams); wait for one to finish, or stop one with "
                "DELETE /api/chat/<stream-id>",
            )
        if self.total is not None and self.running >= self.total:
            raise Busy(
                503,
                "server_busy",
                f"the server is generating {self.running} replies, its limit (max_streams); "
                "retry shortly",
            )
        self._by_key[key] = mine + 1
        self.running += 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        self.running -= 1
        left = self._by_key[key] - 1
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]

    def __len__(self) -> int:
        """Principals with a generation running."""
        return len(self._by_key)


def request_size_problem(limits: Limits, messages: int, chars: int) -> str | None:
    """Why a request of `messages` messages and `chars` characters is too large, or None."""
    if limits.max_messages is not None and messages > limits.max_messages:
        return (
            f"the conversation has {messages} messages, more than this server takes "
            f"({limits.max_messages}, max_messages); send fewer (drop or summarise old turns)"
        )
    if limits.max_chars is not None and chars > limits.max_chars:
        return (
            f"the conversation holds {chars} characters, more than this server takes "
            f"({limits.max_chars}, max_chars); send a shorter one"
        )
    return None


async def bounded_reply(
    events: AsyncIterator[StreamEvent], limit: int
) -> AsyncIterator[StreamEvent]:
    """`events` until the reply passes `limit` characters; then a ``reply_too_large`` error.

    The backend's iterator is closed however this one ends (an upstream request stops).
    """
    size = 0
    try:
        async for event in events:
            if type(event) is TextDelta or type(event) is ReasoningDelta:
                size += len(event.text)
            elif isinstance(event, str):
                size += len(event)
            elif isinstance(event, ToolCallDone):
                size += len(event.arguments)
            if size > limit:
                yield ServerError(
                    f"the reply passed {limit} characters, the most this server streams "
                    "(Limits.max_reply_chars); ask for a shorter reply",
                    "reply_too_large",
                    False,
                )
                return
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
