"""FaultProxy: a TCP proxy on loopback that breaks connections on purpose. Imports stdlib only.

Used by ``aistream demo`` and by tests to drop, reset, stall or slow a stream between a client
and a server. Faults apply to the response direction (target -> client) and are counted in
response bytes, per connection; each option takes one value for every connection or a mapping
from connection index (0 = the first connection accepted) to a value.

```py
async with FaultProxy("127.0.0.1", 8000, cut_after={0: 900}) as proxy:
    url = f"http://127.0.0.1:{proxy.port}/api/chat"   # connection 0 is cut after 900 bytes
    ...
print(proxy.connections[0].fault)                      # "cut"
```
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

__all__ = ["ConnectionStats", "FaultProxy", "Faults"]

_T = TypeVar("_T")
#: One value for every connection, or {connection index: value}; None: no fault.
PerConnection: TypeAlias = _T | Mapping[int, _T] | None
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Faults:
    """The faults applied to one connection's response bytes.

    Attributes:
        cut_after: Close both sides (FIN) once this many response bytes were forwarded.
        reset_after: Reset the client side (RST, SO_LINGER 0) after this many response bytes.
        stall: ``(after_bytes, seconds)``: hold the response for `seconds` once `after_bytes`
            were forwarded.
        drip: Forward the response one byte per write.
        delay: Hold the first response byte for this many seconds.
    """

    cut_after: int | None = None
    reset_after: int | None = None
    stall: tuple[int, float] | None = None
    drip: bool = False
    delay: float = 0.0


@dataclass(slots=True)
class ConnectionStats:
    """What happened on one proxied connection.

    Attributes:
        index: 0 for the first connection accepted, then 1, 2, ...
        bytes_up: Request bytes forwarded (client -> target).
        bytes_down: Response bytes forwarded (target -> client).
        fault: "cut" or "reset" when that fault fired, else None.
        closed: True once both sides are closed.
        request, response: The bytes forwarded each way (only with ``record=True``).
    """

    index: int
    bytes_up: int = 0
    bytes_down: int = 0
    fault: str | None = None
    closed: bool = False
    request: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)


def _pick(option: PerConnection[_T], index: int) -> _T | None:
    if isinstance(option, Mapping):
        return option.get(index)
    return option


class FaultProxy:
    """A fault-injecting TCP proxy to `target_host`:`target_port`; an async context manager.

    Args:
        target_host, target_port: Where connections are forwarded.
        host, port: Where the proxy listens (default 127.0.0.1, a free port).
        cut_after, reset_after, stall, drip, delay: Faults (see `Faults`), each one value for
            every connection or ``{connection index: value}``. They are read when a connection
            is accepted, so they may be changed between connections.
        plan: Instead of the options above, a function from connection index to `Faults`.
        drip_interval: Seconds between dripped bytes (0: just yield to the event loop).
        record: Keep the bytes forwarded each way in `connections[i].request` / `.response`.
        sleep: Awaitable sleep used for delay, stall and drip (injected in tests).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cut_after: PerConnection[int] = None,
        reset_after: PerConnection[int] = None,
        stall: PerConnection[tuple[int, float]] = None,
        drip: PerConnection[bool] = None,
        delay: PerConnection[float] = None,
        plan: Callable[[int], Faults] | None = None,
        drip_interval: float = 0.0,
        record: bool = False,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.host, self._port = host, port
        self.cut_after, self.reset_after, self.stall = cut_after, reset_after, stall
        self.drip, self.delay = drip, delay
        self.plan = plan
        self.drip_interval = drip_interval
        self.record = record
        self._sleep = sleep
        self.connections: list[ConnectionStats] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- public ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started)."""
        return self._port

    @property
    def bytes_up(self) -> int:
        """Request bytes forwarded over all connections."""
        return sum(c.bytes_up for c in self.connections)

    @property
    def bytes_down(self) -> int:
        """Response bytes forwarded over all connections."""
        return sum(c.bytes_down for c in self.connections)

    def faults_for(self, index: int) -> Faults:
        """The faults for connection `index`."""
        if self.plan is not None:
            return self.plan(index)
        return Faults(
            cut_after=_pick(self.cut_after, index),
            reset_after=_pick(self.reset_after, index),
            stall=_pick(self.stall, index),
            drip=bool(_pick(self.drip, index)),
            delay=_pick(self.delay, index) or 0.0,
        )

    async def start(self) -> FaultProxy:
        """Start listening; returns self."""
        self._server = await asyncio.start_server(self._accept, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and close every proxied connection."""
        if self._server is not None:
            self._server.close()
        while pending := {task for task in self._tasks if not task.done()}:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"FaultProxy({self.host}:{self._port} -> {self.target_host}:{self.target_port}, "
            f"connections={len(self.connections)})"
        )

    # --- one connection ----------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = ConnectionStats(index=len(self.connections))
        self.connections.append(stats)
        task = asyncio.create_task(self._handle(reader, writer, stats))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: writer.close())  # also when cancelled before it ran

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: ConnectionStats
    ) -> None:
        faults = self.faults_for(stats.index)
        writer.transport.set_write_buffer_limits(0)  # drain() = bytes handed to the kernel
        upstream: asyncio.StreamWriter | None = None
        pump_up: asyncio.Task[None] | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            upstream.transport.set_write_buffer_limits(0)
            pump_up = asyncio.create_task(self._pump_up(reader, upstream, stats))
            await self._pump_down(up_reader, writer, stats, faults)
        except OSError:
            pass  # the target refused, or the client went away: close both sides below
        finally:
            # Close synchronously first, so a cancel during the waits below leaks nothing.
            if pump_up is not None:
                pump_up.cancel()
            if stats.fault == "reset":
                _reset(writer)
            writer.close()
            waits: list[Awaitable[object]] = [writer.wait_closed()]
            if upstream is not None:
                upstream.close()
                waits.append(upstream.wait_closed())
            if pump_up is not None:
                waits.append(pump_up)
            await asyncio.gather(*waits, return_exceptions=True)
            stats.closed = True

    async def _pump_up(
        self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, stats: ConnectionStats
    ) -> None:
        """Forward the request bytes as they come; pass the client's EOF on."""
        try:
            while chunk := await reader.read(_CHUNK):
                stats.bytes_up += len(chunk)
                if self.record:
                    stats.request += chunk
                upstream.write(chunk)
                await upstream.drain()
            if upstream.can_write_eof():
                upstream.write_eof()
        except OSError:
            upstream.close()  # the client is gone: end the response side too

    async def _pump_down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stats: ConnectionStats,
        faults: Faults,
    ) -> None:
        """Forward the response bytes, applying `faults`, until EOF or a cut/reset."""
        limit, kind = faults.cut_after, "cut"
        if faults.reset_after is not None and (limit is None or faults.reset_after < limit):
            limit, kind = faults.reset_after, "reset"
        first = True
        while chunk := await reader.read(_CHUNK):
            if first:
                first = False
                if faults.delay > 0:
                    await self._sleep(faults.delay)
            if limit is not None:
                chunk = chunk[: max(0, limit - stats.bytes_down)]
            await self._forward(writer, chunk, stats, faults)
            if limit is not None and stats.bytes_down >= limit:
                stats.fault = kind
                return

    async def _forward(
        self, writer: asyncio.StreamWriter, data: bytes, stats: ConnectionStats, faults: Faults
    ) -> None:
        if faults.stall is not None:
            after, seconds = faults.stall
            start = stats.bytes_down
            if start <= after < start + len(data):
                await self._write(writer, data[: after - start], stats, faults.drip)
                await self._sleep(seconds)
                data = data[after - start :]
        await self._write(writer, data, stats, faults.drip)

    async def _write(
        self, writer: asyncio.StreamWriter, data: bytes, stats: ConnectionStats, drip: bool
    ) -> None:
        pieces = [data[i : i + 1] for i in range(len(data))] if drip else [data]
        for piece in pieces:
            if not piece:
                continue
            stats.bytes_down += len(piece)
            if self.record:
                stats.response += piece
            writer.write(piece)
            await writer.drain()
            if drip:
                await self._sleep(self.drip_interval)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close `writer`'s socket with an RST instead of a FIN."""
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
