"""The connection pools aistream makes for itself: httpx over connections of our own.

httpx reaches sockets through httpcore's anyio backend, which wraps every read in an exception
map, a cancel scope with its own timer and anyio's stream checks; httpcore's connection then
runs h11's state machine over every chunk. At 20 tokens a second on 1,000 streams that was
most of the client's CPU per token (benchmarks/README.md). So the pools aistream owns keep
httpx for everything above HTTP/1.1 (requests, auth, hooks, timeouts, errors) and use:

- `OpenPool` for the pools with no connection limit (the one per event loop that every
  `AIStream` without ``client=`` shares, `acquire_client`, and the server's relay), whose
  connections are our own `_connection.Connection`: an asyncio Protocol that parses HTTP/1.1
  and pushes a stream's body to its reader without a task wakeup per token;
- `AsyncioBackend` under httpcore's own pool and connections for a pool with a limit
  (`new_client` with one): one asyncio Protocol per connection, a timer only when a read waits.

A client passed in is the caller's. With a proxy configured in the environment, httpx's own
transport is used, since httpx builds proxy routes only when it makes its transports itself.
The private names this relies on (httpx's `_pool`, httpcore's ``is_readable`` question) are
pinned in tests/test_dependency_contract.py; should the swap ever fail, one WARNING says so.
"""

# ruff: noqa: ASYNC109  (the `timeout` parameters are httpcore's network interface)
from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import urllib.request
import weakref
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx

from ._connection import (
    HIGH_WATER,
    LOW_WATER,
    Connection,
    is_ip,
    readable,
    shut,
    wait_on,
    wake,
)

__all__ = [
    "UNLIMITED",
    "AsyncioBackend",
    "OpenPool",
    "acquire_client",
    "drop_client",
    "new_client",
    "release_client",
    "ssl_context",
]

log = logging.getLogger("aistream")

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
UNLIMITED = httpx.Limits(  # the shared pool's and the relay's: an `OpenPool`
    max_connections=None, max_keepalive_connections=100, keepalive_expiry=5.0
)


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """One TLS context for every pool we create: building one (loading the CA bundle) costs
    ~50 ms and ~870 KB, which 1,000 conversations would otherwise pay 1,000 times. It offers
    HTTP/1.1 by ALPN, as httpcore does for its connections (ours speak only HTTP/1.1)."""
    context = httpx.create_ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Shared:
    """A loop's pool and how many AIStreams use it. Only a weak reference to the client: the
    client reaches its loop (through its sockets), and a registry value that held it strongly
    would keep a finished loop, and its sockets, alive for good."""

    __slots__ = ("client", "users")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = weakref.ref(client)
        self.users = 0


_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Shared] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()  # send_sync runs loops in worker threads


def acquire_client() -> httpx.AsyncClient:
    """The running loop's shared pool for conversations that brought none; made on first use.

    One pool per loop, not one per conversation: conversations open at the same time reuse each
    other's warm connections (no TCP or TLS handshake), and a thousand of them hold one client,
    not a thousand. No limit on connections, so no conversation ever waits for another's. Pair
    each call with `release_client`; the last release closes the pool.
    """
    loop = asyncio.get_running_loop()
    with _shared_lock:
        entry = _shared.get(loop)
        client = entry.client() if entry is not None else None
        if entry is None or client is None or client.is_closed:
            client = new_client(None, UNLIMITED)  # (users of a collected one are gone)
            entry = _shared[loop] = _Shared(client)
        entry.users += 1
        return client


def drop_client(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> bool:
    """One user of `loop`'s pool fewer; True when it was the last (the pool is then forgotten,
    and it is the caller's to close, from `loop`)."""
    with _shared_lock:
        entry = _shared.get(loop)
        if entry is None or entry.client() is not client:
            return False
        entry.users -= 1
        if entry.users > 0:
            return False
        del _shared[loop]
        return True


async def release_client(loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
    """`drop_client`, closing the pool after its last user when called from `loop`."""
    if drop_client(loop, client) and asyncio.get_running_loop() is loop:
        await client.aclose()


def new_client(timeout: float | None, limits: httpx.Limits = _LIMITS) -> httpx.AsyncClient:
    """An AsyncClient like ``httpx.AsyncClient(timeout=timeout)``, on `AsyncioBackend`."""
    proxies = urllib.request.getproxies()
    if any(scheme != "no" for scheme in proxies):  # HTTP(S)_PROXY and friends: httpx routes them
        return httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, verify=ssl_context(), limits=limits
        )
    return httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, transport=AsyncioTransport(ssl_context(), limits)
    )


class AsyncioTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connection pool built on `AsyncioBackend`."""

    def __init__(self, context: ssl.SSLContext, limits: httpx.Limits = _LIMITS) -> None:
        super().__init__(verify=context, limits=limits)
        # httpx keeps its httpcore pool in `_pool` (since 0.18; tests/test_dependency_contract.py
        # pins it). If that ever changes, this stays httpx's own transport, and says so once.
        # (encode/httpx#3749 would add network_backend= to httpx's transports: then use that.)
        found = getattr(self, "_pool", None)
        if type(found) is httpcore.AsyncConnectionPool:
            pool = OpenPool if limits.max_connections is None else httpcore.AsyncConnectionPool
            self._pool = pool(
                ssl_context=context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                network_backend=AsyncioBackend(),
            )
        else:
            _warn_fallback(found)


_Key = tuple[bytes, bytes, int]  # an origin: scheme, host, port (httpcore's Origin has no hash)


class OpenPool(httpcore.AsyncConnectionPool):
    """httpcore's pool for ``max_connections=None``, at a constant cost per request.

    httpcore's own pool rescans every connection and every queued request whenever a request
    starts or a response ends (`_assign_requests_to_connections`): O(connections) per event,
    O(N²) to open N streams. 5,000 streams took 13.5 s to start and delivered no token in a
    10 s window, the CPU spent in those scans (a py-spy profile in benchmarks/README.md). With
    no limit nothing ever queues, so this pool needs none of that: a request takes its
    origin's most recently used idle connection, or a new one, and a finished response gives
    the connection back. At most ``max_keepalive_connections`` wait idle; a connection that
    expired or that the server closed is dropped when it is next looked at. Each connection is
    our own `Connection` (HTTP/1.1; HTTP/2 is not used by aistream's pools).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keep = kwargs.get("max_keepalive_connections")
        self._all: dict[httpcore.AsyncConnectionInterface, _Key] = {}  # each one's origin
        self._idle: dict[_Key, list[httpcore.AsyncConnectionInterface]] = {}
        self._idle_count = 0

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        return list(self._all)

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        """Our own HTTP/1.1 `Connection` (`_connection`); httpcore's for what it does not do
        (a proxy, HTTP/2, a Unix socket, connect retries)."""
        if self._proxy is not None or self._http2 or self._uds is not None or self._retries:
            return super().create_connection(origin)
        return Connection(
            origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            local_address=self._local_address,
            socket_options=self._socket_options,
        )

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        if url.scheme not in (b"http", b"https"):
            raise httpcore.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme.decode()}://'."
            )
        origin = url.origin
        key = (origin.scheme, origin.host, origin.port)
        while True:
            connection = await self._checkout(key, origin)
            try:
                response = await connection.handle_async_request(request)
            except httpcore.ConnectionNotAvailable:
                await self._drop(connection)  # it closed meanwhile: take another
                continue
            except BaseException:
                await self._checkin(connection)
                raise
            return httpcore.Response(
                status=response.status,
                headers=response.headers,
                content=_Release(cast(Any, response.stream), self, connection),
                extensions=response.extensions,
            )

    async def _checkout(
        self, key: _Key, origin: httpcore.Origin
    ) -> httpcore.AsyncConnectionInterface:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()  # the warmest
            self._idle_count -= 1
            if connection.is_available() and not connection.has_expired():
                return connection
            await self._drop(connection)
        connection = self.create_connection(origin)
        self._all[connection] = key
        return connection

    async def _checkin(self, connection: httpcore.AsyncConnectionInterface) -> None:
        """A connection its request is done with: kept idle, or closed and forgotten."""
        key = self._all.get(connection)
        if key is None:
            return  # the pool was closed meanwhile
        if (
            not connection.is_idle()
            or connection.is_closed()
            or connection.has_expired()
            or (self._keep is not None and self._idle_count >= self._keep)
        ):
            await self._drop(connection)
        else:
            self._idle.setdefault(key, []).append(connection)
            self._idle_count += 1

    async def _drop(self, connection: httpcore.AsyncConnectionInterface) -> None:
        self._all.pop(connection, None)
        await connection.aclose()

    async def aclose(self) -> None:
        connections, self._all = list(self._all), {}
        self._idle.clear()
        self._idle_count = 0
        for connection in connections:
            await connection.aclose()

    def __repr__(self) -> str:
        return f"<OpenPool [{len(self._all)} connections, {self._idle_count} idle]>"


class _Release:
    """A response body that gives its connection back to the `OpenPool` when closed (as
    httpcore's PoolByteStream does for its pool)."""

    __slots__ = ("_closed", "_connection", "_pool", "_stream")

    def __init__(
        self, stream: Any, pool: OpenPool, connection: httpcore.AsyncConnectionInterface
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._connection = connection
        self._closed = False

    async def __aiter__(self) -> Any:
        try:
            async for part in self._stream:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._stream.aclose()
        finally:
            await self._pool._checkin(self._connection)


_fallback_warned = False


def _warn_fallback(found: object) -> None:
    """One WARNING per process: the pool runs on httpx's own transport, off the fast path."""
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    log.warning(
        "httpx %s no longer keeps its connection pool where aistream expects it "
        "(AsyncHTTPTransport._pool is a %s), so streams use httpx's own transport: two to three "
        "times the CPU per token, nothing else changes. Please report it with your httpx "
        "version.",
        httpx.__version__,
        type(found).__name__,
    )


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network interface on asyncio streams' lower layer (transports, protocols)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {"local_addr": (local_address, 0) if local_address else None}
        if not is_ip(host) and isinstance(loop, asyncio.BaseEventLoop):  # (not uvloop)
            # As anyio: race a host name's addresses, so a dead IPv6 route falls back to IPv4.
            # Not for an address: the race's tasks cost ~5 KB per connection at connect time.
            options["happy_eyeballs_delay"] = 0.25
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_Reader, host, port, **options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        try:
            sock = transport.get_extra_info("socket")
            for option in socket_options or ():
                sock.setsockopt(*option)
        except OSError as exc:
            transport.abort()
            raise httpcore.ConnectError(f"could not set a socket option: {exc}") from exc
        return _Stream(protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_unix_connection(_Reader, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting to {path} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Stream(protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Reader(asyncio.Protocol):
    """Buffers what the socket delivers; wakes the one reader waiting; stops reading past
    `HIGH_WATER` until the reader has taken the buffer below `LOW_WATER`."""

    __slots__ = (
        "chunks",
        "drained",
        "eof",
        "error",
        "paused",
        "size",
        "transport",
        "waiter",
        "write_paused",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False  # we paused reading
        self.write_paused = False  # the transport's write buffer is full
        self.drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A read-write transport (uvloop's does not subclass asyncio.Transport: no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        wake(self.waiter)

    def eof_received(self) -> bool:
        self.eof = True
        wake(self.waiter)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        wake(self.waiter)
        wake(self.drained)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        wake(self.drained)


class _Stream(httpcore.AsyncNetworkStream):
    """One connection; httpcore reads and writes it from one task at a time."""

    def __init__(self, protocol: _Reader) -> None:
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        p = self._protocol
        if not p.chunks:
            if not p.eof:  # the common wait: one future, one timer
                await wait_on(p, "waiter", timeout, httpcore.ReadTimeout)
            if not p.chunks:
                if p.error is not None:
                    raise httpcore.ReadError(str(p.error) or type(p.error).__name__)
                return b""  # the peer closed the connection
        chunks = p.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if len(data) > max_bytes:
            chunks.append(data[max_bytes:])
            data = data[:max_bytes]
        p.size -= len(data)
        if p.paused and p.size < LOW_WATER and p.transport is not None:
            p.paused = False
            p.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        p = self._protocol
        if not buffer:
            return
        if p.transport is None or p.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        p.transport.write(buffer)
        if p.write_paused:
            await wait_on(p, "drained", timeout, httpcore.WriteTimeout)
            if p.error is not None:
                raise httpcore.WriteError(str(p.error) or type(p.error).__name__)

    async def aclose(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            shut(transport)
            await asyncio.sleep(0)  # let the loop release the socket now

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        p = self._protocol
        assert p.transport is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                tls = await loop.start_tls(
                    p.transport,
                    p,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=timeout or None,  # None: asyncio's default, 60 s
                )
        except TimeoutError:
            await self.aclose()
            raise httpcore.ConnectTimeout("the TLS handshake timed out") from None
        except (OSError, ssl.SSLError) as exc:  # certificate errors included
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        assert tls is not None
        p.transport = tls
        return _Stream(p)

    def get_extra_info(self, info: str) -> Any:
        transport = self._protocol.transport
        if transport is None:
            return None
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":  # an idle pooled connection the server has closed
            p = self._protocol
            return p.eof or bool(p.chunks) or readable(transport.get_extra_info("socket"))
        return None
