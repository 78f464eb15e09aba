"""A raw asyncio HTTP/1.1 server on 127.0.0.1 (port 0) whose responses are scripted by a test.

Each request is handed to an async handler with a `Reply` that writes the status line, chunks,
the end of the body, or cuts the connection: exactly the faults a real network produces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    writer: asyncio.StreamWriter
    chunked: bool = True
    started: bool = False
    closed: bool = False
    sent: list[bytes] = field(default_factory=list)

    async def start(
        self, status: int = 200, headers: dict[str, str] | None = None, *, chunked: bool = True
    ) -> None:
        """Send the status line and headers (SSE content type unless told otherwise)."""
        self.chunked = chunked
        hdrs = {"content-type": "text/event-stream", "cache-control": "no-cache"}
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        if chunked:
            hdrs["transfer-encoding"] = "chunked"
        else:
            hdrs["connection"] = "close"
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.writer.write(head.encode() + b"\r\n")
        self.started = True
        await self.writer.drain()

    async def send(self, data: bytes) -> None:
        """Write one body chunk (one HTTP chunk when chunked) and flush it."""
        if not data:
            return
        self.sent.append(data)
        if self.chunked:
            self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        else:
            self.writer.write(data)
        await self.writer.drain()

    async def end(self, *, keep_alive: bool = False) -> None:
        """Finish the body cleanly; close the connection unless `keep_alive`."""
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        if not keep_alive:
            self.close()

    async def body(
        self,
        status: int,
        payload: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        """A complete non-streaming response (errors)."""
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        data = payload.encode() if isinstance(payload, str) else payload
        hdrs = {"content-type": "application/json", "content-length": str(len(data))}
        hdrs.update(headers or {})
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        self.writer.write(head.encode() + b"\r\n" + data)
        await self.writer.drain()
        self.close()

    def cut(self) -> None:
        """Drop the connection mid-body, as a crashed server or a proxy would."""
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


Handler = Callable[[Request, Reply], Awaitable[None]]


class LoopbackServer:
    """Serves `handler` on 127.0.0.1; records every request in `requests`."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls  # serve HTTPS with this server context (a certificate for 127.0.0.1)
        self.requests: list[Request] = []
        self.connections = 0  # accepted so far
        self.request_arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                self.request_arrived.set()
                reply = Reply(writer)
                await self.handler(request, reply)
                if reply.closed:
                    break
                if not reply.started:
                    await reply.body(500, {"error": "handler sent nothing"})
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body)


# --- stream builders ------------------------------------------------------------------------


def native_events(
    tokens: list[str],
    *,
    ids: bool = True,
    stream_id: str = "s1",
    usage: tuple[int, int] | None = (5, 0),
) -> list[bytes]:
    """The native stream for `tokens`: start, token…, usage, done (one bytes item per event)."""
    out: list[bytes] = []
    seq = 0

    def event(name: str, data: dict[str, Any]) -> bytes:
        nonlocal seq
        line_id = f"id: {stream_id}:{seq}\n" if ids else ""
        seq += 1
        return f"event: {name}\n{line_id}data: {json.dumps(data)}\n\n".encode()

    out.append(event("start", {"id": stream_id, "model": "test"}))
    for i, tok in enumerate(tokens):
        out.append(event("token", {"token": tok, "index": i}))
    if usage is not None:
        prompt, _ = usage
        out.append(
            event(
                "usage",
                {
                    "usage": {
                        "promptTokens": prompt,
                        "completionTokens": len(tokens),
                        "totalTokens": prompt + len(tokens),
                    }
                },
            )
        )
    out.append(event("done", {"finishReason": "stop"}))
    return out


def openai_events(tokens: list[str], *, usage: tuple[int, int] | None = (5, 0)) -> list[bytes]:
    """The OpenAI chat-completions stream for `tokens`, ending in a usage chunk and [DONE]."""

    def chunk(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    out = [
        chunk(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
    ]
    for tok in tokens:
        out.append(
            chunk(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": tok}, "finish_reason": None}],
                }
            )
        )
    out.append(chunk({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if usage is not None:
        prompt, _ = usage
        out.append(
            chunk(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": len(tokens),
                        "total_tokens": prompt + len(tokens),
                    },
                }
            )
        )
    out.append(b"data: [DONE]\n\n")
    return out
