"""Typed values of the sans-I/O layer: decoded frames and the dialect-neutral stream events.

Stdlib only. Slotted dataclasses; treat them as immutable values and never subclass them.
They are not `frozen=True`: a frozen dataclass costs ~0.8 µs to build against ~0.22 µs for a
plain slotted one (measured on Python 3.11), and two are built for every token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


class WireError(Exception):
    """A fatal decoding problem: a limit was exceeded. The transport maps it to ProtocolError."""


# --- frames: what a decoder produces -------------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    """One dispatched Server-Sent Event (WHATWG semantics).

    `event` is ``"message"`` when the stream named none; `id` is the decoder's last event id at
    dispatch (the id buffer persists across events, as the spec says); `retry` is the last valid
    ``retry:`` value in milliseconds seen so far, or None.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@dataclass(slots=True)
class NDJSONLine:
    """One non-empty line of a newline-delimited JSON stream, decoded as UTF-8 (not yet parsed).

    `id` is always None (NDJSON has no event ids): it lets one bookkeeping path read both
    kinds of frame.
    """

    text: str
    id: ClassVar[None] = None


Frame = SSEEvent | NDJSONLine


# --- stream events: what a dialect produces from a frame -----------------------------------------


@dataclass(slots=True)
class StreamStarted:
    """The server announced the stream (native `start`): its id, for resume and cancel."""

    stream_id: str | None
    model: str | None = None


@dataclass(slots=True)
class TextDelta:
    """A piece of the reply text. `index` is the native token index (for de-duplication)."""

    text: str
    index: int | None = None


@dataclass(slots=True)
class ReasoningDelta:
    """A piece of reasoning / thinking text, never part of the reply text."""

    text: str


@dataclass(slots=True)
class ToolCallDone:
    """A complete tool call: `arguments` is the whole JSON text; `signature` is an opaque token
    the provider wants back with the call (Gemini's ``thoughtSignature``)."""

    id: str
    name: str
    arguments: str
    signature: str | None = None


@dataclass(slots=True)
class UsageReport:
    """The turn's usage so far, as a full snapshot: it replaces earlier reports, never adds.

    A field left None was not reported and keeps its previous value.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def applied_to(self, previous: UsageReport | None) -> UsageReport:
        """The turn's usage once this snapshot arrives after `previous`: the one merge rule of
        the client and of every server output format.

        A field this report leaves None keeps its previous value. The total is the reported
        one, else the sum once both parts are known, else the previous total.
        """
        if previous is None:
            previous = _NO_REPORT
        prompt = previous.prompt_tokens if self.prompt_tokens is None else self.prompt_tokens
        completion = (
            previous.completion_tokens if self.completion_tokens is None else self.completion_tokens
        )
        total = self.total_tokens
        if total is None:
            total = (
                previous.total_tokens
                if prompt is None or completion is None
                else prompt + completion
            )
        return UsageReport(prompt, completion, total)


_NO_REPORT = UsageReport()


@dataclass(slots=True)
class FinishReason:
    """Why generation ended, normalised: stop, length, tool_calls, content_filter, error."""

    reason: str


@dataclass(slots=True)
class Done:
    """The stream's terminal marker: anything that ends without one is a dropped stream."""


@dataclass(slots=True)
class ServerError:
    """The server reported an error inside the stream.

    `retryable` says whether it is transient (overloaded, rate limited, upstream unavailable);
    `retry_after` is a delay in seconds the server asked for (Gemini's ``RetryInfo``, a relayed
    ``Retry-After``), if any. `status` is set by a relay for a failure known before any
    content: the HTTP status the server answers instead of starting a stream.
    """

    message: str
    code: str | None = None
    retryable: bool = False
    body: Any = None
    retry_after: float | None = None
    status: int | None = None


@dataclass(slots=True)
class Metadata:
    """Any other object the server sent alongside the reply (native `metadata`)."""

    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Skipped:
    """A frame that was not understood: logged by the caller, never silently dropped."""

    reason: str
    raw: str


@dataclass(slots=True)
class Heartbeat:
    """A keep-alive that carries no content (Anthropic `ping`); does not reset the stall timer."""


StreamEvent = (
    StreamStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallDone
    | UsageReport
    | FinishReason
    | Done
    | ServerError
    | Metadata
    | Skipped
    | Heartbeat
)
