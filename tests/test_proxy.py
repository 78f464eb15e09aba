"""FaultProxy: exact pass-through, and each fault (cut, reset, stall, drip, delay) on its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from aistream._proxy import FaultProxy, Faults

PAYLOAD = bytes(range(256)) * 40  # 10 240 response bytes
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
GUARD = 10.0  # seconds: a bound on every wait, never a way to wait


@dataclass
class Target:
    """Raw asyncio servers on 127.0.0.1: one echoes, one answers REQUEST with PAYLOAD."""

    echo_port: int
    payload_port: int
    requests: list[bytes]


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    tasks: set[asyncio.Task[None]] = set()
    requests: list[bytes] = []

    async def serve(
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
            tasks.discard(task)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()

    async def payload(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(PAYLOAD)
        await writer.drain()

    echo_server = await asyncio.start_server(lambda r, w: serve(echo, r, w), "127.0.0.1", 0)
    payload_server = await asyncio.start_server(lambda r, w: serve(payload, r, w), "127.0.0.1", 0)
    try:
        yield Target(
            echo_port=echo_server.sockets[0].getsockname()[1],
            payload_port=payload_server.sockets[0].getsockname()[1],
            requests=requests,
        )
    finally:
        for server in (echo_server, payload_server):
            server.close()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=GUARD)
        for server in (echo_server, payload_server):
            await server.wait_closed()


async def fetch(port: int, request: bytes = REQUEST) -> tuple[bytes, BaseException | None]:
    """Send `request` through 127.0.0.1:`port`; read to EOF. Returns (bytes, error or None)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    error: BaseException | None = None
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(GUARD):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError as exc:
        error = exc
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return bytes(received), error


class Gate:
    """A fake sleep: records each duration and blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.called = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.called.set()
        await self.opened.wait()


async def test_proxy_without_faults_forwards_both_directions_exactly(target: Target) -> None:
    data = os.urandom(300_000)
    async with FaultProxy("127.0.0.1", target.echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(data)
        writer.write_eof()
        async with asyncio.timeout(GUARD):
            echoed = await reader.read(-1)
        writer.close()
        await writer.wait_closed()
    assert echoed == data
    assert (proxy.bytes_up, proxy.bytes_down) == (len(data), len(data))
    assert proxy.connections[0].fault is None
    assert proxy.connections[0].closed


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 4096, len(PAYLOAD) - 1])
async def test_proxy_cut_after_n_delivers_exactly_n_bytes_then_eof(target: Target, n: int) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, cut_after=n) as proxy:
        received, error = await fetch(proxy.port)
    assert error is None
    assert received == PAYLOAD[:n]
    assert proxy.connections[0].fault == "cut"
    assert proxy.connections[0].bytes_down == n


async def test_proxy_cut_after_beyond_the_response_cuts_nothing(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, cut_after=len(PAYLOAD) + 1) as proxy:
        received, _ = await fetch(proxy.port)
    assert received == PAYLOAD
    assert proxy.connections[0].fault is None


async def test_proxy_cut_applies_only_to_the_listed_connection(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, cut_after={1: 900}) as proxy:
        results = [await fetch(proxy.port) for _ in range(3)]
    assert [len(body) for body, _ in results] == [len(PAYLOAD), 900, len(PAYLOAD)]
    assert [c.index for c in proxy.connections] == [0, 1, 2]
    assert [c.fault for c in proxy.connections] == [None, "cut", None]
    assert proxy.bytes_up == 3 * len(REQUEST)
    assert proxy.bytes_down == 2 * len(PAYLOAD) + 900
    assert target.requests == [REQUEST] * 3


async def test_proxy_faults_can_change_between_connections(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port) as proxy:
        first, _ = await fetch(proxy.port)
        proxy.cut_after = {len(proxy.connections): 10}
        second, _ = await fetch(proxy.port)
    assert (len(first), len(second)) == (len(PAYLOAD), 10)


async def test_proxy_plan_decides_faults_per_connection(target: Target) -> None:
    plan = {0: Faults(cut_after=5), 1: Faults()}
    async with FaultProxy("127.0.0.1", target.payload_port, plan=plan.__getitem__) as proxy:
        bodies = [(await fetch(proxy.port))[0] for _ in range(2)]
    assert bodies == [PAYLOAD[:5], PAYLOAD]


async def test_proxy_reset_after_n_resets_the_client_connection(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, reset_after=1000) as proxy:
        received, error = await fetch(proxy.port)
    assert isinstance(error, ConnectionResetError)
    assert received == PAYLOAD[: len(received)]
    assert len(received) <= 1000
    assert proxy.connections[0].fault == "reset"


async def test_proxy_reset_before_cut_wins(target: Target) -> None:
    async with FaultProxy(
        "127.0.0.1", target.payload_port, cut_after=2000, reset_after=10
    ) as proxy:
        _, error = await fetch(proxy.port)
    assert isinstance(error, ConnectionResetError)
    assert proxy.connections[0].bytes_down == 10


async def test_proxy_delay_holds_the_first_byte(target: Target) -> None:
    gate = Gate()
    async with FaultProxy("127.0.0.1", target.payload_port, delay=2.5, sleep=gate) as proxy:
        fetching = asyncio.create_task(fetch(proxy.port))
        async with asyncio.timeout(GUARD):
            await gate.called.wait()
        assert proxy.connections[0].bytes_down == 0
        assert not fetching.done()
        gate.opened.set()
        received, _ = await fetching
    assert gate.calls == [2.5]
    assert received == PAYLOAD


async def test_proxy_stall_holds_the_rest_after_n_bytes(target: Target) -> None:
    gate = Gate()
    async with FaultProxy("127.0.0.1", target.payload_port, stall=(100, 30.0), sleep=gate) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(REQUEST)
        async with asyncio.timeout(GUARD):
            head = await reader.readexactly(100)
            await gate.called.wait()
        assert proxy.connections[0].bytes_down == 100
        gate.opened.set()
        async with asyncio.timeout(GUARD):
            rest = await reader.read(-1)
        writer.close()
        await writer.wait_closed()
    assert gate.calls == [30.0]
    assert head + rest == PAYLOAD


async def test_proxy_drip_writes_one_byte_at_a_time(target: Target) -> None:
    calls: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        await asyncio.sleep(0)

    async with FaultProxy(
        "127.0.0.1", target.payload_port, drip={0: True}, drip_interval=0.001, sleep=fake_sleep
    ) as proxy:
        received, _ = await fetch(proxy.port)
        plain, _ = await fetch(proxy.port)
    assert received == plain == PAYLOAD
    assert calls == [0.001] * len(PAYLOAD)  # one pause per byte, on connection 0 only


async def test_proxy_drip_then_cut_stops_at_n(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, drip=True, cut_after=33) as proxy:
        received, _ = await fetch(proxy.port)
    assert received == PAYLOAD[:33]


async def test_proxy_records_bytes_each_way_when_asked(target: Target) -> None:
    async with FaultProxy("127.0.0.1", target.payload_port, record=True, cut_after=50) as proxy:
        await fetch(proxy.port)
    assert bytes(proxy.connections[0].request) == REQUEST
    assert bytes(proxy.connections[0].response) == PAYLOAD[:50]


async def test_proxy_target_refusing_closes_the_client(target: Target) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with FaultProxy("127.0.0.1", port) as proxy:
        received, _ = await fetch(proxy.port)
    assert received == b""
    assert proxy.connections[0].closed


async def test_proxy_close_ends_open_connections(target: Target) -> None:
    gate = Gate()
    proxy = await FaultProxy("127.0.0.1", target.payload_port, delay=60.0, sleep=gate).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(REQUEST)
    async with asyncio.timeout(GUARD):
        await gate.called.wait()
        await proxy.close()
        assert await reader.read(-1) == b""
    writer.close()
    await writer.wait_closed()
    assert proxy.connections[0].closed
