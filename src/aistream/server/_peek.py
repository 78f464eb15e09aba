"""A reply's first event, awaited before the response starts, so early failures get a status.

A relay learns that the operator's key was refused, or that the upstream is busy, before any
content. Answered as ``200`` plus an in-stream error, every client's error classes miss it
(the openai SDK raises a generic error, ours reports ``status_code=200``). So the app waits for
the first event of a reply, briefly, before it commits to a stream: a `ServerError` that
carries a ``status`` becomes that HTTP answer. A backend slower than `wait` to say anything
(a model thinking before its first token) starts its stream as before, with heartbeats, and
its failures stay in-stream. Imports `_wire` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .._wire._events import ServerError, StreamEvent

__all__ = ["early_failure"]


async def early_failure(
    events: AsyncIterator[StreamEvent], wait: float | None
) -> tuple[ServerError | None, AsyncIterator[StreamEvent]]:
    """Wait up to `wait` seconds for the first event of `events`.

    Returns the first event when it is a `ServerError` with a ``status`` (and `events`
    closed), else None and an iterator that yields every event of `events`, the first
    included. `wait` None or 0: no waiting.
    """
    if not wait:
        return None, events
    first: asyncio.Future[StreamEvent] = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait((first,), timeout=wait)
    if done and not first.cancelled() and first.exception() is None:
        event = first.result()
        if type(event) is ServerError and event.status is not None:
            await _aclose(events)
            return event, events
    return None, _Chained(first, events)


class _Chained:
    """`events` with its first event already asked for; `aclose` also ends that request."""

    __slots__ = ("_events", "_first")

    def __init__(
        self, first: asyncio.Future[StreamEvent], events: AsyncIterator[StreamEvent]
    ) -> None:
        self._first: asyncio.Future[StreamEvent] | None = first
        self._events = events

    def __aiter__(self) -> _Chained:
        return self

    async def __anext__(self) -> StreamEvent:
        first, self._first = self._first, None
        if first is not None:
            return await first  # its StopAsyncIteration, if any, ends the iteration
        return await anext(self._events)

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            if not first.done():
                first.cancel()
                await asyncio.wait((first,))
            if not first.cancelled():
                first.exception()  # retrieved: never "Task exception was never retrieved"
        await _aclose(self._events)


async def _aclose(events: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
