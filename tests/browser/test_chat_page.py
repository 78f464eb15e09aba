"""The chat page of ``aistream serve`` in a real headless Chromium, driven by Playwright.

Each test serves ``with_chat_page(create_app(...))`` on a real uvicorn over loopback (through a
`FaultProxy` where a connection must break) and drives Debian's ``chromium`` as a user would:
type, press Enter, watch the reply, press Stop. `make test` installs chromium when it is
missing; without it these tests skip locally and fail under ``CI=true``. A screenshot of the
page is saved to ``.cache/artifacts/chat-page.png``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aistream._proxy import FaultProxy, Faults
from aistream._wire._dialect import ChatRequest
from aistream._wire._events import ReasoningDelta, StreamEvent, TextDelta, UsageReport
from aistream._wire._sse import SSEDecoder
from aistream.server import create_app
from aistream.server._page import chat_page, with_chat_page
from tests.servers import running

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "artifacts"
#: What the machine's closed network needs (background connections are refused otherwise).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # a bound on every wait for the page, never a pause

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs chromium: `make test` installs it (apt-get install chromium)"
)

playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A fresh headless Chromium with its own empty profile."""
    async with playwright_api.async_playwright() as p:
        with tempfile.TemporaryDirectory() as profile:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS
            )
            try:
                yield context
            finally:
                await context.close()


def page_closes_its_connection(app: Any) -> Any:
    """The page's response asks the browser to close its connection, so the chat requests
    that follow come on new ones: the proxy's faults are per connection."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_close(message: Any) -> None:
            if message["type"] == "http.response.start" and scope.get("path") == "/":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_close)

    return wrapped


async def full_reply(base: str, body: dict[str, Any]) -> str:
    """The reply the server gives `body` when nothing breaks (the demo model is deterministic)."""
    decoder, text = SSEDecoder(), []
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{base}/api/chat", json=body)
    for event in decoder.feed(response.content):
        if event.event == "token":
            text.append(json.loads(event.data)["token"])
    return "".join(text)


async def ask(page: Any, text: str) -> Any:
    """Type `text`, press Enter; return the locator of the reply's status line."""
    await page.fill("#input", text)
    await page.press("#input", "Enter")
    return page.locator("section.assistant .status").last


async def test_the_page_is_served_without_credentials_and_with_a_strict_policy() -> None:
    app = create_app(api_keys=["k-1"])
    async with running(with_chat_page(app)) as base, httpx.AsyncClient() as client:
        page = await client.get(f"{base}/")
        api = await client.post(f"{base}/api/chat", json={"messages": []})
    html, policy = chat_page()
    assert page.status_code == 200 and page.content == html
    assert page.headers["content-security-policy"] == policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert api.status_code == 401  # the page is open; the API behind it is not
    assert b"https://" not in html and b"http://" not in html  # nothing loaded from elsewhere


async def test_a_reply_streams_and_a_cut_connection_resumes_exactly(browser: Any) -> None:
    app = create_app(demo_tokens_per_second=200)
    async with running(page_closes_its_connection(with_chat_page(app))) as base:
        host, port = base.removeprefix("http://").split(":")

        def plan(index: int) -> Faults:  # 0: the page (closed after it); 1: the chat request
            return Faults(cut_after=1500) if index == 1 else Faults()

        async with FaultProxy(host, int(port), plan=plan) as proxy:
            page = await browser.new_page()
            await page.goto(f"http://{host}:{proxy.port}/")
            status = await ask(page, "Tell me about streams")
            # tokens arrive while the reply streams (the text grows before the end)
            await page.locator("section.assistant .body div").first.wait_for(timeout=WAIT_MS)
            await status.wait_for(timeout=WAIT_MS)
            shown = await page.evaluate("() => conversation.at(-1).content")
            specs = await page.evaluate("() => toolSpecs")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "chat-page.png"))
        assert [c.fault for c in proxy.connections[:2]] == [None, "cut"], proxy.connections
        assert len(proxy.connections) >= 3  # the resume came on a new connection
        body = {"messages": [{"role": "user", "content": "Tell me about streams"}], "tools": specs}
        assert shown == await full_reply(base, body)  # nothing lost, nothing repeated
        assert "resumed 1×" in await status.text_content()
        rendered = await page.locator("section.assistant .body").inner_text()
        assert rendered.split()[:3] == shown.split()[:3]


async def test_stop_cancels_the_generation_and_keeps_the_partial_reply(browser: Any) -> None:
    app = create_app(demo_tokens_per_second=20)
    generations = app.state.aistream.generations
    async with running(with_chat_page(app)) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/")
        status = await ask(page, "Tell me about streams")
        await page.wait_for_function(
            "() => (document.querySelector('section.assistant .body')?.innerText || '')"
            ".split(' ').length > 3",
            timeout=WAIT_MS,
        )
        await page.click("#stop")
        await status.wait_for(timeout=WAIT_MS)
        text = await status.text_content()
        kept = await page.evaluate("() => conversation.at(-1)")
        body = {"messages": [{"role": "user", "content": "Tell me about streams"}]}
        body["tools"] = await page.evaluate("() => toolSpecs")
        full = await full_reply(base, body)
    assert text.startswith("stopped")
    assert kept["role"] == "assistant" and kept["content"] and full.startswith(kept["content"])
    assert len(kept["content"]) < len(full)
    assert generations.live == {}  # the DELETE cancelled it on the server


class Markup:
    """A backend whose reply is hostile markup, Markdown and reasoning."""

    REPLY = (
        '<script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">\n\n'
        "**bold** and `code` and [bad](javascript:window.pwned=3) and "
        "[good](https://example.com/x)\n\n- one\n- two\n\n```\n<b>not bold</b>\n```"
    )

    def model_for(self, request: ChatRequest) -> str:
        return "markup-1"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        yield ReasoningDelta("Thinking <i>hard</i>.")
        for piece in self.REPLY.split(" "):
            yield TextDelta(piece + " ")
        yield UsageReport(3, 9, 12)


async def test_model_markup_is_shown_as_text_and_reasoning_is_folded(browser: Any) -> None:
    async with running(with_chat_page(create_app(backend=Markup()))) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/")
        status = await ask(page, "hi")
        await status.wait_for(timeout=WAIT_MS)
        reply = page.locator("section.assistant .body")
        assert await page.evaluate("() => window.pwned") is None
        assert await reply.locator("script, img, b, i").count() == 0
        text = await reply.inner_text()
        assert "<script>window.pwned = 1</script>" in text and "<b>not bold</b>" in text
        assert await reply.locator("strong").inner_text() == "bold"
        assert await reply.locator("code").first.inner_text() == "code"
        assert await reply.locator("li").all_inner_texts() == ["one", "two"]
        links = await reply.locator("a").evaluate_all("(as) => as.map((a) => a.href)")
        assert links == ["https://example.com/x"]  # javascript: stays text
        details = reply.locator("details.reasoning")
        assert await details.get_attribute("open") is None  # folded
        assert "Thinking <i>hard</i>." in await details.text_content()
        assert "9 tokens" in await status.text_content()


async def test_the_page_runs_its_tools_between_steps(browser: Any) -> None:
    async with running(with_chat_page(create_app(demo_tokens_per_second=None))) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/")
        status = await ask(page, "Please add_numbers for me")
        await status.wait_for(timeout=WAIT_MS)
        tool = await page.locator(".tool").inner_text()
        messages = await page.evaluate("() => conversation")
    call = messages[1]["toolCalls"][0]
    assert call["name"] == "add_numbers" and tool.startswith("→ add_numbers(")
    assert messages[2]["role"] == "tool" and messages[2]["toolCallId"] == call["id"]
    assert tool.endswith(f"⇒ {messages[2]['content']}")
    assert messages[3]["role"] == "assistant" and messages[2]["content"] in messages[3]["content"]


async def test_a_server_with_keys_makes_the_page_ask_for_one(browser: Any) -> None:
    async with running(with_chat_page(create_app(api_keys=["k-123"]))) as base:
        page = await browser.new_page()
        await page.goto(f"{base}/")
        status = await ask(page, "hello")
        await page.locator("#key.shown").wait_for(timeout=WAIT_MS)
        await page.fill("#key-input", "k-123")
        await page.click("#key button")
        await status.wait_for(timeout=WAIT_MS)
        assert "stop" in await status.text_content()
        assert await page.evaluate("() => sessionStorage.getItem('aistream-key')") == "k-123"
