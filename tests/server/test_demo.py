"""The demo model: deterministic, readable, word tokens, real usage, injectable pace."""

from __future__ import annotations

import asyncio
import re

import pytest

from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import FinishReason, StreamEvent, TextDelta, UsageReport
from aistream.server import DemoModel

from .helpers import FakeClock, chat_request, guard


async def collect(model: DemoModel, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


async def test_demo_same_messages_give_the_same_reply_and_others_differ() -> None:
    model = DemoModel(tokens_per_second=None)
    first = await collect(model, chat_request("Tell me about streaming"))
    again = await collect(
        DemoModel(tokens_per_second=None), chat_request("Tell me about streaming")
    )
    other = await collect(model, chat_request("What about retries?"))
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    "text",
    ["Hello", "How do resumable streams work?", "x " * 300, "", "Ünïcode wörds ✓ ok"],
    ids=["short", "question", "long", "empty", "unicode"],
)
async def test_demo_reply_is_40_to_80_word_tokens_with_real_usage(text: str) -> None:
    request = chat_request(text)
    events = await collect(DemoModel(tokens_per_second=0), request)
    tokens = [e.text for e in events if isinstance(e, TextDelta)]
    assert 40 <= len(tokens) <= 80
    assert not tokens[0].startswith(" ")
    assert all(re.fullmatch(r" \S+", t) for t in tokens[1:])  # a word with its leading space
    words = len(text.split())
    assert events[-2:] == [
        UsageReport(words, len(tokens), words + len(tokens)),
        FinishReason("stop"),
    ]


async def test_demo_reply_reads_as_text_and_acknowledges_the_user() -> None:
    model = DemoModel()
    request = chat_request("Why do proxies buffer server sent events?")
    reply = model.reply(request)
    assert '"Why do proxies buffer server sent events?"' in reply
    assert "lorem" not in reply.lower()
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", reply) if s]
    assert len(sentences) >= 3
    assert all(s[0].isupper() or s[0] == '"' for s in sentences)
    assert "".join(model.tokens(request)) == reply


async def test_demo_usage_counts_every_message_and_the_system_prompt() -> None:
    request = ChatRequest(
        (
            ChatMessage("user", "one two"),
            ChatMessage("assistant", "three"),
            ChatMessage("user", "four"),
        ),
        system_prompt="be brief",
    )
    events = await collect(DemoModel(tokens_per_second=None), request)
    usage = next(e for e in events if isinstance(e, UsageReport))
    assert usage.prompt_tokens == 6
    assert "message 2" in DemoModel().reply(request)


async def test_demo_pace_sleeps_before_each_token_with_the_injected_sleep(
    fake_clock: FakeClock,
) -> None:
    model = DemoModel(tokens_per_second=40, sleep=fake_clock.sleep)
    stream = model.stream(chat_request("pace"))
    first = asyncio.ensure_future(anext(stream))
    await fake_clock.sleeping(due=0.025)
    assert not first.done()
    fake_clock.advance(0.025)
    assert isinstance(await guard(first), TextDelta)
    second = asyncio.ensure_future(anext(stream))
    await fake_clock.sleeping(due=0.05)
    fake_clock.advance(0.025)
    assert isinstance(await guard(second), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]


def test_demo_rejects_a_negative_pace_and_impossible_bounds() -> None:
    with pytest.raises(ValueError, match="tokens_per_second"):
        DemoModel(tokens_per_second=-1)
    with pytest.raises(ValueError, match="min_tokens"):
        DemoModel(min_tokens=50, max_tokens=40)
