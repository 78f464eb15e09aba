"""The pools aistream makes for itself: httpx on `AsyncioBackend` (src/aistream/_pool.py).

Every end-to-end test of an `AIStream` without ``client=`` already streams through it (drops,
stalls, resets, resumes, the chaos campaign); these pin what is specific to it: that httpx
really uses it, TLS, flow control, timeouts, and idle connections the server closed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import resource
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx
import pytest
import trustme

from aistream import AIStream, ConnectionLostError, RetryConfig
from aistream._pool import AsyncioBackend, AsyncioTransport, OpenPool, new_client, ssl_context
from tests.helpers import stream_handler
from tests.loopback import LoopbackServer, Reply, Request, openai_events

TOKENS = ["Hello", ",", " TLS", " world", "!"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[LoopbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with LoopbackServer(stream_handler(openai_events(TOKENS)), tls=context) as server:
        yield server


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def backend_of(client: httpx.AsyncClient) -> Any:
    return client._transport._pool._network_backend  # type: ignore[attr-defined]


async def test_new_client_streams_through_the_asyncio_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # exceptions to proxies are not a proxy
    async with new_client(5.0) as client:
        # If httpx stops keeping its pool in `_pool`, this fails: the fast path would be gone.
        assert isinstance(backend_of(client), AsyncioBackend)


async def test_new_client_leaves_an_environment_proxy_to_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with new_client(5.0) as client:
        assert not isinstance(client._transport, AsyncioTransport)  # type: ignore[attr-defined]


UNBOUNDED = httpx.Limits(max_connections=None, max_keepalive_connections=10)


@pytest.mark.parametrize("limits", [httpx.Limits(max_connections=100), UNBOUNDED])
async def test_tls_streams_a_reply_and_refuses_an_untrusted_certificate(
    tls_server: LoopbackServer, ca: trustme.CA, limits: httpx.Limits
) -> None:
    """Through httpcore's pool and through `OpenPool` (no connection limit)."""
    url = tls_server.url + "/v1/chat/completions"
    async with httpx.AsyncClient(transport=AsyncioTransport(trusting(ca), limits)) as client:
        chat = AIStream(url, protocol="openai", client=client)
        reply = await asyncio.wait_for(chat.send("hi"), 10)
        assert reply.content == "".join(TOKENS)
        response = await client.post(url, content=b"{}")  # the same connection, reused
        assert response.status_code == 200 and b"data: [DONE]" in response.content
    assert len({r.headers.get("host") for r in tls_server.requests}) == 1
    untrusting = ssl.create_default_context()  # system CAs only: ours is unknown
    async with httpx.AsyncClient(transport=AsyncioTransport(untrusting, limits)) as client:
        chat = AIStream(url, protocol="openai", client=client, retry=RetryConfig(max_retries=0))
        with pytest.raises(ConnectionLostError, match=r"could not connect.*CERTIFICATE_VERIFY"):
            await asyncio.wait_for(chat.send("hi"), 10)


async def test_a_body_larger_than_the_buffer_pauses_the_socket_and_arrives_whole(
    serve: Any,
) -> None:
    blob = bytes(range(256)) * 4096 * 4  # 4 MiB, in 1 MiB writes

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start(headers={"content-type": "application/octet-stream"})
        for i in range(0, len(blob), 1 << 20):
            await reply.send(blob[i : i + (1 << 20)])
        await reply.end()

    server = await serve(handler)
    paused = []
    async with new_client(10.0) as client, client.stream("GET", server.url + "/blob") as response:
        received = bytearray()
        async for chunk in response.aiter_raw():
            received += chunk
            paused.append(response.extensions["network_stream"]._protocol.paused)
            await asyncio.sleep(0)  # a consumer slower than loopback
    assert bytes(received) == blob
    assert any(paused), "the reader never paused the socket"


async def test_a_silent_server_times_the_read_out(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await asyncio.Event().wait()  # headers, then nothing

    server = await serve(handler)
    async with new_client(0.2) as client, client.stream("GET", server.url) as response:
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()


async def test_a_connection_the_server_closed_while_idle_is_replaced(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(200, {"ok": len(server.requests)})
        reply.close()  # keep-alive on the wire, but the socket closes after the body

    server = await serve(handler)
    async with new_client(5.0) as client:
        for n in range(1, 4):
            response = await client.get(server.url)
            assert response.json() == {"ok": n}
            await asyncio.sleep(0.05)  # bounded: lets the FIN reach the idle connection


async def test_connect_errors_are_httpcore_errors_httpx_maps() -> None:
    backend = AsyncioBackend()
    with socket_closed() as port, pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("127.0.0.1", port, timeout=5)


def socket_closed() -> Any:
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed() -> Any:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield port

    return closed()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_uvloop_streams_through_the_backend_too(ca: trustme.CA, tls: bool) -> None:
    import uvloop

    async def turn() -> str:
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1").configure_cert(context)
        handler = stream_handler(openai_events(TOKENS))
        async with LoopbackServer(handler, tls=context) as server:
            transport = AsyncioTransport(trusting(ca))
            async with httpx.AsyncClient(transport=transport) as client:
                chat = AIStream(
                    server.url + "/v1/chat/completions", protocol="openai", client=client
                )
                reply = await asyncio.wait_for(chat.send("hi"), 10)
                again = await asyncio.wait_for(chat.send("again"), 10)  # a pooled connection
                assert again.content == reply.content
                return reply.content

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(turn()) == "".join(TOKENS)


async def keep_alive(request: Request, reply: Reply) -> None:
    await reply.start()
    for event in openai_events(TOKENS):
        await reply.send(event)
    await reply.end(keep_alive=True)


async def test_conversations_in_one_loop_share_a_pool_until_the_last_one_closes(
    serve: Any,
) -> None:
    server = await serve(keep_alive)
    url = server.url + "/v1/chat/completions"
    first, second = AIStream(url, protocol="openai"), AIStream(url, protocol="openai")
    await asyncio.wait_for(first.send("hi"), 10)
    await asyncio.wait_for(second.send("hi"), 10)  # the first one's warm connection
    assert server.connections == 1
    pool = first._clients.client()
    assert second._clients.client() is pool
    await first.aclose()
    assert not pool.is_closed  # the second conversation still uses it
    await asyncio.wait_for(second.send("again"), 10)
    await second.aclose()
    assert pool.is_closed
    third = AIStream(url, protocol="openai")  # a new pool for whoever comes next
    await asyncio.wait_for(third.send("hi"), 10)
    assert third._clients.client() is not pool
    await third.aclose()


def test_send_sync_closes_the_pool_of_its_own_loop(
    threaded_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aistream._pool as pool_module

    made: list[httpx.AsyncClient] = []

    def recording(timeout: float | None, limits: httpx.Limits) -> httpx.AsyncClient:
        made.append(new_client(timeout, limits))
        return made[-1]

    monkeypatch.setattr(pool_module, "new_client", recording)
    url = threaded_server(keep_alive)
    chat = AIStream(url + "/v1/chat/completions", protocol="openai")
    assert chat.send_sync("hi").content == "".join(TOKENS)
    assert chat.send_sync("again").content == "".join(TOKENS)
    assert len(made) == 2 and all(client.is_closed for client in made)  # one per call's loop


@pytest.fixture
def many_fds() -> Iterator[None]:
    """1,100 descriptors open, so the next sockets get numbers past select()'s 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the descriptor limit ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_pooled_connections_past_descriptor_1023_are_reused(
    serve: Any, many_fds: None
) -> None:
    server = await serve(keep_alive)
    async with AIStream(server.url + "/v1/chat/completions", protocol="openai") as chat:
        for _ in range(3):  # the idle check on a connection with a high descriptor number
            assert (await asyncio.wait_for(chat.send("hi"), 10)).content == "".join(TOKENS)
    assert server.connections == 1


def test_send_sync_inside_a_running_loop_keeps_that_loops_pool(threaded_server: Any) -> None:
    url = threaded_server(keep_alive) + "/v1/chat/completions"

    async def notebook_cell() -> None:
        chat = AIStream(url, protocol="openai")
        await asyncio.wait_for(chat.send("hi"), 10)
        pool = chat._clients.client()
        assert chat.send_sync("again").content == "".join(TOKENS)  # a worker thread's loop
        assert chat._clients.client() is pool and not pool.is_closed
        await chat.aclose()
        assert pool.is_closed  # its only user let go of it

    asyncio.run(notebook_cell())


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # the sockets nobody closed
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_finished_loop_is_not_kept_alive_by_its_pool(threaded_server: Any) -> None:
    import gc

    import aistream._pool as pool_module

    url = threaded_server(keep_alive) + "/v1/chat/completions"

    async def script() -> None:  # no aclose(), as scripts go
        await asyncio.wait_for(AIStream(url, protocol="openai").send("hi"), 10)

    for _ in range(3):
        asyncio.run(script())
    gc.collect()
    assert len(pool_module._shared) == 0


async def test_closing_a_tls_connection_does_not_wait_for_the_peer(
    tls_server: LoopbackServer, ca: trustme.CA
) -> None:
    port = int(tls_server.url.rsplit(":", 1)[1])
    stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
    tls = await stream.start_tls(trusting(ca), server_hostname="127.0.0.1", timeout=5)
    sock = tls.get_extra_info("socket")
    await tls.aclose()
    assert sock.fileno() == -1  # closed now, not after a close_notify exchange (≤ 30 s)


async def test_a_host_name_races_its_addresses_and_an_address_connects_directly(
    serve: Any,
) -> None:
    server = await serve(keep_alive)
    port = int(server.url.rsplit(":", 1)[1])
    # "localhost" may resolve to ::1 first, where nothing listens: the race falls back to IPv4.
    async with new_client(5.0) as client:
        for host in ("localhost", "127.0.0.1"):
            response = await client.post(f"http://{host}:{port}/v1/chat/completions")
            assert response.status_code == 200 and b"[DONE]" in response.content


# --- OpenPool: the pool with no connection limit (the shared pool and the relay's) -----------


def open_client(keep: int = 100) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keep)
    return httpx.AsyncClient(timeout=5.0, transport=AsyncioTransport(ssl_context(), limits))


def pool_of(client: httpx.AsyncClient) -> Any:
    return client._transport._pool  # type: ignore[attr-defined]


async def test_the_shared_pool_is_an_open_pool_and_bounded_ones_stay_httpcores() -> None:
    async with AIStream("http://127.0.0.1:9/v1/chat/completions") as chat:
        shared = chat._clients.client(own_pool=False)
        assert type(pool_of(shared)) is OpenPool
    async with new_client(5.0) as bounded:  # max_connections=100: httpcore's pool queues
        assert type(pool_of(bounded)) is httpcore.AsyncConnectionPool


async def test_open_pool_never_queues_a_request_past_httpcores_default_limit(serve: Any) -> None:
    """150 responses held open at once (httpx's default pool would start 100 and queue 50)."""
    count = 150
    all_in = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        if len(server.requests) == count:
            all_in.set()
        await all_in.wait()  # no response starts before every request has arrived
        await reply.start()
        await reply.send(b"data: x\n\n")
        await reply.end(keep_alive=True)

    server = await serve(handler)
    async with open_client() as client:

        async def one() -> bytes:
            async with client.stream("GET", server.url) as response:
                return await response.aread()

        bodies = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 20)
        assert bodies == [b"data: x\n\n"] * count
        assert server.connections == count
        pool = pool_of(client)
        assert "100 connections, 100 idle" in repr(pool)  # the other 50 closed: over keep-alive


async def test_open_pool_reuses_idle_connections_and_keeps_at_most_its_keepalive(
    serve: Any,
) -> None:
    server = await serve(keep_alive)
    async with open_client(keep=2) as client:

        async def one() -> None:
            async with client.stream("GET", server.url) as response:
                assert b"[DONE]" in await response.aread()

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(5))), 10)
        assert server.connections == 5
        assert len(pool_of(client).connections) == 2  # three closed as they came back
        for _ in range(4):  # one at a time: the warm connection each time
            await asyncio.wait_for(one(), 10)
        assert server.connections == 5


async def test_open_pool_replaces_a_connection_the_server_closed_while_idle(serve: Any) -> None:
    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(200, {"ok": len(server.requests)})
        reply.close()  # keep-alive on the wire, but the socket closes after the body

    server = await serve(handler)
    async with open_client() as client:
        for n in range(1, 4):
            response = await client.get(server.url)
            assert response.json() == {"ok": n}
            await asyncio.sleep(0.05)  # bounded: lets the FIN reach the idle connection
        assert server.connections == 3
        assert len(pool_of(client).connections) <= 1


async def test_open_pool_drops_the_connection_of_a_cancelled_stream_and_closes_all(
    serve: Any,
) -> None:
    started = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(b"data: a\n\n")
        started.set()
        await asyncio.Event().wait()  # the rest never comes

    server = await serve(handler)
    client = open_client()
    pool = pool_of(client)

    async def read() -> None:
        async with client.stream("GET", server.url) as response:
            async for _ in response.aiter_bytes():
                pass

    task = asyncio.create_task(read())
    await asyncio.wait_for(started.wait(), 5)
    assert len(pool.connections) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.connections == []  # mid-body: closed, never handed to the next request
    started.clear()
    held = asyncio.create_task(read())  # a second stream, left open
    await asyncio.wait_for(started.wait(), 5)
    assert server.connections == 2 and len(pool.connections) == 1
    await client.aclose()  # closes every connection, busy ones too
    assert pool.connections == []
    with pytest.raises(httpx.HTTPError):
        await asyncio.wait_for(held, 5)  # its socket was closed under it
