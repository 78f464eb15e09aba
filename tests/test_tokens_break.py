"""`async for ... in chat.tokens(...): break` ends the turn as stop() would, at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aistream import AIStream
from tests.helpers import stream_handler
from tests.loopback import Handler, native_events

TOKENS = ["Hello", ",", " world", "!", " More", " text", "."]


async def held_server(serve: Callable[[Handler], Any]) -> tuple[Any, asyncio.Event]:
    """The first reply pauses after 4 events (start + 3 tokens) until released."""
    release = asyncio.Event()
    server = await serve(stream_handler(native_events(TOKENS), hold_after=4, release=release))
    return server, release


async def test_break_stops_the_turn_and_the_next_send_works_at_once(
    serve: Callable[[Handler], Any],
) -> None:
    server, release = await held_server(serve)
    async with AIStream(server.url + "/api/chat") as chat:
        got: list[str] = []
        async for token in chat.tokens("hi"):
            got.append(token)
            if len(got) == 2:
                break
        reply = await asyncio.wait_for(chat.send("next"), 5)  # no StreamBusyError
        release.set()
    assert got == ["Hello", ","]
    assert reply.content == "".join(TOKENS)
    roles = [(m.role, m.finish_reason) for m in chat.messages]
    assert roles == [
        ("user", None),
        ("assistant", "stopped"),
        ("user", None),
        ("assistant", "stop"),
    ]
    assert chat.messages[1].content.startswith("Hello,")  # the partial reply is kept
    assert any(r.method == "DELETE" for r in server.requests)  # the server was told to cancel


async def test_an_exception_out_of_the_loop_stops_the_turn_too(
    serve: Callable[[Handler], Any],
) -> None:
    server, release = await held_server(serve)
    async with AIStream(server.url + "/api/chat") as chat:
        with pytest.raises(LookupError):
            async for _ in chat.tokens("hi"):
                raise LookupError("the reader failed")
        retried = await asyncio.wait_for(chat.retry(), 5)
        release.set()
    assert retried is not None and retried.content == "".join(TOKENS)
    assert [m.role for m in chat.messages] == ["user", "assistant"]  # retry replaced the stop


async def test_tokens_is_an_async_context_manager_that_stops_on_exit(
    serve: Callable[[Handler], Any],
) -> None:
    server, release = await held_server(serve)
    async with AIStream(server.url + "/api/chat") as chat:
        async with chat.tokens("hi") as tokens:
            assert await anext(tokens) == "Hello"
        assert not chat.is_streaming  # aclose waited for the stopped turn
        release.set()
    assert chat.messages[-1].finish_reason == "stopped"
