"""Answers that are not streams: a whole ``chat.completion``, and the HTTP error of a reply that
failed before it started.

Imports starlette (the JSON responses), `_wire` and `_encoders`. `_formats` reads requests;
this module builds the responses that are not event streams.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.responses import JSONResponse

from .._wire._events import (
    Done,
    FinishReason,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._encoders import UsageTotals

__all__ = ["error_response", "openai_completion", "openai_error"]

log = logging.getLogger("aistream.server")

#: HTTP status for an error that ends a reply before it started, by code; others: 502 when
#: transient, else 400.
_ERROR_STATUS: Final = {
    "rate_limited": 429,
    "upstream_timeout": 504,
    "upstream_unavailable": 503,
    "overloaded_error": 529,
    "upstream_auth": 502,
    "internal_error": 500,
    "upstream_protocol_error": 502,
}


async def openai_completion(
    events: AsyncIterator[StreamEvent], completion_id: str, model: str | None
) -> JSONResponse:
    """A whole ``chat.completion`` object from the reply's events (``"stream": false``).

    An error event becomes an OpenAI error body with an HTTP status by its code (429, 5xx for
    transient failures, 400 for a rejected request).
    """
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    usage = UsageTotals()
    finish: str | None = None
    try:
        async for event in events:
            match event:
                case TextDelta(text=delta):
                    text.append(delta)
                case ReasoningDelta(text=delta):
                    reasoning.append(delta)
                case ToolCallDone():
                    calls.append(
                        {
                            "id": event.id or f"call_{len(calls)}",
                            "type": "function",
                            "function": {"name": event.name, "arguments": event.arguments},
                        }
                    )
                case UsageReport():
                    usage.add(event)
                case FinishReason(reason=reason):
                    finish = reason
                case ServerError():
                    return error_response(event, openai=True)
                case Done():
                    break
    except Exception as exc:
        log.exception("the generation of completion %s failed", completion_id)
        failure = f"the server failed while generating the reply ({type(exc).__name__})"
        return openai_error(failure, "internal_error", False)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    reply["refusal"] = None
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "",
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish or ("tool_calls" if calls else "stop"),
            }
        ],
    }
    if usage.seen:
        completion["usage"] = usage.as_dict("prompt_tokens", "completion_tokens", "total_tokens")
    return JSONResponse(completion)


def openai_error(message: str, code: str, retryable: bool) -> JSONResponse:
    """The OpenAI error body for a failure that ended a reply, with a status by its code."""
    return error_response(ServerError(message, code, retryable), openai=True)


def error_response(err: ServerError, *, openai: bool) -> JSONResponse:
    """The HTTP answer for an error that ends a reply before it started.

    The status is the error's own (a relay sets it: 502 for its key and configuration, the
    upstream's 429 / 503 with ``Retry-After``), else one by code. The body is the native
    ``{"error", "code", "retryable"}``, or with `openai` OpenAI's
    ``{"error": {"message", "type", "param", "code", "retryable"}}``.
    """
    code = err.code or "error"
    status = err.status or _ERROR_STATUS.get(code) or (502 if err.retryable else 400)
    headers = None
    if err.retry_after is not None:
        headers = {"Retry-After": str(max(0, math.ceil(err.retry_after)))}
    if not openai:
        body: dict[str, Any] = {"error": err.message, "code": code, "retryable": err.retryable}
        return JSONResponse(body, status_code=status, headers=headers)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    if status == 429:
        kind = "rate_limit_error"
    error = {
        "message": err.message,
        "type": kind,
        "param": None,
        "code": code,
        "retryable": err.retryable,
    }
    return JSONResponse({"error": error}, status_code=status, headers=headers)
