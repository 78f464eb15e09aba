"""Readers of the three streamed output formats, shared by the server tests.

`native_reply`, `openai_reply` and `vercel_reply` each read one format independently of the
server's encoders, check its structure (ids, chunk shapes, the ``ai`` package's
``uiMessageChunkSchema``) and return a `Reply` to compare across formats.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aistream._wire._events import (
    Done,
    FinishReason,
    Metadata,
    ReasoningDelta,
    ServerError,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream._wire._native import NativeDialect

from .helpers import frames


@dataclass
class Reply:
    """One reply as a format carried it, normalised for comparison."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    usage: tuple[int | None, int | None, int | None] | None = None
    finish: str | None = None
    error: tuple[str, str | None] | None = None
    ended: bool = False  # the format's terminal marker was seen
    metadata: dict[str, Any] = field(default_factory=dict)


# --- readers: one per format, each checking its structure -------------------------------------


def native_reply(data: bytes) -> Reply:
    """A native stream, read by the client's own dialect (ids checked to be consecutive)."""
    reply = Reply()
    dialect = NativeDialect()
    seqs: list[int] = []
    for frame in frames(data):
        assert frame.id is not None, f"native events carry ids: {frame}"
        seqs.append(int(frame.id.rpartition(":")[2]))
        for event in dialect.parse(frame):
            if isinstance(event, TextDelta):
                reply.text += event.text
            elif isinstance(event, ReasoningDelta):
                reply.reasoning += event.text
            elif isinstance(event, ToolCallDone):
                reply.tool_calls.append((event.id, event.name, json.loads(event.arguments)))
            elif isinstance(event, UsageReport):  # a snapshot: unreported fields are kept
                old = reply.usage or (None, None, None)
                prompt = old[0] if event.prompt_tokens is None else event.prompt_tokens
                completion = old[1] if event.completion_tokens is None else event.completion_tokens
                total = event.total_tokens
                if total is None and prompt is not None and completion is not None:
                    total = prompt + completion
                reply.usage = (prompt, completion, total)
            elif isinstance(event, FinishReason):
                reply.finish = event.reason
            elif isinstance(event, ServerError):
                reply.error = (event.message, event.code)
                reply.ended = True
            elif isinstance(event, Done):
                reply.ended = True
            elif isinstance(event, Metadata):
                reply.metadata.update(event.data)
    assert seqs == list(range(len(seqs))), seqs
    return reply


def sse_data(data: bytes) -> list[str]:
    """The data of each event; asserts there are no ``event:`` or ``id:`` lines."""
    events = frames(data)
    for frame in events:
        assert frame.event == "message" and frame.id is None, frame
    return [frame.data for frame in events]


def openai_reply(data: bytes) -> Reply:
    """OpenAI chunks, read independently of our client (structure per WIRE.md b3)."""
    reply = Reply()
    calls: dict[int, dict[str, Any]] = {}
    head: tuple[Any, ...] | None = None
    payloads = sse_data(data)
    for n, payload in enumerate(payloads):
        assert not reply.ended, "nothing may follow [DONE] or an error"
        if payload == "[DONE]":
            reply.ended = True
            continue
        chunk = json.loads(payload)
        if "error" in chunk:
            error = chunk["error"]
            assert set(error) == {"message", "type", "code", "retryable"}, error
            reply.error = (error["message"], error["code"])
            reply.ended = True
            continue
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int) and chunk["id"].startswith("chatcmpl-")
        this = (chunk["id"], chunk["created"], chunk["model"])
        assert head is None or this == head, "id, created and model are the same in every chunk"
        head = this
        if n == 0:
            assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        if "usage" in chunk:
            assert chunk["choices"] == []
            usage = chunk["usage"]
            reply.usage = (
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                usage.get("total_tokens"),
            )
            continue
        (choice,) = chunk["choices"]
        assert choice["index"] == 0 and "logprobs" in choice
        delta = choice["delta"]
        reply.text += delta.get("content") or ""
        reply.reasoning += delta.get("reasoning_content") or ""
        for call in delta.get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            assert call.get("type", "function") == "function"
            slot["name"] = call["function"].get("name") or slot["name"]
            slot["arguments"] += call["function"].get("arguments") or ""
        if choice["finish_reason"] is not None:
            assert reply.finish is None, "one finish_reason"
            reply.finish = choice["finish_reason"]
    reply.tool_calls = [
        (c["id"], c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())
    ]
    return reply


#: ``uiMessageChunkSchema`` of the ``ai`` package, ported from ai 5.0.0, the oldest reader our
#: output must satisfy (API.md §9): strict objects (until 5.0.217), no ``finish.finishReason``
#: (5.0.92), no ``tool-input-error`` (5.0.7) nor ``preliminary`` (5.0.11). tests/node runs the
#: real packages. type -> (required fields, optional fields), each name -> type.
_META = dict
UI_CHUNK_SCHEMA: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "text-start": ({"id": str}, {"providerMetadata": _META}),
    "text-delta": ({"id": str, "delta": str}, {"providerMetadata": _META}),
    "text-end": ({"id": str}, {"providerMetadata": _META}),
    "error": ({"errorText": str}, {}),
    "tool-input-start": (
        {"toolCallId": str, "toolName": str},
        {"providerExecuted": bool, "dynamic": bool},
    ),
    "tool-input-delta": ({"toolCallId": str, "inputTextDelta": str}, {}),
    "tool-input-available": (
        {"toolCallId": str, "toolName": str, "input": object},
        {"providerExecuted": bool, "providerMetadata": _META, "dynamic": bool},
    ),
    "tool-output-available": (
        {"toolCallId": str, "output": object},
        {"providerExecuted": bool, "dynamic": bool},
    ),
    "tool-output-error": (
        {"toolCallId": str, "errorText": str},
        {"providerExecuted": bool, "dynamic": bool},
    ),
    "reasoning-start": ({"id": str}, {"providerMetadata": _META}),
    "reasoning-delta": ({"id": str, "delta": str}, {"providerMetadata": _META}),
    "reasoning-end": ({"id": str}, {"providerMetadata": _META}),
    "source-url": ({"sourceId": str, "url": str}, {"title": str, "providerMetadata": _META}),
    "source-document": (
        {"sourceId": str, "mediaType": str, "title": str},
        {"filename": str, "providerMetadata": _META},
    ),
    "file": ({"url": str, "mediaType": str}, {"providerMetadata": _META}),
    "start-step": ({}, {}),
    "finish-step": ({}, {}),
    "start": ({}, {"messageId": str, "messageMetadata": object}),
    "finish": ({}, {"messageMetadata": object}),
    "abort": ({}, {}),
    "message-metadata": ({"messageMetadata": object}, {}),
}
UI_FINISH_REASONS = {"stop", "length", "content-filter", "tool-calls", "error", "other", "unknown"}
DATA_PART: tuple[dict[str, Any], dict[str, Any]] = (
    {"data": object},
    {"id": str, "transient": bool},
)


def check_ui_chunk(chunk: Any) -> None:
    """Assert that `chunk` matches the ported ``uiMessageChunkSchema`` (strict)."""
    assert isinstance(chunk, dict) and isinstance(chunk.get("type"), str), chunk
    kind = chunk["type"]
    schema = DATA_PART if kind.startswith("data-") else UI_CHUNK_SCHEMA.get(kind)
    assert schema is not None, f"unknown UI message chunk type {kind!r}"
    required, optional = schema
    for name, expected in required.items():
        assert name in chunk, f"{kind}: {name} is required: {chunk}"
        assert isinstance(chunk[name], expected), f"{kind}.{name} must be {expected}: {chunk}"
    for name, value in chunk.items():
        if name == "type" or name in required:
            continue
        assert name in optional, f"{kind}: {name} is not in the (strict) schema: {chunk}"
        assert isinstance(value, optional[name]), f"{kind}.{name}: {chunk}"
    if kind == "finish" and "finishReason" in (chunk.get("messageMetadata") or {}):
        assert chunk["messageMetadata"]["finishReason"] in UI_FINISH_REASONS, chunk


def vercel_reply(data: bytes) -> Reply:
    """A UI message stream: every chunk checked against the schema and the part state machine
    that ``processUIMessageStream`` relies on (deltas only inside their start/end)."""
    reply = Reply()
    payloads = sse_data(data)
    assert payloads and payloads[-1] == "[DONE]", "the stream ends with data: [DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        check_ui_chunk(chunk)
    kinds = [c["type"] for c in chunks]
    assert kinds[:2] == ["start", "start-step"] and kinds[-2:] == ["finish-step", "finish"], kinds
    assert kinds.count("finish") == 1
    open_parts: dict[str, str] = {}  # id -> "text" | "reasoning"
    seen_ids: set[str] = set()
    for chunk in chunks:
        kind = chunk["type"]
        family, _, phase = kind.rpartition("-")
        if family in ("text", "reasoning"):
            part_id = chunk["id"]
            if phase == "start":
                assert part_id not in seen_ids, f"part ids are unique: {part_id}"
                seen_ids.add(part_id)
                open_parts[part_id] = family
            else:
                assert open_parts.get(part_id) == family, f"{kind} outside its part: {chunk}"
                if phase == "delta":
                    if family == "text":
                        reply.text += chunk["delta"]
                    else:
                        reply.reasoning += chunk["delta"]
                else:
                    del open_parts[part_id]
        elif kind == "tool-input-available":
            reply.tool_calls.append((chunk["toolCallId"], chunk["toolName"], chunk["input"]))
        elif kind in ("message-metadata", "finish", "start"):
            reply.metadata.update(chunk.get("messageMetadata") or {})
            if kind == "finish":
                reply.finish = (chunk.get("messageMetadata") or {}).get("finishReason")
                reply.ended = True
        elif kind == "error":
            reply.error = (chunk["errorText"], None)
    assert not open_parts, f"parts left open: {open_parts}"
    usage = reply.metadata.get("usage")
    if usage is not None:
        reply.usage = (
            usage.get("inputTokens"),
            usage.get("outputTokens"),
            usage.get("totalTokens"),
        )
    return reply


READERS = {"native": native_reply, "openai": openai_reply, "vercel": vercel_reply}
#: Our finish reasons as each format names them.
FINISH_NAMES = {
    "native": {},
    "openai": {},
    "vercel": {"tool_calls": "tool-calls", "content_filter": "content-filter"},
}


def finish_in(fmt: str, reason: str) -> str:
    return FINISH_NAMES[fmt].get(reason, reason)
