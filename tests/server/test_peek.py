"""`early_failure`: a reply's first event decides between an HTTP status and a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aistream._wire._events import ServerError, StreamEvent, TextDelta
from aistream.server._peek import early_failure

from .helpers import guard


class Source:
    """Yields what the test releases; records whether it was closed."""

    def __init__(self, *events: StreamEvent) -> None:
        self.events = list(events)
        self.release = asyncio.Event()
        self.closed = False

    async def stream(self) -> AsyncIterator[StreamEvent]:
        try:
            await self.release.wait()
            for event in self.events:
                yield event
        finally:
            self.closed = True


async def test_a_first_error_with_a_status_is_returned_and_the_reply_closed() -> None:
    source = Source(ServerError("refused", "upstream_auth", False, status=502), TextDelta("x"))
    source.release.set()
    failure, _ = await guard(early_failure(source.stream(), 5.0))
    assert failure is not None and failure.status == 502
    assert source.closed


async def test_a_first_content_event_is_replayed_then_the_rest() -> None:
    source = Source(TextDelta("a"), ServerError("late", "upstream_error", True, status=502))
    source.release.set()
    failure, events = await guard(early_failure(source.stream(), 5.0))
    assert failure is None
    assert [e async for e in events] == list(source.events)  # a late error stays in-stream


async def test_a_backend_slower_than_the_wait_streams_and_closes_cleanly() -> None:
    source = Source(TextDelta("a"))
    failure, events = await guard(early_failure(source.stream(), 0.01))
    assert failure is None and not source.closed
    source.release.set()
    assert [e async for e in events] == [TextDelta("a")]
    unstarted = Source(TextDelta("b"))
    _, never_read = await guard(early_failure(unstarted.stream(), 0.01))
    await guard(never_read.aclose())  # type: ignore[attr-defined]
    assert unstarted.closed  # the pending first read was cancelled, the generator closed
