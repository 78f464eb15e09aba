"""One attempt's bytes to events: decoder, dialect, per-token fast path and last delivered id.

The pipeline that `Transport` drives with a body's chunks, as one sans-I/O object: the
transport is left with a short read loop (feed, re-arm the stall timer, stop when finished),
and the wire tests (tests/wire/replay.py) feed recorded bytes through this same object, so the
pipeline they check is the one that runs. Stdlib only, like all of `_wire`.

The per-token fast path: a chunk that is one plain ``data:`` event whose data the dialect reads
as text alone (`SSEDecoder.data_only`, then `Dialect.text_of`) goes from bytes to `on_text`
without frames, event objects or a decoded str. Its cost is measured per chunk
(benchmarks/README.md, "unpaced"): `feed` adds no call to it besides its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ._dialect import HEARTBEAT_ONLY, Dialect
from ._events import StreamEvent, TextDelta
from ._ndjson import NDJSONDecoder
from ._sse import SSEDecoder

__all__ = ["Sink", "StreamReader", "TextSink"]

Sink = Callable[[Sequence[StreamEvent]], None]
TextSink = Callable[[str], None]


class StreamReader:
    """Feeds one attempt's chunks through a framing decoder and `dialect` to the sinks.

    Args:
        dialect: The attempt's own dialect instance (it holds per-attempt parse state).
        sink: Gets each content frame's events (a heartbeat-only frame never reaches it).
        on_text: Gets the text of each event the fast path read straight from the bytes
            (default: ``sink([TextDelta(text)])``); never called with "".
        on_heartbeat: Called for each keep-alive frame (the wire tests record them).
        max_event_bytes: Largest event (SSE) or line (NDJSON) accepted; past it, `feed` raises
            WireError, as does every later call.
        last_event_id: Where this attempt resumes from ("" for a fresh stream).

    Attributes:
        events: Content frames delivered so far (heartbeats and comments do not count).
        last_event_id: The id of the last delivered event, or the dialect's own `cursor()`
            when it has one (resumable dialects only; others keep the initial value).
        finished: True once the dialect saw the stream's end marker.

    ```py
    reader = StreamReader(NativeDialect(), sink=events.extend)
    for chunk in chunks:
        reader.feed(chunk)
    reader.eof()
    assert reader.finished
    ```
    """

    __slots__ = (
        "_cursor",
        "_data_only",
        "_decoder",
        "_dialect",
        "_on_heartbeat",
        "_on_text",
        "_parse",
        "_sink",
        "_text_of",
        "_track_ids",
        "events",
        "finished",
        "last_event_id",
    )

    def __init__(
        self,
        dialect: Dialect,
        sink: Sink,
        on_text: TextSink | None = None,
        *,
        on_heartbeat: Callable[[], None] | None = None,
        max_event_bytes: int = 1 << 20,
        last_event_id: str = "",
    ) -> None:
        self._dialect = dialect
        self._decoder: SSEDecoder | NDJSONDecoder
        self._data_only: Callable[[bytes], bytes | None] | None = None
        if dialect.framing == "sse":
            sse = SSEDecoder(max_event_bytes=max_event_bytes, last_event_id=last_event_id)
            self._decoder, self._data_only = sse, sse.data_only
        else:
            self._decoder = NDJSONDecoder(max_line_bytes=max_event_bytes)
        self._parse = dialect.parse
        self._text_of = dialect.text_of
        self._sink = sink
        self._on_text = on_text if on_text is not None else _text_to(sink)
        self._on_heartbeat = on_heartbeat
        self._track_ids = dialect.resumable
        # A dialect with a cursor of its own (Responses' sequence numbers) says where a resume
        # starts; other resumable dialects resume from the SSE id of the last event.
        self._cursor: Callable[[], str | None] | None = getattr(dialect, "cursor", None)
        self.events = 0
        self.last_event_id = last_event_id
        self.finished = False

    def feed(self, chunk: bytes) -> int:
        """Decode `chunk` and deliver its events; return how many content frames it held.

        Raises:
            WireError: An event or line exceeded `max_event_bytes` (now or earlier).
            Whatever a sink raises (the stream's own error event, say), after counting the
            frame that carried it.
        """
        data_only = self._data_only
        if data_only is not None and (data := data_only(chunk)) is not None:
            text = self._text_of(data)
            if text is not None:  # the hot path: one plain text event, no frame built
                self.events += 1
                if text:
                    self._on_text(text)
                if self._track_ids and (event_id := self._decoder.last_event_id):
                    self.last_event_id = event_id
                return 1
        frames = self._decoder.feed(chunk)
        if not frames:
            return 0
        parse, sink, cursor = self._parse, self._sink, self._cursor
        delivered = 0
        for frame in frames:
            events = parse(frame)
            if events is HEARTBEAT_ONLY:
                if self._on_heartbeat is not None:
                    self._on_heartbeat()
                continue
            delivered += 1
            self.events += 1
            if events:
                sink(events)
            if self._track_ids:
                frame_id = frame.id if cursor is None else cursor()
                if frame_id:
                    self.last_event_id = frame_id
        self.finished = self._dialect.finished
        return delivered

    def eof(self) -> None:
        """The body ended: deliver what the framing releases at the end (never counted as
        events), then settle `finished`. A stream that is still not finished was cut."""
        for frame in self._decoder.eof():
            events = self._parse(frame)
            if events is HEARTBEAT_ONLY:
                if self._on_heartbeat is not None:
                    self._on_heartbeat()
            elif events:
                self._sink(events)
        self.finished = self._dialect.finished


def _text_to(sink: Sink) -> TextSink:
    def on_text(text: str) -> None:
        sink([TextDelta(text)])

    return on_text
