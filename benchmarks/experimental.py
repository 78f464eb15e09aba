"""Experimental: patched copies of aistream's hot path, to measure proposed changes.

Nothing here changes aistream itself. Each patch is a context manager that swaps one function
for the span of a benchmark run (or a dialect class set on one AIStream), so a variant labelled
``[experimental]`` shows what the change would buy, measured in the same run as the real code.
Every patched path keeps the semantics of the code it replaces (see each docstring); the
fallback is always the original code.

- `fast_sse`: SSEDecoder.feed answers a chunk that is exactly one ``data:`` line and a blank
  line, with nothing pending, without splitting lines (one C scan for ``\\n``, one for ``\\r``).
- `FastOpenAIDialect`: after a full parse proves a chunk is plain text, it learns the bytes
  around the content string; a later chunk identical outside that string is the same object
  with another content, so it is parsed with one ``json.decoder.scanstring`` (C) instead of
  ``json.loads``. The template is validated by parsing a probe; anything else takes the full
  path (a per-chunk field such as OpenAI's ``obfuscation`` simply never matches).
- `fast_emit`: the token sink calls the `token` listeners directly (no lock, no kwargs, no
  generic emit) and `_emit_run` returns at once when a listener returns None (not awaitable).
- `raw_body`: the transport iterates ``aiter_raw()`` when the response has no
  ``Content-Encoding`` (aiter_bytes would only pass the bytes through an identity decoder).
- `drain_after_end`: after the end marker the transport reads the body to its end, so the
  connection goes back to the pool instead of being closed (see `_consume_variant`).
- `fast_copy`: the ``message`` event's deep copy of the reply without ``copy.deepcopy``.
- `compact_reply`: the reply text is kept in blocks of 128 tokens (memory per stream).
- `lean_loop`: the transport asks ``dialect.finished`` only after non-text frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json.decoder
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aistream import _emitter, _stream, _transport
from aistream import models as _models
from aistream._wire import _sse
from aistream._wire._dialect import HEARTBEAT_ONLY, NOTHING, loads_object
from aistream._wire._events import Frame, SSEEvent, StreamEvent, TextDelta
from aistream._wire._ndjson import NDJSONDecoder
from aistream._wire._openai import OpenAIDialect, _plain_text
from aistream.errors import ConnectionLostError, redact_url

log = logging.getLogger("aistream")
#: The C string scanner json.loads itself uses (not in typeshed): (text, index after the quote).
scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]

Patch = Callable[[], contextlib.AbstractContextManager[None]]


@contextlib.contextmanager
def _swap(owner: Any, name: str, value: Any) -> Iterator[None]:
    missing = object()
    original = owner.__dict__.get(name, missing)  # the class's own, not an inherited one
    setattr(owner, name, value)
    try:
        yield
    finally:
        if original is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, original)


# --- SSE decoder ----------------------------------------------------------------------------


_original_feed = _sse.SSEDecoder.feed


def _fast_feed(self: _sse.SSEDecoder, data: bytes) -> list[SSEEvent]:
    """One ``data: ...\\n\\n`` event per chunk, nothing pending: no line splitting.

    The conditions make it exactly what the general path would do: no BOM / CR / error state
    (`_pre`), no unfinished line, no data or field pending, the only LFs are the final two, no
    CR anywhere, and within the size limit; then the event is dispatched with the current id
    and retry and the default type (no ``event:`` field can be pending without `_fields`).
    """
    if (
        not self._pre
        and not self._buf
        and not self._data
        and not self._fields
        and data[:6] == b"data: "
        and data.find(b"\n") == len(data) - 2
        and data[-1:] == b"\n"
        and b"\r" not in data
        and len(data) <= self._max
    ):
        return [
            SSEEvent(
                data[6:-2].decode("utf-8", "replace"), "message", self._id or None, self._retry
            )
        ]
    return _original_feed(self, data)


def fast_sse() -> contextlib.AbstractContextManager[None]:
    return _swap(_sse.SSEDecoder, "feed", _fast_feed)


# --- OpenAI dialect ---------------------------------------------------------------------------

_MAX_LEARN = 4  # template (re)learning attempts per stream: bounded extra parses


class FastOpenAIDialect(OpenAIDialect):
    """OpenAIDialect with a learned template for plain-text chunks (see the module docstring)."""

    __slots__ = ("_learns", "_prefix", "_suffix")

    def __init__(self) -> None:
        super().__init__()
        self._prefix: str | None = None
        self._suffix = ""
        self._learns = 0

    def parse(self, frame: Frame) -> list[StreamEvent]:
        prefix = self._prefix
        if prefix is not None and type(frame) is SSEEvent:
            data = frame.data
            suffix = self._suffix
            if data.startswith(prefix) and data.endswith(suffix):
                try:
                    text, end = scanstring(data, len(prefix))
                except ValueError:
                    pass
                else:
                    if end == len(data) - len(suffix):
                        return [TextDelta(text)] if text else NOTHING
        events = super().parse(frame)
        if (
            self._learns < _MAX_LEARN
            and len(events) == 1
            and type(events[0]) is TextDelta
            and type(frame) is SSEEvent
        ):
            self._learns += 1
            self._learn(frame.data, events[0].text)
        return events

    def _learn(self, data: str, text: str) -> None:
        key = '"content":'
        start = 0
        while (at := data.find(key, start)) >= 0:
            start = at + 1
            quote = at + len(key)
            while data[quote : quote + 1] in (" ", "\t", "\n", "\r"):
                quote += 1
            if data[quote : quote + 1] != '"':
                continue
            try:
                value, end = scanstring(data, quote + 1)
            except ValueError:
                continue
            if value != text:
                continue
            prefix, suffix = data[: quote + 1], data[end:]
            probe = loads_object(prefix + 'x"' + suffix)
            whole = loads_object(data)
            if probe is None or whole is None:
                return
            choices = probe.get("choices")
            if type(choices) is not list or _plain_text(probe, choices) != "x":
                return
            whole["choices"][0]["delta"]["content"] = "x"
            if probe == whole:  # the template differs from the chunk only in the content
                self._prefix, self._suffix = prefix, suffix
            return


def use_fast_dialect(chat: Any) -> None:
    """Make one AIStream (openai protocol) build FastOpenAIDialect for its attempts."""
    chat._dialect_factory = FastOpenAIDialect


def orjson_loads() -> contextlib.AbstractContextManager[None]:
    """The OpenAI dialect parses with orjson instead of json (when orjson is installed)."""
    import orjson

    from aistream._wire import _openai

    def loads_object(data: str) -> dict[str, Any] | None:
        try:
            value = orjson.loads(data)
        except ValueError:
            return None
        return value if type(value) is dict else None

    return _swap(_openai, "loads_object", loads_object)


# --- emitter ----------------------------------------------------------------------------------

_EMPTY: dict[str, Any] = {}
_original_emit_run = _emitter.SafeEmitter._emit_run


def _fast_emit_run(
    self: _emitter.SafeEmitter,
    f: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """As SafeEmitter._emit_run, returning at once when the listener returned None."""
    try:
        result = f(*args, **kwargs)
    except Exception:
        log.exception("aistream: listener %s raised; the stream goes on", _emitter._name(f))
        return
    if result is None:
        return
    _original_emit_run(self, lambda *a, **k: result, args, kwargs)


def _fast_sink_for(
    self: _stream.AIStream, turn: _stream._Turn
) -> Callable[[list[StreamEvent]], None]:
    """As AIStream._sink_for, calling `token` listeners directly.

    pyee's emit takes a lock, copies the listener list and calls ``_emit_run`` with kwargs; a
    copy of the listener list (atomic under the GIL: ``list(dict.values())`` runs in C) keeps
    the semantics for listeners added or removed by a listener. A listener that raises is
    logged; one that returns an awaitable goes through the emitter's usual path (a task that
    `drain()` awaits). No listener: nothing to do (emit would only look for an unhandled
    ``error``).
    """
    queue = turn.queue
    listeners = self._events
    emit_run = _original_emit_run
    compact = _COMPACT
    tail: list[Any] = [None, 0]  # the parts list being compacted, and its uncompacted tail

    def sink(events: list[StreamEvent]) -> None:
        if turn.stop_requested:
            return
        for event in events:
            if type(event) is TextDelta:
                index = event.index
                if index is not None:
                    if index < turn.next_index:
                        continue
                    turn.next_index = index + 1
                text = event.text
                parts = turn.parts
                parts.append(text)
                if compact:
                    if tail[0] is not parts:  # a new turn, or restart() made a new list
                        tail[0], tail[1] = parts, 0
                    tail[1] += 1
                    if tail[1] == _BLOCK:  # keep the reply as blocks of 128 tokens
                        parts[-_BLOCK:] = ["".join(parts[-_BLOCK:])]
                        tail[1] = 0
                handlers = listeners.get("token")
                if handlers:
                    for f in list(handlers.values()):
                        try:
                            result = f(text)
                        except Exception:
                            log.exception(
                                "aistream: listener %s raised; the stream goes on",
                                _emitter._name(f),
                            )
                            continue
                        if result is not None:
                            emit_run(self, _returning(result), (), _EMPTY)
                if queue is not None:
                    queue.put_nowait(text)
            else:
                self._other_event(turn, event)

    return sink


_BLOCK = 128
_COMPACT = False


@contextlib.contextmanager
def compact_reply() -> Iterator[None]:
    """With fast_emit: the reply is kept as one str per 128 tokens, not one str per token.

    A short token costs ~60 bytes as its own str object (plus 8 in the list); joined, ~1 byte
    per character: at 200 tokens per stream that is ~12 KB of the 40 KB budget per stream.
    """
    global _COMPACT
    _COMPACT = True
    try:
        yield
    finally:
        _COMPACT = False


def _returning(value: Any) -> Callable[[], Any]:
    return lambda: value


@contextlib.contextmanager
def fast_emit() -> Iterator[None]:
    with (
        _swap(_emitter.SafeEmitter, "_emit_run", _fast_emit_run),
        _swap(_stream.AIStream, "_sink_for", _fast_sink_for),
    ):
        yield


# --- models -----------------------------------------------------------------------------------

_original_model_copy = _models.Message.model_copy


def _fast_model_copy(
    self: _models.Message, *, update: Any = None, deep: bool = False
) -> _models.Message:
    """Message.model_copy(deep=True) without copy.deepcopy: ~4.6 µs instead of ~24 µs.

    The emitted copy must not share anything mutable with the history: a shallow copy, then
    copies of the two mutable parts (the Usage model and the tool_calls list of models); the
    other fields are str, datetime and None (immutable).
    """
    if update is not None or not deep or type(self) is not _models.Message:
        return _original_model_copy(self, update=update, deep=deep)
    copy = _original_model_copy(self)
    if copy.usage is not None:
        object.__setattr__(copy, "usage", copy.usage.model_copy())
    object.__setattr__(copy, "tool_calls", [t.model_copy() for t in self.tool_calls])
    return copy


def fast_copy() -> contextlib.AbstractContextManager[None]:
    return _swap(_models.Message, "model_copy", _fast_model_copy)


# --- transport --------------------------------------------------------------------------------

_DRAIN_SECONDS = 0.5


def _consume_variant(*, raw: bool, drain: bool, lean: bool = False) -> Callable[..., Any]:
    """A copy of Transport._consume with three changes, each optional.

    raw: iterate ``aiter_raw()`` when the response has no ``Content-Encoding`` (aiter_bytes
    only passes the bytes through an identity decoder and a chunker).

    drain: at the end marker (``[DONE]``, ``done``, ``message_stop``) keep reading the same
    iterator to the end of the HTTP body (for at most 0.5 s) instead of returning. Today
    ``_consume`` returns with the terminating chunk not yet read, so closing the response
    closes the connection and the next turn pays a new TCP connect (and a new pool entry).

    lean: ask ``dialect.finished`` (a property call) only after a frame that was not exactly
    one TextDelta: no dialect ends a stream on a plain text frame (an end marker yields Done,
    FinishReason, UsageReport...), so the two property calls per chunk go away.
    """

    async def _consume(
        self: _transport.Transport,
        response: Any,
        dialect: Any,
        sink: Callable[[list[StreamEvent]], None],
        state: _transport.AttemptState,
        watchdog: Any,
    ) -> None:
        decoder: Any
        if dialect.framing == "sse":
            decoder = _sse.SSEDecoder(
                max_event_bytes=self.max_event_bytes, last_event_id=state.last_event_id
            )
        else:
            decoder = NDJSONDecoder(max_line_bytes=self.max_event_bytes)
        parse = dialect.parse
        loop_time = asyncio.get_running_loop().time
        track_ids = dialect.resumable
        # a response built with its content (httpx.MockTransport) is already "consumed":
        # aiter_raw() would raise StreamConsumed there, aiter_bytes() serves the content
        identity = (
            raw and not response.headers.get("content-encoding") and not response.is_stream_consumed
        )
        chunks = response.aiter_raw() if identity else response.aiter_bytes()
        finished = False
        try:
            async with asyncio.timeout(None) as deadline:
                async for chunk in chunks:
                    if finished:
                        continue  # draining to the end of the body
                    frames = decoder.feed(chunk)
                    if not frames:
                        continue
                    check = not lean
                    for frame in frames:
                        events = parse(frame)
                        if events is HEARTBEAT_ONLY:
                            continue
                        state.events += 1
                        if watchdog is not None:
                            watchdog.last = loop_time()
                        if events:
                            sink(events)
                            if len(events) != 1 or type(events[0]) is not TextDelta:
                                check = True
                        else:
                            check = True
                        if track_ids and frame.id:
                            state.last_event_id = frame.id
                    if check and dialect.finished:
                        if not drain:
                            return
                        finished = True
                        deadline.reschedule(loop_time() + _DRAIN_SECONDS)
        except TimeoutError:
            if dialect.finished:
                return  # the body did not end soon after the end marker: drop the connection
            raise
        if dialect.finished:
            return
        for frame in decoder.eof():
            events = parse(frame)
            if events and events is not HEARTBEAT_ONLY:
                sink(events)
        raise ConnectionLostError(
            f"the stream from {redact_url(str(response.url))} ended after "
            f"{state.events} events without its end marker; the connection was cut"
        )

    return _consume


def raw_body() -> contextlib.AbstractContextManager[None]:
    return _swap(_transport.Transport, "_consume", _consume_variant(raw=True, drain=False))


def drain_after_end() -> contextlib.AbstractContextManager[None]:
    return _swap(_transport.Transport, "_consume", _consume_variant(raw=False, drain=True))


def lean_loop() -> contextlib.AbstractContextManager[None]:
    return _swap(
        _transport.Transport, "_consume", _consume_variant(raw=False, drain=False, lean=True)
    )


@contextlib.contextmanager
def everything() -> Iterator[None]:
    """All of the above (pair with use_fast_dialect for the JSON fast path)."""
    consume = _consume_variant(raw=True, drain=True, lean=True)
    with (
        fast_sse(),
        fast_emit(),
        compact_reply(),
        fast_copy(),
        _swap(_transport.Transport, "_consume", consume),
    ):
        yield
