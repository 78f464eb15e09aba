"""ASGI: event stream responses — SSE headers, heartbeats, send timeout, disconnects.

Owns `EventStreamResponse` (a Starlette response fed by an async iterator of events or by a
producer that uses its writer methods) and `FrameStreamResponse` (frames already encoded, the
app's replay path). The bytes come from an encoder of `_encoders` (native by default; openai
and vercel on request). Imports starlette, `_encoders` and `_wire`.

One ASGI call runs three tasks: the body (writes events), a disconnect listener (``receive``),
and a watchdog that sends ``: ping`` heartbeats and enforces the send timeout. Every write goes
through one lock, so a heartbeat never lands inside an event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from typing import Any, Final

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._wire._events import (
    Metadata,
    ReasoningDelta,
    ServerError,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from .._wire._sse import encode_sse
from ._encoders import Encoder, ServerEvent, make_encoder, stream_tag

__all__ = ["SSE_HEADERS", "EventStreamResponse", "ServerEvent", "new_stream_id", "stream_tag"]

log = logging.getLogger("aistream.server")

#: The headers of every event stream. `X-Accel-Buffering: no` stops nginx buffering.
SSE_HEADERS: Final[Mapping[str, str]] = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
PING: Final = encode_sse(comment="ping")

Producer = Callable[["EventStreamResponse"], Awaitable[None]]
Sleep = Callable[[float], Awaitable[object]]
Clock = Callable[[], float]

_END_BODY: Final[Message] = {"type": "http.response.body", "body": b"", "more_body": False}


def new_stream_id() -> str:
    """A fresh, URL-safe, unguessable stream id (16 characters)."""
    return secrets.token_urlsafe(12)


class SendLock:
    """A mutex for the writes of one stream, cheap when uncontended (the hot path).

    ``if lock.busy: await lock.acquire() else: lock.busy = True`` takes it without creating a
    coroutine, which asyncio.Lock cannot do (the hot loop also inlines `release`); ``async with
    lock`` works too. Contention is rare
    (a heartbeat, or a writer method called while the iterator streams), so waiters simply
    re-check after each release.
    """

    __slots__ = ("busy", "waiters")

    def __init__(self) -> None:
        self.busy = False
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        while self.busy:
            future = asyncio.get_running_loop().create_future()
            self.waiters.append(future)
            try:
                await future
            except BaseException:
                if future in self.waiters:
                    self.waiters.remove(future)
                elif not self.busy:
                    self.wake_next()  # woken but leaving: pass the turn on
                raise
        self.busy = True

    def release(self) -> None:
        self.busy = False
        if self.waiters:
            self.wake_next()

    def wake_next(self) -> None:
        """Wake the first waiter still waiting."""
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)
                return

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


class ClientGone(Exception):
    """A send failed because the client is gone; ends the stream like a disconnect."""


class _EventStream(Response):
    """The ASGI mechanics shared by every event stream; subclasses implement `_produce`.

    Writes are serialized by one lock and stamped with the clock; the watchdog reads those
    stamps, so the per-event cost is a lock, a clock read and the ASGI send.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        background: BackgroundTask | None = None,
    ) -> None:
        merged = {**SSE_HEADERS, **(headers or {})}
        self.status_code = status_code
        self.background = background
        self.init_headers(merged)
        for name, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("send_timeout", send_timeout),
        ):
            if value is not None and value < 0:
                raise ValueError(
                    f"{name} must be >= 0 seconds (0 or None disables it); got {value}"
                )
        self.heartbeat_interval = heartbeat_interval or None
        self.send_timeout = send_timeout or None
        self._sleep = sleep
        self._clock = clock
        self._lock = SendLock()
        self._asgi_send: Send | None = None
        self._since: float | None = None  # when the send in progress began
        self._last = 0.0  # when the last write began
        self._body_task: asyncio.Task[None] | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._aborting = False
        self._closed = False  # no more writes: ended, aborted, disconnected or timed out
        self.disconnected = False
        self.timed_out = False

    async def _produce(self) -> None:
        raise NotImplementedError

    async def _close_source(self) -> None:
        """Release what feeds the stream; called when the body never ran (HEAD)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._asgi_send = send
        self._last = self._clock()
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") == "HEAD":
            self._closed = True
            await self._close_source()
            await send(_END_BODY)
            return
        body = self._body_task = asyncio.create_task(self._run())
        listener = asyncio.create_task(self._listen(receive))
        watchdog = asyncio.create_task(self._watch(body))
        tasks = (body, listener, watchdog)
        try:
            await asyncio.wait((body, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._closed = True
            for task in (*tasks, self._ping_task):
                if task is not None:
                    task.cancel()
            await asyncio.wait([t for t in (*tasks, self._ping_task) if t is not None])
        if listener.done() and not listener.cancelled():
            self.disconnected = True
        if self.timed_out:
            log.warning(
                "a client accepted no data for %g s (send_timeout); closing its event stream",
                self.send_timeout,
            )
        error = None if body.cancelled() else body.exception()
        if error is not None and not isinstance(error, ClientGone):
            raise error
        if self.background is not None:
            await self.background()

    async def _run(self) -> None:
        """The body task: produce, then end the HTTP response (even after our own abort())."""
        try:
            await self._produce()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._aborting or task is None or task.uncancel() > 0:
                raise
        async with self._lock:
            self._closed = True
            await self._send_now(_END_BODY)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _watch(self, body: asyncio.Task[None]) -> None:
        """Heartbeats when the line is idle; cancels the body when one send blocks too long."""
        interval, limit = self.heartbeat_interval, self.send_timeout
        if interval is None and limit is None:
            return
        clock = self._clock
        while True:
            now = clock()
            since = self._since
            if limit is not None and since is not None and now - since >= limit:
                self.timed_out = True
                body.cancel()
                return
            waits: list[float] = []
            if interval is not None and since is not None:
                waits.append(interval)  # a send is in flight: the line is not idle
            elif interval is not None:
                due = self._last + interval
                if now >= due:
                    if self._ping_task is None or self._ping_task.done():
                        self._ping_task = asyncio.create_task(self._ping())
                    self._last = now  # the ping is on its way: the line is no longer idle
                    due = now + interval
                waits.append(due - now)
            if limit is not None:
                waits.append(since + limit - now if since is not None else limit)
            await self._sleep(max(min(waits), 0.0))

    async def _ping(self) -> None:
        async with self._lock:
            if not self._closed:
                await self._send_now(
                    {"type": "http.response.body", "body": PING, "more_body": True}
                )

    async def _send_now(self, message: Message) -> None:
        """Send under the lock, stamped so the watchdog can time it.

        Raises:
            ClientGone: The server reported the client gone (ASGI 2.4 servers raise OSError).
        """
        send = self._asgi_send
        assert send is not None
        self._since = now = self._clock()
        try:
            await send(message)
        except OSError as exc:
            self._closed = self.disconnected = True
            raise ClientGone(str(exc)) from exc
        self._since = None
        self._last = now


class EventStreamResponse(_EventStream):
    """A Starlette response that streams events, in the native protocol unless told otherwise.

    Feed it an async iterable of events (str tokens or `_wire` events: `TextDelta`,
    `UsageReport`, `FinishReason`, `Metadata`, `ReasoningDelta`, `ToolCallDone`, `ServerError`,
    `Done`), or a producer coroutine function that receives the response and uses its writer
    methods. Natively it writes `start` first and `done` last (unless an
    `error` ended the stream), ids ``<stream-id>:<seq>``, and ``: ping`` every
    `heartbeat_interval` seconds of silence. ``format="openai"`` writes OpenAI
    ``chat.completion.chunk`` objects and ``format="vercel"`` the Vercel AI SDK UI message
    stream v1 (with its ``x-vercel-ai-ui-message-stream: v1`` header) from the same events.

    When the client disconnects (or accepts nothing for `send_timeout` seconds) the source is
    cancelled and closed: the iterator's ``aclose()`` runs, a producer task is cancelled. An
    exception from the source becomes an `error` event (code ``internal_error``) and is logged.

    Args:
        content: An async iterable of events, or ``async def produce(stream) -> None``.
        stream_id: The id written in `start` and in every event id (default: random).
        model: The model name written in `start` (and in every OpenAI chunk).
        format: "native" (default), "openai" or "vercel".
        encoder: An `Encoder` of your own instead (`stream_id`, `model`, `format` are then
            ignored).
        status_code, headers, background: As for any Starlette response.
        heartbeat_interval: Seconds of silence before a ``: ping`` (None or 0: never).
        send_timeout: Longest a single send may block before the stream is closed (None: never).
        sleep, clock: Injected time (tests), defaults ``asyncio.sleep`` and ``time.monotonic``.

    ```py
    async def tokens():
        yield "Hello"
        yield " world"

    @app.post("/api/chat")
    async def chat() -> EventStreamResponse:
        return EventStreamResponse(tokens(), model="echo")   # format="vercel" for useChat

    async def produce(stream: EventStreamResponse) -> None:
        await stream.send_token("Hi")
        await stream.send_usage(3, 1)
        await stream.end()

    return EventStreamResponse(produce)
    ```
    """

    def __init__(
        self,
        content: AsyncIterable[ServerEvent] | Producer,
        *,
        stream_id: str | None = None,
        model: str | None = None,
        format: str = "native",
        encoder: Encoder | None = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        heartbeat_interval: float | None = 15.0,
        send_timeout: float | None = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        background: BackgroundTask | None = None,
    ) -> None:
        if encoder is None:
            encoder = make_encoder(format, stream_id or new_stream_id(), model)
        super().__init__(
            status_code=status_code,
            headers={**encoder.headers, **(headers or {})},
            heartbeat_interval=heartbeat_interval,
            send_timeout=send_timeout,
            sleep=sleep,
            clock=clock,
            background=background,
        )
        if not isinstance(content, AsyncIterable) and not callable(content):
            raise TypeError(
                "content must be an async iterable of events or an async producer function "
                f"taking the response; got {type(content).__name__}"
            )
        self._content = content
        self._encoder: Encoder = encoder
        self._started = False

    # --- writer -----------------------------------------------------------------------------

    @property
    def stream_id(self) -> str:
        """The id of this stream (in `start` and in every event id)."""
        return self._encoder.stream_id

    @property
    def is_active(self) -> bool:
        """True while events can be written: started, not ended, client still there."""
        return self._started and not self._closed and not self._encoder.finished

    @property
    def message_count(self) -> int:
        """Events written so far, `start` and `done` included (heartbeats are not events).

        In the openai and vercel formats: chunks or parts written so far.
        """
        return self._encoder.seq  # every frame takes the next seq

    async def send_token(self, token: str) -> None:
        """Write a `token` event; its index counts tokens from 0."""
        await self._emit(TextDelta(token))

    async def send_usage(
        self, prompt_tokens: int, completion_tokens: int, total_tokens: int | None = None
    ) -> None:
        """Write a `usage` event (the turn's full snapshot; total defaults to the sum)."""
        await self._emit(UsageReport(prompt_tokens, completion_tokens, total_tokens))

    async def send_metadata(self, data: Mapping[str, Any]) -> None:
        """Write a `metadata` event carrying any JSON object."""
        await self._emit(Metadata(dict(data)))

    async def send_reasoning(self, text: str) -> None:
        """Write a `reasoning` event."""
        await self._emit(ReasoningDelta(text))

    async def send_tool_call(self, id: str, name: str, arguments: str) -> None:
        """Write a `tool-call` event (`arguments` is the JSON text)."""
        await self._emit(ToolCallDone(id, name, arguments))

    async def send_error(
        self, message: str, *, code: str = "error", retryable: bool = False
    ) -> None:
        """Write an `error` event; it ends the stream (no `done` follows)."""
        await self._emit(ServerError(message, code, retryable))

    async def end(self, finish_reason: str | None = None) -> None:
        """Write `done` and end the stream. Idempotent; a no-op once the stream is over."""
        async with self._lock:
            if self._started and not self._closed and not self._encoder.finished:
                await self._send_event(self._encoder.done(finish_reason))

    async def abort(self) -> None:
        """End the HTTP response now, without `done` (the client sees a cut stream). Idempotent."""
        if self._closed or self._aborting:
            return
        self._aborting = self._closed = True
        body = self._body_task
        if body is not None and body is not asyncio.current_task() and not body.done():
            body.cancel()

    async def _emit(self, event: ServerEvent) -> None:
        async with self._lock:
            if not self.is_active:
                raise RuntimeError(self._inactive_reason())
            chunk = self._encoder.encode(event)
            if chunk is not None:
                await self._send_event(chunk)

    async def _send_event(self, chunk: bytes) -> None:
        await self._send_now({"type": "http.response.body", "body": chunk, "more_body": True})

    def _inactive_reason(self) -> str:
        if not self._started:
            return (
                "the event stream has not started: write from the producer passed to "
                "EventStreamResponse, or from the iterator it consumes"
            )
        if self.disconnected:
            return "the client disconnected; stop producing"
        return "the event stream has ended (end(), abort() or an error); nothing more can be sent"

    # --- body -------------------------------------------------------------------------------

    async def _produce(self) -> None:
        content = self._content
        encoder = self._encoder
        async with self._lock:
            self._started = True
            await self._send_event(encoder.start())
        try:
            if isinstance(content, AsyncIterable):
                await self._pump(content)
            else:
                await content(self)
        except (asyncio.CancelledError, ClientGone):
            raise
        except Exception as exc:
            if self._aborting:
                return
            log.exception("the event source of stream %s failed", stream_tag(self.stream_id))
            async with self._lock:
                if not encoder.finished and not self._closed:
                    await self._send_event(encoder.error(_describe(exc), "internal_error", False))
            return
        finally:
            await self._close_source()
        if not self._aborting:
            await self.end()

    async def _pump(self, events: AsyncIterable[ServerEvent]) -> None:
        """The hot loop. A text token costs one lock flag, one clock read, one encode, one send."""
        encoder = self._encoder
        token = encoder.token
        lock, clock = self._lock, self._clock
        send = self._asgi_send
        assert send is not None
        async for event in events:
            if lock.busy:
                await lock.acquire()
            else:
                lock.busy = True  # uncontended: no coroutine, no future
            try:
                if self._closed or encoder.finished:
                    return
                kind = type(event)
                if kind is TextDelta:
                    text: str = event.text  # type: ignore[union-attr]
                elif kind is str:
                    text = event  # type: ignore[assignment]
                else:
                    text = ""
                if not text:
                    if await self._write_other(event):
                        return
                    continue
                chunk = token(text)
                self._since = now = clock()
                try:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except OSError as exc:
                    self._closed = self.disconnected = True
                    raise ClientGone(str(exc)) from exc
                self._since = None
                self._last = now
            finally:
                lock.busy = False  # lock.release(), inlined
                if lock.waiters:
                    lock.wake_next()

    async def _write_other(self, event: ServerEvent) -> bool:
        """Encode and send any event but a text token (lock held); True when it ended the stream."""
        chunk = self._encoder.encode(event)
        if chunk is not None:
            await self._send_event(chunk)
        return self._encoder.finished

    async def _close_source(self) -> None:
        content = self._content
        aclose = getattr(content, "aclose", None)
        if aclose is not None and isinstance(content, AsyncIterator):
            await aclose()


class FrameStreamResponse(_EventStream):
    """Streams frames already encoded by `NativeEncoder` (the app's replay-then-follow path).

    Closing `frames` is how the producer learns that this client went away.
    """

    def __init__(self, frames: AsyncGenerator[bytes, None], **options: Any) -> None:
        super().__init__(**options)
        self._frames = frames

    async def _produce(self) -> None:
        lock = self._lock
        try:
            async for chunk in self._frames:
                async with lock:
                    if self._closed:
                        return
                    await self._send_now(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
        finally:
            await self._frames.aclose()

    async def _close_source(self) -> None:
        await self._frames.aclose()


def _describe(exc: BaseException) -> str:
    """A short, safe description of a source failure for the client (details go to the log)."""
    return f"the server failed while generating the reply ({type(exc).__name__})"
