"""The scripted ``aistream demo``: one conversation that shows streaming, usage totals, a
dropped connection that resumes without a repeated token, and a stop, each one checked.

Imports the public `aistream`, `_console` for its output, and three private pieces: `_proxy`
(stdlib only), through which a connection is dropped on purpose; the wire's `SSEDecoder`, with
which the recorded responses are read; and h11 (uvicorn's and httpcore's HTTP/1.1 parser),
which undoes their chunked framing. `_cli` starts the embedded server and calls `run_tour`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from urllib.parse import urlsplit

import h11

from aistream import AIStream, RetryConfig, RetryEvent, ToolResult, Usage

from ._console import Console, retry_line, show_tools, usage_line
from ._proxy import FaultProxy
from ._wire._sse import SSEDecoder

__all__ = ["DEMO_PROMPTS", "DEMO_STOP_AFTER", "DEMO_TOOL_PROMPT", "SAMPLE_TOOLS", "run_tour"]


DEMO_PROMPTS = (
    "Hello! What can you do?",
    "How does a dropped stream resume?",
    "Tell me a long story.",
)
DEMO_STOP_AFTER = 5  # tokens of the third reply before chat.stop()


class _Checks:
    """Prints each verification as it is made and counts the failures."""

    def __init__(self, console: Console) -> None:
        self.console, self.passed, self.failed = console, 0, 0

    def __call__(self, ok: bool, text: str) -> bool:
        if ok:
            self.passed += 1
            self.console.line(f"  [ok] {text}", "32")
        else:
            self.failed += 1
            self.console.line(f"  [FAIL] {text}", "1;31")
        return ok


def _response_body(raw: bytes) -> bytes:
    """The body of a recorded HTTP/1.1 response, as far as it arrived.

    h11 (uvicorn's and httpcore's HTTP/1.1 parser) undoes the chunked framing; it reads a
    response only after a request, hence the stand-in request.
    """
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "demo")]))
    conn.receive_data(raw)
    body = bytearray()
    with contextlib.suppress(h11.RemoteProtocolError):
        while isinstance(event := conn.next_event(), h11.Response | h11.Data):
            if isinstance(event, h11.Data):
                body += event.data
    return bytes(body)


def _token_indices(raw: bytes) -> list[int]:
    """Indices of the native `token` events that arrived whole in a recorded HTTP response."""
    indices: list[int] = []
    # feed() returns whole events only: one cut short at the end is not among them
    for event in SSEDecoder().feed(_response_body(raw)):
        if event.event != "token":
            continue
        with contextlib.suppress(ValueError):
            payload = json.loads(event.data)
            if isinstance(payload, dict) and isinstance(payload.get("index"), int):
                indices.append(payload["index"])
    return indices


def _span(indices: list[int]) -> str:
    if not indices:
        return "none"
    return f"{indices[0]}-{indices[-1]}" if len(indices) > 1 else str(indices[0])


def _cut_point(response: bytes) -> int:
    """About 40% into the body of a recorded response: mid-stream, past the headers."""
    head_end = response.find(b"\r\n\r\n") + 4
    if head_end < 4:
        return len(response) // 2
    return head_end + (len(response) - head_end) * 2 // 5


def add_numbers(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def current_time(city: str) -> str:
    """The current UTC time (the city is only echoed back).

    Args:
        city: The city asked about.
    """
    return f"{time.strftime('%H:%M', time.gmtime())} UTC (asked for {city})"


#: The sample tools of the demo and of ``aistream chat --tools``: name one to see a tool loop.
SAMPLE_TOOLS = (add_numbers, current_time)
DEMO_TOOL_PROMPT = "Please add_numbers for me, then say what you found."


async def run_tour(base_url: str, console: Console) -> int:
    """The scripted conversation against the demo model at `base_url`: 0 when every check
    passed, 1 otherwise."""
    server = urlsplit(base_url)
    retry = RetryConfig(max_retries=3, initial_delay=0.05, max_delay=0.5)
    check = _Checks(console)
    async with FaultProxy(server.hostname or "127.0.0.1", server.port or 80, record=True) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}/api/chat"

        def new_chat() -> AIStream:
            # "Connection: close": one connection per request, so the proxy's connection
            # index counts requests and the cut lands on the request we choose.
            headers = {"Connection": "close"}
            return AIStream(endpoint, protocol="native", retry=retry, headers=headers, timeout=10)

        # The fault-free run of the same conversation, to compare against.
        reference: list[list[str]] = []
        first_connection: list[int] = []  # of each reference turn
        async with new_chat() as ref:
            for prompt in DEMO_PROMPTS:
                first_connection.append(len(proxy.connections))
                reference.append([token async for token in ref.tokens(prompt)])
        ref_turn_2 = proxy.connections[first_connection[1]]
        cut_at = _cut_point(bytes(ref_turn_2.response))
        ref_size = ref_turn_2.bytes_down

        console.line("aistream demo", "1")
        console.line(f"  the built-in demo model at {base_url}/api/chat, reached through a")
        console.line(f"  fault-injecting proxy at 127.0.0.1:{proxy.port}; no key, no network")

        current: list[str] = []
        retries: list[RetryEvent] = []

        def on_token(token: str) -> None:
            current.append(token)
            console.write(token)

        def on_retry(event: RetryEvent) -> None:
            retries.append(event)
            console.status(retry_line(event))

        async with new_chat() as chat:
            chat.on("token", on_token)
            chat.on("retry", on_retry)

            # 1. Streaming.
            console.line()
            console.line("1. Streaming: each token is printed the moment it arrives", "1;36")
            console.line(f"you> {DEMO_PROMPTS[0]}", "1")
            reply = await chat.send(DEMO_PROMPTS[0])
            console.status(usage_line(reply.usage, chat.usage))
            check(
                current == reference[0],
                f"{len(current)} tokens arrived in order, as in the fault-free run",
            )

            # 2. A dropped connection that resumes.
            current.clear()
            first = len(proxy.connections)
            proxy.cut_after = {first: cut_at}
            console.line()
            console.line(
                f"2. A dropped connection: the proxy cuts the next connection after "
                f"{cut_at} of its ~{ref_size} bytes",
                "1;36",
            )
            console.line(f"you> {DEMO_PROMPTS[1]}", "1")
            reply = await chat.send(DEMO_PROMPTS[1])
            proxy.cut_after = None
            console.status(usage_line(reply.usage, chat.usage))
            conns = proxy.connections[first:]
            resumed = bool(retries) and all(r.resume for r in retries)
            check(
                conns[0].fault == "cut" and resumed,
                f"the connection was cut after {conns[0].bytes_down} bytes and the client "
                f"resumed it (retry events: {len(retries)}, resume=True)",
            )
            last_ids = [
                m.group(1).decode()
                for c in conns[1:]
                if (m := re.search(rb"(?im)^last-event-id:[ \t]*([^\r\n]*)", c.request))
            ]
            if last_ids:
                console.line(f"  the client reconnected with Last-Event-ID: {last_ids[0]}")
            expected = "".join(reference[1])
            check(
                reply.content == expected,
                f"the reply equals a fault-free run of the same conversation "
                f"({len(expected)} characters)",
            )
            check(
                current == reference[1],
                f"the client emitted {len(current)} tokens, each once and in order, "
                f"as in the fault-free run ({len(reference[1])})",
            )
            per_conn = [_token_indices(bytes(c.response)) for c in conns]
            wire = [i for indices in per_conn for i in indices]
            check(
                wire == list(range(len(reference[1]))),
                "no token index was delivered twice: "
                + ", then ".join(
                    f"{_span(ix)} on connection {c.index}"
                    for c, ix in zip(conns, per_conn, strict=True)
                ),
            )

            # 3. Stop.
            current.clear()

            def stop_early(token: str) -> None:
                if len(current) == DEMO_STOP_AFTER:
                    chat.stop()

            chat.on("token", stop_early)
            console.line()
            console.line(
                f"3. Stop: chat.stop() after {DEMO_STOP_AFTER} tokens; the partial reply stays",
                "1;36",
            )
            console.line(f"you> {DEMO_PROMPTS[2]}", "1")
            reply = await chat.send(DEMO_PROMPTS[2])
            chat.remove_listener("token", stop_early)
            console.status("[stopped]")
            console.status(usage_line(reply.usage, chat.usage))
            full = "".join(reference[2])
            kept = chat.messages[-1]
            check(
                reply.finish_reason == "stopped"
                and kept.content == reply.content
                and kept.finish_reason == "stopped",
                f"send() returned the partial reply and history keeps it with "
                f"finish_reason={kept.finish_reason!r}",
            )
            check(
                0 < len(reply.content) < len(full) and full.startswith(reply.content),
                f"{len(current)} of the {len(reference[2])} tokens of the full reply arrived",
            )

            # Totals.
            console.line()
            console.line("Usage totals for the conversation", "1;36")
            turns = [m.usage for m in chat.messages if m.role == "assistant" and m.usage]
            for number, usage in enumerate(turns, 1):
                console.line(
                    f"  turn {number}: {usage.prompt_tokens} prompt + "
                    f"{usage.completion_tokens} completion = {usage.total_tokens}"
                )
            total = chat.usage
            console.line(
                f"  total:  {total.prompt_tokens} prompt + {total.completion_tokens} "
                f"completion = {total.total_tokens} tokens"
            )
            summed = sum(turns, Usage())
            check(len(turns) == 3 and summed == total, "the totals are the sum of the 3 turns")

        # 4. A tool loop.
        console.line()
        console.line(
            "4. Tools: the model calls add_numbers; the client runs it and streams the answer",
            "1;36",
        )
        ran: list[ToolResult] = []
        steps: list[None] = []
        async with AIStream(endpoint, protocol="native", retry=retry, tools=SAMPLE_TOOLS) as agent:
            agent.on("token", console.write)
            agent.on("streaming-start", lambda: steps.append(None))
            agent.on("tool-result", ran.append)
            show_tools(agent, console)
            console.line(f"you> {DEMO_TOOL_PROMPT}", "1")
            reply = await agent.send(DEMO_TOOL_PROMPT)
            console.status(usage_line(reply.usage, agent.usage))
            roles = [m.role for m in agent.messages]
            check(
                len(steps) == 2 and len(ran) == 1 and not ran[0].is_error,
                f"one send, two model calls; add_numbers ran once and returned {ran[0].content}"
                if ran
                else "the tool ran",
            )
            check(
                roles == ["user", "assistant", "tool", "assistant"]
                and bool(ran)
                and reply.content.startswith(f"The add_numbers tool returned: {ran[0].content}"),
                "history: user, assistant (the call), tool (the result), assistant (the answer)",
            )

    console.line()
    if check.failed:
        console.line(f"{check.failed} of {check.passed + check.failed} checks FAILED", "1;31")
        return 1
    console.line(f"All {check.passed} checks passed.", "1;32")
    return 0
