"""`AIStream.tokens()`'s iterator: leaving an ``async for`` early stops the turn at once.

An async generator abandoned by ``break`` is closed only when the event loop gets round to
finalising it, so the turn ran on and the next ``send()`` met `StreamBusyError`. This
iterator is a plain object: CPython drops it at the ``break`` itself, and its ``__del__``
stops the turn there and then (the partial reply stays, as with ``stop()``); the next turn
waits for that stopped one to settle instead of refusing. Stdlib only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["END", "TokenStream"]

END: Any = object()  # end-of-turn marker the turn puts on the queue

Begin = Callable[[], Awaitable[tuple["asyncio.Queue[Any]", "asyncio.Task[Any]"]]]


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished turn's error as seen: it was raised to a reader, or nobody reads."""
    if not task.cancelled():
        task.exception()


class TokenStream:
    """The reply's text deltas, as they arrive; an async iterator and context manager.

    The turn starts at the first ``__anext__``. ``break``, ``aclose()``, leaving an
    ``async with`` or dropping the iterator stops it like ``stop()``.

    Args:
        begin: Starts the turn; returns its token queue and the task that runs it.
        stop: Stops the running turn (thread-safe).
        abandoned: Told of a turn whose reader left before its end (it stops the turn and
            lets the next one wait for it).
    """

    __slots__ = ("_abandoned", "_begin", "_closed", "_queue", "_runner", "_stop")

    def __init__(
        self,
        begin: Begin,
        stop: Callable[[], None],
        abandoned: Callable[[asyncio.Task[Any]], None],
    ) -> None:
        self._begin = begin
        self._stop = stop
        self._abandoned = abandoned
        self._queue: asyncio.Queue[Any] | None = None
        self._runner: asyncio.Task[Any] | None = None
        self._closed = False

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        if self._runner is None or self._queue is None:
            self._queue, self._runner = await self._begin()
        item = await self._queue.get()
        if item is END:
            self._closed = True
            await self._runner  # the turn's error, if it failed
            raise StopAsyncIteration
        text: str = item
        return text

    async def aclose(self) -> None:
        """Stop the turn if it is still running and wait for it to settle."""
        self._closed = True
        runner = self._runner
        if runner is None:
            return
        if not runner.done():
            self._stop()
            await asyncio.wait((runner,))
        _retrieve(runner)

    async def __aenter__(self) -> TokenStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        runner = self._runner
        if runner is None:
            return
        if runner.done():
            _retrieve(runner)
        else:  # `break` (or an exception) left the loop: stop the turn now, not at GC
            self._abandoned(runner)
