"""send_sync: from a plain script, and from inside a running event loop (Jupyter)."""

from __future__ import annotations

from typing import Any

from aistream import AIStream
from tests.helpers import stream_handler
from tests.loopback import native_events


def test_send_sync_in_plain_script(threaded_server: Any) -> None:
    url = threaded_server(stream_handler(native_events(["sync", " ok"])))
    chat = AIStream(url + "/api/chat")
    assert chat.send_sync("hi").content == "sync ok"
    assert chat.send_sync("again").content == "sync ok"  # a second loop works too
    assert len(chat.messages) == 4


async def test_send_sync_inside_a_running_loop(threaded_server: Any) -> None:
    url = threaded_server(stream_handler(native_events(["from", " a", " notebook"])))
    chat = AIStream(url + "/api/chat")
    tokens: list[str] = []
    chat.on("token", tokens.append)
    reply = chat.send_sync("hi")  # as in a Jupyter cell: a loop is running in this thread
    assert reply.content == "from a notebook" and tokens == ["from", " a", " notebook"]
