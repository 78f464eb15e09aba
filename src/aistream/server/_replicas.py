"""What a replica needs to take over a stream whose producer died. Pure, no I/O.

`progress` reads the frames a dead producer left in the store: how many events and tokens,
the reply text so far, the model, whether it had already ended. The request itself travels in
the store as a native request body (`request_context` / `request_from_context`), the one
format that carries every field of a ChatRequest both ways.

A takeover continues only when the backend promises the continuation is exactly what the
producer would have sent (`Continuable`, which the deterministic demo model is); otherwise the
stream ends with `producer_lost_frame`, an `error` the client retries as a restart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .._wire._dialect import ChatRequest
from .._wire._events import StreamEvent
from .._wire._native import NativeDialect
from .._wire._sse import SSEDecoder, encode_sse
from ._formats import decode_body, parse_native

__all__ = [
    "Continuable",
    "Progress",
    "progress",
    "request_context",
    "request_from_context",
    "store_error_frame",
]

_TERMINAL = frozenset({"done", "error"})


@runtime_checkable
class Continuable(Protocol):
    """A backend that can continue a reply exactly as it would have gone on."""

    def continuation(self, request: ChatRequest, sent: str) -> AsyncIterator[StreamEvent] | None:
        """The rest of the reply after `sent` (its text so far), or None if not exactly known."""
        ...


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a stored stream stands.

    Attributes:
        events: Events stored (the next seq).
        tokens: Token events among them (the next token index).
        text: The reply text so far (the tokens joined).
        model: The model announced by `start`.
        ended: The last event is terminal (`done` / `error`).
        plain: Only start, token and usage events so far (a text reply that can be continued).
    """

    events: int
    tokens: int
    text: str
    model: str | None
    ended: bool
    plain: bool


def progress(frames: list[bytes]) -> Progress:
    """Read the stored frames of one stream (as `NativeEncoder` wrote them)."""
    decoder = SSEDecoder(max_event_bytes=1 << 24)
    tokens: list[str] = []
    model: str | None = None
    ended, plain = False, True
    for frame in frames:
        for event in decoder.feed(frame):
            payload = _object(event.data)
            if event.event == "token":
                token = payload.get("token")
                tokens.append(token if isinstance(token, str) else "")
            elif event.event == "start":
                found = payload.get("model")
                model = found if isinstance(found, str) else None
            elif event.event in _TERMINAL:
                ended = True
            elif event.event != "usage":
                plain = False
    return Progress(len(frames), len(tokens), "".join(tokens), model, ended, plain)


def _object(data: str) -> Mapping[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def request_context(request: ChatRequest) -> bytes:
    """The request as a native body: what the store keeps for a takeover."""
    return NativeDialect().build_request("http://replica/api/chat", request).body


def request_from_context(context: bytes) -> ChatRequest | None:
    """The request back from `request_context`'s bytes; None when there is none or it is bad."""
    if not context:
        return None
    try:
        return parse_native(decode_body(context))
    except Exception:
        return None


def store_error_frame(message: str) -> bytes:
    """The terminal event of a stream whose store went away (no id: nothing to resume)."""
    payload = {
        "error": f"{message}; send the message again",
        "code": "store_unavailable",
        "retryable": True,
    }
    return encode_sse(json.dumps(payload), event="error")
