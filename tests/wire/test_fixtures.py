"""Every recorded fixture of every dialect, replayed through the real reader.

Each file of ``tests/fixtures/<dialect>/`` (where each came from: its README) is read whole,
one chunk per event (or line), per byte, at 7 and 64 bytes, and split in two at every index
(every third for the long Responses recordings), and must give the same events each time and
the outcome its table below expects. The dialect-specific tests are in test_dialect_*.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._dialect import Dialect
from aistream._wire._events import StreamEvent
from aistream._wire._gemini import GeminiDialect
from aistream._wire._native import NativeDialect
from aistream._wire._ollama import OllamaDialect
from aistream._wire._openai import OpenAIDialect
from aistream._wire._responses import ResponsesDialect

from .replay import EVENT, Outcome, chunked, outcome, replay_through

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SIZES = [
    pytest.param(s, id=i)
    for s, i in ((None, "whole"), (EVENT, "event"), (1, "byte"), (7, "7"), (64, "64"))
]

# --- what each fixture amounts to ----------------------------------------------------------------

OLLAMA_BASIC = Outcome(text="The sky is blue.", usage=(26, 282, 308), finish="stop")

RESPONSES_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


NATIVE = {
    "ours.sse": Outcome(text="Hello world!", usage=(5, 3, 8), finish="stop"),
    "seed_basic.sse": Outcome(text="Hello world", usage=(10, 20, 30)),
    "seed_streaming_response.sse": Outcome(
        text="Hello world",
        usage=(5, 2, 7),
        finish="stop",
        errors=[("upstream failed", "STREAM_ERROR", False)],
    ),
    "seed_done_usage.sse": Outcome(text="Hi there", usage=(12, 2, 14)),
    "seed_starter.sse": Outcome(text="Hello from Next.js", finished=False),
    "skips.sse": Outcome(text="AC", skipped=3),
}


OPENAI = {
    "basic.sse": Outcome(text="I'm here to help.", usage=(14, 4, 18), finish="stop"),
    "length.sse": Outcome(text="The answer is long", usage=(14, 3, 17), finish="length"),
    "error_in_stream.sse": Outcome(
        text="Sure",
        finished=False,
        errors=[("Context length exceeded", "CONTEXT_LENGTH_EXCEEDED", False)],
    ),
    "error_transient.sse": Outcome(
        text="Once upon",
        finished=False,
        errors=[
            (
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                True,
            )
        ],
    ),
    "tool_calls.sse": Outcome(
        tool_calls=[
            ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", '{"location":"Paris, France"}')
        ],
        usage=(81, 15, 96),
        finish="tool_calls",
    ),
    "parallel_tool_calls.sse": Outcome(
        tool_calls=[
            ("call_Ahj6vPqW1cXr2bN7sLm0kTyE", "get_weather", '{"location": "Paris"}'),
            ("call_Zq4mN8vB2xLr7cT1sWk3pYhD", "get_time", '{"tz": "Europe/Paris"}'),
        ],
        usage=(96, 41, 137),
        finish="tool_calls",
    ),
    "reasoning.sse": Outcome(text="4.", reasoning="2 + 2 is 4.", usage=(9, 12, 21), finish="stop"),
    "content_filter.sse": Outcome(text="Here is the", usage=(20, 3, 23), finish="content_filter"),
}


ANTHROPIC = {
    # WIRE.md's fixture ends without a blank line: message_stop is never dispatched (WHATWG), so
    # the stream is not finished and the transport treats it as a drop.
    "basic.sse": Outcome(
        text="Hello there!", usage=(11, 6, 17), finish="stop", finished=False, heartbeats=1
    ),
    "basic_terminated.sse": Outcome(
        text="Hello there!", usage=(11, 6, 17), finish="stop", heartbeats=1
    ),
    "thinking.sse": Outcome(
        text="17 × 3 = 51.",
        reasoning="The user asks for 17 × 3. 17 × 3 = 51.",
        usage=(42, 58, 100),
        finish="stop",
        heartbeats=1,
    ),
    "tool_use.sse": Outcome(
        text="I'll check the current weather in Paris for you.",
        tool_calls=[("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", '{"location": "Paris"}')],
        usage=(377, 65, 442),
        finish="tool_calls",
        heartbeats=1,
    ),
    "overloaded.sse": Outcome(
        usage=(42, 3, 45),
        finished=False,
        errors=[("Overloaded", "overloaded_error", True)],
        heartbeats=1,
    ),
    "usage_cumulative.sse": Outcome(
        text="Counting: one, two", usage=(150, 10, 160), finish="length"
    ),
    "forward_compat.sse": Outcome(text="Sunny", usage=(12, 7, 19), finish="stop", skipped=4),
}


OLLAMA = {
    "basic.ndjson": OLLAMA_BASIC,
    "no_final_newline.ndjson": OLLAMA_BASIC,
    "crlf_blank_lines.ndjson": Outcome(text="The sky", usage=(26, 282, 308), finish="stop"),
    "error.ndjson": Outcome(
        text="The sky",
        finished=False,
        errors=[("an error was encountered while running the model: unexpected EOF", None, False)],
    ),
    "error_transient.ndjson": Outcome(
        text="Hi",
        finished=False,
        errors=[("server busy, please try again.  maximum pending requests exceeded", None, True)],
    ),
    "multibyte.ndjson": Outcome(text="Café ☕ 😀 日本語 \u2028 ok", finished=False),
    "thinking.ndjson": Outcome(
        text="Hello!", reasoning="The user wants a greeting.", usage=(18, 27, 45), finish="stop"
    ),
    "tool_calls.ndjson": Outcome(
        tool_calls=[
            ("call_0", "get_weather", '{"city":"Paris"}'),
            ("call_1", "get_time", '{"tz":"Europe/Paris","utc_offset":true}'),
        ],
        usage=(201, 35, 236),
        finish="tool_calls",
    ),
    "tool_calls_ids.ndjson": Outcome(
        reasoning="Need the weather tool.",
        tool_calls=[("call_k3v9x2mq", "get_weather", '{"city":"Zürich"}')],
        usage=(150, 22, 172),
        finish="tool_calls",
    ),
}


RESPONSES = {
    "text.sse": Outcome(text="The final result is **570**.", usage=(299, 12, 311), finish="stop"),
    "background.sse": Outcome(
        text="Resumable streams keep every token.", usage=(20, 7, 27), finish="stop"
    ),
    "reasoning.sse": Outcome(
        text="2 + 2 = 4.", reasoning="**Adding**\n\n2 + 2 is 4.", usage=(11, 30, 41), finish="stop"
    ),
    "reasoning_tool_call.sse": Outcome(
        reasoning="**Calculating step-by-step**\n\nI'll compute 12 plus 7 with the calculator.",
        tool_calls=[("call_AB6AaRZ1FYZB2RwS6A5vbdqn", "calculator", '{"a":12,"b":7,"op":"add"}')],
        usage=(134, 28, 162),
        finish="tool_calls",
    ),
    "incomplete.sse": Outcome(text="Once upon a time", usage=(12, 4, 16), finish="length"),
    "error.sse": Outcome(
        finished=True,
        errors=[
            (RESPONSES_QUOTA, "insufficient_quota", False),
            (RESPONSES_QUOTA, "insufficient_quota", False),
        ],
    ),
    "error_flat.sse": Outcome(
        text="Sure,",
        finished=False,
        errors=[
            (
                "The server had an error processing your request. Sorry about that!",
                "server_error",
                True,
            )
        ],
    ),
}


GEMINI = {
    "text.sse": Outcome(
        text='There are **3** "r"s in strawberry.\n\nst**r**awbe**rr**y',
        usage=(9, 208, 217),
        finish="stop",
    ),
    "thinking.sse": Outcome(
        text="2 + 2 = 4.",
        reasoning="**Adding two numbers**\n\nThe user asks for 2 + 2. That is 4.",
        usage=(14, 92, 106),
        finish="stop",
    ),
    "tool_call.sse": Outcome(
        tool_calls=[("call_b36LacjwM668nsEP2tbsgQQ_1", "weather", '{"location":"San Francisco"}')],
        usage=(29, 60, 89),
        finish="tool_calls",
    ),
    "error.sse": Outcome(
        text="Once upon",
        usage=(8, 2, 10),
        finished=False,
        errors=[("The model is overloaded. Please try again later.", "UNAVAILABLE", True)],
    ),
    "max_tokens.sse": Outcome(
        text="The history of Rome begins", usage=(10, 5, 15), finish="length"
    ),
}


#: dialect -> (its class, the expected outcome of each fixture file, the split step)
DIALECTS: dict[str, tuple[Callable[[], Dialect], dict[str, Outcome], int]] = {
    "native": (NativeDialect, NATIVE, 1),
    "openai": (OpenAIDialect, OPENAI, 1),
    "anthropic": (AnthropicDialect, ANTHROPIC, 1),
    "ollama": (OllamaDialect, OLLAMA, 1),
    "responses": (ResponsesDialect, RESPONSES, 3),
    "gemini": (GeminiDialect, GEMINI, 1),
}
CASES = [
    pytest.param(dialect, name, id=f"{dialect}/{name}")
    for dialect, (_, expected, _) in DIALECTS.items()
    for name in sorted(expected)
]


def replay(dialect: str, chunks: list[bytes]) -> tuple[list[StreamEvent], bool]:
    return replay_through(DIALECTS[dialect][0](), chunks)


def fixture(dialect: str, name: str) -> bytes:
    return (FIXTURES / dialect / name).read_bytes()


# --- every fixture, every chunking ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_fixture_file_has_an_expected_outcome(dialect: str) -> None:
    expected = DIALECTS[dialect][1]
    assert sorted(p.name for p in (FIXTURES / dialect).iterdir()) == sorted(expected)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_a_fixture_at_any_chunk_size_gives_its_expected_outcome(
    dialect: str, name: str, size: int | None
) -> None:
    raw = fixture(dialect, name)
    events, finished = replay(dialect, chunked(raw, size))
    assert (events, finished) == replay(dialect, [raw])
    assert outcome(events, finished) == DIALECTS[dialect][1][name]


@pytest.mark.parametrize(("dialect", "name"), CASES)
def test_a_fixture_split_at_every_index_gives_the_same_events(dialect: str, name: str) -> None:
    raw = fixture(dialect, name)
    whole = replay(dialect, [raw])
    for i in range(0, len(raw) + 1, DIALECTS[dialect][2]):
        assert replay(dialect, [raw[:i], raw[i:]]) == whole, f"split at {i}"
