"""Running generations: the native replies of one app, as tasks that outlive their clients.

Imports `_encoders`, `_replay`, `_replicas` and `_wire`; no starlette: it handles no HTTP
(that is `_app.ChatService`'s).

A native generation runs as a task owned by `Generations` and writes its frames, encoded once,
into the replay store; each response only follows the store (replay what its client missed,
then live frames as they are written), so a client that goes away does not stop the
generation: it runs on for `resume_grace` seconds and is cancelled if nobody came back.

With a shared store (Redis) a follower reads from the store while another replica
produces the stream, and takes the stream over when that producer's lease expires; `stored` and
`cancel` are what the store tells this replica (`StoreListener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from .._wire._dialect import ChatRequest
from .._wire._events import FinishReason, ServerError, StreamEvent
from .._wire._sse import encode_sse
from ._encoders import NativeEncoder, stream_tag
from ._limits import Slot
from ._replay import ReplayStore, SharedReplayStore, StoreUnavailable
from ._replicas import (
    Continuable,
    progress,
    request_context,
    request_from_context,
    store_error_frame,
)

__all__ = ["CANCEL_WAIT", "ChatBackend", "Generations", "Sleep", "aclose_events"]

log = logging.getLogger("aistream.server")

Sleep = Callable[[float], Awaitable[object]]
CANCEL_WAIT: Final = 5.0  # seconds a cancel waits for the generation to wind down


class ChatBackend(Protocol):
    """What generates replies: the demo model, the upstream relay, or your own code."""

    def model_for(self, request: ChatRequest) -> str | None:
        """The model name announced in the `start` event."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """The reply as events (TextDelta, UsageReport, FinishReason, ServerError, ...)."""
        ...


class _Live:
    """One running generation and who follows it.

    `followers` counts the responses following it; at 0 a grace timer (`grace`) starts, and a
    follower that comes back cancels it. `changed` is set when a frame is stored or the
    generation ends.
    """

    __slots__ = ("changed", "followers", "grace", "slot", "stream_id", "task")

    def __init__(self, stream_id: str, slot: Slot | None = None) -> None:
        self.stream_id = stream_id
        self.slot = slot  # its place in the app's Limits, given back when it ends
        self.task: asyncio.Task[None] | None = None
        self.followers = 0
        self.grace: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every follower once: a fresh Event per change, so each waits for the next."""
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class _Cursor:
    """Where a follower stands: the last seq it was sent, and whether it has had the end."""

    __slots__ = ("after", "done")

    def __init__(self, after: int) -> None:
        self.after = after
        self.done = False


class Generations:
    """The running native generations of one app, their followers and grace timers.

    Args:
        backend: Generates the replies (its `model_for`, and `continuation` on a takeover).
        stream: Asks the backend for a reply to a request, for a model (the app's, which
            records it for OpenTelemetry).
        store: Where each generation writes its frames (a shared one makes this replica one of
            several: see the module docstring).
        resume_grace: Seconds a generation runs on with no follower before it is cancelled.
        producer_lease: With a shared store: seconds after which another replica takes over a
            stream whose producer stopped renewing its lease.
        sleep: Injected sleep (the grace timers).
        id_factory: Makes stream ids.
    """

    def __init__(
        self,
        backend: ChatBackend,
        store: ReplayStore,
        *,
        stream: Callable[[ChatRequest, str | None], AsyncIterator[StreamEvent]],
        resume_grace: float,
        producer_lease: float,
        sleep: Sleep,
        id_factory: Callable[[], str],
    ) -> None:
        self.backend = backend
        self.store = store
        self._stream = stream
        self.resume_grace = resume_grace
        self.producer_lease = producer_lease
        self.shared: SharedReplayStore | None = None
        if getattr(store, "shared", False):
            shared: SharedReplayStore = store  # type: ignore[assignment]
            shared.listener = self
            self.shared = shared
        self._sleep = sleep
        self._new_id = id_factory
        self.live: dict[str, _Live] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        # Shutting down with a shared store: generations are handed over, not ended "stopped"
        self.handing_over = False

    def follow(
        self, stream_id: str, after: int, attached: bool = False
    ) -> AsyncGenerator[bytes, None]:
        """The frames of `stream_id` after seq `after`: stored ones, then live ones as written.

        `attached`: the follower `start` counted (the response to the POST that started it).
        """
        if self.shared is not None:
            return self._follow_shared(stream_id, after, attached)
        return self._follow(stream_id, after, attached)

    def followers(self, stream_id: str) -> int:
        """How many responses follow the generation of `stream_id` here (0: none running)."""
        live = self.live.get(stream_id)
        return 0 if live is None else live.followers

    async def stop(self, stream_id: str) -> bool:
        """Cancel a generation now and wait (bounded) for its end: the DELETE.

        False when no replica runs or keeps it (unknown or expired).

        Raises:
            StoreUnavailable: the shared store cannot be reached.
        """
        live = self.live.get(stream_id)
        if live is not None and live.task is not None:
            log.info("stream %s cancelled by DELETE", stream_tag(stream_id))
            live.task.cancel()
            await asyncio.wait((live.task,), timeout=CANCEL_WAIT)
            return True
        if self.shared is not None:
            return await self._cancel_elsewhere(stream_id)
        return await self.store.read(stream_id, sys.maxsize) is not None

    async def aclose(self) -> None:
        """Cancel every running generation and grace timer, and wait for them. With a shared
        store the streams are handed over to the other replicas (`hand_over`), not ended."""
        self.handing_over = self.shared is not None
        tasks: list[asyncio.Task[None]] = []
        for live in list(self.live.values()):
            for task in (live.grace, live.task):
                if task is not None:
                    task.cancel()
                    tasks.append(task)
        if tasks:
            await asyncio.wait(tasks)
        if self._cleanups:
            await asyncio.wait(self._cleanups)

    # --- StoreListener: what a shared store tells this replica ---------------------------------

    def stored(self, stream_id: str) -> None:
        live = self.live.get(stream_id)
        if live is not None:
            live.notify()

    def cancel(self, stream_id: str) -> None:
        live = self.live.get(stream_id)
        if live is not None and live.task is not None and not live.task.done():
            log.info("a stream was cancelled through the store")
            live.task.cancel()

    # --- the generation ------------------------------------------------------------------------

    async def start(
        self,
        request: ChatRequest,
        events: AsyncIterator[StreamEvent] | None = None,
        owner: str = "",
        slot: Slot | None = None,
    ) -> str:
        """Start the generation of a native reply (`events`: the backend's, already asked for),
        stored as `owner`'s (the principal's id); `slot`, its place in the Limits, is given
        back when the generation ends.

        The response to the request that started it counts as a follower from here on (see
        `follow`'s `attached`), so no grace timer can cancel the generation before that
        response's first read.

        Raises:
            StoreUnavailable, ReplayFull: the store refused the new stream.
            ValueError: the id factory made an unsafe id.
        """
        encoder = NativeEncoder(self._new_id())  # validates the id before anything is stored
        stream_id = encoder.stream_id
        if self.shared is not None:
            await self.store.create(stream_id, owner, request_context(request))
        else:
            await self.store.create(stream_id, owner)
        live = self.live[stream_id] = _Live(stream_id, slot)
        task = asyncio.create_task(
            self._generate(live, encoder, request, reply=events), name=f"aistream-{stream_id}"
        )
        task.add_done_callback(lambda _: self._never_ran(live, events))
        live.task = task
        live.followers = 1  # the response to this POST, attached from the start
        return stream_id

    def _never_ran(self, live: _Live, events: AsyncIterator[StreamEvent] | None = None) -> None:
        """Books for a generation cancelled before its first step (its finally never ran)."""
        if self.live.get(live.stream_id) is live:
            cleanup = asyncio.ensure_future(self._never_ran_cleanup(live, events))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    async def _never_ran_cleanup(
        self, live: _Live, events: AsyncIterator[StreamEvent] | None
    ) -> None:
        try:
            if events is not None:
                await aclose_events(events)
        finally:
            await self._close_books(live)

    async def _generate(
        self,
        live: _Live,
        encoder: NativeEncoder,
        request: ChatRequest,
        events: AsyncIterator[StreamEvent] | None = None,
        *,
        reply: AsyncIterator[StreamEvent] | None = None,
    ) -> None:
        """Run the backend and write its events, encoded once, into the replay store.

        `events`: the rest of a reply taken over from a dead producer (its `start` and what it
        sent are stored already; `encoder` continues their numbering). `reply`: the backend's
        reply to `request`, already asked for (`_serve` awaited its first event).
        """
        store, stream_id = self.store, live.stream_id
        append = store.append
        # a shared store says when a frame is readable (listener.stored): no early wake-ups
        notify = live.notify if self.shared is None else _ignore

        async def put(frame: bytes) -> None:
            await append(stream_id, frame)
            notify()

        if self.shared is not None:
            lives = self.live

            async def put(frame: bytes) -> None:
                # A generation this replica lost may still be winding down when the same
                # replica takes the stream over again: its frames must not go to the new one.
                if lives.get(stream_id) is not live:
                    raise StoreUnavailable("another generation produces this stream now")
                await append(stream_id, frame)

        try:
            if events is None:
                encoder.model = self.backend.model_for(request)
                await put(encoder.start())
                events = reply
            if events is None:
                events = self._stream(request, encoder.model)
            async for event in events:
                frame = encoder.encode(event)
                if frame is not None:
                    await put(frame)
                if encoder.finished:
                    break
            if not encoder.finished:
                await put(encoder.done())
        except asyncio.CancelledError:
            if not encoder.finished and not self.handing_over:
                with contextlib.suppress(StoreUnavailable):
                    await put(encoder.done("stopped"))
            raise
        except StoreUnavailable:
            # the shared store is gone (its followers were told) or another replica took over
            log.warning("a generation stopped: the store is unavailable")
        except Exception as exc:
            log.exception("the generation of stream %s failed", stream_tag(stream_id))
            if not encoder.finished:
                message = f"the server failed while generating the reply ({type(exc).__name__})"
                with contextlib.suppress(StoreUnavailable):
                    await put(encoder.error(message, "internal_error", False))
        finally:
            try:
                if events is not None or reply is not None:
                    await aclose_events(events or reply)  # type: ignore[arg-type]
            finally:
                await self._close_books(live)

    async def _close_books(self, live: _Live) -> None:
        """Close the books on a generation, whichever way it ended."""
        stream_id = live.stream_id
        current = self.live.get(stream_id) is live
        if current:  # (else a takeover here replaced this lost generation: its books are not ours)
            del self.live[stream_id]
        if live.slot is not None:
            live.slot.release()
        if live.grace is not None:
            live.grace.cancel()
        try:
            if current and self.handing_over and self.shared is not None:
                await self.shared.hand_over(stream_id)
            elif current:
                await self.store.finish(stream_id)
        except StoreUnavailable:
            log.warning("could not mark a stream finished in the store")
        finally:
            live.notify()

    async def _follow(
        self, stream_id: str, after: int, attached: bool
    ) -> AsyncGenerator[bytes, None]:
        """The frames after `after`: what the store holds, then live ones as they are written.

        `attached`: this follower was counted by `start` (the response to the POST that
        started the stream). Counting it there, not at this generator's first step, guards
        the window before that step: another follower (a GET resume) that left in it would
        bring the count to 0 and start the grace timer, which (with a short `resume_grace`)
        could cancel the generation before its own client attached.
        """
        live = self.live.get(stream_id)
        if live is not None and not attached:
            self._attach(live)
        await self.store.hold(stream_id)
        try:
            while True:
                changed = live.changed if live is not None else None
                # Whether the generation had ended *before* this read: a send blocked by a slow
                # client may outlast the generation, and the next read then holds the rest.
                ended = live is None or live.task is None or live.task.done()
                replay = await self.store.read(stream_id, after)
                if replay is None:
                    return
                if replay.data:
                    after = replay.next_seq - 1
                    yield replay.data
                if replay.finished:
                    return
                if changed is None or ended:
                    yield _unavailable(stream_id)
                    return
                await changed.wait()
        finally:
            await self.store.release(stream_id)
            if live is not None:
                self._detach(live)

    async def _follow_shared(
        self, stream_id: str, after: int, attached: bool
    ) -> AsyncGenerator[bytes, None]:
        """`_follow` for a shared store: from here while this replica produces the stream,
        from the store (blocking reads) while another one does, taking it over if it dies."""
        shared = self.shared
        assert shared is not None
        cursor = _Cursor(after)
        await self.store.hold(stream_id)
        try:
            while not cursor.done:
                live = self.live.get(stream_id)
                if live is not None and shared.produces(stream_id):
                    source = self._from_here(live, cursor, attached)
                    attached = False
                else:
                    source = self._from_elsewhere(stream_id, cursor)
                sent = cursor.after
                async with contextlib.aclosing(source):
                    async for chunk in source:
                        yield chunk
                if not cursor.done and cursor.after == sent:
                    await asyncio.sleep(0)  # a hand-over between the two: never spin the loop
        finally:
            await self.store.release(stream_id)

    async def _from_here(
        self, live: _Live, cursor: _Cursor, attached: bool
    ) -> AsyncGenerator[bytes, None]:
        """Follow a generation of this replica; return undone if it stops being ours."""
        stream_id = live.stream_id
        if not attached:
            self._attach(live)
        try:
            while True:
                changed = live.changed
                ended = live.task is None or live.task.done()
                try:
                    replay = await self.store.read(stream_id, cursor.after)
                except StoreUnavailable as exc:
                    cursor.done = True
                    yield store_error_frame(str(exc))
                    return
                if replay is None:
                    return  # dropped here (another replica took it over): follow the store
                if replay.data:
                    cursor.after = replay.next_seq - 1
                    yield replay.data
                if replay.finished:
                    cursor.done = True
                    return
                if ended:
                    return
                await changed.wait()
        finally:
            self._detach(live)

    async def _from_elsewhere(self, stream_id: str, cursor: _Cursor) -> AsyncGenerator[bytes, None]:
        """Follow a stream another replica produces; take it over when its lease expires.

        Returns undone when this replica produces it now.
        """
        store = self.shared
        assert store is not None
        probe = min(1.0, self.producer_lease / 2)
        block = 0.001  # first look at once: a client may not wait long for a dead producer
        try:
            while not (store.produces(stream_id) and stream_id in self.live):
                replay = await store.wait(stream_id, cursor.after, block)
                if replay.data:
                    cursor.after = replay.next_seq - 1
                    yield replay.data
                if replay.finished:
                    cursor.done = True
                    return
                if replay.data:
                    continue
                # quiet: is the producer alive? Block until its lease would expire, no longer.
                left = await store.lease_left(stream_id)
                if left > 0:
                    block = min(left + 0.005, probe)
                    continue
                if await self._take_over(stream_id):
                    continue
                if await store.read(stream_id, cursor.after) is None:
                    cursor.done = True  # expired meanwhile
                    return
                block = probe
        except StoreUnavailable as exc:
            cursor.done = True
            yield store_error_frame(str(exc))

    async def _take_over(self, stream_id: str, cancel: bool = False) -> bool:
        """Produce a stream whose producer died, if this replica wins its lease.

        It continues the reply when the backend can do so exactly (`Continuable`), else it
        ends it with `producer_lost` after all that was stored; `cancel` ends it as stopped.
        """
        store = self.shared
        assert store is not None
        taken = await store.take_over(stream_id)
        if taken is None:
            return False
        state = progress(taken.frames)
        encoder = NativeEncoder(stream_id, state.model)
        encoder.seq, encoder.index = state.events, state.tokens
        live = self.live[stream_id] = _Live(stream_id)
        request = request_from_context(taken.context)
        events: AsyncIterator[StreamEvent] | None = None
        if state.ended:
            encoder.finished = True
            events = _no_events()
        elif cancel:
            events = _no_events(FinishReason("stopped"))
        elif state.plain and request is not None and isinstance(self.backend, Continuable):
            events = self.backend.continuation(request, state.text)
        if events is None:
            log.warning(
                "a stream's producer was lost after %d events and the reply "
                "cannot be continued exactly; ending it with producer_lost",
                state.events,
            )
            events = _no_events(
                ServerError(
                    f"the server producing this reply was lost after {state.tokens} tokens and "
                    "the reply cannot be continued exactly; send the message again",
                    "producer_lost",
                    True,
                )
            )
        task = asyncio.create_task(
            self._generate(live, encoder, request or ChatRequest(()), events),
            name=f"aistream-{stream_id}",
        )
        task.add_done_callback(lambda _: self._never_ran(live))
        live.task = task
        if not cancel:
            self._start_grace(live)  # nobody attached yet: the reader that took it comes next
        else:
            await asyncio.wait((task,), timeout=CANCEL_WAIT)
        return True

    async def _cancel_elsewhere(self, stream_id: str) -> bool:
        """Cancel a stream this replica does not produce: tell its producer, wait for the end
        (or end it here if its producer is dead). False when no replica knows it."""
        store = self.shared
        assert store is not None
        found = await store.request_cancel(stream_id)
        if found == "unknown":
            return False
        replay = await store.read(stream_id, sys.maxsize)
        after = -1 if replay is None else replay.next_seq - 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_WAIT
        while found == "live" and loop.time() < deadline:
            replay = await store.wait(stream_id, after, min(0.5, self.producer_lease / 2))
            after = replay.next_seq - 1
            if replay.finished or stream_id in self.live:
                break
            if not replay.data and not await store.lease_left(stream_id):
                await self._take_over(stream_id, cancel=True)
        return True

    def _attach(self, live: _Live) -> None:
        """One more follower: a grace timer running for the generation is called off."""
        live.followers += 1
        if live.grace is not None:
            live.grace.cancel()
            live.grace = None

    def _detach(self, live: _Live) -> None:
        """One follower less: the last one to leave a running generation starts its grace."""
        live.followers -= 1
        if live.followers == 0 and live.stream_id in self.live:
            self._start_grace(live)

    def _start_grace(self, live: _Live) -> None:
        if live.grace is None or live.grace.done():
            live.grace = asyncio.create_task(self._expire(live))

    async def _expire(self, live: _Live) -> None:
        await self._sleep(self.resume_grace)
        if live.followers == 0 and live.task is not None and not live.task.done():
            log.info(
                "nobody resumed stream %s within %g s (resume_grace); cancelling",
                stream_tag(live.stream_id),
                self.resume_grace,
            )
            live.grace = None
            live.task.cancel()


async def aclose_events(events: AsyncIterator[StreamEvent]) -> None:
    """Close a backend's reply (an async generator's finally runs now, not at GC)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _ignore() -> None:
    pass


async def _no_events(*events: StreamEvent) -> AsyncIterator[StreamEvent]:
    """The given events (a takeover's last words)."""
    for event in events:
        yield event


def _unavailable(stream_id: str) -> bytes:
    """A terminal error without an id: the log is incomplete and nobody here is writing it."""
    payload = {
        "error": f"stream {stream_id!r} is not being generated by this server any more",
        "code": "stream_unavailable",
        "retryable": False,
    }
    return encode_sse(json.dumps(payload), event="error")
