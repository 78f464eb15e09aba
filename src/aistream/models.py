"""Public pydantic models: Message, Usage, ToolCall, RetryConfig, RetryEvent."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = ["Message", "RetryConfig", "RetryEvent", "ToolCall", "Usage"]


def _new_id() -> str:
    """128 random bits as 32 hex digits (uuid4().hex without UUID's ~2 µs of bookkeeping)."""
    return secrets.token_hex(16)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Usage(BaseModel):
    """Token counts. Accepts the camelCase wire names too (``promptTokens``, …).

    ```py
    Usage(prompt_tokens=5, completion_tokens=2)           # total_tokens is filled in: 7
    Usage.model_validate({"promptTokens": 5, "completionTokens": 2, "totalTokens": 7})
    ```
    """

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, frozen=True
    )

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fill_total(self) -> Usage:
        if self.total_tokens == 0 and (self.prompt_tokens or self.completion_tokens):
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)
        return self

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class ToolCall(BaseModel):
    """A complete tool call requested by the model; `arguments` is the JSON text."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ValueError when the model sent invalid JSON)."""
        return json.loads(self.arguments or "{}")


class Message(BaseModel):
    """One message of the conversation.

    ```py
    reply = await chat.send("Hi")
    reply.role, reply.content, reply.finish_reason, reply.usage
    ```
    """

    id: str = Field(default_factory=_new_id)
    role: Literal["system", "user", "assistant"]
    content: str
    timestamp: datetime = Field(default_factory=_utcnow)
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class RetryConfig(BaseModel):
    """How failed attempts are retried.

    Without jitter attempt n waits ``min(initial_delay * 2**(n-1), max_delay)`` (exponential) or
    ``min(initial_delay * n, max_delay)`` (linear); with jitter that delay is multiplied by a
    factor in [0.75, 1.0]. A server's ``Retry-After`` / ``retry-after-ms`` wins and is never
    jittered.

    ```py
    RetryConfig(max_retries=5, backoff="linear", initial_delay=0.5, max_delay=4.0)
    ```
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=3, ge=0)
    backoff: Literal["exponential", "linear"] = "exponential"
    initial_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=10.0, ge=0)
    jitter: bool = True

    @model_validator(mode="after")
    def _check_delays(self) -> RetryConfig:
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) is smaller than initial_delay "
                f"({self.initial_delay}); set max_delay >= initial_delay"
            )
        return self


class RetryEvent(BaseModel):
    """Payload of the ``retry`` event: a failed attempt will be retried after `delay` seconds.

    `resume` is True when the next attempt continues the same stream (``Last-Event-ID``), so
    nothing is repeated; False when the partial reply was discarded and the reply restarts.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    attempt: int
    delay: float
    error: Exception
    resume: bool
