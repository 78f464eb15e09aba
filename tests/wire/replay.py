"""Replay recorded streams through the real reader and a dialect; sum up what they amount to.

Shared by the test_dialect_*.py modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aistream._wire._dialect import Dialect
from aistream._wire._events import (
    FinishReason,
    Heartbeat,
    ReasoningDelta,
    ServerError,
    Skipped,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._reader import StreamReader

#: A chunk size that means "one chunk per event (SSE) or line (NDJSON)", as servers flush.
EVENT = -1


def chunked(raw: bytes, size: int | None) -> list[bytes]:
    if size is None:
        return [raw]
    if size == EVENT:
        parts = re.split(rb"(?<=\n\n)|(?<=\r\n\r\n)" if b"\n\n" in raw else rb"(?<=\n)", raw)
        return [p for p in parts if p]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def replay_through(dialect: Dialect, chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    """Feed `chunks` through the transport's own `StreamReader` (the per-token fast path first,
    then the frames); return the events, heartbeats included, and `finished`."""
    events: list[StreamEvent] = []
    reader = StreamReader(
        dialect,
        events.extend,
        lambda text: events.append(TextDelta(text)),
        on_heartbeat=lambda: events.append(Heartbeat()),
    )
    for chunk in chunks:
        reader.feed(chunk)
    reader.eof()
    return events, reader.finished


@dataclass
class Outcome:
    """What a stream amounts to, as AIStream would assemble it."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    usage: tuple[int, int, int] | None = None
    finish: str | None = None
    finished: bool = True
    errors: list[tuple[str, str | None, bool]] = field(default_factory=list)
    skipped: int = 0
    heartbeats: int = 0


def outcome(events: list[StreamEvent], finished: bool) -> Outcome:
    out = Outcome(finished=finished)
    for ev in events:
        if isinstance(ev, TextDelta):
            out.text += ev.text
        elif isinstance(ev, ReasoningDelta):
            out.reasoning += ev.text
        elif isinstance(ev, ToolCallDone):
            out.tool_calls.append((ev.id, ev.name, ev.arguments))
        elif isinstance(ev, UsageReport):  # a snapshot, merged as AIStream merges it
            merged = ev.applied_to(UsageReport(*(out.usage or (0, 0, 0))))
            out.usage = (
                merged.prompt_tokens or 0,
                merged.completion_tokens or 0,
                merged.total_tokens or 0,
            )
        elif isinstance(ev, FinishReason):
            out.finish = ev.reason
        elif isinstance(ev, ServerError):
            out.errors.append((ev.message, ev.code, ev.retryable))
        elif isinstance(ev, Skipped):
            out.skipped += 1
        elif isinstance(ev, Heartbeat):
            out.heartbeats += 1
    return out
