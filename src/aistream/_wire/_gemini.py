"""Google Gemini (``…/models/<model>:streamGenerateContent?alt=sse``). Stdlib only.

Each SSE event is a whole ``GenerateContentResponse``. Reads ``candidates[0].content.parts``:
text parts → text (empty ones, such as the part that only carries a ``thoughtSignature``,
emit nothing), ``thought: true`` parts → reasoning, ``functionCall`` parts → one complete tool
call each (``args`` is an object, sent on as JSON text; the id is the API's when it gives one,
else made from the ``responseId`` (a random one without it) and the call's position, so ids
differ between replies);
``usageMetadata`` (a cumulative snapshot on every chunk: it replaces, and output is
``candidatesTokenCount + thoughtsTokenCount``); ``finishReason`` (normalised; ``STOP`` after
function calls is ``tool_calls``); ``promptFeedback.blockReason`` (a refused prompt);
``{"error": {...}}`` inside the stream (``RESOURCE_EXHAUSTED`` / ``UNAVAILABLE`` and 5xx codes are
retried, with ``RetryInfo.retryDelay`` as the server's delay).

Gemini has no event ids and no end marker: the stream is complete at the chunk that carries a
``finishReason`` (or a block reason), and a dropped reply restarts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ._dialect import (
    NOTHING,
    RETRYABLE_STATUS,
    ChatMessage,
    ChatRequest,
    RequestSpec,
    ToolSpec,
    as_int,
    parse_arguments,
    tool_name_of,
    tool_names,
)
from ._events import (
    Done,
    FinishReason,
    Frame,
    ReasoningDelta,
    ServerError,
    Skipped,
    SSEEvent,
    StreamEvent,
    StreamStarted,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from ._json import json_body, loads_object

#: Statuses of a Google error worth retrying.
TRANSIENT_STATUS = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"})

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
    "FINISH_REASON_UNSPECIFIED": "error",
    "OTHER": "error",
    "NO_IMAGE": "error",
    "IMAGE_OTHER": "error",
}

#: Option names (ours, as for Chat Completions) → ``generationConfig`` fields.
_GENERATION = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",
    "max_tokens": "maxOutputTokens",
    "max_completion_tokens": "maxOutputTokens",
    "max_output_tokens": "maxOutputTokens",
    "stop": "stopSequences",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}
#: Gemini's own ``generationConfig`` field names, accepted as options too.
_GENERATION_NATIVE = frozenset(
    {
        "topP",
        "topK",
        "maxOutputTokens",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "thinkingConfig",
        "candidateCount",
        "responseLogprobs",
        "logprobs",
        "mediaResolution",
        "speechConfig",
        "imageConfig",
    }
)
#: Top-level request fields accepted as options.
_TOP_LEVEL = frozenset({"safetySettings", "toolConfig", "cachedContent", "labels"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


class GeminiDialect:
    """Parser state for one attempt of a Gemini stream.

    Not resumable: chunks carry no ids, so a dropped reply restarts from the beginning.
    """

    name: ClassVar[str] = "gemini"
    framing: ClassVar[Literal["sse", "ndjson"]] = "sse"
    resumable: ClassVar[bool] = False

    __slots__ = ("_calls", "_finished", "_prefix", "_started")

    def __init__(self) -> None:
        self._finished = False
        self._started = False
        self._calls = 0  # function calls seen in this reply
        self._prefix: str | None = None  # of the call ids made for this reply

    @property
    def finished(self) -> bool:
        return self._finished

    @staticmethod
    def retry_delay(body: Any) -> float | None:
        """The delay an HTTP error body asks for (``RetryInfo.retryDelay``): the transport
        honours it like ``Retry-After``."""
        return retry_delay(body)

    def build_request(self, endpoint: str, request: ChatRequest) -> RequestSpec:
        """``contents`` (roles ``user`` / ``model``), ``systemInstruction`` (the system prompt
        and any system messages), ``tools`` (``functionDeclarations`` with
        ``parametersJsonSchema``), ``generationConfig`` from the options.

        An assistant's tool calls are ``functionCall`` parts (with their ``thoughtSignature``
        sent back verbatim); tool messages are ``functionResponse`` parts (``{"output": ...}``,
        or ``{"error": ...}`` for a failed call) in one user turn per step; images are
        ``inlineData`` parts.

        `endpoint` is a ``…:streamGenerateContent`` URL (``alt=sse`` is added when missing) or
        a base URL (``…/v1beta``), to which ``/models/<model>:streamGenerateContent`` is added.

        Raises:
            ValueError: no model for a base URL, an option Gemini has no field for, an image
                given by URL (Gemini takes the bytes), a tool result whose tool is unknown, or
                tool call arguments that are not a JSON object.
        """
        system = [request.system_prompt] if request.system_prompt else []
        contents: list[dict[str, Any]] = []
        names = tool_names(request.messages)
        for m in request.messages:
            if m.role == "system":
                if m.content:
                    system.append(m.content)
                continue
            parts = _parts(m, names)
            if not parts:
                continue
            role = "model" if m.role == "assistant" else "user"
            last = contents[-1] if contents else None
            if m.role == "tool" and last is not None and last.get("results"):
                last["parts"] += parts  # one step's results answer together, in one turn
            else:
                contents.append({"role": role, "parts": parts, "results": m.role == "tool"})
        for content in contents:
            del content["results"]
        payload: dict[str, Any] = {"contents": contents}
        if system:
            payload["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        if request.tools:
            payload["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
        payload.update(_options(request.options))
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        return RequestSpec("POST", stream_url(endpoint, request.model), headers, json_body(payload))

    def text_of(self, data: bytes) -> str | None:
        return None  # every chunk repeats usage: always parsed

    def parse(self, frame: Frame) -> Sequence[StreamEvent]:
        if not isinstance(frame, SSEEvent):
            return [Skipped("gemini expects SSE frames", frame.text[:200])]
        data = frame.data
        obj = loads_object(data)
        if obj is None:
            return [Skipped("malformed JSON in gemini chunk", data[:200])]
        error = obj.get("error")
        if error is not None:
            return [server_error(error, obj)]
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            response_id, model = obj.get("responseId"), obj.get("modelVersion")
            if isinstance(response_id, str) or isinstance(model, str):
                events.append(
                    StreamStarted(
                        response_id if isinstance(response_id, str) else None,
                        model if isinstance(model, str) else None,
                    )
                )
        candidates = obj.get("candidates")
        reason: str | None = None
        if isinstance(candidates, list) and candidates:
            candidate = candidates[0]
            if isinstance(candidate, Mapping):
                self._parts(candidate, obj, events, data)
                finish = candidate.get("finishReason")
                reason = finish if isinstance(finish, str) and finish else None
            if len(candidates) > 1:
                events.append(Skipped("gemini candidates other than the first are ignored", ""))
        usage = obj.get("usageMetadata")
        if isinstance(usage, Mapping):
            report = usage_report(usage)
            if report is not None:
                events.append(report)
        if reason is None:
            feedback = obj.get("promptFeedback")
            blocked = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
            if isinstance(blocked, str) and blocked:
                reason = "SAFETY"  # the prompt was refused: nothing more comes
        if reason is not None:
            self._finished = True
            events.append(FinishReason("tool_calls" if self._calls else _finish(reason)))
            events.append(Done())
        elif not events and candidates is None and usage is None:
            return [Skipped("gemini chunk without candidates, usage or error", data[:200])]
        return events or NOTHING

    def _parts(
        self,
        candidate: Mapping[str, Any],
        obj: Mapping[str, Any],
        events: list[StreamEvent],
        data: str,
    ) -> None:
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        if not isinstance(parts, list):
            return
        for part in parts:
            if not isinstance(part, Mapping):
                events.append(Skipped("gemini part is not an object", data[:200]))
                continue
            text = part.get("text")
            if isinstance(text, str):
                if text:
                    events.append(ReasoningDelta(text) if part.get("thought") else TextDelta(text))
                continue
            call = part.get("functionCall")
            if isinstance(call, Mapping):
                events.append(self._call(part, call, obj, data))
                continue
            if "thoughtSignature" in part and len(part) == 1:
                continue  # a bare signature: not content
            kind = next((k for k in part if k != "thoughtSignature"), "?")
            events.append(Skipped(f"gemini part {kind!r} is not supported", data[:200]))

    def _call(
        self, part: Mapping[str, Any], call: Mapping[str, Any], obj: Mapping[str, Any], data: str
    ) -> StreamEvent:
        name = call.get("name")
        if not isinstance(name, str) or not name:
            return Skipped("gemini functionCall without a name", data[:200])
        self._calls += 1
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            if self._prefix is None:  # the reply's id, else a random one: distinct per reply
                response_id = obj.get("responseId")
                ok = isinstance(response_id, str) and response_id
                self._prefix = response_id if ok else uuid.uuid4().hex[:16]
            call_id = f"call_{self._prefix}_{self._calls}"
        args = call.get("args")
        arguments = json_body(args).decode() if isinstance(args, Mapping) else "{}"
        signature = part.get("thoughtSignature")
        return ToolCallDone(
            call_id, name, arguments, signature if isinstance(signature, str) else None
        )


def _parts(m: ChatMessage, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One history message as Gemini parts."""
    if m.role == "tool":
        name = tool_name_of(m, names)
        if not name:
            raise ValueError(
                f"the tool result for call {m.tool_call_id!r} names no tool, and Gemini links "
                "results by tool name: keep the assistant message with that call in the history"
            )
        response = {"error" if m.is_error else "output": _json_or_text(m.content)}
        return [{"functionResponse": {"name": name, "response": response}}]
    parts: list[dict[str, Any]] = []
    for image in m.images:
        if image.data is None:
            raise ValueError(
                "Gemini takes images as bytes, not URLs: download the image and pass "
                "Image(data=..., media_type=...) or Image.from_path(...)"
            )
        mime = image.media_type or "application/octet-stream"
        parts.append({"inlineData": {"mimeType": mime, "data": image.base64()}})
    if m.content:
        parts.append({"text": m.content})
    for call in m.tool_calls:
        part: dict[str, Any] = {
            "functionCall": {"name": call.name, "args": parse_arguments(call, "Gemini")}
        }
        if call.signature:
            part["thoughtSignature"] = call.signature
        parts.append(part)
    return parts


def _json_or_text(content: str) -> Any:
    """A tool result as Gemini's ``response`` value: its JSON when it is JSON, else the text."""
    try:
        return json.loads(content)
    except ValueError:
        return content


def _declaration(tool: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    if tool.parameters:
        out["parametersJsonSchema"] = dict(tool.parameters)
    return out


def stream_url(endpoint: str, model: str | None) -> str:
    """The ``:streamGenerateContent?alt=sse`` URL for `endpoint` (see `build_request`)."""
    scheme, netloc, path, query, _ = urlsplit(endpoint)
    if ":streamGenerateContent" not in path:
        if not model:
            raise ValueError(
                "gemini needs a model: pass model= (e.g. 'gemini-2.5-flash') or an endpoint "
                "ending in /models/<model>:streamGenerateContent"
            )
        name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        path = f"{path.rstrip('/')}/{quote(name)}:streamGenerateContent"
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "alt"]
    return urlunsplit((scheme, netloc, path, urlencode([*pairs, ("alt", "sse")]), ""))


def usage_report(usage: Mapping[str, Any]) -> UsageReport | None:
    """The snapshot in ``usageMetadata``, or None when it has no counts (a Vertex
    ``{"trafficType": ...}`` chunk): output is candidates + thoughts tokens."""
    prompt = as_int(usage.get("promptTokenCount"))
    candidates = as_int(usage.get("candidatesTokenCount"))
    thoughts = as_int(usage.get("thoughtsTokenCount"))
    if prompt is None and candidates is None and thoughts is None:
        return None
    completion = (
        None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    )
    return UsageReport(prompt, completion, as_int(usage.get("totalTokenCount")))


def server_error(error: Any, body: Any) -> ServerError:
    """A Google error object ``{"code", "message", "status", "details"}`` as a ServerError."""
    if not isinstance(error, Mapping):
        return ServerError(str(error) or "gemini error", None, False, body)
    status = error.get("status")
    code = as_int(error.get("code"))
    message = error.get("message")
    name = str(status) if status else (str(code) if code is not None else None)
    retryable = status in TRANSIENT_STATUS or (code is not None and code in RETRYABLE_STATUS)
    text = str(message) if message else f"gemini error {name or 'without a message'}"
    return ServerError(text, name, retryable, body, retry_delay(body))


def retry_delay(body: Any) -> float | None:
    """Seconds from a Google error body's ``RetryInfo.retryDelay`` (``"34.4s"``), else None."""
    error = body.get("error") if isinstance(body, Mapping) else None
    details = error.get("details") if isinstance(error, Mapping) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = detail.get("retryDelay")
            if isinstance(delay, Mapping):  # the proto form {"seconds": .., "nanos": ..}
                seconds = as_int(delay.get("seconds")) or 0
                return seconds + (as_int(delay.get("nanos")) or 0) / 1e9
            match = _DURATION.match(delay) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


def _finish(reason: str) -> str:
    return _FINISH.get(reason, reason.lower())


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as Gemini fields: sampling ones into ``generationConfig``.

    Raises:
        ValueError: an option Gemini has no field for.
    """
    out: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key, value in options.items():
        if key in _GENERATION:
            if key == "stop" and isinstance(value, str):
                value = [value]
            config[_GENERATION[key]] = value
        elif key in _GENERATION_NATIVE:
            config[key] = value
        elif key == "response_format":
            config.update(_response_format(value))
        elif key == "generationConfig" and isinstance(value, Mapping):
            config.update(value)
        elif key in _TOP_LEVEL:
            out[key] = value
        else:
            raise ValueError(
                f"Gemini has no field for the option {key!r}; it takes "
                + ", ".join(sorted({*_GENERATION, "response_format"}))
                + " and Gemini's own generationConfig / request fields"
            )
    if config:
        out["generationConfig"] = config
    return out


def _response_format(value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = value.get("json_schema")
        inner = schema.get("schema") if isinstance(schema, Mapping) else None
        if isinstance(inner, Mapping):
            return {"responseMimeType": "application/json", "responseJsonSchema": inner}
    if kind == "text":
        return {}
    raise ValueError(
        f"Gemini cannot carry response_format {json.dumps(value)[:100]}; use "
        "{'type': 'json_object'} or {'type': 'json_schema', 'json_schema': {'schema': ...}}"
    )
