"""The loopback SSE server of the client benchmarks: raw asyncio HTTP/1.1, run in a subprocess.

``python -m benchmarks._server`` prints ``PORT <n>`` and serves until terminated. It is built
not to be the bottleneck: bodies are encoded once per (format, length) and cached, an unpaced
reply is written in 256 KiB slices, and there is no framework. Every SSE event is its own HTTP
chunk (``transfer-encoding: chunked``), as real servers flush, so clients pay their HTTP
parser's per-chunk cost exactly as they would against a real model. The parent measures this
process's CPU from ``/proc/<pid>/stat`` (`LoopbackServer.cpu_seconds`) and prints it next to the
client's: it must be far below.

Requests are configured by ``key=value`` path segments in front of the real path, so every
client (httpx, httpx-sse, the openai and anthropic SDKs, AIStream) can be pointed at the same
server with a base URL::

    POST /n=5000/rate=0/v1/chat/completions          5,000 tokens, OpenAI format, unpaced
    POST /n=400/rate=200/sid=a1/v1/chat/completions  paced at 200 tok/s, send stamps kept as "a1"
    POST /n=10/v1/messages                           Anthropic format
    POST /n=10/api/chat                              aistream's native format
    GET  /stamps/a1                                  the send stamps (time.monotonic_ns) of "a1"
    GET  /stats                                      CPU seconds (getrusage), connections

The parameters may also come in the request body as ``bench n=5000 rate=0 sid=a1`` (the
benchmarks put them in the user message, so every client sends the same request to one URL).

A paced reply sends its prologue at once, token i at ``start + i / rate``, and the epilogue
right after the last token. ``phase=0.25`` puts ``start`` on a grid of the token period shared
by every stream, a quarter of a period in: streams given phases i/N tick evenly spread (each
token its own wakeup); without it a stream ticks from its request's arrival. Stamps are taken
just before each token's write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

Format = Literal["openai", "anthropic", "native"]

WORDS = ["Hello", " there", "!", " How", " can", " I", " help", " you", " today", "?"]
PROMPT_TOKENS = 9
_MARKER = re.compile(rb"bench((?: [a-z]+=[\w.-]+)+)")
SLICE = 256 * 1024
HIGH_WATER = 256 * 1024

_OPENAI_HEAD = (
    '{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk",'
    '"created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd",'
)
# The same chunk as benchmarks/decode.py: one content delta, as OpenAI sends it.
_OPENAI_TOKEN = (
    _OPENAI_HEAD
    + '"choices":[{"index":0,"delta":{"content":@},"logprobs":null,"finish_reason":null}]}'
)


def _sse(data: str, event: str | None = None, id: str | None = None) -> bytes:
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    return f"{head}data: {data}\n\n".encode()


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def prologue(fmt: Format) -> list[bytes]:
    """The events before the first token (SSE, not yet chunk-framed)."""
    if fmt == "openai":
        role = '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        return [_sse(_OPENAI_HEAD + role + '"logprobs":null,"finish_reason":null}]}')]
    if fmt == "anthropic":
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_01bench",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
            },
        }
        block: dict[str, object] = {"type": "content_block_start", "index": 0}
        block["content_block"] = {"type": "text", "text": ""}
        return [
            _sse(json.dumps(start, separators=(",", ":")), "message_start"),
            _sse(json.dumps(block, separators=(",", ":")), "content_block_start"),
            _sse('{"type": "ping"}', "ping"),
        ]
    return [_sse('{"id":"bench","model":"bench"}', "start", "bench:0")]


def token(fmt: Format, i: int) -> bytes:
    """Token event i (SSE, not yet chunk-framed)."""
    text = json.dumps(WORDS[i % len(WORDS)])
    if fmt == "openai":
        return _sse(_OPENAI_TOKEN.replace("@", text))
    if fmt == "anthropic":
        data = (
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
            + text
            + "}}"
        )
        return _sse(data, "content_block_delta")
    return _sse(f'{{"token":{text},"index":{i}}}', "token", f"bench:{i + 1}")


def epilogue(fmt: Format, n: int) -> list[bytes]:
    """The events after the last token (SSE, not yet chunk-framed)."""
    total = PROMPT_TOKENS + n
    if fmt == "openai":
        stop = '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}'
        usage = (
            f'"choices":[],"usage":{{"prompt_tokens":{PROMPT_TOKENS},'
            f'"completion_tokens":{n},"total_tokens":{total}}}}}'
        )
        return [_sse(_OPENAI_HEAD + stop), _sse(_OPENAI_HEAD + usage), _sse("[DONE]")]
    if fmt == "anthropic":
        delta = (
            '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
            f'"usage":{{"output_tokens":{n}}}}}'
        )
        return [
            _sse('{"type":"content_block_stop","index":0}', "content_block_stop"),
            _sse(delta, "message_delta"),
            _sse('{"type":"message_stop"}', "message_stop"),
        ]
    usage = (
        f'{{"usage":{{"promptTokens":{PROMPT_TOKENS},"completionTokens":{n},'
        f'"totalTokens":{total}}}}}'
    )
    return [
        _sse(usage, "usage", f"bench:{n + 1}"),
        _sse('{"finishReason":"stop"}', "done", f"bench:{n + 2}"),
    ]


RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
LAST_CHUNK = b"0\r\n\r\n"


class Server:
    """The request handler and its caches."""

    def __init__(self) -> None:
        self.bodies: dict[tuple[Format, int], bytes] = {}
        self.tokens: dict[Format, list[bytes]] = {"openai": [], "anthropic": [], "native": []}
        self.stamps: dict[str, list[int]] = {}
        self.connections = 0  # accepted so far: tells whether clients reuse connections

    def token_chunks(self, fmt: Format, n: int) -> list[bytes]:
        cached = self.tokens[fmt]
        if len(cached) < n:
            cached.extend(_chunk(token(fmt, i)) for i in range(len(cached), n))
        return cached

    def body(self, fmt: Format, n: int) -> bytes:
        """The whole unpaced response (head, chunks, last chunk), encoded once."""
        key = (fmt, n)
        body = self.bodies.get(key)
        if body is None:
            if len(self.bodies) > 64:
                self.bodies.clear()
            parts = [RESPONSE_HEAD, *map(_chunk, prologue(fmt))]
            parts += self.token_chunks(fmt, n)[:n]
            parts += [*map(_chunk, epilogue(fmt, n)), LAST_CHUNK]
            body = self.bodies[key] = b"".join(parts)
        return body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, _, header_block = head.decode("latin-1").partition("\r\n")
                method, path, _ = request_line.split(" ", 2)
                length = 0
                close = False
                for line in header_block.split("\r\n"):
                    name, _, value = line.partition(":")
                    lname = name.strip().lower()
                    if lname == "content-length":
                        length = int(value)
                    elif lname == "connection" and value.strip().lower() == "close":
                        close = True
                body = await reader.readexactly(length) if length else b""
                await self.route(method, path, body, writer)
                if close or writer.transport.is_closing():
                    break
        with contextlib.suppress(Exception):
            writer.close()

    async def route(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        path = path.split("?", 1)[0]
        if path.startswith("/stamps/"):
            stamps = self.stamps.pop(path[len("/stamps/") :], [])
            self.json(writer, stamps)
            return
        if path == "/stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = usage.ru_utime + usage.ru_stime
            self.json(writer, {"cpu": cpu, "connections": self.connections})
            return
        params: dict[str, str] = {}
        segments = path.strip("/").split("/")
        while segments and "=" in segments[0]:
            key, _, value = segments.pop(0).partition("=")
            params[key] = value
        marker = _MARKER.search(body)
        if marker:
            for item in marker.group(1).decode().split():
                key, _, value = item.partition("=")
                params[key] = value
        rest = "/".join(segments)
        fmt: Format
        if rest.endswith("chat/completions"):
            fmt = "openai"
        elif rest.endswith("messages"):
            fmt = "anthropic"
        elif rest.endswith("api/chat"):
            fmt = "native"
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        n = int(params.get("n", "100"))
        rate = float(params.get("rate", "0"))
        if rate <= 0:
            await self.unpaced(writer, fmt, n)
        else:
            phase = float(params["phase"]) if "phase" in params else None
            await self.paced(writer, fmt, n, rate, params.get("sid"), phase)

    def json(self, writer: asyncio.StreamWriter, value: object) -> None:
        body = json.dumps(value).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    async def unpaced(self, writer: asyncio.StreamWriter, fmt: Format, n: int) -> None:
        body = memoryview(self.body(fmt, n))
        for start in range(0, len(body), SLICE):
            writer.write(body[start : start + SLICE])
            await writer.drain()

    async def paced(
        self,
        writer: asyncio.StreamWriter,
        fmt: Format,
        n: int,
        rate: float,
        sid: str | None,
        phase: float | None = None,
    ) -> None:
        transport = writer.transport
        write = writer.write
        write(RESPONSE_HEAD + b"".join(map(_chunk, prologue(fmt))))
        chunks = self.token_chunks(fmt, n)
        stamps: list[int] | None = None
        if sid:
            stamps = self.stamps[sid] = []
        clock = time.monotonic_ns
        start = clock()
        period = 1e9 / rate
        if phase is not None:  # on a grid shared by every stream, at `phase` of the period
            start = (start // int(period) + 1) * int(period) + int(phase % 1.0 * period)
        for i in range(n):
            delay = (start + i * period - clock()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            if transport.is_closing():
                return
            if stamps is not None:
                stamps.append(clock())
            write(chunks[i])
            if transport.get_write_buffer_size() > HIGH_WATER:
                await writer.drain()
        write(b"".join(map(_chunk, epilogue(fmt, n))) + LAST_CHUNK)
        await writer.drain()


async def serve() -> None:
    server = Server()
    tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0, backlog=4096)
    print("PORT", tcp.sockets[0].getsockname()[1], flush=True)
    # Terminated by the parent: exit at once, streams and all (nothing to flush or report).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, os._exit, 0)
    async with tcp:
        await asyncio.Event().wait()


def raise_fd_limit() -> None:
    """Allow a few thousand sockets (the concurrency mode opens 1,000 at once)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:  # the server is infrastructure here: use the faster loop when there is one
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())


# --- the parent's side ------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc/<pid>/stat (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_client() -> None:
    """Pin this process to the first CPU (the server gets the last one) when there are two+."""
    mine = cpus()
    if len(mine) >= 2:
        os.sched_setaffinity(0, {mine[0]})


class LoopbackServer:
    """Runs the server in a subprocess pinned to its own CPU; ``with LoopbackServer() as s:``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.pinned = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, **params: object) -> str:
        """``http://127.0.0.1:<port>/k=v/.../<path>``."""
        prefix = "".join(f"/{k}={v}" for k, v in params.items())
        return f"{self.base}{prefix}/{path.lstrip('/')}"

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return proc_cpu_seconds(self.proc.pid)

    def __enter__(self) -> LoopbackServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        mine = cpus()
        if len(mine) >= 2:
            os.sched_setaffinity(self.proc.pid, {mine[-1]})
            self.pinned = True
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            self.__exit__(None, None, None)
            raise SystemExit("the loopback benchmark server did not start")
        self.port = int(line[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
