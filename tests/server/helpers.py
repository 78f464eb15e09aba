"""Helpers for the server tests: fake time, a fake ASGI peer, a scripted backend, readers of
native streams. Fixtures built on them are in conftest.py; `running` (a real uvicorn) is in
tests/servers.py.

No helper here waits on time: fake sleepers wake only when a test advances the clock, and every
wait is on an event, bounded by `GUARD` seconds so a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import SSEEvent, StreamEvent, TextDelta
from aistream._wire._native import NativeDialect
from aistream._wire._sse import SSEDecoder

GUARD = 2.0  # seconds: the bound on every wait, never a delay


async def guard(awaitable: Awaitable[Any]) -> Any:
    """Await with a bound of GUARD seconds: fails the test instead of hanging it."""
    return await asyncio.wait_for(awaitable, GUARD)


class Signal:
    """Wakes waiters each time something changed; `until(predicate)` waits for a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not predicate():
                await self._event.wait()

        await guard(wait())


class FakeClock:
    """A monotonic clock and a sleep that only wakes when the test calls `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self.changed = Signal()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, future)
        self.sleepers.append(entry)
        self.changed.fire()
        try:
            await future
        finally:
            if entry in self.sleepers:
                self.sleepers.remove(entry)
            self.changed.fire()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, future in list(self.sleepers):
            if due <= self.now and not future.done():
                future.set_result(None)

    def dues(self) -> list[float]:
        return sorted(due for due, future in self.sleepers if not future.done())

    async def sleeping(self, due: float | None = None, count: int = 1) -> None:
        """Wait until `count` sleepers are pending (with that due time, if given)."""

        def ready() -> bool:
            pending = self.dues()
            return len([d for d in pending if due is None or abs(d - due) < 1e-9]) >= count

        await self.changed.until(ready)


class FakePeer:
    """The other end of a direct ASGI call (STYLE C18): a scripted receive, a recording send.

    `freeze_after` body messages, send blocks forever (a client that stopped reading).
    """

    def __init__(self, request_body: bytes = b"", freeze_after: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.changed = Signal()
        self._request = [request_body]
        self._disconnect = asyncio.Event()
        self.freeze_after = freeze_after
        self.frozen = False

    async def receive(self) -> dict[str, Any]:
        if self._request:
            return {"type": "http.request", "body": self._request.pop(), "more_body": False}
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.freeze_after is not None and len(self.bodies) >= self.freeze_after:
            self.frozen = True
            self.changed.fire()
            await asyncio.Event().wait()  # never returns
        self.messages.append(message)
        self.changed.fire()

    def disconnect(self) -> None:
        self._disconnect.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)

    @property
    def complete(self) -> bool:
        return any(
            m["type"] == "http.response.body" and not m.get("more_body", False)
            for m in self.messages
        )

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}


def http_scope(
    method: str = "GET", path: str = "/", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def frames(data: bytes) -> list[SSEEvent]:
    """The SSE events in `data`."""
    decoder = SSEDecoder()
    return [*decoder.feed(data), *decoder.eof()]


def native_events(data: bytes) -> list[StreamEvent]:
    """Decode bytes the way the client does: SSEDecoder + NativeDialect."""
    dialect = NativeDialect()
    return [event for frame in frames(data) for event in dialect.parse(frame)]


def tokens_of(data: bytes) -> list[tuple[int | None, str]]:
    return [(e.index, e.text) for e in native_events(data) if isinstance(e, TextDelta)]


def chat_request(*texts: str) -> ChatRequest:
    roles = ["user", "assistant"]
    return ChatRequest(tuple(ChatMessage(roles[i % 2], t) for i, t in enumerate(texts)))


def chat_body(*texts: str, **extra: Any) -> dict[str, Any]:
    roles = ["user", "assistant"]
    messages = [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]
    return {"messages": messages, "stream": True, **extra}


class ScriptedBackend:
    """A ChatBackend the test drives: it yields what the test puts, `None` ends the reply."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent | str | None] = asyncio.Queue()
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.requests: list[ChatRequest] = []

    def model_for(self, request: ChatRequest) -> str:
        return "scripted"

    def put(self, *items: StreamEvent | str | None) -> None:
        for item in items:
            self.queue.put_nowait(item)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        self.started.set()
        try:
            while (item := await self.queue.get()) is not None:
                yield TextDelta(item) if isinstance(item, str) else item
        finally:
            self.closed.set()


class EventReader:
    """Reads an httpx streaming response event by event (for cutting a stream mid-way)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._decoder = SSEDecoder()
        self._pending: list[SSEEvent] = []
        self.raw = b""

    async def next(self) -> SSEEvent:
        while not self._pending:
            chunk = await guard(anext(self._chunks))
            self.raw += chunk
            self._pending += self._decoder.feed(chunk)
        return self._pending.pop(0)

    async def take(self, count: int) -> list[SSEEvent]:
        return [await self.next() for _ in range(count)]

    async def rest(self) -> list[SSEEvent]:
        async def drain() -> None:
            async for chunk in self._chunks:
                self.raw += chunk
                self._pending += self._decoder.feed(chunk)

        await guard(drain())
        out, self._pending = self._pending, []
        return out


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()
