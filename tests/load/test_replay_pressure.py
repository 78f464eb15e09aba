"""A client still reading a finished reply must get all of it, even when the replay store is full.

Found by the load test with a small ``replay_max_bytes``: about half of the resuming clients
lost the last token and the `done` event. A finished log is the first thing `MemoryReplayStore`
evicts under byte pressure, but the follower serving it reads the log again after each write,
so a client that is behind (a slow network, a busy server) has its stream ended early: no
`done`, nothing after the eviction point. `AIStream` then retries, gets 404 for the evicted
stream, and restarts the reply (``resume=False``, tokens repeated).

Reproduced here deterministically: reply A is large and its client stops reading, so the
server's socket buffer for A fills up; A's next token is read by its follower, whose send then
waits for the buffer to drain; A finishes; a new stream B evicts A's log; A's client reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from aistream._wire._dialect import ChatRequest
from aistream._wire._events import FinishReason, StreamEvent, TextDelta
from aistream._wire._sse import SSEDecoder
from aistream.server import Limits, create_app
from tests.servers import running

GUARD = 10.0
PIECE = 64 * 1024
BIG = 16 << 20  # far more than loopback socket buffers hold: A's follower blocks in send


class Backend:
    """A reply to "big": BIG bytes of tokens, "almost" at `gate`, " the end" at `tail`.

    Any other request gets a small reply.
    """

    def __init__(self) -> None:
        self.at_gate = asyncio.Event()
        self.gate = asyncio.Event()
        self.tail = asyncio.Event()

    def model_for(self, request: ChatRequest) -> str:
        return "pressure"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if request.messages[-1].content != "big":
            yield TextDelta("small")
            yield FinishReason("stop")
            return
        for _ in range(BIG // PIECE):
            yield TextDelta("x" * PIECE)
        self.at_gate.set()
        await self.gate.wait()
        yield TextDelta("almost")
        await self.tail.wait()
        yield TextDelta(" the end")
        yield FinishReason("stop")


async def wait_finished(app: Any) -> None:
    """Until the app has no live generation (A wrote `done` and its log is finished)."""
    service = app.state.aistream
    while tasks := [live.task for live in service.live.values() if live.task is not None]:
        await asyncio.wait(tasks)


def request(content: str) -> bytes:
    body = json.dumps({"messages": [{"role": "user", "content": content}]}).encode()
    head = (
        "POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def events(body: bytes) -> list[tuple[str, str]]:
    """(event, data) of an HTTP/1.1 chunked SSE response body, however it ended."""
    raw = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0:
            break
        raw += rest[:size]
        body = rest[size + 2 :]
    decoder = SSEDecoder(max_event_bytes=1 << 20)
    return [(e.event, e.data) for e in decoder.feed(raw)]


async def test_a_reader_behind_a_finished_reply_gets_its_end_despite_eviction() -> None:
    backend = Backend()
    app = create_app(
        backend=backend,
        replay_max_bytes=1 << 20,
        limits=Limits(max_reply_chars=None),  # the reply is bigger than the default bound
        heartbeat_interval=None,
        send_timeout=None,
    )
    async with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request("big"))
            await writer.drain()
            received = b""
            async with asyncio.timeout(GUARD):
                while len(received) < 1 << 20:  # A's follower is sending the big part ...
                    received += await reader.read(PIECE)
                await backend.at_gate.wait()
            # ... and this client reads no more for now. The next token ("almost") is read by
            # A's follower, whose send now waits for the full socket buffer to drain.
            backend.gate.set()
            for _ in range(20):
                await asyncio.sleep(0)
            backend.tail.set()  # A ends; B's arrival would need A's finished log evicted
            await asyncio.wait_for(wait_finished(app), GUARD)
            async with httpx.AsyncClient(trust_env=False) as client:
                other = {"messages": [{"role": "user", "content": "b"}]}
                small = await asyncio.wait_for(client.post(url + "/api/chat", json=other), GUARD)
            # A's log is held while its follower sends it: B is refused clearly (the client
            # retries a 503 after Retry-After) rather than A losing its tail.
            assert small.status_code == 503 and "retry-after" in small.headers
            async with asyncio.timeout(GUARD):
                while chunk := await reader.read(1 << 20):
                    received += chunk
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    _, _, body = received.partition(b"\r\n\r\n")
    got = events(body)
    tokens = [json.loads(data)["token"] for name, data in got if name == "token"]
    assert len(tokens) == BIG // PIECE + 2, (
        f"{len(tokens)} tokens, the last {tokens[-1][:20]!r}; end {got[-3:]!r}"[:2000]
    )
    assert tokens[-2:] == ["almost", " the end"]
    assert got[-1] == ("done", '{"finishReason":"stop"}')
