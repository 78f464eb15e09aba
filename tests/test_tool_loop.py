"""The tool loop and the history you own (API.md §5), against real loopback servers.

A scripted native server plays the model: each request's conversation decides what it streams
(tool calls, or text that quotes the tool results), so every step is visible in the requests it
recorded. The demo app (real uvicorn) plays it where its deterministic tool behaviour fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from aistream import (
    AIStream,
    Image,
    Message,
    RetryConfig,
    StreamBusyError,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
from aistream._cli import embedded_server
from aistream.server import create_app
from tests.loopback import Reply, Request
from tests.server.conftest import running

PNG = b"\x89PNG\r\n\x1a\n" + bytes(8)
GUARD = 5.0  # seconds: the bound on every wait, never a delay


def sse(name: str, data: dict[str, Any], stream_id: str, seq: int) -> bytes:
    return f"event: {name}\nid: {stream_id}:{seq}\ndata: {json.dumps(data)}\n\n".encode()


def reply_events(
    stream_id: str,
    *,
    text: list[str] = (),  # type: ignore[assignment]
    calls: list[tuple[str, str, dict[str, Any] | str]] = (),  # type: ignore[assignment]
    usage: tuple[int, int] = (10, 2),
) -> list[bytes]:
    """A native reply: start, tokens, tool calls, usage, done."""
    events = [("start", {"id": stream_id, "model": "script"})]
    events += [("token", {"token": t, "index": i}) for i, t in enumerate(text)]
    for call_id, name, arguments in calls:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        events.append(("tool-call", {"id": call_id, "name": name, "arguments": args}))
    prompt, completion = usage
    events.append(("usage", {"usage": {"promptTokens": prompt, "completionTokens": completion}}))
    events.append(("done", {"finishReason": "tool_calls" if calls else "stop"}))
    return [sse(name, data, stream_id, seq) for seq, (name, data) in enumerate(events)]


class ScriptedModel:
    """A native server that answers with `script(body)`'s events; records every request.

    `cut` maps a request number to the number of events after which that response is cut;
    a request with Last-Event-ID gets the rest of the same response (a resume).
    """

    def __init__(self, script: Callable[[dict[str, Any], int], list[bytes]]) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.cut: dict[int, int] = {}
        self._responses: dict[str, list[bytes]] = {}

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.method == "POST"]

    async def __call__(self, request: Request, reply: Reply) -> None:
        self.requests.append(request)
        if request.method == "DELETE":
            await reply.body(204, b"")
            return
        n = len(self.bodies) - 1
        last = request.headers.get("last-event-id")
        if last:
            stream_id, _, seq = last.rpartition(":")
            events = self._responses[stream_id][int(seq) + 1 :]
        else:
            events = self.script(request.json(), n)
            self._responses[f"r{n}"] = events
        await reply.start()
        for i, event in enumerate(events):
            if not last and self.cut.get(n) == i:
                reply.cut()
                return
            await reply.send(event)
        await reply.end()


def last_of(body: dict[str, Any]) -> dict[str, Any]:
    return body["messages"][-1]


def weather_script(body: dict[str, Any], n: int) -> list[bytes]:
    """Calls get_weather and get_time when asked; answers with what the tools returned."""
    last = last_of(body)
    if last["role"] == "user":
        return reply_events(
            f"r{n}",
            calls=[
                ("c1", "get_weather", {"city": "Paris"}),
                ("c2", "get_time", {"city": "Paris"}),
            ],
        )
    results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
    return reply_events(f"r{n}", text=["Tools said: ", " | ".join(results)])


def record(chat: AIStream) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    for name in (
        "message",
        "streaming-start",
        "token",
        "tool-call",
        "tool-result",
        "streaming-end",
        "error",
    ):
        chat.on(name, lambda *args, _n=name: seen.append((_n, args[0] if args else None)))
    return seen


@contextlib.asynccontextmanager
async def model(
    serve: Any, script: Callable[[dict[str, Any], int], list[bytes]]
) -> AsyncIterator[tuple[str, ScriptedModel]]:
    scripted = ScriptedModel(script)
    server = await serve(scripted)
    yield server.url + "/api/chat", scripted


# --- the loop --------------------------------------------------------------------------------


async def test_two_tools_in_one_step_run_concurrently_then_the_answer_streams(serve: Any) -> None:
    both_started = asyncio.Event()
    started: list[str] = []
    threads: list[int] = []

    async def get_weather(city: str) -> dict[str, Any]:
        """Weather in a city."""
        started.append("weather")
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), GUARD)  # waits for the other one: concurrent
        return {"city": city, "temperature": 21}

    def get_time(city: str) -> str:
        """Time in a city."""
        threads.append(threading.get_ident())
        started.append("time")
        if len(started) == 2:
            both_started.set()
        return "noon"

    async with model(serve, weather_script) as (url, scripted):
        chat = AIStream(url, tools=[get_weather, get_time])
        seen = record(chat)
        reply = await chat.send("Weather and time in Paris?")
        await chat.aclose()

    assert reply.content == 'Tools said: {"city":"Paris","temperature":21} | noon'
    assert reply.finish_reason == "stop"
    assert threads and threads[0] != threading.get_ident()  # the sync handler ran in a thread
    assert [n for n, _ in seen] == [
        "message",
        "streaming-start",
        "tool-call",
        "tool-call",
        "message",
        "streaming-end",
        "tool-result",
        "message",
        "tool-result",
        "message",
        "streaming-start",
        "token",
        "token",
        "message",
        "streaming-end",
    ]
    results = [p for n, p in seen if n == "tool-result"]
    assert results == [
        ToolResult(call_id="c1", name="get_weather", content='{"city":"Paris","temperature":21}'),
        ToolResult(call_id="c2", name="get_time", content="noon"),
    ]
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    assert chat.messages[1].finish_reason == "tool_calls"
    assert [m.tool_call_id for m in chat.messages[2:4]] == ["c1", "c2"]
    assert chat.usage == Usage(prompt_tokens=20, completion_tokens=4, total_tokens=24)
    second = scripted.bodies[1]["messages"]
    assert second[1]["toolCalls"][0] == {
        "id": "c1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert second[2] == {
        "role": "tool",
        "content": '{"city":"Paris","temperature":21}',
        "toolCallId": "c1",
    }
    assert scripted.bodies[0]["tools"][0]["name"] == "get_weather"


async def test_a_raising_handler_and_bad_arguments_become_error_results(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def script(body: dict[str, Any], n: int) -> list[bytes]:
        if last_of(body)["role"] == "user":
            return reply_events(
                f"r{n}",
                calls=[("c1", "explode", {}), ("c2", "add", {"a": "x"}), ("c3", "ghost", {})],
            )
        return reply_events(f"r{n}", text=["ok"])

    def explode() -> str:
        """Always fails."""
        raise RuntimeError("the tool broke")

    def add(a: int, b: int = 0) -> int:
        """Add."""
        raise AssertionError("never called with bad arguments")

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url, tools=[explode, add])
        reply = await chat.send("go")
        await chat.aclose()
    assert reply.content == "ok"
    tool_messages = [m for m in chat.messages if m.role == "tool"]
    assert all(m.is_error for m in tool_messages)
    assert tool_messages[0].content == "RuntimeError: the tool broke"
    assert "a: Input should be a valid integer" in tool_messages[1].content
    assert "there is no tool named 'ghost'" in tool_messages[2].content
    sent = [m for m in scripted.bodies[1]["messages"] if m["role"] == "tool"]
    assert [m.get("isError") for m in sent] == [True, True, True]
    assert "tool explode raised" in caplog.text


async def test_a_model_that_keeps_calling_stops_at_max_steps(serve: Any) -> None:
    calls = []

    def lookup(n: int) -> int:
        """Look up."""
        calls.append(n)
        return n

    def script(body: dict[str, Any], n: int) -> list[bytes]:
        return reply_events(f"r{n}", calls=[(f"c{n}", "lookup", {"n": n})])

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url, tools=[lookup], max_steps=3)
        starts: list[None] = []
        chat.on("streaming-start", lambda: starts.append(None))
        reply = await chat.send("loop forever")
        assert len(scripted.bodies) == 3 and len(starts) == 3
        assert calls == [0, 1]  # the last reply's call is not run
        assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].id == "c2"
        assert chat.messages[-1] == reply
        # the caller may go on: send_tool_results runs it (or takes a result) and loops again
        reply = await chat.send_tool_results({"c2": 2})
        assert len(scripted.bodies) == 6 and calls == [0, 1, 3, 4]
        await chat.aclose()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_stop_during_a_handler_ends_the_send_and_adds_no_tool_message(
    serve: Any, kind: str
) -> None:
    entered = asyncio.Event()
    release = threading.Event()
    cancelled: list[bool] = []
    loop = asyncio.get_running_loop()

    async def slow_async(city: str) -> str:
        """Slow."""
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    def slow_sync(city: str) -> str:
        """Slow."""
        loop.call_soon_threadsafe(entered.set)
        release.wait(GUARD)
        return "dropped"

    tool = slow_async if kind == "async" else slow_sync

    def script(body: dict[str, Any], n: int) -> list[bytes]:
        if last_of(body)["role"] == "user" and n == 0:
            return reply_events(f"r{n}", calls=[("c1", tool.__name__, {"city": "Oslo"})])
        return reply_events(f"r{n}", text=["fresh"])

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url, tools=[tool])
        task = asyncio.create_task(chat.send("go"))
        await asyncio.wait_for(entered.wait(), GUARD)
        assert chat.is_streaming
        with pytest.raises(StreamBusyError):
            await chat.send("meanwhile")
        chat.stop()
        reply = await asyncio.wait_for(task, GUARD)
        release.set()
        assert reply.finish_reason == "stopped" and reply.tool_calls[0].id == "c1"
        assert [m.role for m in chat.messages] == ["user", "assistant"]
        assert chat.messages[-1].finish_reason == "stopped"
        assert cancelled == ([True] if kind == "async" else [])
        assert not chat.is_streaming
        again = await chat.send("next")  # at once; the unanswered call gets a wire-only result
        assert again.content == "fresh"
        sent = scripted.bodies[1]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
        assert sent[2]["isError"] is True and sent[2]["toolCallId"] == "c1"
        assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]
        await chat.aclose()


async def test_a_drop_in_step_two_resumes_that_step_only_and_no_tool_runs_twice(
    serve: Any,
) -> None:
    runs: list[str] = []

    def get_weather(city: str) -> str:
        """Weather."""
        runs.append(city)
        return "sunny"

    def script(body: dict[str, Any], n: int) -> list[bytes]:
        if last_of(body)["role"] == "user":
            return reply_events(f"r{n}", calls=[("c1", "get_weather", {"city": "Rome"})])
        return reply_events(f"r{n}", text=["It", " is", " sunny", " in", " Rome", "."])

    async with model(serve, script) as (url, scripted):
        scripted.cut[1] = 4  # step 2 is cut after start and three tokens
        chat = AIStream(url, tools=[get_weather], retry=RetryConfig(initial_delay=0, jitter=False))
        retries: list[Any] = []
        tokens: list[str] = []
        chat.on("retry", retries.append)
        chat.on("token", tokens.append)
        reply = await chat.send("Weather in Rome?")
        await chat.aclose()
    assert reply.content == "It is sunny in Rome."
    assert tokens == ["It", " is", " sunny", " in", " Rome", "."]  # nothing lost or repeated
    assert runs == ["Rome"]  # the tool ran once
    posts = [r for r in scripted.requests if r.method == "POST"]
    assert len(posts) == 3  # step 1, step 2, step 2's resume; step 1 never again
    assert posts[2].headers["last-event-id"] == "r1:3"
    assert [last_of(r.json())["role"] for r in posts] == ["user", "tool", "tool"]
    assert len(retries) == 1 and retries[0].resume is True
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "assistant"]


async def test_a_tool_without_handler_is_answered_by_the_caller(serve: Any) -> None:
    booking = Tool(
        name="book",
        description="Book a table.",
        parameters={"type": "object", "properties": {"people": {"type": "integer"}}},
    )

    def script(body: dict[str, Any], n: int) -> list[bytes]:
        if last_of(body)["role"] == "user":
            return reply_events(f"r{n}", calls=[("b1", "book", {"people": 2})])
        return reply_events(f"r{n}", text=["Booked: ", last_of(body)["content"]])

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url, tools=[booking])
        results: list[ToolResult] = []
        chat.on("tool-result", results.append)
        reply = await chat.send("A table for two")
        assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].name == "book"
        with pytest.raises(ValueError, match="no tool call with id 'nope'"):
            await chat.send_tool_results({"nope": 1})
        with pytest.raises(ValueError, match="neither a result nor a handler"):
            await chat.send_tool_results({})
        reply = await chat.send_tool_results({"b1": {"table": 7}}, options={"temperature": 0})
        await chat.aclose()
    assert reply.content == 'Booked: {"table":7}'
    assert results == [ToolResult(call_id="b1", name="book", content='{"table":7}')]
    assert scripted.bodies[1]["temperature"] == 0


async def test_per_send_options_apply_to_every_step_and_merge_over_the_constructor(
    serve: Any,
) -> None:
    async with model(serve, weather_script) as (url, scripted):
        chat = AIStream(
            url,
            tools=[Tool.from_function(lambda city: city, name="get_weather"), _time],
            options={"temperature": 1, "top_p": 0.5},
        )
        await chat.send("Weather?", options={"temperature": 0})
        await chat.send("Again?")
        await chat.aclose()
    steps = scripted.bodies
    assert [(b["temperature"], b["top_p"]) for b in steps] == [(0, 0.5)] * 2 + [(1, 0.5)] * 2


def _time(city: str) -> str:
    """Time in a city."""
    return "noon"


async def test_a_request_the_provider_cannot_carry_changes_nothing(serve: Any) -> None:
    async with model(serve, weather_script) as (url, scripted):
        chat = AIStream(url, protocol="ollama")
        with pytest.raises(ValueError, match="Ollama takes images as bytes"):
            await chat.send("What is it?", images=[Image(url="https://x.test/cat.png")])
        assert chat.messages == [] and scripted.requests == []
        await chat.aclose()


async def test_demo_server_runs_a_two_tool_loop(serve: Any) -> None:
    def get_weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temperature": 21}

    async def get_time(city: str) -> str:
        """Local time in a city."""
        return "12:00"

    app = create_app(demo_tokens_per_second=None, heartbeat_interval=None)
    async with running(app) as url:
        chat = AIStream(url + "/api/chat", tools=[get_weather, get_time])
        reply = await chat.send("Use get_weather and get_time for Paris")
        await chat.aclose()
    assert reply.content.startswith(
        'The get_weather tool returned: {"city":"Paris","temperature":21} '
        "The get_time tool returned: 12:00"
    )
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "tool", "assistant"]


# --- the history you own ---------------------------------------------------------------------


def every_kind() -> list[Message]:
    return [
        Message(role="system", content="Be brief."),
        Message(role="user", content="What is this?", images=[Image(data=PNG)]),
        Message(role="user", content="And this?", images=[Image(url="https://x.test/a.png")]),
        Message(
            role="assistant",
            content="Checking.",
            reasoning="hmm",
            finish_reason="tool_calls",
            usage=Usage(prompt_tokens=3, completion_tokens=4),
            tool_calls=[ToolCall(id="c1", name="f", arguments='{"x":1}', signature="sig")],
        ),
        Message(role="tool", content="boom", tool_call_id="c1", is_error=True),
        Message(role="assistant", content="Done.", finish_reason="stop"),
    ]


def test_dump_to_json_text_and_load_round_trips_every_message_kind() -> None:
    chat = AIStream("http://127.0.0.1:1/api/chat", messages=every_kind())
    chat._usage = Usage(prompt_tokens=7, completion_tokens=9)
    text = json.dumps(chat.dump())  # JSON-safe: no bytes, no datetimes
    data = json.loads(text)
    assert data["messages"][1]["images"][0]["data"] == "iVBORw0KGgoAAAAAAAAAAA=="
    other = AIStream("http://127.0.0.1:1/api/chat")
    other.load(data)
    assert other.messages == chat.messages
    assert other.usage == Usage(prompt_tokens=7, completion_tokens=9, total_tokens=16)
    third = AIStream("http://127.0.0.1:1/api/chat")
    third.load(text)  # the JSON text itself
    assert third.messages == chat.messages


def test_history_dicts_at_construction_and_clear_errors() -> None:
    dicts = [m.model_dump() for m in every_kind()]
    chat = AIStream("http://127.0.0.1:1/api/chat", messages=dicts)
    assert [m.role for m in chat.messages] == [m.role for m in every_kind()]
    with pytest.raises(ValueError, match=r"messages\[0\] is not a valid message: role"):
        AIStream("http://127.0.0.1:1/api/chat", messages=[{"role": "robot", "content": "x"}])
    with pytest.raises(TypeError, match="list of Messages or dicts"):
        AIStream("http://127.0.0.1:1/api/chat", messages="hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="function or a Tool"):
        AIStream("http://127.0.0.1:1/api/chat", tools=[42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_steps must be at least 1"):
        AIStream("http://127.0.0.1:1/api/chat", max_steps=0)
    with pytest.raises(TypeError, match="load\\(\\) takes what dump\\(\\) returns"):
        chat.load({"history": []})


async def test_edit_then_retry_regenerates_from_the_edited_message(serve: Any) -> None:
    def script(body: dict[str, Any], n: int) -> list[bytes]:
        return reply_events(f"r{n}", text=["re: ", last_of(body)["content"]])

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url)
        await chat.send("first")
        await chat.send("second")
        question = chat.messages[2]
        edited = chat.edit(question.id, "second, edited")
        assert edited.id == question.id and len(chat.messages) == 3
        with pytest.raises(ValueError, match="edit\\(\\) rewrites user messages"):
            chat.edit(chat.messages[1].id, "no")
        with pytest.raises(ValueError, match="no message"):
            chat.edit("missing", "no")
        reply = await chat.retry()
        await chat.aclose()
    assert reply is not None and reply.content == "re: second, edited"
    assert [m.content for m in chat.messages] == [
        "first",
        "re: first",
        "second, edited",
        "re: second, edited",
    ]
    assert scripted.bodies[-1]["messages"][-1]["content"] == "second, edited"


async def test_fork_copies_history_usage_and_settings_not_listeners(serve: Any) -> None:
    def script(body: dict[str, Any], n: int) -> list[bytes]:
        return reply_events(f"r{n}", text=[str(len(body["messages"]))])

    async with model(serve, script) as (url, scripted):
        chat = AIStream(url, model="m", system_prompt="S", tools=[_time], options={"seed": 1})
        chat.on("token", lambda t: None)
        await chat.send("one")
        twin = chat.fork()
        assert twin.messages == chat.messages and twin.usage == chat.usage
        assert twin.listeners("token") == []
        await twin.send("two")
        assert len(chat.messages) == 2 and len(twin.messages) == 4
        await asyncio.gather(chat.aclose(), twin.aclose())
    body = scripted.bodies[-1]
    assert (body["model"], body["systemPrompt"], body["seed"]) == ("m", "S", 1)
    assert body["tools"][0]["name"] == "_time"


async def test_load_while_streaming_is_refused(serve: Any) -> None:
    release = asyncio.Event()

    async def handler(request: Request, reply: Reply) -> None:
        await reply.start()
        await reply.send(sse("start", {"id": "s"}, "s", 0))
        await release.wait()
        reply.cut()

    server = await serve(handler)
    chat = AIStream(server.url + "/api/chat", retry=RetryConfig(max_retries=0))
    started = asyncio.Event()
    chat.on("streaming-start", started.set)
    task = asyncio.create_task(chat.send("hi"))
    await asyncio.wait_for(started.wait(), GUARD)
    with pytest.raises(StreamBusyError):
        chat.load({"messages": []})
    with pytest.raises(StreamBusyError):
        chat.edit("x", "y")
    chat.stop()
    release.set()
    await asyncio.wait_for(task, GUARD)
    await chat.aclose()


async def test_tokens_yields_the_text_of_every_step(serve: Any) -> None:
    def get_weather(city: str) -> str:
        """Weather."""
        return "sunny"

    def get_time(city: str) -> str:
        """Time."""
        return "noon"

    async with model(serve, weather_script) as (url, _):
        chat = AIStream(url, tools=[get_weather, get_time])
        async with contextlib.aclosing(chat.tokens("Weather?")) as tokens:
            text = [token async for token in tokens]
        await chat.aclose()
    assert text == ["Tools said: ", "sunny | noon"]
    assert not chat.is_streaming


def test_send_sync_runs_the_loop_and_images_reach_the_server() -> None:
    seen: list[str] = []

    def get_time(city: str) -> str:
        """Local time in a city."""
        seen.append(city)
        return "noon"

    with embedded_server(demo_tokens_per_second=None) as url:
        chat = AIStream(url + "/api/chat", tools=[get_time])
        reply = chat.send_sync("get_time in Oslo?", images=[Image(data=PNG)])
    assert seen == ["Oslo"]
    assert reply.content.startswith("The get_time tool returned: noon")
    assert chat.messages[0].images == [Image(data=PNG)]
