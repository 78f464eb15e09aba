"""The real client (`AIStream`, native protocol) against `create_app` on real uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

import aistream
from aistream._wire._events import UsageReport
from aistream.server import DemoModel, create_app

from .helpers import GUARD, ScriptedBackend, chat_body, chat_request, guard, native_events


async def test_client_gets_the_demo_reply_and_the_usage_the_server_reported(
    serve_app: Any,
) -> None:
    url = await serve_app(create_app(demo_tokens_per_second=0))
    async with httpx.AsyncClient() as client:
        raw = await client.post(url + "/api/chat", json=chat_body("Hello from the client"))
    reported = next(e for e in native_events(raw.content) if isinstance(e, UsageReport))

    async with aistream.AIStream(url + "/api/chat", protocol="native") as chat:
        tokens: list[str] = []
        chat.on("token", tokens.append)
        reply = await chat.send("Hello from the client")
    assert reply.content == DemoModel().reply(chat_request("Hello from the client"))
    assert tokens == DemoModel().tokens(chat_request("Hello from the client"))
    assert reply.finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        reported.prompt_tokens,
        reported.completion_tokens,
        reported.total_tokens,
    )


async def test_client_stop_mid_stream_makes_the_server_cancel_via_delete(
    serve_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptedBackend()
    url = await serve_app(create_app(backend=backend, heartbeat_interval=None))
    backend.put("one", " two", " three")  # then it waits for more: a long reply in progress
    async with aistream.AIStream(url + "/api/chat", protocol="native", timeout=GUARD) as chat:

        def on_token(token: str) -> None:
            if token == " two":
                chat.stop()

        chat.on("token", on_token)
        with caplog.at_level(logging.INFO, "aistream.server"):
            reply = await guard(chat.send("go"))
            await guard(backend.closed.wait())  # the grace period is 30 s: only DELETE does this
    assert reply.finish_reason == "stopped"
    assert reply.content.startswith("one two")
    assert "cancelled by DELETE" in caplog.text
