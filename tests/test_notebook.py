"""The notebook: examples/notebook.ipynb on a real ipykernel, and the forms it shows (API.md §9).

The end-to-end test executes the notebook with nbclient on a real kernel, the demo server
running inside it, and reads every message the kernel sent. The unit tests drive LiveDisplay
with a stand-in for ``IPython.display`` (a narrow seam: display() and a handle's update()).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from aistream import AIStream, Message, ToolCall, ToolResult, Usage
from aistream._notebook import LiveDisplay, escape_markdown
from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream.models import RetryEvent
from aistream.server._demo import DemoModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPT = '<script>alert("x")</script> & **bold**'


class RecordingClient(NotebookClient):
    """nbclient, keeping each iopub message type per cell."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[int, list[str]] = {}

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.seen.setdefault(cell_index, []).append(msg["msg_type"])
        return super().process_message(msg, cell, cell_index)


def _markdown(outputs: list[Any]) -> list[str]:
    return [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]


@pytest.mark.timeout(120)
def test_the_example_notebook_runs_on_a_kernel_and_displays_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AISTREAM_EXAMPLE_RATE", "150")  # ~0.4 s a reply: several updates
    notebook = nbformat.read(EXAMPLES / "notebook.ipynb", as_version=4)
    client = RecordingClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    client.execute()
    cells = notebook.cells
    index = {c.source.split("\n")[-1]: i for i, c in enumerate(cells) if c.cell_type == "code"}

    q1 = "What makes streaming replies hard?"
    q2 = "And how does a resume after a dropped connection work?"
    demo = DemoModel()
    first = demo.reply(ChatRequest((ChatMessage("user", q1),), model="demo"))
    second = demo.reply(
        ChatRequest(
            (ChatMessage("user", q1), ChatMessage("assistant", first), ChatMessage("user", q2)),
            model="demo",
        )
    )
    for source, expected in (
        (f'reply = await chat.send("{q1}", display=True)', first),
        (f'reply2 = chat.send_sync("{q2}")', second),
    ):
        i = index[source]
        (shown,) = _markdown(cells[i].outputs)  # one output, updated in place
        body, _, footer = shown.partition("\n\n*")
        assert body == escape_markdown(expected)
        assert "tokens" in footer and "first token" in footer and "finish: stop" in footer
        kinds = client.seen[i]
        assert kinds.count("display_data") == 1
        assert kinds.count("update_display_data") >= 3, kinds  # it updated while streaming
        assert "error" not in kinds

    (message,) = _markdown(cells[index["reply"]].outputs)
    assert message.startswith("**assistant**") and escape_markdown(first) in message
    assert "text/html" in cells[index["reply"]].outputs[0]["data"]
    (usage,) = _markdown(cells[index["chat.usage"]].outputs)
    assert "prompt +" in usage and "tokens" in usage
    (transcript,) = _markdown(cells[index["chat"]].outputs)
    assert transcript.count("**user**") == 2 and transcript.count("**assistant**") == 2


def test_display_outside_a_notebook_shows_nothing_and_imports_no_ipython() -> None:
    code = f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
from _embedded import serve_in_thread
from aistream import AIStream
from aistream.server import create_app
with serve_in_thread(create_app(demo_tokens_per_second=0)) as base:
    chat = AIStream(base + "/api/chat")
    chat.display()
    reply = chat.send_sync("hi", display=True)
assert reply.content, reply
assert "IPython" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


# --- LiveDisplay with a stand-in for IPython.display ------------------------------------------


class FakeHandle:
    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def update(self, obj: Any) -> None:
        self.shown.append(obj.data)


class FakeDisplay:
    """``IPython.display``'s Markdown and display(..., display_id=True)."""

    class Markdown:
        def __init__(self, data: str) -> None:
            self.data = data

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.outputs = 0

    def display(self, obj: Any, display_id: bool) -> FakeHandle:
        assert display_id is True
        self.outputs += 1
        self.shown.append(obj.data)
        return FakeHandle(self.shown)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live_display(interval: float = 0.1) -> tuple[LiveDisplay, FakeDisplay, Clock]:
    display, clock = FakeDisplay(), Clock()
    return LiveDisplay(display, interval=interval, clock=clock), display, clock


async def test_updates_are_throttled_and_the_last_one_is_sent_by_a_timer() -> None:
    shown, display, clock = live_display(interval=10.0)  # the timer never fires on its own
    shown._on_start()
    clock.now += 0.5
    shown._on_token("Hello")  # the first write after display(): at once
    for word in (" big", " wide", " world"):
        clock.now += 0.01
        shown._on_token(word)  # within the interval: held
    assert display.shown == ["*…*", "Hello"]
    assert shown._timer is not None  # the held text goes out when the interval ends
    shown._tick()
    assert display.shown[-1] == "Hello big wide world"
    assert display.outputs == 1


async def test_the_final_form_has_everything_and_model_markup_as_text() -> None:
    shown, display, clock = live_display(interval=0.0)
    shown._on_start()
    clock.now += 0.25
    shown._on_reasoning("think <b>")
    shown._on_token(SCRIPT)
    shown._on_call(ToolCall(id="c1", name="get_weather", arguments='{"q": "```"}'))
    shown._on_result(ToolResult(call_id="c1", name="get_weather", content="sunny <i>"))
    usage = Usage(prompt_tokens=3, completion_tokens=4)
    reply = Message(role="assistant", content=SCRIPT, usage=usage, finish_reason="stop")
    shown._on_message(reply)
    clock.now += 1.0

    class Chat:
        def remove_listener(self, event: str, listener: Any) -> None: ...

    shown.close(Chat())  # type: ignore[arg-type]
    final = display.shown[-1]
    assert "<script>" not in final and "<b>" not in final and "<i>" not in final.split("```")[0]
    assert escape_markdown(SCRIPT) in final
    assert final.startswith("<details><summary>Reasoning</summary>\n\nthink &lt;b&gt;")
    assert '````json\n{"q": "```"}\n````' in final  # arguments verbatim in a longer fence
    assert "**Tool result** `get_weather` `c1`\n\n```\nsunny <i>\n```" in final
    assert final.endswith(
        "*3 prompt + 4 completion = 7 tokens · first token 0.25 s · 1.25 s · finish: stop*"
    )


async def test_a_restart_clears_the_text_shown() -> None:
    shown, display, _ = live_display(interval=0.0)
    shown._on_start()
    shown._on_token("partial")
    error = ConnectionError("cut")
    shown._on_retry(RetryEvent(attempt=1, delay=0.0, error=error, resume=False))
    shown._on_token("whole")
    assert display.shown[-1] == "whole"


def test_message_usage_and_chat_forms_escape_model_text() -> None:
    message = Message(role="assistant", content=SCRIPT, reasoning="<r>")
    markdown, page = message._repr_markdown_(), message._repr_html_()
    assert escape_markdown(SCRIPT) in markdown and "<script>" not in markdown
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert Usage(prompt_tokens=1, completion_tokens=2)._repr_markdown_() == (
        "*1 prompt + 2 completion = 3 tokens*"
    )
    chat = AIStream("http://127.0.0.1:9/api/chat")
    assert "no messages yet" in chat._repr_markdown_() and "aistream-chat" in chat._repr_html_()
    asyncio.run(chat.aclose())
