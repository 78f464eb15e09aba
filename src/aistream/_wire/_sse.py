"""Sans-I/O Server-Sent Events: a byte-level decoder and its inverse, `encode_sse`.

The decoder follows the WHATWG "event stream interpretation" algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
lines end in CRLF, LF or CR; the stream is always UTF-8, whatever the declared charset.
Lines are split on bytes, then decoded, so U+2028 and friends inside JSON never split a line.
"""

from __future__ import annotations

import re

from ._events import SSEEvent, WireError

__all__ = ["SSEDecoder", "encode_sse"]

_BOM = b"\xef\xbb\xbf"
_LINE_BREAK = re.compile(r"\r\n?|\n")  # for encoding; never str.splitlines (U+2028 etc.)
_DROP_FROM_EVENT = str.maketrans("", "", "\r\n")
_DROP_FROM_ID = str.maketrans("", "", "\r\n\0")


class SSEDecoder:
    """Turn chunks of an event stream into `SSEEvent` values.

    Feed it bytes exactly as they arrive; it never does I/O, and only raises `WireError` when one
    event (its data plus the unfinished line) grows past `max_event_bytes`. After that every call
    raises again.

    Args:
        max_event_bytes: Bound on the bytes held for one event.
        last_event_id: Initial id buffer, e.g. the id to resume from after a reconnect.
    """

    __slots__ = (
        "_bom",
        "_buf",
        "_cr",
        "_data",
        "_error",
        "_event",
        "_fields",
        "_id",
        "_max",
        "_pre",
        "_retry",
        "_size",
    )

    def __init__(self, *, max_event_bytes: int = 1 << 20, last_event_id: str = "") -> None:
        self._max = max_event_bytes
        self._id = last_event_id
        self._retry: int | None = None
        self._event = ""
        self._data: list[bytes] = []  # values of this event's data lines
        self._size = 0  # bytes of this event's data lines so far, for the limit
        self._fields = False  # a non-data field line was seen since the last blank line
        self._buf = bytearray()  # the unfinished line (or a partial BOM at the start)
        self._bom = True  # still at the start of the stream: a BOM may follow
        self._cr = False  # the last chunk ended in CR: drop an LF that starts the next one
        self._error: str | None = None
        self._pre = True  # _prepare() has work to do: BOM, pending CR or error

    @property
    def last_event_id(self) -> str:
        """The last event id buffer: persists across events, "" when unset or reset."""
        return self._id

    @property
    def retry_ms(self) -> int | None:
        """The last valid ``retry:`` value in milliseconds, or None."""
        return self._retry

    @property
    def mid_event(self) -> bool:
        """True when an unfinished line or an undispatched event is pending.

        At EOF this means the stream was cut mid-event: the transport treats it as a drop.
        """
        return bool(self._buf or self._data or self._fields)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Decode one chunk and return the events it completed.

        Raises:
            WireError: The current event exceeded `max_event_bytes` (now or earlier).
        """
        if self._pre:
            data = self._prepare(data)
        if not data:
            return []
        lines = data.splitlines()  # bytes.splitlines splits on CRLF, LF and CR only
        end = data[-1]
        if end == 10:  # LF
            tail = b""
        elif end == 13:  # CR: an LF starting the next chunk belongs to it
            tail = b""
            self._pre = self._cr = True
        else:
            tail = lines.pop()
        buf = self._buf
        if buf and lines:
            buf += lines[0]
            lines[0] = bytes(buf)
            buf.clear()

        events: list[SSEEvent] = []
        parts = self._data
        size = self._size
        limit = self._max
        for line in lines:
            if not line:  # blank line: dispatch the event
                if parts:
                    value = b"\n".join(parts)
                    parts.clear()
                    events.append(
                        SSEEvent(
                            value.decode("utf-8", "replace"),
                            self._event or "message",
                            self._id or None,
                            self._retry,
                        )
                    )
                if self._fields:
                    self._event = ""
                    self._fields = False
                size = 0
                continue
            if line[:6] == b"data: ":  # the common case
                parts.append(line[6:])
            elif line[:7] == b"event: ":  # the next two: _field's work, minus a call and a split
                if size + len(line) > limit:
                    self._fail()
                self._event = line[7:].decode("utf-8", "replace")
                self._fields = True
                continue
            elif line[:4] == b"id: ":
                if size + len(line) > limit:
                    self._fail()
                if 0 not in line:  # an id with NUL is ignored
                    self._id = line[4:].decode("utf-8", "replace")
                self._fields = True
                continue
            else:
                if size + len(line) > limit:
                    self._fail()
                field_data = self._field(line)
                if field_data is None:
                    continue
                parts.append(field_data)
            size += len(line) + 1
            if size > limit:
                self._fail()
        self._size = size
        if tail:
            buf += tail
            if len(buf) + size > limit:
                self._fail()
        return events

    def data_only(self, chunk: bytes) -> bytes | None:
        """The data of `chunk` when it is exactly one ``data: <value>`` line and a blank line
        with nothing pending, the shape in which model servers flush each token; else None.

        Feeding such a chunk would dispatch one event of the default type, with this data and
        the current `last_event_id` and `retry_ms`, and leave the decoder as it was; so a
        caller that takes the data may skip `feed`. None changes nothing: call `feed`.
        """
        if self._pre or self._buf or self._data or self._fields:
            return None
        end = len(chunk) - 2  # feed counts the line and its LF against the bound, hence >=
        if end < 6 or end >= self._max or chunk[end] != 10 or chunk[end + 1] != 10:
            return None
        if chunk[:6] != b"data: ":
            return None
        value = chunk[6:end]
        if 10 in value or 13 in value:  # LF, CR: more than one line (an int probe is memchr)
            return None
        return value

    def eof(self) -> list[SSEEvent]:
        """Signal the end of the stream.

        Per WHATWG an unterminated event is discarded, so this always returns ``[]``; check
        `mid_event` first to tell a clean end from a cut one.
        """
        if self._error is not None:
            raise WireError(self._error)
        return []

    def _prepare(self, data: bytes) -> bytes:
        """The rare work before splitting: the error state, a leading BOM, a pending CR."""
        if self._error is not None:
            raise WireError(self._error)
        if self._bom:  # one leading BOM, possibly split across chunks, is dropped
            head = bytes(self._buf) + data
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._buf[:] = head  # too short to tell yet
                return b""
            self._bom = False
            self._buf.clear()
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
        if self._cr and data:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]  # the LF of a CRLF split across chunks
        self._pre = self._bom or self._cr
        return data

    def _field(self, line: bytes) -> bytes | None:
        """Apply one non-data field line; return the value when it is a ``data`` field."""
        name, colon, value = line.partition(b":")
        if not name:
            return None  # a comment
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            return value
        self._fields = True
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():  # bytes.isdigit: ASCII digits only
            self._retry = int(value)
        return None

    def _fail(self) -> None:
        self._error = (
            f"an SSE event exceeded {self._max} bytes (max_event_bytes); "
            "the server sent an oversized event or no line breaks"
        )
        self._pre = True
        self._buf = bytearray()
        self._data = []
        raise WireError(self._error)


def encode_sse(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Encode one event (or a comment) so that `SSEDecoder` yields it back.

    Fields come in the order comment, event, id, retry, data; every line of a multi-line
    `data` or `comment` gets its own line. CR and LF are removed from `event` and `id`, and NUL
    from `id` too. The block ends with a blank line.

    Raises:
        ValueError: `retry` is negative.
    """
    out: list[str] = []
    if comment is not None:
        out.extend(f": {line}" if line else ":" for line in _LINE_BREAK.split(comment))
    if event is not None:
        out.append("event: " + event.translate(_DROP_FROM_EVENT))
    if id is not None:
        out.append("id: " + id.translate(_DROP_FROM_ID))
    if retry is not None:
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        out.append(f"retry: {retry}")
    if data is not None:
        out.extend("data: " + line for line in _LINE_BREAK.split(data))
    out.append("\n")
    return "\n".join(out).encode("utf-8")
