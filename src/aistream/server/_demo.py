"""The built-in demo model: deterministic replies, word-sized tokens, real usage, settable pace.

Imports `_wire` and the bundled `_corpus`. No network, no key. The pace uses an injected
`sleep`, so tests run it at any speed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from .._wire._dialect import ChatRequest
from .._wire._events import FinishReason, StreamEvent, TextDelta, UsageReport
from ._corpus import CLOSINGS, OPENINGS, QUESTION_OPENINGS, SENTENCES

__all__ = ["DemoModel"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SNIPPET_WORDS = 8


class DemoModel:
    """A deterministic stand-in for a language model.

    The reply acknowledges the last user message, adds sentences from a bundled corpus about
    streaming and networks, and closes with a word from the user's message; the same
    messages always give the same reply. Tokens are words with their leading space. Usage
    counts the words of the input (prompt) and the tokens emitted (completion).

    Args:
        tokens_per_second: Pace; 0 or None streams as fast as possible.
        model: The model name reported in the `start` event.
        min_tokens, max_tokens: Bounds on the reply length in tokens.
        sleep: Awaitable sleep used for the pace (injected in tests).

    ```py
    demo = DemoModel(tokens_per_second=None)
    async for event in demo.stream(request):   # TextDelta..., UsageReport, FinishReason
        ...
    ```
    """

    def __init__(
        self,
        *,
        tokens_per_second: float | None = 40.0,
        model: str = "demo",
        min_tokens: int = 40,
        max_tokens: int = 80,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if tokens_per_second is not None and tokens_per_second < 0:
            raise ValueError(f"tokens_per_second must be >= 0; got {tokens_per_second}")
        if not 20 <= min_tokens <= max_tokens:
            raise ValueError(
                "the reply needs room for an opening and a closing: use "
                f"20 <= min_tokens <= max_tokens; got {min_tokens} and {max_tokens}"
            )
        self.tokens_per_second = tokens_per_second or None
        self.model = model
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self._sleep = sleep

    def model_for(self, request: ChatRequest) -> str:
        """The model name announced for `request`: always this demo's name."""
        return self.model

    def reply(self, request: ChatRequest) -> str:
        """The full reply text for `request` (what `stream` sends, token by token)."""
        rng = random.Random(_seed(request))
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = user.split()
        snippet = " ".join(words[:_SNIPPET_WORDS]).replace('"', "'")
        if len(words) > _SNIPPET_WORDS:
            snippet += " ..."
        if snippet:
            templates = QUESTION_OPENINGS if user.rstrip().endswith("?") else OPENINGS
            opening = rng.choice(templates).format(f'"{snippet}"')
            if opening[-3:-2] in ".?!":  # no stray period after a quoted sentence
                opening = opening[:-1]
        else:
            opening = "Hello there."
        turns = sum(1 for m in request.messages if m.role == "user")
        parts = [opening]
        if turns > 1:
            parts.append(f"This is message {turns} from you in this conversation.")
        keywords = [w for w in _WORD.findall(user) if len(w) > 3] or ["streaming"]
        closing = rng.choice(CLOSINGS).format(max(keywords, key=len).lower())
        budget = rng.randint(self.min_tokens, self.max_tokens)
        used = sum(_count(p) for p in parts) + _count(closing)
        pool = list(SENTENCES)
        rng.shuffle(pool)
        for sentence in pool:
            size = _count(sentence)
            if used >= budget:
                break
            if used + size <= self.max_tokens:
                parts.append(sentence)
                used += size
        parts.append(closing)
        while used > self.max_tokens and len(parts) > 2:  # a long opening: drop middle sentences
            used -= _count(parts.pop(-2))
        return " ".join(parts)

    def tokens(self, request: ChatRequest) -> list[str]:
        """The reply as tokens: each word with its leading space (the first without)."""
        words = self.reply(request).split(" ")
        return [words[0], *(" " + w for w in words[1:])]

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply: one TextDelta per token, then UsageReport and FinishReason.

        A ``max_tokens`` option cuts the reply short with finish reason ``length``.
        """
        tokens = self.tokens(request)
        limit = request.options.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish = tokens[:limit], "length"
        delay = 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
        for token in tokens:
            if delay:
                await self._sleep(delay)
            yield TextDelta(token)
        prompt = prompt_tokens(request)
        yield UsageReport(prompt, len(tokens), prompt + len(tokens))
        yield FinishReason(finish)


def prompt_tokens(request: ChatRequest) -> int:
    """The demo's prompt size: the words of every message and of the system prompt."""
    words = sum(len(m.content.split()) for m in request.messages)
    return words + len((request.system_prompt or "").split())


def _count(text: str) -> int:
    return len(text.split(" "))


def _seed(request: ChatRequest) -> int:
    """A stable seed from the conversation (the same across processes and runs)."""
    payload = json.dumps(
        [request.system_prompt, [[m.role, m.content] for m in request.messages]],
        ensure_ascii=False,
    )
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")
