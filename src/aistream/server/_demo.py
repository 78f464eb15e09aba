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
from typing import Any

from .._wire._dialect import ChatRequest, tool_name_of, tool_names
from .._wire._events import FinishReason, StreamEvent, TextDelta, ToolCallDone, UsageReport
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

    def tool_calls(self, request: ChatRequest) -> list[ToolCallDone]:
        """The tools the demo calls for `request`: when the last message is the user's and
        names declared tools (their exact names, as words), one call each, in the order they
        are named, with arguments built from each tool's schema. Ids and arguments depend
        only on the conversation."""
        last = request.messages[-1] if request.messages else None
        if last is None or last.role != "user" or not request.tools:
            return []
        named = []
        for tool in request.tools:
            found = re.search(rf"(?<![\w-]){re.escape(tool.name)}(?![\w-])", last.content)
            if found:
                named.append((found.start(), tool))
        if not named:
            return []
        seed = _seed(request)
        rng = random.Random(seed)
        names = {t.name for t in request.tools}
        words = [w for w in _WORD.findall(last.content) if w not in names and len(w) > 2]
        proper = [w for w in words[1:] if w[0].isupper()] or words or ["demo"]
        calls = []
        for i, (_, tool) in enumerate(sorted(named, key=lambda pair: pair[0])):
            root = dict(tool.parameters)
            arguments = _example(root, root, rng, proper, 0)
            text = json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False)
            calls.append(ToolCallDone(f"call_{seed:016x}_{i}", tool.name, text))
        return calls

    def reply(self, request: ChatRequest) -> str:
        """The full reply text for `request` (what `stream` sends, token by token)."""
        rng = random.Random(_seed(request))
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        words = user.split()
        snippet = " ".join(words[:_SNIPPET_WORDS]).replace('"', "'")
        if len(words) > _SNIPPET_WORDS:
            snippet += " ..."
        results = _tool_answer(request)
        if results:
            opening = results
        elif snippet:
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

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream the reply: one TextDelta per token, then UsageReport and FinishReason;
        or, when the last user message names declared tools, their calls (`tool_calls`) and
        finish reason ``tool_calls``. After tool results, the reply reports them first.

        A ``max_tokens`` option cuts the reply short with finish reason ``length``.
        """
        calls = self.tool_calls(request)
        if calls:
            return self._calls(request, calls)
        tokens, finish = self._plan(request)
        return self._paced(request, tokens, 0, finish)

    def continuation(self, request: ChatRequest, sent: str) -> AsyncIterator[StreamEvent] | None:
        """The rest of `stream(request)` after the text `sent`: exactly what it would have sent.

        A replica that takes over a stream whose producer died uses it (the reply is
        deterministic). None when `sent` is not a token-aligned start of this reply, or the
        reply is tool calls.
        """
        if self.tool_calls(request):
            return None
        tokens, finish = self._plan(request)
        done, count = 0, 0
        while done < len(sent) and count < len(tokens):
            done += len(tokens[count])
            count += 1
        if "".join(tokens[:count]) != sent:
            return None
        return self._paced(request, tokens, count, finish)

    async def _calls(
        self, request: ChatRequest, calls: list[ToolCallDone]
    ) -> AsyncIterator[StreamEvent]:
        delay = 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
        for call in calls:
            if delay:
                await self._sleep(delay)
            yield call
        prompt = prompt_tokens(request)
        completion = sum(len(c.arguments.split()) + 1 for c in calls)
        yield UsageReport(prompt, completion, prompt + completion)
        yield FinishReason("tool_calls")

    def _plan(self, request: ChatRequest) -> tuple[list[str], str]:
        tokens = self.tokens(request)
        limit = request.options.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(tokens):
            return tokens[:limit], "length"
        return tokens, "stop"

    async def _paced(
        self, request: ChatRequest, tokens: list[str], start: int, finish: str
    ) -> AsyncIterator[StreamEvent]:
        delay = 1.0 / self.tokens_per_second if self.tokens_per_second else 0.0
        for token in tokens[start:]:
            if delay:
                await self._sleep(delay)
            yield TextDelta(token)
        prompt = prompt_tokens(request)
        yield UsageReport(prompt, len(tokens), prompt + len(tokens))
        yield FinishReason(finish)


def _tool_answer(request: ChatRequest) -> str:
    """What the tool results that end the conversation said, as the reply's opening ("" when
    the last message is not a tool result)."""
    results = []
    for message in reversed(request.messages):
        if message.role != "tool":
            break
        results.append(message)
    if not results:
        return ""
    names = tool_names(request.messages)
    said = []
    for message in reversed(results):
        name = tool_name_of(message, names) or "tool"
        text = " ".join(message.content.split())
        text = text if len(text) <= 160 else text[:157] + "..."
        verb = "failed" if message.is_error else "returned"
        said.append(f"The {name} tool {verb}: {text}" if text else f"The {name} tool {verb}.")
    return " ".join(said)


def _example(
    schema: Any, root: dict[str, Any], rng: random.Random, words: list[str], depth: int
) -> Any:
    """A value that fits a JSON Schema, for the demo's tool arguments (deterministic per rng)."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _example(root.get("$defs", {}).get(ref[8:]), root, rng, words, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _example((usable or options)[0], root, rng, words, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "string":
        return rng.choice(words)
    if kind in ("integer", "number"):
        low = schema.get("minimum", 1)
        high = schema.get("maximum", max(low, 0) + 9)
        low, high = (
            (low, high)
            if isinstance(low, int | float) and isinstance(high, int | float) and low <= high
            else (1, 10)
        )
        return (
            rng.randint(int(low), int(high))
            if kind == "integer"
            else round(rng.uniform(low, high), 1)
        )
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(schema.get("items", {}), root, rng, words, depth + 1)]
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        required = schema.get("required")
        keys = [k for k in properties if not isinstance(required, list) or k in required]
        return {k: _example(properties[k], root, rng, words, depth + 1) for k in keys}
    return None


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
