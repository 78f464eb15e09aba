"""The client variants: what users would pick instead, and AIStream, against the same server.

Every variant streams one reply of ``n`` tokens from the loopback server and calls
``on_token(text)`` once per token (the ceiling, which decodes nothing, once per HTTP chunk),
so a paced run can stamp each token's arrival in the handler. Each returns the number of
tokens it delivered; the caller checks it, so a variant that silently loses events fails.

The request is the same for all: a chat request whose user message carries the server's
parameters (``bench n=5000 rate=0``). Clients are created once per event loop and kept warm
(`Env`), so a run measures streaming, not connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

from aistream import AIStream

Handler = Callable[[str], object]
T = TypeVar("T")
Fmt = Literal["openai", "anthropic", "native"]

HAS_ORJSON = importlib.util.find_spec("orjson") is not None
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
HAS_OPENAI = importlib.util.find_spec("openai") is not None
HAS_ANTHROPIC = importlib.util.find_spec("anthropic") is not None
HAS_HTTPX_SSE = importlib.util.find_spec("httpx_sse") is not None
HAS_HTTPX2 = importlib.util.find_spec("httpx2") is not None
HAS_OTEL_SDK = (
    importlib.util.find_spec("opentelemetry") is not None
    and importlib.util.find_spec("opentelemetry.sdk") is not None
)

PATHS: dict[Fmt, str] = {
    "openai": "v1/chat/completions",
    "anthropic": "v1/messages",
    "native": "api/chat",
}
MODEL = "gpt-4o"


def prompt(n: int, rate: float = 0, sid: str = "") -> str:
    """The user message that tells the server what to stream."""
    return f"bench n={n} rate={rate:g}" + (f" sid={sid}" if sid else "")


def payload(text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass
class Env:
    """Clients for one event loop, created once and kept warm."""

    base: str
    http: httpx.AsyncClient = field(init=False)
    chats: dict[str, AIStream] = field(default_factory=dict)
    sdk: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=60)

    def url(self, fmt: Fmt) -> str:
        return f"{self.base}/{PATHS[fmt]}"

    def chat(
        self, fmt: Fmt, key: str = "", configure: Callable[[AIStream], None] | None = None
    ) -> AIStream:
        """One AIStream per variant, with its own (owned) connection pool, as users make it."""
        key = key or fmt
        chat = self.chats.get(key)
        if chat is None:
            chat = self.chats[key] = AIStream(self.url(fmt), model=MODEL, protocol=fmt)
            if configure is not None:
                configure(chat)
        return chat

    def openai(self) -> Any:
        if "openai" not in self.sdk:
            from openai import AsyncOpenAI

            self.sdk["openai"] = AsyncOpenAI(
                api_key="sk-bench", base_url=f"{self.base}/v1", max_retries=0
            )
        return self.sdk["openai"]

    def anthropic(self) -> Any:
        if "anthropic" not in self.sdk:
            from anthropic import AsyncAnthropic

            self.sdk["anthropic"] = AsyncAnthropic(
                api_key="sk-bench", base_url=self.base, max_retries=0
            )
        return self.sdk["anthropic"]

    async def aclose(self) -> None:
        for chat in self.chats.values():
            await chat.aclose()
        for client in self.sdk.values():
            await client.close()
        await self.http.aclose()


# --- the variants ----------------------------------------------------------------------------


async def httpx_bytes(env: Env, text: str, on_token: Handler | None) -> int:
    """The ceiling: httpx ``aiter_bytes()``, counting bytes only (decodes nothing)."""
    size = 0
    chunks = 0
    async with env.http.stream("POST", env.url("openai"), json=payload(text)) as response:
        if on_token is None:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        else:
            async for _chunk in response.aiter_bytes():
                chunks += 1
                on_token("")
    return chunks


async def httpx_lines(env: Env, text: str, on_token: Handler | None) -> int:
    """httpx ``aiter_lines()``: SSE data lines found, not parsed."""
    count = 0
    async with env.http.stream("POST", env.url("openai"), json=payload(text)) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                count += 1
    return count


def _httpx_sse(loads: Callable[[str], Any], pyee: bool) -> Callable[..., Awaitable[int]]:
    async def run(env: Env, text: str, on_token: Handler | None) -> int:
        """httpx-sse ``aiter_sse()`` + JSON: the loop users write when they skip the SDK."""
        from httpx_sse import aconnect_sse

        handler = on_token or _noop
        emit = handler
        if pyee:
            from pyee.asyncio import AsyncIOEventEmitter

            emitter = AsyncIOEventEmitter()
            emitter.on("token", handler)

            def emit(token: str) -> None:
                emitter.emit("token", token)

        parts: list[str] = []
        usage = None
        async with aconnect_sse(env.http, "POST", env.url("openai"), json=payload(text)) as source:
            async for sse in source.aiter_sse():
                data = sse.data
                if data == "[DONE]":
                    continue  # read to the end: the connection goes back to the pool
                chunk = loads(data)
                choices = chunk.get("choices")
                if choices:
                    token = choices[0]["delta"].get("content")
                    if token:
                        parts.append(token)
                        emit(token)
                elif chunk.get("usage"):
                    usage = chunk["usage"]
        assert usage is not None
        return len(parts)

    return run


def _noop(token: str) -> None:
    pass


async def openai_sdk(env: Env, text: str, on_token: Handler | None) -> int:
    """The openai SDK: ``chat.completions.create(stream=True)``."""
    handler = on_token or _noop
    parts: list[str] = []
    stream = await env.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices:
            token = chunk.choices[0].delta.content
            if token:
                parts.append(token)
                handler(token)
    return len(parts)


async def anthropic_sdk(env: Env, text: str, on_token: Handler | None) -> int:
    """The anthropic SDK: ``messages.create(stream=True)``, Anthropic's own event format."""
    handler = on_token or _noop
    parts: list[str] = []
    stream = await env.anthropic().messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": text}],
        stream=True,
    )
    async for event in stream:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            parts.append(event.delta.text)
            handler(event.delta.text)
    return len(parts)


def _aistream(
    fmt: Fmt, key: str = "", configure: Callable[[AIStream], None] | None = None
) -> Callable[..., Awaitable[int]]:
    async def run(env: Env, text: str, on_token: Handler | None) -> int:
        """AIStream end to end: decode, JSON, history, usage and a token listener."""
        chat = env.chat(fmt, key, configure)
        chat.reset()  # one-turn history: every variant sends the same small request
        count = 0

        def listener(token: str) -> None:
            nonlocal count
            count += 1

        handler = listener if on_token is None else on_token
        chat.on("token", handler)
        try:
            reply = await chat.send(text)
        finally:
            chat.remove_listener("token", handler)
        assert reply.finish_reason == "stop", reply.finish_reason
        if on_token is None:
            return count
        n = int(text.split("n=", 1)[1].split()[0])
        return n if reply.content == expected_text(n) else -1

    return run


def expected_text(n: int) -> str:
    """The reply the server streams for n tokens."""
    from ._server import WORDS

    return "".join(WORDS[i % len(WORDS)] for i in range(n))


@dataclass(frozen=True)
class Variant:
    """One way to stream a reply; `patch` (experimental) wraps each run."""

    name: str
    run: Callable[[Env, str, Handler | None], Awaitable[int]]
    fmt: Fmt = "openai"
    available: bool = True
    experimental: bool = False
    patch: Callable[[], contextlib.AbstractContextManager[None]] | None = None
    ceiling: bool = False
    note: str = ""
    counts_tokens: bool = True  # returns the tokens it delivered (checked by the caller)

    async def __call__(self, env: Env, text: str, on_token: Handler | None) -> int:
        if self.patch is None:
            return await self.run(env, text, on_token)
        with self.patch():
            return await self.run(env, text, on_token)


def _x() -> Any:
    from . import experimental

    return experimental


def _orjson_loads() -> Callable[[str], Any]:
    import orjson

    return orjson.loads


CEILING = Variant("httpx aiter_bytes (ceiling)", httpx_bytes, ceiling=True, counts_tokens=False)
LINES = Variant("httpx aiter_lines", httpx_lines, note="lines only, no JSON", counts_tokens=False)
HTTPX_SSE = Variant("httpx-sse + json", _httpx_sse(json.loads, False), available=HAS_HTTPX_SSE)
HTTPX_SSE_ORJSON = Variant(
    "httpx-sse + orjson",
    _httpx_sse(_orjson_loads() if HAS_ORJSON else json.loads, False),
    available=HAS_HTTPX_SSE and HAS_ORJSON,
)
HTTPX_SSE_PYEE = Variant(
    "httpx-sse + json + pyee emit", _httpx_sse(json.loads, True), available=HAS_HTTPX_SSE
)
OPENAI = Variant("openai SDK stream=True", openai_sdk, available=HAS_OPENAI)
ANTHROPIC = Variant(
    "anthropic SDK", anthropic_sdk, fmt="anthropic", available=HAS_ANTHROPIC, note="own format"
)
AISTREAM = Variant(
    f"AIStream e2e (openai{', orjson' if HAS_ORJSON else ''})",
    _aistream("openai"),
    note="" if HAS_ORJSON else "json",
)
AISTREAM_NATIVE = Variant("AIStream e2e (native)", _aistream("native"), fmt="native")
AISTREAM_ANTHROPIC = Variant(
    "AIStream e2e (anthropic)", _aistream("anthropic"), fmt="anthropic", note="its format"
)
AISTREAM_NO_OTEL = Variant(  # the otel extra absent: the token path must not change
    f"AIStream e2e (openai{', orjson' if HAS_ORJSON else ''}, no otel)",
    _aistream("openai"),
    patch=lambda: _x().without_otel(),
)
AISTREAM_OTEL = Variant(  # traced: a span and metrics per turn
    f"AIStream e2e (openai{', orjson' if HAS_ORJSON else ''}, otel SDK on)",
    _aistream("openai"),
    available=HAS_OTEL_SDK,
    patch=lambda: _x().with_otel(),
)
AISTREAM_JSON = Variant(  # the same without the optional accelerator
    "AIStream e2e (openai, json)",
    _aistream("openai", "json"),
    available=HAS_ORJSON,
    patch=lambda: _x().stdlib_json(),
)


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_kinds(which: str) -> list[tuple[str, LoopFactory]]:
    """The event loops to run on: "asyncio", "uvloop" (when installed) or "both"."""
    kinds: list[tuple[str, LoopFactory]] = []
    if which in ("asyncio", "both"):
        kinds.append(("asyncio", asyncio.new_event_loop))
    if which in ("uvloop", "both") and HAS_UVLOOP:
        import uvloop

        kinds.append(("uvloop", uvloop.new_event_loop))
    return kinds


def rotated(items: Sequence[T], shift: int) -> list[T]:
    """`items` starting at `shift`: no variant always runs first (or right after another)."""
    shift %= max(len(items), 1)
    return [*items[shift:], *items[:shift]]
