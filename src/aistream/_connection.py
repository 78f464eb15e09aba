"""One HTTP/1.1 connection of the pools aistream owns, from the socket up.

httpx still builds each request, applies auth, hooks and timeouts, and maps errors; this is the
layer below it that httpcore's connection and h11 were. An asyncio Protocol parses the head
and the body's framing (`_wire._http1`) in `data_received`. Bodies are read two ways:

- **pulled**, as httpx iterates any body (error bodies, the relay, ``aread``);
- **pushed** (`ResponseBody.push`): the Protocol hands each body piece to a callback as it
  arrives, so a token costs no task wakeup, no future and no generator layers. This is how
  `_transport` reads a stream: the floor client of the concurrency benchmark works the same
  way, and the per-token CPU it measures is this path (benchmarks/README.md).

The callback runs in a copy of the reading task's context (contextvars), not in whatever
context the connection was opened in. A callback that raises ends the read with that error.
"""

# ruff: noqa: ASYNC109  (the `timeout` parameters are httpcore's network interface)
from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import select
import socket
import ssl
import time
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, cast

import httpcore
import httpx

from ._wire._http1 import Body, FramingError, Head, Request, RequestError, parse_head

__all__ = [
    "BODY_EXTENSION",
    "HIGH_WATER",
    "LOW_WATER",
    "Connection",
    "ResponseBody",
    "is_ip",
    "loop_clock",
    "readable",
    "shut",
    "wait_on",
    "wake",
]

#: The response extension that holds a `ResponseBody` (httpx hands extensions through).
BODY_EXTENSION = "aistream_body"

HIGH_WATER = 256 * 1024  # bytes buffered for a reader before the socket stops being read
LOW_WATER = 64 * 1024  # where a pulled reader resumes it

_IDLE, _HEAD, _BODY = 0, 1, 2
_Failure = httpcore.NetworkError | httpcore.RemoteProtocolError | httpcore.TimeoutException

#: httpcore's errors as httpx raises them: a pushed read skips httpx's own mapping.
_AS_HTTPX: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.ReadError: httpx.ReadError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


class _Protocol(asyncio.Protocol):
    """The socket's side: parses what arrives and hands it on (see the module docstring)."""

    __slots__ = (
        "_loop",
        "_now",
        "body",
        "ctx",
        "discard",
        "drained",
        "eof",
        "failure",
        "head",
        "head_buf",
        "last",
        "method",
        "paused",
        "pieces",
        "pushed",
        "sink",
        "size",
        "state",
        "transport",
        "unexpected",
        "waiter",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._now = loop_clock(loop)
        self.transport: asyncio.Transport | None = None
        self.state = _IDLE
        self.method = b"GET"
        self.head_buf = bytearray()
        self.head: Head | None = None
        self.body: Body | None = None
        self.pieces: list[bytes] = []
        self.size = 0
        self.paused = False
        self.sink: Callable[[bytes], bool] | None = None
        self.ctx: contextvars.Context | None = None
        self.pushed: asyncio.Future[bool] | None = None
        self.discard = False  # body bytes nobody reads any more (after a push ended early)
        self.last = 0.0  # loop time of the last bytes (a pushed read's timeout)
        self.waiter: asyncio.Future[None] | None = None
        self.failure: _Failure | None = None
        self.eof = False
        self.unexpected = False  # bytes while idle: the connection cannot be reused
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport (uvloop's does not subclass asyncio.Transport: no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.state == _BODY:
            self._body_bytes(data)
        elif self.state == _HEAD:
            self.head_buf += data
            self._parse_head()
        elif data:
            self.unexpected = True

    def _body_bytes(self, data: bytes) -> None:
        body = self.body
        assert body is not None
        try:
            pieces = body.feed(data)
        except FramingError as exc:
            self._fail(httpcore.RemoteProtocolError(str(exc)))
            return
        if pieces and not self.discard:
            sink = self.sink
            if sink is not None:
                self.last = self._now()
                pushed = self.pushed
                assert pushed is not None and self.ctx is not None
                if pushed.done():  # the reader was cancelled meanwhile
                    self._detach()
                else:
                    try:
                        if self.ctx.run(_deliver, sink, pieces):
                            self._detach()
                            _resolve(pushed, True)
                    except Exception as exc:  # the reader's own error: it ends the read
                        self._detach()
                        if not pushed.done():
                            pushed.set_exception(exc)
                        if self.transport is not None:
                            self.transport.pause_reading()
                        return
            else:
                self.pieces.extend(pieces)
                for piece in pieces:
                    self.size += len(piece)
                if self.size > HIGH_WATER and not self.paused and self.transport is not None:
                    self.paused = True
                    self.transport.pause_reading()
                wake(self.waiter)
        if body.done:
            if body.excess:
                self.unexpected = True
            self.state = _IDLE
            _resolve(self.pushed, False)
            wake(self.waiter)

    def _parse_head(self) -> None:
        while True:
            try:
                parsed = parse_head(self.head_buf)
                if parsed is None:
                    return
                head, used = parsed
                rest = bytes(self.head_buf[used:])
                self.head_buf = bytearray(rest)
                if head.status == 101:
                    raise FramingError("the server switched protocols (101), which was not asked")
                if head.status < 200:  # 100 Continue, 103 Early Hints: the answer follows
                    continue
                self.body = Body.of(head, self.method)
            except FramingError as exc:
                self._fail(httpcore.RemoteProtocolError(str(exc)))
                return
            self.head = head
            self.head_buf = bytearray()
            self.state = _BODY
            self._body_bytes(rest)
            wake(self.waiter)
            return

    def eof_received(self) -> bool:
        self._closed(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed(exc)
        wake(self.drained)

    def _closed(self, exc: Exception | None) -> None:
        if self.eof:
            return
        self.eof = True
        if self.state == _HEAD:
            if exc is not None:
                self._fail(httpcore.ReadError(str(exc) or type(exc).__name__))
            else:
                self._fail(
                    httpcore.RemoteProtocolError("Server disconnected without sending a response.")
                )
        elif self.state == _BODY:
            body = self.body
            assert body is not None
            if exc is not None:  # a reset: even a body read until close was cut
                self._fail(httpcore.ReadError(str(exc) or type(exc).__name__))
                return
            try:
                body.eof()
            except FramingError as error:
                self._fail(httpcore.RemoteProtocolError(str(error)))
                return
            self._body_bytes(b"")  # done: wakes the reader

    def _fail(self, error: _Failure) -> None:
        """The response cannot go on: the reader gets `error`, the connection is not reused."""
        if self.failure is None:
            self.failure = error
        self.unexpected = True
        self.state = _IDLE
        pushed = self.pushed
        self._detach()
        if pushed is not None and not pushed.done():
            pushed.set_exception(_AS_HTTPX.get(type(error), httpx.TransportError)(str(error)))
        wake(self.waiter)
        if self.transport is not None:
            self.transport.abort()

    def take(self) -> list[bytes]:
        """The buffered body pieces, handed over; reading resumes if it paused for them."""
        pieces, self.pieces, self.size = self.pieces, [], 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return pieces

    def _detach(self) -> None:
        self.sink = None
        self.ctx = None
        self.discard = True

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        wake(self.drained)


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """`loop.time`, or the clock it reads when it is asyncio's own (a Python call less per
    token); a loop with its own time (a test's virtual clock, uvloop) keeps its method."""
    own = getattr(type(loop), "time", None)
    return time.monotonic if own is asyncio.BaseEventLoop.time else loop.time


def _deliver(sink: Callable[[bytes], bool], pieces: list[bytes]) -> bool:
    for piece in pieces:  # noqa: SIM110  (any() over a generator: a frame more per token)
        if sink(piece):
            return True
    return False


def wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _resolve(future: asyncio.Future[bool] | None, value: bool) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def shut(transport: asyncio.Transport) -> None:
    """Close a connection we give up on. Abort, not close, for TLS (no close_notify wait: up
    to 30 s for a silent peer) and for unsent bytes (a peer that never reads would hold the
    socket open)."""
    if transport.get_extra_info("ssl_object") is not None or transport.get_write_buffer_size():
        transport.abort()
    elif not transport.is_closing():
        transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def wait_on(p: object, slot: str, seconds: float | None, on_timeout: type[Exception]) -> None:
    """Park on a future in `p`'s attribute `slot` until a protocol callback wakes it (`wake`),
    raising `on_timeout` after `seconds`: one future and one timer, no task."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    setattr(p, slot, waiter)
    timer = loop.call_later(seconds, _expire, waiter) if seconds is not None else None
    try:
        await waiter
    except TimeoutError:
        raise on_timeout(f"nothing happened for {seconds:g} s") from None
    finally:
        setattr(p, slot, None)
        if timer is not None:
            timer.cancel()


class ResponseBody:
    """A response's body: iterated by httpx (pulled), or pushed to a callback (`push`)."""

    __slots__ = ("_closed", "_connection", "_p", "_read_timeout")

    def __init__(self, connection: Connection, p: _Protocol, read_timeout: float | None) -> None:
        self._connection = connection
        self._p = p
        self._read_timeout = read_timeout
        self._closed = False

    async def __aiter__(self) -> Any:
        p = self._p
        while True:
            if p.pieces:
                pieces = p.take()
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                continue
            if p.failure is not None:
                raise p.failure
            body = p.body
            if body is None or body.done:
                return
            await wait_on(p, "waiter", self._read_timeout, httpcore.ReadTimeout)

    @property
    def clock(self) -> Callable[[], float]:
        """The loop's clock, cheapest form (`loop_clock`)."""
        return self._p._now

    async def push(self, sink: Callable[[bytes], bool]) -> bool:
        """Hand each body piece to `sink` as it arrives, until the body ends (False) or `sink`
        returns True (True: the rest of the body is left unread). Raises httpx's errors for
        the connection (ReadTimeout after `timeout`'s silence, ReadError,
        RemoteProtocolError), and whatever `sink` raised."""
        p = self._p
        loop = asyncio.get_running_loop()
        pieces = p.take()  # what came with the head
        if pieces and _deliver(sink, pieces):
            p.discard = True
            return True
        if p.failure is not None:
            raise _AS_HTTPX.get(type(p.failure), httpx.TransportError)(str(p.failure))
        if p.body is None or p.body.done:
            return False
        pushed: asyncio.Future[bool] = loop.create_future()
        p.pushed, p.sink, p.ctx, p.last = pushed, sink, contextvars.copy_context(), loop.time()
        timer = _Silence(loop, p, self._read_timeout) if self._read_timeout is not None else None
        try:
            return await pushed
        finally:
            p.pushed = None
            if p.sink is not None:  # cancelled: nobody reads the rest
                p._detach()
            if timer is not None:
                timer.close()

    async def drain(self, seconds: float) -> None:
        """Wait at most `seconds` for the rest of a body nobody reads (its last chunk marker),
        so the connection can be reused; the connection is closed instead when it does not
        come."""
        p = self._p
        p.discard = True
        p.take()
        body = p.body
        if body is None or body.done or p.failure is not None:
            return
        try:
            async with asyncio.timeout(seconds):
                while not body.done and p.failure is None:
                    await wait_on(p, "waiter", None, httpcore.ReadTimeout)
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._connection._response_closed()


class _Silence:
    """A pushed read's `timeout`: one timer, re-armed lazily from the last bytes' time."""

    __slots__ = ("_handle", "_limit", "_loop", "_p")

    def __init__(self, loop: asyncio.AbstractEventLoop, p: _Protocol, limit: float) -> None:
        self._loop, self._p, self._limit = loop, p, limit
        self._handle = loop.call_at(p.last + limit, self._check)

    def _check(self) -> None:
        due = self._p.last + self._limit
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self._p._fail(httpcore.ReadTimeout(f"nothing happened for {self._limit:g} s"))

    def close(self) -> None:
        self._handle.cancel()


def _smuggled(head: Head) -> bool:
    """Transfer-Encoding and Content-Length both: the body follows Transfer-Encoding, and the
    connection is closed after it (RFC 9112 §6.3), since a proxy on the way may have read it
    the other way."""
    names = {n.lower() for n, _ in head.headers}
    return b"transfer-encoding" in names and b"content-length" in names


class Connection(httpcore.AsyncConnectionInterface):
    """One HTTP/1.1 connection to `origin`, one request at a time, kept alive between them."""

    def __init__(
        self,
        origin: httpcore.Origin,
        *,
        ssl_context: ssl.SSLContext | None,
        keepalive_expiry: float | None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> None:
        self._origin = origin
        self._ssl_context = ssl_context
        self._keepalive_expiry = keepalive_expiry
        self._local_address = local_address
        self._socket_options = socket_options
        self._p: _Protocol | None = None
        self._busy = False
        self._closed = False
        self._reusable = False
        self._expire_at: float | None = None
        self._requests = 0

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._busy or self._closed:
            raise httpcore.ConnectionNotAvailable()
        self._busy = True
        self._reusable = False
        timeouts = request.extensions.get("timeout", {})
        try:
            p = self._p
            if p is None:
                p = self._p = await self._connect(request, timeouts.get("connect"))
            elif p.eof or p.unexpected or p.transport is None or p.transport.is_closing():
                raise httpcore.ConnectionNotAvailable()  # closed while idle: take another
            self._requests += 1
            p.method = request.method
            p.state, p.head, p.body, p.failure, p.discard = _HEAD, None, None, None, False
            await self._send(p, request, timeouts.get("write"))
            read = timeouts.get("read")
            while p.head is None:
                if p.failure is not None:
                    raise p.failure
                await wait_on(p, "waiter", read, httpcore.ReadTimeout)
            head = p.head
        except BaseException:
            self._close()
            raise
        self._reusable = (
            head.keep_alive
            and not p.unexpected  # the server answered before the request was sent
            and not _smuggled(head)
            and self._connection_header_allows(request)
        )
        body = ResponseBody(self, p, read)
        return httpcore.Response(
            status=head.status,
            headers=head.headers,
            content=body,
            extensions={
                "http_version": b"HTTP/1.0" if head.http10 else b"HTTP/1.1",
                "reason_phrase": head.reason,
                BODY_EXTENSION: body,  # httpx passes extensions on: `_transport` pushes it
            },
        )

    @staticmethod
    def _connection_header_allows(request: httpcore.Request) -> bool:
        return not any(
            n.lower() == b"connection" and b"close" in v.lower() for n, v in request.headers
        )

    async def _connect(self, request: httpcore.Request, timeout: float | None) -> _Protocol:
        loop = asyncio.get_running_loop()
        origin = self._origin
        host = origin.host.decode("ascii")
        options: dict[str, Any] = {}
        if self._local_address:
            options["local_addr"] = (self._local_address, 0)
        if not is_ip(host) and isinstance(loop, asyncio.BaseEventLoop):  # (not uvloop)
            # As anyio: race a host name's addresses, so a dead IPv6 route falls back to IPv4.
            # Not for an address: the race's tasks cost ~5 KB per connection at connect time.
            options["happy_eyeballs_delay"] = 0.25
        if origin.scheme == b"https":
            context = self._ssl_context or httpx.create_ssl_context()
            options["ssl"] = context
            sni = request.extensions.get("sni_hostname")
            options["server_hostname"] = sni.decode() if isinstance(sni, bytes) else sni or host
            options["ssl_handshake_timeout"] = timeout or None  # None: asyncio's 60 s
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(loop), host, origin.port, **options
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{origin.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:  # certificate errors included
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock = transport.get_extra_info("socket")
            for option in self._socket_options or ():
                sock.setsockopt(*option)
        except OSError as exc:
            transport.abort()
            raise httpcore.ConnectError(f"could not set a socket option: {exc}") from exc
        return protocol

    async def _send(self, p: _Protocol, request: httpcore.Request, timeout: float | None) -> None:
        try:
            wire = Request(request.method, request.url.target, request.headers)
            await self._write(p, wire.head, timeout)
            async for part in cast(AsyncIterable[bytes], request.stream):  # httpx's are async
                if not await self._write(p, wire.frame(part), timeout):
                    return  # the server answered already: read that answer
            await self._write(p, wire.end(), timeout)
        except RequestError as exc:
            raise httpcore.LocalProtocolError(str(exc)) from None

    @staticmethod
    async def _write(p: _Protocol, data: bytes, timeout: float | None) -> bool:
        """Send `data`; False when the server has already answered (an early 413), so the
        caller stops sending and reads that answer (the connection is not reused then)."""
        if p.failure is not None:
            raise p.failure
        if p.head is not None:
            p.unexpected = True
            return False
        if not data:
            return True
        transport = p.transport
        if transport is None or transport.is_closing():
            if p.failure is not None:
                raise p.failure  # the server already answered and closed
            raise httpcore.WriteError("the connection is closed")
        transport.write(data)
        if p.write_paused:
            await wait_on(p, "drained", timeout, httpcore.WriteTimeout)
        return True

    async def _response_closed(self) -> None:
        """The response was closed: keep the connection when its body was read to the end."""
        p = self._p
        if (
            p is not None
            and self._reusable
            and p.state == _IDLE
            and p.failure is None
            and not p.unexpected
            and not p.eof
            and p.body is not None
            and p.body.done
        ):
            p.body = p.head = None
            p.take()  # a body that came whole but was not read: not the next reply's
            self._busy = False
            if self._keepalive_expiry is not None:
                self._expire_at = asyncio.get_running_loop().time() + self._keepalive_expiry
            return
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._busy = False
        if self._p is not None and self._p.transport is not None:
            shut(self._p.transport)

    async def aclose(self) -> None:
        self._close()
        await asyncio.sleep(0)  # let the loop release the socket now

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self._origin

    def is_available(self) -> bool:
        return not self._busy and not self._closed

    def has_expired(self) -> bool:
        if self._closed:
            return True
        if self._busy or self._p is None:
            return False
        p = self._p
        if p.eof or p.unexpected or p.transport is None or p.transport.is_closing():
            return True
        if self._expire_at is not None and asyncio.get_running_loop().time() > self._expire_at:
            return True
        return readable(p.transport.get_extra_info("socket"))  # a FIN not yet delivered

    def is_idle(self) -> bool:
        return self._p is not None and not self._busy and not self._closed

    def is_closed(self) -> bool:
        return self._closed

    def info(self) -> str:
        state = "CLOSED" if self._closed else "ACTIVE" if self._busy else "IDLE"
        return f"HTTP/1.1, {state}, Request Count: {self._requests}"

    def __repr__(self) -> str:
        origin = self._origin
        where = f"{origin.scheme.decode()}://{origin.host.decode()}:{origin.port}"
        return f"<Connection [{where}, {self.info()}]>"


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def readable(sock: socket.socket | None) -> bool:
    """Whether the kernel holds data or a FIN the loop has not delivered yet. poll, not select:
    select() refuses descriptors past 1023, which a process with 1,000 streams has."""
    if sock is None or sock.fileno() < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    found, _, _ = select.select([sock], [], [], 0)  # Windows: no poll, and no such limit
    return bool(found)
