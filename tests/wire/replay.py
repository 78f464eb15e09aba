"""Replay recorded streams through a decoder and a dialect, and sum up what they amount to.

Shared by the test_dialect_*.py modules.
"""

from __future__ import annotations

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
from aistream._wire._ndjson import NDJSONDecoder
from aistream._wire._sse import SSEDecoder


def chunked(raw: bytes, size: int | None) -> list[bytes]:
    return [raw] if size is None else [raw[i : i + size] for i in range(0, len(raw), size)]


def replay_through(dialect: Dialect, chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    """Feed `chunks` through a fresh decoder and `dialect`; return the events and `finished`."""
    decoder: SSEDecoder | NDJSONDecoder = (
        SSEDecoder() if dialect.framing == "sse" else NDJSONDecoder()
    )
    events: list[StreamEvent] = []
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            events += dialect.parse(frame)
    for frame in decoder.eof():
        events += dialect.parse(frame)
    return events, dialect.finished


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
        elif isinstance(ev, UsageReport):  # a snapshot: None keeps the previous value
            p, c, _ = out.usage or (0, 0, 0)
            p = p if ev.prompt_tokens is None else ev.prompt_tokens
            c = c if ev.completion_tokens is None else ev.completion_tokens
            out.usage = (p, c, p + c if ev.total_tokens is None else ev.total_tokens)
        elif isinstance(ev, FinishReason):
            out.finish = ev.reason
        elif isinstance(ev, ServerError):
            out.errors.append((ev.message, ev.code, ev.retryable))
        elif isinstance(ev, Skipped):
            out.skipped += 1
        elif isinstance(ev, Heartbeat):
            out.heartbeats += 1
    return out
