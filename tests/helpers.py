"""Helpers for the client tests: an injected sleep, hand-written SSE events, a loopback handler
that serves events with cuts and resumes, and the AIStream tests' token script and event
recorder (test_aistream, test_retry_loop, test_transport, test_stop, test_sync). Fixtures
built on them are in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aistream import AIStream, RetryConfig, RetryEvent
from tests.loopback import Handler, Reply, Request


class RecordingSleep:
    """An injected sleep: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def event_ids(events: list[bytes]) -> list[str | None]:
    """The `id:` of each encoded event (None when it has none)."""
    out: list[str | None] = []
    for ev in events:
        found = None
        for line in ev.decode().split("\n"):
            if line.startswith("id: "):
                found = line[4:]
        out.append(found)
    return out


def stream_handler(
    events: list[bytes],
    *,
    cut_after: dict[int, int] | None = None,
    resumable: bool = True,
    hold_after: int | None = None,
    release: asyncio.Event | None = None,
) -> Handler:
    """Serve `events`; request n is cut after `cut_after[n]` events; resumes from Last-Event-ID.

    With `hold_after`, the first request pauses after that many events until `release` is set.
    """
    ids = event_ids(events)
    count = {"n": 0}

    async def handler(request: Request, reply: Reply) -> None:
        n = count["n"]
        count["n"] += 1
        if request.method == "DELETE":
            await reply.body(204, b"")
            return
        start = 0
        last = request.headers.get("last-event-id")
        if resumable and last and last in ids:
            start = ids.index(last) + 1
        await reply.start()
        limit = (cut_after or {}).get(n)
        for sent, ev in enumerate(events[start:]):
            if limit is not None and sent == limit:
                reply.cut()
                return
            if hold_after is not None and n == 0 and sent == hold_after and release is not None:
                await release.wait()
            await reply.send(ev)
        await reply.end()

    return handler


def refuse(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    """A handler that answers every request with `status` and the JSON `body`."""

    async def handler(request: Request, reply: Reply) -> None:
        await reply.body(status, body, headers)

    return handler


def sse(data: Any, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one SSE event for a hand-written stream."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    body = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {body}\n\n".encode()


# --- a conversation's script and its events (the AIStream tests) -------------------------------

TOKENS = ["Hello", ",", " world", "!", " How", " are", " you", " today", "?"]
TEXT = "".join(TOKENS)
NO_JITTER = RetryConfig(max_retries=3, initial_delay=1.0, max_delay=10.0, jitter=False)


def record(chat: AIStream) -> list[tuple[str, Any]]:
    """Subscribe to every event; returns the list they are appended to."""
    seen: list[tuple[str, Any]] = []
    for name in (
        "message",
        "streaming-start",
        "token",
        "usage",
        "retry",
        "streaming-end",
        "error",
        "reset",
    ):
        chat.on(name, lambda *args, _n=name: seen.append((_n, args[0] if args else None)))
    return seen


def tokens_of(seen: list[tuple[str, Any]]) -> list[str]:
    return [p for n, p in seen if n == "token"]


def retrying_chat(url: str, sleep: RecordingSleep) -> tuple[AIStream, list[RetryEvent]]:
    """An AIStream on `url` that retries on NO_JITTER's schedule through `sleep`, and the list
    its ``retry`` events are appended to."""
    chat = AIStream(url, retry=NO_JITTER, sleep=sleep)
    retries: list[RetryEvent] = []
    chat.on("retry", retries.append)
    return chat, retries
