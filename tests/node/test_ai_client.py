"""The Vercel AI SDK as users run it: the `ai` npm package reads create_app's Vercel output.

`make npm-ai` installs, from tests/node/package-lock.json into .cache/npm-ai, the current ai 7
and the readers still deployed whose schemas are the strictest: the first 7, 6 and 5 (strict
objects; 5.0.0 knows no ``finish.finishReason`` nor ``tool-input-error``) and the newest 5.
Each test serves create_app with a scripted backend on a real uvicorn and runs
tests/node/ui_stream.mjs in node: ``DefaultChatTransport`` sends the body ``useChat`` sends,
``readUIMessageStream`` builds the assistant UIMessage ``useChat`` would render, and
``AbstractChat`` (what ``useChat`` wraps) reports its status after the turn.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import (
    FinishReason,
    Metadata,
    ReasoningDelta,
    ServerError,
    StreamEvent,
    TextDelta,
    ToolCallDone,
    UsageReport,
)
from aistream.server import create_app
from tests.servers import running

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".cache" / "npm-ai" / "node_modules"
SCRIPT = Path(__file__).with_name("ui_stream.mjs")
NODE = shutil.which("node")

PACKAGES = ["ai", "ai7-first", "ai6-first", "ai5", "ai5-first"]

pytestmark = pytest.mark.skipif(
    NODE is None or not all((MODULES / name / "package.json").exists() for name in PACKAGES),
    reason="needs node and the ai packages: run `make npm-ai` (installs them into .cache/npm-ai)",
)

USAGE = UsageReport(7, 5, 12)

#: What the backend streams for each prompt: every kind of part useChat renders.
SCRIPTS: dict[str, list[StreamEvent]] = {
    "text": [TextDelta("Hello"), TextDelta(", "), TextDelta("world."), USAGE, FinishReason("stop")],
    "reasoning": [
        ReasoningDelta("Think "),
        ReasoningDelta("first."),
        TextDelta("Then "),
        TextDelta("answer."),
        USAGE,
    ],
    "tools": [
        TextDelta("Checking."),
        ToolCallDone("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCallDone("call_2", "get_time", "{not json"),
        USAGE,
        FinishReason("tool_calls"),
    ],
    "metadata": [Metadata({"trace": "abc"}), TextDelta("Done."), USAGE],
    "error": [
        TextDelta("Partial "),
        USAGE,
        ServerError("upstream overloaded", "overloaded", retryable=True),
    ],
    "length": [TextDelta("Cut"), UsageReport(3, 1, 4), FinishReason("length")],
    "loop:weather?": [
        TextDelta("Checking."),
        ToolCallDone("call_1", "get_weather", '{"city": "Paris"}'),
        USAGE,
        FinishReason("tool_calls"),
    ],
    "escape": [TextDelta('<script>alert("x")</script> \u2028 caf\u00e9 \U0001f600'), USAGE],
}


class Scripted:
    """A ChatBackend that streams SCRIPTS[the last user message]."""

    def model_for(self, request: ChatRequest) -> str:
        return "scripted-1"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        last = request.messages[-1]
        if last.role == "tool":  # the browser ran the tool: say what the model was sent
            yield TextDelta(json.dumps([_shown(m) for m in request.messages]))
            yield FinishReason("stop")
            return
        for event in SCRIPTS[last.content]:
            yield event


def _shown(message: ChatMessage) -> list[Any]:
    calls = [[c.id, c.name, json.loads(c.arguments)] for c in message.tool_calls]
    return [message.role, message.content, calls, message.tool_call_id, message.name]


async def run_node(package: str, *prompts: str) -> dict[str, dict[str, Any]]:
    """Serve create_app, run ui_stream.mjs with `package` for `prompts`; results by prompt."""
    assert NODE is not None
    async with running(create_app(backend=Scripted(), heartbeat_interval=None)) as base:
        proc = await asyncio.create_subprocess_exec(
            NODE,
            str(SCRIPT),
            str(MODULES),
            package,
            f"{base}/api/chat",
            *prompts,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    results = [json.loads(line) for line in out.decode().split("\n") if line]
    return {r["prompt"]: r for r in results}


def parts(result: dict[str, Any]) -> list[dict[str, Any]]:
    message = result["message"]
    assert message is not None, result["errors"]
    assert message["role"] == "assistant"
    return list(message["parts"])


def usage_metadata(input_tokens: int = 7, output_tokens: int = 5) -> dict[str, Any]:
    total = input_tokens + output_tokens
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": total}
    return {"model": "scripted-1", "usage": usage}


@pytest.fixture(scope="module", params=PACKAGES)
def results(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Every prompt read by one of the `ai` packages, once per module."""
    return asyncio.run(run_node(request.param, *SCRIPTS))


def test_a_browser_side_tool_loop_reaches_the_model_as_a_call_and_its_result(
    results: dict[str, dict[str, Any]],
) -> None:
    """useChat's tool loop (PROVIDERS.md §4.6): the tool parts it sends back are the model's
    call and its result, so the model answers instead of calling the tool again."""
    r = results["loop:weather?"]
    assert r.get("error") is None and r["requests"] == 2 and r["status"] == "ready"
    assistant = r["messages"][-1]
    [tool] = [p for p in assistant["parts"] if p["type"] == "tool-get_weather"]
    assert (tool["state"], tool["output"]) == ("output-available", {"temp": 21})
    sent = json.loads([p for p in assistant["parts"] if p["type"] == "text"][-1]["text"])
    assert sent == [
        ["user", "loop:weather?", [], None, None],
        ["assistant", "Checking.", [["call_1", "get_weather", {"city": "Paris"}]], None, None],
        ["tool", '{"temp":21}', [], "call_1", "get_weather"],
    ]


def test_text_and_usage(results: dict[str, dict[str, Any]]) -> None:
    r = results["text"]
    assert r["errors"] == []
    assert parts(r) == [
        {"type": "step-start"},
        {"type": "text", "text": "Hello, world.", "state": "done"},
    ]
    assert r["message"]["metadata"] == {"finishReason": "stop", **usage_metadata()}
    assert r["message"]["id"].startswith("msg-")
    assert r["status"] == "ready"
    assert r["finished"] == {"isError": False, "isDisconnect": False}
    assert r["chatMessage"]["parts"] == parts(r)


def test_reasoning_is_its_own_part(results: dict[str, dict[str, Any]]) -> None:
    r = results["reasoning"]
    assert r["errors"] == []
    got = [(p["type"], p.get("text"), p.get("state")) for p in parts(r)]
    assert got == [
        ("step-start", None, None),
        ("reasoning", "Think first.", "done"),
        ("text", "Then answer.", "done"),
    ]


def test_tool_calls_and_bad_arguments(results: dict[str, dict[str, Any]]) -> None:
    r = results["tools"]
    assert r["errors"] == []
    text, weather, clock = parts(r)[1:]
    assert text == {"type": "text", "text": "Checking.", "state": "done"}
    assert weather["type"] == "tool-get_weather"
    assert weather["toolCallId"] == "call_1"
    assert weather["state"] == "input-available"
    assert weather["input"] == {"city": "Paris"}
    assert clock["type"] == "tool-get_time"
    assert clock["state"] == "output-error"
    assert clock["input"] == "{not json"
    assert "not valid JSON" in clock["errorText"]
    assert r["message"]["metadata"]["finishReason"] == "tool-calls"
    assert r["status"] == "ready"


def test_message_metadata(results: dict[str, dict[str, Any]]) -> None:
    r = results["metadata"]
    assert r["errors"] == []
    assert r["message"]["metadata"] == {"trace": "abc", "finishReason": "stop", **usage_metadata()}


def test_error_reaches_on_error_and_keeps_the_partial_text(
    results: dict[str, dict[str, Any]],
) -> None:
    r = results["error"]
    assert r["errors"] == ["upstream overloaded"]
    assert [p.get("text") for p in parts(r) if p["type"] == "text"] == ["Partial "]
    assert r["message"]["metadata"]["usage"] == usage_metadata()["usage"]
    assert r["message"]["metadata"]["finishReason"] == "error"
    assert r["status"] == "error"
    assert r["finished"] is None or r["finished"]["isError"] is True  # 5.0.0 has no onFinish here


def test_length_and_text_as_text(results: dict[str, dict[str, Any]]) -> None:
    assert parts(results["length"])[1]["text"] == "Cut"
    assert results["length"]["message"]["metadata"]["finishReason"] == "length"
    assert results["length"]["errors"] == []
    escaped = parts(results["escape"])[1]
    assert escaped["text"] == '<script>alert("x")</script> \u2028 caf\u00e9 \U0001f600'
