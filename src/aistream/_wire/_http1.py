"""HTTP/1.1 responses from bytes: the head, and the body's framing; and requests to bytes
(sans-I/O, no sockets).

`_connection` feeds it what a socket delivers. Written for our own pools' hot path: per token,
a server's one-chunk SSE event must cost a few hundred nanoseconds here (h11, which httpcore
uses, spends several microseconds walking its state machine for the same chunk; the profile
is in benchmarks/README.md). It parses what RFC 9112 asks a client to accept and refuses the
rest with `FramingError` (bounded head and chunk lines, one Content-Length, hex chunk sizes).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_HEAD", "Body", "FramingError", "Head", "Request", "RequestError", "parse_head"]

#: Longest response head accepted (h11's default limit is 16 KiB; gateways send more cookies).
MAX_HEAD: Final = 64 * 1024
_MAX_LINE: Final = 4096  # a chunk-size line or one trailer line

# HTTP/1.2 and later minors read as 1.1 (RFC 9112 §2.3); status codes start at 100
_STATUS = re.compile(rb"HTTP/1\.([0-9]) ([1-9][0-9]{2})(?: ([^\r\n]*))?")
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_CTL = re.compile(rb"[\x00\r\n]")


class FramingError(Exception):
    """The peer broke HTTP/1.1: a malformed head, length or chunk."""


class RequestError(ValueError):
    """A request that cannot go on the wire as it is (a caller's mistake, not the peer's)."""


class Head:
    """A parsed response head."""

    __slots__ = ("headers", "http10", "keep_alive", "reason", "status")

    def __init__(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], http10: bool
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.http10 = http10
        self.keep_alive = not http10 and not any(
            n.lower() == b"connection" and b"close" in v.lower() for n, v in headers
        )


def parse_head(buf: bytes | bytearray) -> tuple[Head, int] | None:
    """The head at the start of `buf` and the bytes it took, or None while it is incomplete.

    Raises FramingError for a malformed head or one longer than MAX_HEAD.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise FramingError(f"the response head is longer than {MAX_HEAD} bytes")
        return None
    if end > MAX_HEAD:
        raise FramingError(f"the response head is longer than {MAX_HEAD} bytes")
    lines = bytes(buf[:end]).split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise FramingError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _NAME.fullmatch(name) is None:
            raise FramingError(f"malformed header line: {line[:80]!r}")  # also obs-fold
        value = value.strip(b" \t")
        if b"\n" in value or b"\r" in value or b"\0" in value:
            raise FramingError(f"a control character in header {name.decode()!r}")
        headers.append((name, value))
    head = Head(int(status[2]), status[3] or b"", headers, status[1] == b"0")
    return head, end + 4


class Body:
    """One response body's framing: `feed` takes socket bytes and returns the body's bytes.

    Three kinds (RFC 9112 §6.3): ``chunked``, a Content-Length, or until the connection closes
    (`length` None and not chunked). `done` turns True at the body's end; `excess` says bytes
    followed it (the connection cannot be reused then).
    """

    __slots__ = ("_buf", "_chunked", "_left", "_state", "done", "excess")

    # chunked states
    _SIZE, _DATA, _CRLF, _TRAILER = 0, 1, 2, 3

    def __init__(self, *, chunked: bool, length: int | None) -> None:
        self._chunked = chunked
        self._left = length if length is not None else -1  # -1: until close
        self._state = self._SIZE
        self._buf = b""
        self.done = not chunked and length == 0
        self.excess = False

    @classmethod
    def of(cls, head: Head, method: bytes) -> Body:
        """The framing `head` announces for a request made with `method`."""
        if method == b"HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
            return cls(chunked=False, length=0)
        codings = [  # empty list elements are ignored (RFC 9110 §5.6.1)
            c.strip().lower()
            for n, v in head.headers
            if n.lower() == b"transfer-encoding"
            for c in v.split(b",")
            if c.strip()
        ]
        if codings:
            return cls(chunked=codings[-1] == b"chunked", length=None)  # else: until close
        lengths = {v for n, v in head.headers if n.lower() == b"content-length"}
        if not lengths:
            return cls(chunked=False, length=None)
        values = {part.strip() for v in lengths for part in v.split(b",")}
        if len(values) != 1:
            raise FramingError(f"conflicting Content-Length values: {sorted(values)!r}")
        (value,) = values
        if not value.isdigit() or len(value) > 18:
            raise FramingError(f"invalid Content-Length: {value[:40]!r}")
        return cls(chunked=False, length=int(value))

    @property
    def until_close(self) -> bool:
        return not self._chunked and self._left < 0

    def feed(self, data: bytes) -> list[bytes]:
        """The body bytes in `data` (possibly none); raises FramingError."""
        if self.done:
            if data:
                self.excess = True
            return []
        if not self._chunked:
            left = self._left
            if left < 0:
                return [data] if data else []
            if len(data) >= left:
                self.done = True
                self.excess = len(data) > left
                self._left = 0
                return [data[:left]] if left else []
            self._left = left - len(data)
            return [data] if data else []
        if self._buf:
            data, self._buf = self._buf + data, b""
        elif not self._state:  # the common case, first: one whole chunk (a server's flush)
            eol = data.find(b"\r\n", 0, 18)
            if eol > 0 and _HEX.fullmatch(data, 0, eol) is not None:
                end = eol + 2 + int(data[:eol], 16)
                if end > eol + 2 and len(data) == end + 2 and data.endswith(b"\r\n"):
                    return [data[eol + 2 : end]]
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == 1:  # _DATA
                take = self._left if self._left < end - pos else end - pos
                out.append(data[pos : pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = 2
            elif state == 0:  # _SIZE
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self._keep(data, pos)
                    break
                field = data[pos:eol]
                if b";" in field:  # chunk extensions: ignored
                    field = field.split(b";", 1)[0].rstrip(b" \t")
                if _HEX.fullmatch(field) is None:
                    raise FramingError(f"invalid chunk size line: {data[pos:eol][:40]!r}")
                size = int(field, 16)
                pos = eol + 2
                if size:
                    self._state, self._left = 1, size
                else:
                    self._state = 3
            elif state == 2:  # _CRLF after a chunk's data
                if end - pos < 2:
                    self._keep(data, pos)
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise FramingError("a chunk's data did not end with CRLF")
                pos += 2
                self._state = 0
            else:  # _TRAILER lines, up to an empty one
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self._keep(data, pos)
                    break
                if eol == pos:
                    self.done = True
                    self.excess = eol + 2 < end
                    break
                pos = eol + 2
        return out

    def _keep(self, data: bytes, pos: int) -> None:
        if len(data) - pos > _MAX_LINE:
            raise FramingError(f"a chunk-size or trailer line longer than {_MAX_LINE} bytes")
        self._buf = data[pos:]

    def eof(self) -> None:
        """The connection closed: fine for a body read until close, else the body was cut."""
        if self.done:
            return
        if self.until_close:
            self.done = True
            return
        if self._chunked:
            raise FramingError(
                "peer closed connection without sending complete message body: incomplete "
                "chunked read"
            )
        raise FramingError(
            f"peer closed connection without sending complete message body: {self._left} "
            "bytes missing"
        )


class Request:
    """One request as bytes: `head`, then each body part through `frame`, then `end`. The body
    is checked against the Content-Length its head declares: bytes past it would reach the
    server as the start of a second request (smuggling)."""

    __slots__ = ("chunked", "head", "length", "sent")

    def __init__(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if _CTL.search(method) or _CTL.search(target) or b" " in target:
            raise RequestError("illegal characters in the request line")
        lines = [method, b" ", target, b" HTTP/1.1\r\n"]
        self.chunked = False
        self.length: int | None = None
        self.sent = 0
        for name, value in headers:
            if _NAME.fullmatch(name) is None or _CTL.search(value):
                raise RequestError(
                    f"illegal header {name[:40]!r}: a header name must be a token, and no "
                    "header may hold CR, LF or NUL"
                )
            lower = name.lower()
            if lower == b"transfer-encoding" and value.lower() == b"chunked":
                self.chunked = True
            elif lower == b"content-length":
                if not value.isdigit() or self.length is not None:
                    raise RequestError(f"invalid Content-Length {value[:40]!r}")
                self.length = int(value)
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)

    def frame(self, part: bytes) -> bytes:
        """`part` of the body as it goes on the wire."""
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(part), part) if part else b""
        self.sent += len(part)
        if self.length is not None and self.sent > self.length:
            raise RequestError(
                f"the request body is longer than its Content-Length ({self.length})"
            )
        return part

    def end(self) -> bytes:
        """What goes on the wire after the last part."""
        if self.chunked:
            return b"0\r\n\r\n"
        if self.length is not None and self.sent != self.length:
            raise RequestError(
                f"the request body is {self.sent} bytes, not its Content-Length ({self.length})"
            )
        return b""
