"""Typed listeners: mypy knows each event's payload; an unknown name warns; cancel() stops."""

from __future__ import annotations

import asyncio
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

from aistream import AIStream
from aistream._listeners import EVENT_NAMES, closest_event
from tests.helpers import stream_handler
from tests.loopback import Handler, native_events

ROOT = Path(__file__).resolve().parents[1]
URL = "http://127.0.0.1:9/api/chat"


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("tokens", "token"),
        ("done", "streaming-end"),
        ("tool_call", "tool-call"),
        ("Usage", "usage"),
    ],
)
def test_a_listener_for_an_unknown_event_warns_naming_the_closest(name: str, meant: str) -> None:
    chat = AIStream(URL)
    with pytest.warns(UserWarning, match=f"did you mean {meant!r}") as caught:
        chat.on(name, print)  # type: ignore[call-overload]
    assert caught[0].filename == __file__  # points at the caller's line, not at aistream
    assert closest_event(name) == meant


def test_every_contract_event_registers_without_a_warning() -> None:
    chat = AIStream(URL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in sorted(EVENT_NAMES):
            chat.add_listener(name, print)
            chat.once(name, print)  # type: ignore[call-overload]
        chat.on("new_listener", print)  # type: ignore[call-overload]  # pyee's own event
    assert "tool-result" in EVENT_NAMES and len(EVENT_NAMES) == 11


async def test_cancel_stops_the_stream_like_stop(serve: Callable[[Handler], Any]) -> None:
    release = asyncio.Event()
    tokens = ["a", "b", "c", "d", "e", "f"]
    server = await serve(stream_handler(native_events(tokens), hold_after=3, release=release))
    async with AIStream(server.url + "/api/chat") as chat:
        started = asyncio.Event()
        chat.on("token", lambda token: started.set())
        task = asyncio.create_task(chat.send("hi"))
        await asyncio.wait_for(started.wait(), 5)
        chat.cancel()
        reply = await asyncio.wait_for(task, 5)
        release.set()
    assert reply.finish_reason == "stopped" and reply.content == "ab"


SNIPPET = """
from aistream import AIStream, AIStreamError, Message, RetryEvent, ToolCall, ToolResult, Usage

chat = AIStream("http://127.0.0.1:8000/api/chat")
chat.on("token", lambda t: print(t.upper()))
chat.on("usage", lambda u: print(u.total_tokens))
chat.on("retry", lambda e: print(e.attempt, e.resume))
chat.on("error", lambda err: print(err.args))
chat.on("streaming-start", lambda: None)
chat.once("tool-result", lambda r: print(r))

@chat.on("message")
def shown(message: Message) -> None:
    print(message.content)

def tool(call: ToolCall) -> None: ...
chat.on("tool-call", tool)
reveal_type(chat.on("reasoning", print))
chat.on("tokens", lambda t: print(t))                   # E1: no such event
chat.on("usage", lambda u: print(u.total_tokns))        # E2: no such attribute
def wrong(usage: Usage) -> None: ...
chat.on("token", wrong)                                 # E3: a str listener
"""


def test_mypy_knows_each_event_payload_and_rejects_unknown_names(tmp_path: Path) -> None:
    snippet = tmp_path / "typed_user.py"
    snippet.write_text(textwrap.dedent(SNIPPET))
    out, err, status = mypy_api.run(
        ["--strict", "--cache-dir", str(ROOT / ".mypy_cache"), "--no-error-summary", str(snippet)]
    )
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if ": " in line]
    errors = [line for line in lines if line.startswith("error")]
    assert status == 1, out + err
    line_of = {n: i + 1 for i, n in enumerate(textwrap.dedent(SNIPPET).splitlines())}
    flagged = {int(line.split(":")[1]) for line in out.splitlines() if ": error" in line}
    expected = {
        next(i for text, i in line_of.items() if marker in text) for marker in ("E1", "E2", "E3")
    }
    assert flagged == expected, out
    assert len(errors) >= 3
    assert any('"def (str) -> Any"' in line for line in lines if "Revealed type" in line), out
