"""Public names for events and protocols. A leaf module: stdlib only."""

from __future__ import annotations

from typing import Final, Literal

ProtocolName = Literal["native", "openai", "anthropic", "ollama", "responses", "gemini", "auto"]
EventName = Literal[
    "message",
    "streaming-start",
    "token",
    "usage",
    "retry",
    "streaming-end",
    "error",
    "reset",
    "reasoning",
    "tool-call",
    "tool-result",
]
FinishReasonName = Literal["stop", "length", "tool_calls", "content_filter", "stopped", "error"]

EVENT_MESSAGE: Final = "message"
EVENT_STREAMING_START: Final = "streaming-start"
EVENT_TOKEN: Final = "token"
EVENT_USAGE: Final = "usage"
EVENT_RETRY: Final = "retry"
EVENT_STREAMING_END: Final = "streaming-end"
EVENT_ERROR: Final = "error"
EVENT_RESET: Final = "reset"
EVENT_REASONING: Final = "reasoning"
EVENT_TOOL_CALL: Final = "tool-call"
EVENT_TOOL_RESULT: Final = "tool-result"
