"""Sans-I/O newline-delimited JSON (Ollama's stream): split lines on bytes, decode each as UTF-8."""

from __future__ import annotations

from typing import ClassVar

from ._events import NDJSONLine, WireError

__all__ = ["NDJSONDecoder"]


class NDJSONDecoder:
    """Turn chunks of an NDJSON stream into `NDJSONLine` values (one per non-blank line).

    Lines end in LF, with one optional CR before it. The text is not parsed as JSON here. Raises
    `WireError` only when one line grows past `max_line_bytes`; after that every call raises.

    Args:
        max_line_bytes: Bound on the bytes of one line.
    """

    __slots__ = ("_buf", "_error", "_max")

    #: Always "": NDJSON has no event ids (the same name as SSEDecoder's, for the reader).
    last_event_id: ClassVar[str] = ""

    def __init__(self, *, max_line_bytes: int = 1 << 20) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()  # the unfinished line
        self._error: str | None = None

    @property
    def mid_event(self) -> bool:
        """True when a non-blank unfinished line is pending."""
        return bool(self._buf.strip())

    def feed(self, data: bytes) -> list[NDJSONLine]:
        """Decode one chunk and return the lines it completed.

        Raises:
            WireError: A line exceeded `max_line_bytes` (now or earlier).
        """
        if self._error is not None:
            raise WireError(self._error)
        lines = data.split(b"\n")
        buf = self._buf
        if len(lines) == 1:  # no line end: the line continues
            buf += data
            if len(buf) > self._max:
                self._fail()
            return []
        if buf:
            buf += lines[0]
            lines[0] = bytes(buf)
            buf.clear()
        tail = lines.pop()
        out: list[NDJSONLine] = []
        limit = self._max
        for line in lines:
            if len(line) > limit:
                self._fail()
            if line.strip():
                if line[-1:] == b"\r":
                    line = line[:-1]
                out.append(NDJSONLine(line.decode("utf-8", "replace")))
        if tail:
            buf += tail
            if len(buf) > limit:
                self._fail()
        return out

    def eof(self) -> list[NDJSONLine]:
        """Signal the end of the stream and return the last line if it had no newline.

        Raises:
            WireError: The decoder already failed.
        """
        if self._error is not None:
            raise WireError(self._error)
        line = bytes(self._buf)
        self._buf.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        return [NDJSONLine(line.decode("utf-8", "replace"))] if line.strip() else []

    def _fail(self) -> None:
        self._error = (
            f"an NDJSON line exceeded {self._max} bytes (max_line_bytes); "
            "the server sent an oversized line or no line breaks"
        )
        self._buf = bytearray()
        raise WireError(self._error)
