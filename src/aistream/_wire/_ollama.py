"""Ollama's native chat API (``POST …/api/chat``): newline-delimited JSON, not SSE. Stdlib only.

Reads, per line:

- ``message.content`` → text, ``message.thinking`` → reasoning;
- ``message.tool_calls``: arguments arrive as an object and are serialised to JSON text; a
  missing id becomes ``call_<n>``, n counting the stream's calls from 0, so a restarted reply
  gets the same ids;
- ``done: true``: usage from ``prompt_eval_count`` / ``eval_count``, the ``done_reason``
  (``"tool_calls"`` rather than Ollama's ``"stop"`` when the reply called tools, as the other
  dialects report it), and the end;
- ``{"error": "..."}`` sent after the 200.

A line that is not a JSON object, or carries none of those, is `Skipped`.

Ollama's errors carry no code, so transience is guessed from the text: it is retryable when it
mentions being overloaded, busy, unavailable, a timeout or "try again" (Ollama's queue-full error
reads "server busy, please try again"). A model crash ("unexpected EOF") is not retried.

Not chosen by ``protocol="auto"``: Ollama's ``/api/chat`` path is also the native protocol's
default path, so ``auto`` picks native there. Pass ``protocol="ollama"`` explicitly (or use
Ollama's OpenAI-compatible ``/v1/chat/completions``, which ``auto`` detects as openai).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from ._dialect import (
    NOTHING,
    ChatMessage,
    ChatRequest,
    RequestSpec,
    as_int,
    function_tools,
    parse_arguments,
    tool_name_of,
    tool_names,
)
from ._events import (
    Done,
    FinishReason,
    Frame,
    NDJSONLine,
    ReasoningDelta,
    ServerError,
    Skipped,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._json import json_body, loads_object

_TRANSIENT = re.compile(r"overload|busy|unavailable|timeout|timed out|try again", re.IGNORECASE)

#: Portable request options that Ollama expects inside ``options`` rather than at the top level.
RUNTIME_OPTIONS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "num_predict",
        "num_ctx",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    }
)

_FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}


def _message(m: ChatMessage, names: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.content or not m.tool_calls:  # as the ollama package: no empty text beside calls
        out["content"] = m.content
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": parse_arguments(c, "Ollama")}}
            for c in m.tool_calls
        ]
    if m.role == "tool":
        name = tool_name_of(m, names)
        if name:
            out["tool_name"] = name
    if m.images:
        if any(i.data is None for i in m.images):
            raise ValueError(
                "Ollama takes images as bytes, not URLs: download the image and pass "
                "Image(data=..., media_type=...) or Image.from_path(path)"
            )
        out["images"] = [i.base64() for i in m.images]
    return out


class OllamaDialect:
    """Parser state for one attempt of an Ollama ``/api/chat`` stream.

    Not resumable: lines carry no ids, so a dropped reply restarts from the beginning.
    """

    name: ClassVar[str] = "ollama"
    framing: ClassVar[Literal["sse", "ndjson"]] = "ndjson"
    resumable: ClassVar[bool] = False

    __slots__ = ("_calls", "_finished")

    def __init__(self) -> None:
        self._finished = False
        self._calls = 0  # tool calls seen, for synthesised ids

    @property
    def finished(self) -> bool:
        return self._finished

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        """The chat request: the system prompt becomes the first message.

        Sampling options given portably at the top level (``temperature``, ``top_p``,
        ``seed``, ``stop``, ``max_tokens`` as ``num_predict``, …) are moved into Ollama's
        ``options`` object; anything else (``tools``, ``format``, ``keep_alive``, ``think``,
        ``options`` itself) is sent as given. Tools are defined as in chat completions; an
        assistant's calls are ``tool_calls`` with ``arguments`` an object; a tool message
        carries ``tool_name`` (its call's tool); images are base64 ``images``.

        Raises:
            ValueError: an image given by URL (Ollama takes the bytes), or tool call
                arguments that are not a JSON object.
        """
        names = tool_names(request.messages)
        messages = [_message(m, names) for m in request.messages]
        if request.system_prompt:
            messages.insert(0, {"role": "system", "content": request.system_prompt})
        payload: dict[str, Any] = {}
        if request.model:
            payload["model"] = request.model
        payload["messages"] = messages
        if request.tools:
            payload["tools"] = function_tools(request.tools)
        runtime: dict[str, Any] = {}
        for key, value in request.options.items():
            if key == "max_tokens":
                runtime["num_predict"] = value
            elif key in RUNTIME_OPTIONS:
                runtime[key] = value
            elif key == "options" and isinstance(value, Mapping):
                runtime.update(value)
            else:
                payload[key] = value
        if runtime:
            payload["options"] = runtime
        payload["stream"] = True
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        return RequestSpec("POST", endpoint, headers, json_body(payload))

    def text_of(self, data: bytes) -> str | None:
        return None  # NDJSON framing: never asked

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, NDJSONLine):
            return [Skipped("ollama expects NDJSON lines", frame.data[:200])]
        text = frame.text
        obj = loads_object(text)
        if obj is None:
            return [Skipped("malformed JSON line in Ollama stream", text[:200])]
        error = obj.get("error")
        if error:
            return [_server_error(error, obj)]
        message = obj.get("message")
        done = obj.get("done") is True
        if type(message) is not dict:
            if not done:
                return [Skipped("Ollama line without message, done or error", text[:200])]
            message = {}
        events: list[StreamEvent] = []
        thinking = message.get("thinking")
        if type(thinking) is str and thinking:
            events.append(ReasoningDelta(thinking))
        content = message.get("content")
        if type(content) is str and content:
            events.append(TextDelta(content))
        calls = message.get("tool_calls")
        if type(calls) is list:
            events.extend(self._tool_call(call, text) for call in calls)
        if done:
            self._finished = True
            prompt = as_int(obj.get("prompt_eval_count"))
            completion = as_int(obj.get("eval_count"))
            if prompt is not None or completion is not None:
                events.append(UsageReport(prompt, completion))
            reason = obj.get("done_reason")
            reason = _FINISH.get(reason, reason) if isinstance(reason, str) and reason else "stop"
            if reason == "stop" and self._calls:
                reason = "tool_calls"  # Ollama says "stop"; normalised as OpenAI reports it
            events.append(FinishReason(reason))
            events.append(Done())
        return events or NOTHING

    def _tool_call(self, call: Any, raw: str) -> StreamEvent:
        function = call.get("function") if type(call) is dict else None
        name = function.get("name") if type(function) is dict else None
        if not isinstance(name, str) or not name:
            return Skipped("Ollama tool call without a function name", raw[:200])
        arguments = function.get("arguments")  # type: ignore[union-attr]
        if not isinstance(arguments, str):
            arguments = json_body(arguments).decode() if arguments is not None else "{}"
        call_id = call.get("id")
        n = self._calls
        self._calls += 1
        return ToolCallDone(str(call_id) if call_id else f"call_{n}", name, arguments or "{}")


def _server_error(error: Any, obj: dict[str, Any]) -> ServerError:
    if isinstance(error, Mapping):  # proxies sometimes send {"error": {"message", "code"}}
        message, code = error.get("message") or str(dict(error)), error.get("code")
    else:
        message, code = error, None
    text = str(message)
    return ServerError(text, str(code) if code else None, bool(_TRANSIENT.search(text)), obj)
