"""The chaos model: deterministic replies made of awkward text, served three ways.

`ChaosModel` is a `ChatBackend` for `create_app` (the native server, with ids), the source of
`Upstream`, a LoopbackServer handler that speaks OpenAI chat-completions streaming (no ids, so
a dropped reply restarts), and of `ResponsesUpstream`, an OpenAI Responses API whose
background streams resume by ``starting_after``. The reply is a function of the conversation
only, so the test computes the fault-free reply itself and compares it exactly with what the
client shows.

A conversation that declares tools and names one in its last user message gets the demo
model's deterministic tool calls first (a tool step), then the reply to their results.

The words come from the demo model; some are swapped for text that breaks naive decoders:
multi-byte UTF-8 (cut mid-character by the proxy), CR, LF, CRLF, NUL, U+2028, quotes and
backslashes, and things that look like SSE fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import (
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream.server import DemoModel
from aistream.server._formats import parse_openai
from tests.loopback import Handler, LoopbackServer, Reply, Request
from tests.responses_upstream import responses_events

AWKWARD = (
    " é",
    " naïve",
    " 日本語",
    " 😀",
    " 👩\u200d💻",
    "\n",
    "\n\n",
    "\r\n",
    "\r",
    " \u2028",
    " \u2029",
    " \x00",
    ' "quoted"',
    " back\\slash",
    "\tTab",
    " data: [DONE]",
    " event: done",
    " id: s1:9",
    " }\n\n{",
    " \ufeff",
    " \x85",
)


def _seed(request: ChatRequest) -> int:
    payload = json.dumps(
        [request.system_prompt, [[m.role, m.content] for m in request.messages]],
        ensure_ascii=False,
    )
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")


class ChaosModel:
    """A `ChatBackend`: the demo's reply with about one token in six made awkward.

    `stream` yields to the event loop before every token, so a reply is generated while it is
    being sent and a reconnect meets a live generation as often as a finished one.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self._demo = DemoModel(tokens_per_second=None)
        #: How many times each tool call was generated: a step that ran twice shows here.
        self.tool_steps: Counter[str] = Counter()
        self.delay = delay  # seconds before each token (the replica campaign paces replies)

    def model_for(self, request: ChatRequest) -> str:
        return "chaos"

    def tool_calls(self, request: ChatRequest) -> list[ToolCallDone]:
        """The demo's deterministic tool behaviour: the declared tools the last user message
        names are called (then `tokens` answers with their results)."""
        return self._demo.tool_calls(request)

    def tokens(self, request: ChatRequest) -> list[str]:
        """The reply as tokens; never an empty token (the native server skips those)."""
        rng = random.Random(_seed(request))
        return [
            rng.choice(AWKWARD) if rng.random() < 0.17 else token
            for token in self._demo.tokens(request)
        ]

    def usage(self, request: ChatRequest) -> tuple[int, int]:
        """(prompt_tokens, completion_tokens) the reply reports (a tool step: one per call)."""
        prompt = sum(len(m.content) for m in request.messages) + len(request.system_prompt or "")
        calls = self.tool_calls(request)
        return prompt // 4 + 1, len(calls) if calls else len(self.tokens(request))

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        calls = self.tool_calls(request)
        if calls:
            return self._calls(request, calls)
        return self._from(request, 0)

    async def _calls(
        self, request: ChatRequest, calls: list[ToolCallDone]
    ) -> AsyncIterator[StreamEvent]:
        for call in calls:
            self.tool_steps[call.id] += 1
            await asyncio.sleep(0)
            yield call
        prompt, completion = self.usage(request)
        yield UsageReport(prompt, completion, prompt + completion)
        yield FinishReason("tool_calls")

    def continuation(self, request: ChatRequest, sent: str) -> AsyncIterator[StreamEvent] | None:
        """The rest of the reply after `sent` (a replica taking over a dead producer's stream)."""
        if self.tool_calls(request):
            return None  # a tool step is not continued: the survivor ends it with producer_lost
        tokens = self.tokens(request)
        done = count = 0
        while done < len(sent) and count < len(tokens):
            done += len(tokens[count])
            count += 1
        return self._from(request, count) if "".join(tokens[:count]) == sent else None

    async def _from(self, request: ChatRequest, start: int) -> AsyncIterator[StreamEvent]:
        for token in self.tokens(request)[start:]:
            await asyncio.sleep(self.delay)
            yield TextDelta(token)
        prompt, completion = self.usage(request)
        yield UsageReport(prompt, completion, prompt + completion)
        yield FinishReason("stop")


@dataclass(frozen=True, slots=True)
class HTTPFault:
    """A fault the OpenAI upstream itself produces (the proxy cannot).

    Attributes:
        kind: "status" (a 503 before the stream) or "stream-error" (an in-stream transient
            ``{"error": ...}`` chunk after `after_tokens` tokens).
        after_tokens: For "stream-error": tokens sent before the error chunk.
    """

    kind: str
    after_tokens: int = 0


@dataclass
class Upstream:
    """State of the OpenAI loopback upstream: HTTP faults armed per lane, and what it served.

    Lanes are named by the ``X-Chaos-Lane`` request header; each lane sends one request at a
    time, so "the lane's next request" is well defined.
    """

    model: ChaosModel
    armed: dict[str, HTTPFault] = field(default_factory=dict)
    served: dict[str, list[str]] = field(default_factory=dict)  # lane -> kinds served
    authorization_seen: int = 0
    #: The server, once started: its request log is cleared as the campaign goes.
    server: LoopbackServer | None = None

    def arm(self, lane: str, fault: HTTPFault) -> None:
        self.armed[lane] = fault

    def handler(self) -> Handler:
        async def handle(request: Request, reply: Reply) -> None:
            await self._handle(request, reply)

        return handle

    async def _handle(self, request: Request, reply: Reply) -> None:
        if self.server is not None:
            self.server.requests.clear()  # kept only for tests that look; this one does not
        lane = request.headers.get("x-chaos-lane", "")
        authorization = request.headers.get("authorization", "")
        if authorization:
            self.authorization_seen += 1
        fault = self.armed.pop(lane, None)
        served = self.served.setdefault(lane, [])
        chat = _chat_request(request.json())
        if fault is not None and fault.kind == "status":
            served.append("status")
            # A careless gateway that echoes the credentials into its error message.
            message = f"upstream overloaded (request had Authorization: {authorization})"
            await reply.body(
                503,
                {"error": {"message": message, "type": "server_error"}},
                {"retry-after": "0"},
            )
            return
        await reply.start()
        tokens = self.model.tokens(chat)
        base = {"id": "chatcmpl-chaos", "object": "chat.completion.chunk", "model": "chaos"}

        async def chunk(obj: dict[str, Any]) -> None:
            await reply.send(b"data: " + json.dumps({**base, **obj}).encode() + b"\n\n")

        await chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        calls = self.model.tool_calls(chat)
        if calls:
            for i, call in enumerate(calls):
                self.model.tool_steps[call.id] += 1
                function = {"name": call.name, "arguments": call.arguments}
                entry = {"index": i, "id": call.id, "type": "function", "function": function}
                await chunk({"choices": [{"index": 0, "delta": {"tool_calls": [entry]}}]})
            await chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
            tokens = []
        for i, token in enumerate(tokens):
            if fault is not None and fault.kind == "stream-error" and i == fault.after_tokens:
                served.append("stream-error")
                error = {"message": f"overloaded; key was {authorization}", "type": "server_error"}
                await reply.send(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
                await reply.end()
                return
            await chunk({"choices": [{"index": 0, "delta": {"content": token}}]})
        if not calls:
            await chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        prompt, completion = self.model.usage(chat)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        await chunk({"choices": [], "usage": {**usage, "total_tokens": prompt + completion}})
        await reply.send(b"data: [DONE]\n\n")
        await reply.end()


def _chat_request(body: dict[str, Any]) -> ChatRequest:
    """The conversation as the native server would see it: the system message taken out."""
    request, _ = parse_openai(json.dumps(body).encode())
    messages = request.messages
    system = None
    if messages and messages[0].role == "system":
        system = messages[0].content
        messages = messages[1:]
    return dataclasses.replace(request, messages=messages, system_prompt=system)


@dataclass
class ResponsesUpstream:
    """A loopback OpenAI Responses API serving `model`'s replies as background responses.

    ``POST /v1/responses`` streams a new response (its events kept); ``GET
    /v1/responses/<id>?stream=true&starting_after=<n>`` streams the rest of it, as the real API
    resumes a background stream. `starting_after` counts the GETs, `authorization_seen` the
    requests that carried a key.
    """

    model: ChaosModel
    streams: dict[str, list[bytes]] = field(default_factory=dict)
    posts: int = 0
    resumes: int = 0
    authorization_seen: int = 0
    server: LoopbackServer | None = None

    def handler(self) -> Handler:
        async def handle(request: Request, reply: Reply) -> None:
            await self._handle(request, reply)

        return handle

    async def _handle(self, request: Request, reply: Reply) -> None:
        if self.server is not None:
            self.server.requests.clear()
        if request.headers.get("authorization"):
            self.authorization_seen += 1
        url = urlsplit(request.path)
        if request.method == "POST":
            self.posts += 1
            chat = _responses_request(request.json())
            response_id = f"resp_chaos{self.posts:06d}"
            prompt, _ = self.model.usage(chat)
            events = responses_events(
                response_id, self.model.tokens(chat), background=True, usage=(prompt, 0)
            )
            self.streams[response_id] = events
        else:
            self.resumes += 1
            events = self.streams[url.path.rsplit("/", 1)[1]]
            after = int(parse_qs(url.query)["starting_after"][0])
            events = events[after + 1 :]
        await reply.start()
        for event in events:
            await asyncio.sleep(0)  # a reply generated while it is sent, as ChaosModel's
            await reply.send(event)
        await reply.end()


def _responses_request(body: dict[str, Any]) -> ChatRequest:
    """The conversation of a Responses body as the native server would see it."""
    messages = tuple(ChatMessage(item["role"], item["content"]) for item in body["input"])
    return ChatRequest(messages, system_prompt=body.get("instructions"))
