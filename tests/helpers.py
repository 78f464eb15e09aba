"""Helpers for the client tests: an injected sleep, hand-written SSE events, and a loopback
handler that serves events with cuts and resumes. Fixtures built on them are in conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

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


def sse(data: Any, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one SSE event for a hand-written stream."""
    head = (f"event: {event}\n" if event else "") + (f"id: {id}\n" if id else "")
    body = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {body}\n\n".encode()
