"""SSEDecoder and encode_sse: WHATWG event-stream rules, every chunking, limits, round trips."""

from __future__ import annotations

import itertools
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aistream._wire._events import SSEEvent, WireError
from aistream._wire._sse import SSEDecoder, encode_sse

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SSE_FIXTURES = sorted(FIXTURES.rglob("*.sse"))
E = SSEEvent


def chunked(raw: bytes, size: int | None) -> list[bytes]:
    """Split `raw` into chunks of `size` bytes (None: one chunk)."""
    if size is None:
        return [raw]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode(chunks: list[bytes], max_event_bytes: int = 1 << 20) -> list[SSEEvent]:
    decoder = SSEDecoder(max_event_bytes=max_event_bytes)
    events = [ev for chunk in chunks for ev in decoder.feed(chunk)]
    return events + decoder.eof()


def decode_state(chunks: list[bytes]) -> tuple[list[SSEEvent], bool, str, int | None]:
    """Events plus the decoder's observable end state."""
    decoder = SSEDecoder()
    events = [ev for chunk in chunks for ev in decoder.feed(chunk)]
    events += decoder.eof()
    return events, decoder.mid_event, decoder.last_event_id, decoder.retry_ms


def reference_decode(raw: bytes) -> tuple[list[SSEEvent], str, int | None]:
    """The WHATWG algorithm transcribed literally: decode the whole stream, then split lines."""
    text = raw.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the last piece has no line end
    events: list[SSEEvent] = []
    data, event, last_id, retry = "", "", "", None
    for line in lines:
        if not line:
            if data:
                events.append(
                    E(data.removesuffix("\n"), event or "message", last_id or None, retry)
                )
            data = event = ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events, last_id, retry


def fixture_id(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


# --- the WHATWG specification's own examples ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            b"data: This is the first message.\n\n"
            b"data: This is the second message, it\ndata: has two lines.\n\n"
            b"data: This is the third message.\n\n",
            [
                E("This is the first message."),
                E("This is the second message, it\nhas two lines."),
                E("This is the third message."),
            ],
            id="three-messages",
        ),
        pytest.param(
            b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n"
            b"event: add\ndata: 113411\n\n",
            [E("73857293", "add"), E("2153", "remove"), E("113411", "add")],
            id="event-types",
        ),
        pytest.param(
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
            b"data:  third event\n\n",
            [E("first event", id="1"), E("second event"), E(" third event")],
            id="comment-id-reset-space",
        ),
        pytest.param(
            b"data\n\ndata\ndata\n\ndata:",
            [E(""), E("\n")],
            id="empty-data-and-unterminated-last",
        ),
        pytest.param(b"data:test\n\ndata: test\n\n", [E("test"), E("test")], id="optional-space"),
    ],
)
def test_sse_decoder_whatwg_example_yields_spec_events(
    raw: bytes, expected: list[SSEEvent]
) -> None:
    assert decode([raw]) == expected


# --- line endings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "eol",
    [pytest.param(b"\n", id="lf"), pytest.param(b"\r", id="cr"), pytest.param(b"\r\n", id="crlf")],
)
def test_sse_decoder_any_line_ending_yields_same_events(eol: bytes) -> None:
    raw = b"event: e|id: 1|data: a|data: b||data: c||".replace(b"|", eol)
    assert decode([raw]) == [E("a\nb", "e", "1"), E("c", id="1")]


def test_sse_decoder_crlf_split_across_chunks_yields_one_event() -> None:
    assert decode([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == [E("a\nb")]


def test_sse_decoder_cr_at_chunk_end_then_cr_is_a_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E("a")]


def test_sse_decoder_empty_chunk_keeps_pending_cr() -> None:
    assert decode([b"data: a\r", b"", b"\n", b"\n"]) == [E("a")]


def test_sse_decoder_mixed_line_endings_yield_spec_lines() -> None:
    raw = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r\n"
    assert decode([raw]) == [E("a\nb\nc"), E("d")]


@pytest.mark.parametrize(
    "sep",
    [
        pytest.param("\u2028", id="u2028"),
        pytest.param("\u2029", id="u2029"),
        pytest.param("\x85", id="nel"),
        pytest.param("\x0b", id="vt"),
        pytest.param("\x0c", id="ff"),
        pytest.param("\x1c", id="fs"),
    ],
)
def test_sse_decoder_unicode_separator_does_not_split_line(sep: str) -> None:
    payload = f'{{"t":"a{sep}b"}}'
    assert decode([f"data: {payload}\n\n".encode()]) == [E(payload)]


# --- BOM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", [pytest.param(s, id=f"split-at-{s}") for s in range(5)])
def test_sse_decoder_leading_bom_is_stripped_even_when_split(split: int) -> None:
    raw = b"\xef\xbb\xbfdata: first\n\n"
    assert decode([raw[:split], raw[split:]]) == [E("first")]


def test_sse_decoder_bom_is_stripped_only_once() -> None:
    raw = b"\xef\xbb\xbf\xef\xbb\xbfdata: dropped\n\ndata: kept\n\n"
    assert decode([raw]) == [E("kept")]


def test_sse_decoder_bom_after_stream_start_is_not_stripped() -> None:
    assert decode([b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n"]) == [E("a")]


def test_sse_decoder_partial_bom_prefix_is_line_content() -> None:
    assert decode([b"\xef", b"\xbbdata: x\n\n"]) == []  # "\ufffddata" is an unknown field


# --- fields ---------------------------------------------------------------------------------------


def test_sse_decoder_comment_lines_are_ignored() -> None:
    assert decode([b": hello\ndata: a\n:data: b\n:\n\n"]) == [E("a")]


def test_sse_decoder_value_is_split_at_first_colon_only() -> None:
    assert decode([b"data: a: b:c\n\n"]) == [E("a: b:c")]


def test_sse_decoder_strips_only_one_leading_space() -> None:
    assert decode([b"event:  two\ndata:  x \n\n"]) == [E(" x ", " two")]


def test_sse_decoder_line_without_colon_is_field_with_empty_value() -> None:
    assert decode([b"event: gone\nevent\ndata\n\n"]) == [E("")]


def test_sse_decoder_data_lines_are_joined_with_lf() -> None:
    assert decode([b"data: a\ndata:\ndata: b\n\n"]) == [E("a\n\nb")]


def test_sse_decoder_field_names_are_case_sensitive() -> None:
    assert decode([b"DATA: no\nData: no\ndata: yes\n\n"]) == [E("yes")]


def test_sse_decoder_unknown_fields_are_ignored() -> None:
    assert decode([b"foo: bar\ndatum: x\ndata: a\n\n"]) == [E("a")]


def test_sse_decoder_event_type_defaults_to_message_and_resets_after_dispatch() -> None:
    assert decode([b"event: a\ndata: 1\n\ndata: 2\n\n"]) == [E("1", "a"), E("2")]


def test_sse_decoder_event_type_resets_after_blank_line_without_data() -> None:
    assert decode([b"event: a\n\ndata: 1\n\n"]) == [E("1")]


def test_sse_decoder_id_persists_across_events() -> None:
    assert decode([b"id: 7\ndata: a\n\ndata: b\n\n"]) == [E("a", id="7"), E("b", id="7")]


def test_sse_decoder_empty_id_resets_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 7\ndata: a\n\nid\ndata: b\n\n") == [E("a", id="7"), E("b")]
    assert decoder.last_event_id == ""


def test_sse_decoder_id_containing_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [
        E("a", id="1"),
        E("b", id="1"),
    ]
    assert decoder.last_event_id == "1"


def test_sse_decoder_initial_last_event_id_is_reported() -> None:
    decoder = SSEDecoder(last_event_id="s1:4")
    assert decoder.last_event_id == "s1:4"
    assert decoder.feed(b"data: a\n\n") == [E("a", id="s1:4")]


def test_sse_decoder_id_is_set_before_dispatch_of_its_event() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 9\ndata: a\n")
    assert decoder.last_event_id == "9"  # the buffer, not yet a delivered event


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"3000", 3000, id="digits"),
        pytest.param(b"0250", 250, id="leading-zero"),
        pytest.param(b"0", 0, id="zero"),
        pytest.param(b"-5", None, id="negative"),
        pytest.param(b"+5", None, id="plus"),
        pytest.param(b"1_0", None, id="underscore"),
        pytest.param(b" 5", None, id="second-space"),
        pytest.param(b"5 ", None, id="trailing-space"),
        pytest.param("５".encode(), None, id="fullwidth-digit"),
        pytest.param("٣".encode(), None, id="arabic-indic-digit"),
        pytest.param(b"1.5", None, id="decimal"),
        pytest.param(b"1e3", None, id="exponent"),
        pytest.param(b"10x", None, id="suffix"),
        pytest.param(b"", None, id="empty"),
    ],
)
def test_sse_decoder_retry_accepts_only_ascii_digits(value: bytes, expected: int | None) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: " + value + b"\ndata: x\n\n")
    assert decoder.retry_ms == expected
    assert events == [E("x", retry=expected)]


def test_sse_decoder_invalid_retry_keeps_previous_value() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 3000\n\nretry: -5\n\n")
    assert decoder.retry_ms == 3000


def test_sse_decoder_retry_alone_dispatches_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 3000\n\n") == []
    assert decoder.retry_ms == 3000


def test_sse_decoder_comment_after_id_dispatches_no_phantom_event() -> None:
    assert decode([b"id: 1\ndata: a\n\n: ping\n\n"]) == [E("a", id="1")]


def test_sse_decoder_blank_lines_alone_dispatch_nothing() -> None:
    assert decode([b"\n\n\r\n\r\r"]) == []


def test_sse_decoder_single_empty_data_line_dispatches_empty_event() -> None:
    assert decode([b"data:\n\n", b"data: \n\n"]) == [E(""), E("")]


# --- UTF-8 ----------------------------------------------------------------------------------------


def test_sse_decoder_multibyte_char_split_across_chunks_decodes_correctly() -> None:
    raw = "data: é😀€\n\n".encode()
    for i in range(len(raw)):
        assert decode([raw[:i], raw[i:]]) == [E("é😀€")], i


def test_sse_decoder_invalid_utf8_is_replaced() -> None:
    assert decode([b"data: a\xffb\xe2\x82\n\n"]) == [E("a\ufffdb\ufffd")]


def test_sse_decoder_invalid_utf8_in_field_values_is_replaced() -> None:
    assert decode([b"event: \xff\nid: \xfe\ndata: x\n\n"]) == [E("x", "\ufffd", "\ufffd")]


# --- end of stream and mid_event ------------------------------------------------------------------


def test_sse_decoder_eof_discards_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [E("a")]
    assert decoder.eof() == []
    assert decoder.mid_event


def test_sse_decoder_eof_after_complete_stream_is_clean() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n: ping\n")
    assert decoder.eof() == []
    assert not decoder.mid_event


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"", False, id="nothing"),
        pytest.param(b"data: x", True, id="partial-line"),
        pytest.param(b"data: x\n", True, id="undispatched-data"),
        pytest.param(b"event: a\n", True, id="undispatched-event-field"),
        pytest.param(b"data: x\r", True, id="data-then-cr"),
        pytest.param(b"data: x\n\n", False, id="dispatched"),
        pytest.param(b"data: x\n\r", False, id="dispatched-by-cr"),
        pytest.param(b": ping\n", False, id="comment"),
        pytest.param(b": pi", True, id="partial-comment"),
        pytest.param(b"\xef\xbb", True, id="partial-bom"),
        pytest.param(b"\xef\xbb\xbf", False, id="bom-only"),
    ],
)
def test_sse_decoder_mid_event_reports_pending_bytes(raw: bytes, expected: bool) -> None:
    decoder = SSEDecoder()
    decoder.feed(raw)
    assert decoder.mid_event is expected


# --- the size limit -------------------------------------------------------------------------------


def test_sse_decoder_20mb_line_without_newline_raises_early_without_buffering_it() -> None:
    chunk_size, limit = 64 * 1024, 1 << 20
    chunk = b"x" * chunk_size
    decoder = SSEDecoder(max_event_bytes=limit)
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="exceeded 1048576 bytes"):
            decoder.feed(b"data: ")
            while fed < 20 * 1024 * 1024:
                fed += chunk_size
                decoder.feed(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fed <= limit + chunk_size
    assert peak < 3 * limit


def test_sse_decoder_after_wire_error_keeps_raising() -> None:
    decoder = SSEDecoder(max_event_bytes=10)
    with pytest.raises(WireError):
        decoder.feed(b"data: 0123456789\n")
    with pytest.raises(WireError, match="max_event_bytes"):
        decoder.feed(b"\n")
    with pytest.raises(WireError):
        decoder.eof()


def test_sse_decoder_limit_counts_all_data_lines_of_one_event() -> None:
    with pytest.raises(WireError):
        decode([b"data: 12345\n" * 10], max_event_bytes=100)


def test_sse_decoder_limit_resets_after_each_event() -> None:
    raw = b"data: 12345\n\n" * 1000
    assert len(decode([raw], max_event_bytes=100)) == 1000


def test_sse_decoder_comments_between_events_do_not_accumulate() -> None:
    assert decode([b": ping\n" * 1000 + b"data: a\n\n"], max_event_bytes=100) == [E("a")]


@pytest.mark.parametrize("size", [pytest.param(s, id=str(s)) for s in (1, 3, 7, None)])
def test_sse_decoder_limit_outcome_is_independent_of_chunking(size: int | None) -> None:
    line = b"data: " + b"x" * 20  # counts len(line) + 1 = 27 bytes
    assert decode(chunked(line + b"\n\n", size), max_event_bytes=27) == [E("x" * 20)]
    with pytest.raises(WireError):
        decode(chunked(line + b"\n\n", size), max_event_bytes=26)


def test_sse_decoder_oversized_comment_line_raises() -> None:
    with pytest.raises(WireError):
        decode([b":" + b"x" * 200 + b"\n"], max_event_bytes=100)


# --- fixtures: every chunking gives the same events -----------------------------------------------


def test_sse_fixtures_exist() -> None:
    assert len(SSE_FIXTURES) >= 30


@pytest.mark.parametrize("path", [pytest.param(p, id=fixture_id(p)) for p in SSE_FIXTURES])
@pytest.mark.parametrize("size", [pytest.param(s, id=f"chunk-{s}") for s in (1, 7, 64)])
def test_sse_fixture_is_identical_at_any_chunk_size(path: Path, size: int) -> None:
    raw = path.read_bytes()
    assert decode_state(chunked(raw, size)) == decode_state([raw])


@pytest.mark.parametrize("path", [pytest.param(p, id=fixture_id(p)) for p in SSE_FIXTURES])
def test_sse_fixture_is_identical_split_at_every_index(path: Path) -> None:
    raw = path.read_bytes()
    whole = decode_state([raw])
    for i in range(len(raw) + 1):
        assert decode_state([raw[:i], raw[i:]]) == whole, f"split at {i}"


@pytest.mark.parametrize("path", [pytest.param(p, id=fixture_id(p)) for p in SSE_FIXTURES])
def test_sse_fixture_matches_reference_algorithm(path: Path) -> None:
    events, _, last_id, retry = decode_state([path.read_bytes()])
    assert (events, last_id, retry) == reference_decode(path.read_bytes())


def test_fixtures_readme_names_only_existing_files() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    named = re.findall(r"`([a-z]+/[\w.]+\.(?:sse|ndjson))`", readme)
    assert len(named) >= 40
    assert [name for name in named if not (FIXTURES / name).is_file()] == []


# --- fixtures: explicit expectations --------------------------------------------------------------

SEED_TS = '{"timestamp":"2026-01-01T00:00:00.000Z"}'
EXPECTED: dict[str, list[SSEEvent]] = {
    "native/seed_basic.sse": [
        E('{"token":"Hello"}'),
        E('{"token":" world"}'),
        E('{"usage":{"promptTokens":10,"completionTokens":20,"totalTokens":30}}'),
        E("[DONE]"),
    ],
    "native/seed_streaming_response.sse": [
        E(SEED_TS, "start"),
        E('{"token":"Hello","index":0}', "token", "msg-1767225600000-1"),
        E('{"token":" world","index":1}', "token", "msg-1767225600000-2"),
        E(
            '{"promptTokens":5,"completionTokens":2,"totalTokens":7}',
            "usage",
            "msg-1767225600000-3",
        ),
        E('{"finishReason":"stop"}', "metadata", "msg-1767225600000-4"),
        E('{"error":"upstream failed","code":"STREAM_ERROR"}', "error", "msg-1767225600000-5"),
        E(SEED_TS, "done", "msg-1767225600000-5"),  # the id buffer persists
    ],
    "native/ours.sse": [
        E('{"id":"s1","model":"demo"}', "start", "s1:0"),
        E('{"token":"Hello","index":0}', "token", "s1:1"),
        E('{"token":" world","index":1}', "token", "s1:2"),
        E('{"token":"!","index":2}', "token", "s1:3"),
        E('{"usage":{"promptTokens":5,"completionTokens":3,"totalTokens":8}}', "usage", "s1:4"),
        E('{"finishReason":"stop"}', "done", "s1:5"),
    ],
    "edge/comment_after_id.sse": [E("a", id="1")],
    "edge/crlf_starlette.sse": [E("x")],
    "edge/retry_only.sse": [],
    "edge/truncated_mid_event.sse": [E("first")],
    "edge/not_event_stream.sse": [],
    "edge/nul_in_id.sse": [E("a", id="1"), E("b", id="1")],
    "edge/crlf.sse": [E("one", "token", "1"), E("two\nlines", id="1"), E("{}", "done", "1")],
    "edge/cr_only.sse": [E("one", "token", "1"), E("two\nlines", id="1"), E("{}", "done", "1")],
    "edge/mixed_line_endings.sse": [E("a\nb\nc"), E("d"), E("e")],
    "edge/bom.sse": [E("first"), E("second")],
    "edge/double_bom.sse": [E("kept")],
    "edge/multiline_data.sse": [E("line1\nline2\n\n indented\n\nlast")],
    "edge/field_parsing.sse": [
        E("no space", "tight"),
        E(" two", " two spaces"),
        E("x: y: z"),
        E(""),
        E("kept"),
    ],
    "edge/event_type_reset.sse": [E("after empty block"), E("one", "named"), E("two")],
    "edge/comment_only.sse": [],
    "edge/id_persists.sse": [E("a", id="1"), E("b", id="1"), E("c"), E("d", id="2")],
    "edge/retry_variants.sse": [E(x, retry=3000) for x in "abcdefg"] + [E("h", retry=250)],
    "edge/unicode_u2028.sse": [E('{"text":"a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"}')],
    "edge/split_multibyte.sse": [
        E('{"token":"Café crème brûlée"}', "token"),
        E('{"token":"😀🎉 日本語 Ελληνικά"}', "token"),
        E("∑ 𝄞", "ünïcödé", "ид-1"),
    ],
    "edge/invalid_utf8.sse": [E("ok \ufffd\ufffd bad"), E("cut \ufffd")],
    "edge/empty_data.sse": [E(""), E("")],
}


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in EXPECTED])
def test_sse_fixture_yields_expected_events(name: str) -> None:
    assert decode([(FIXTURES / name).read_bytes()]) == EXPECTED[name]


def test_sse_fixture_openai_basic_yields_chunks_then_done() -> None:
    events = decode([(FIXTURES / "openai/basic.sse").read_bytes()])
    assert [ev.event for ev in events] == ["message"] * 7
    assert events[0].data.startswith('{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL"')
    assert [ev.data.count('"content":') for ev in events[:4]] == [1, 1, 1, 1]
    assert '"content":" to help."' in events[3].data
    assert '"finish_reason":"stop"' in events[4].data
    assert '"choices":[],"usage":' in events[5].data
    assert events[6] == E("[DONE]")


@pytest.mark.parametrize(
    ("name", "mid_event"),
    [
        pytest.param("anthropic/basic.sse", True, id="unterminated"),
        pytest.param("anthropic/basic_terminated.sse", False, id="terminated"),
    ],
)
def test_sse_fixture_anthropic_basic_drops_only_unterminated_last_event(
    name: str, mid_event: bool
) -> None:
    events, mid, _, _ = decode_state([(FIXTURES / name).read_bytes()])
    names = ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 3
    names += ["content_block_stop", "message_delta"] + ([] if mid_event else ["message_stop"])
    assert [ev.event for ev in events] == names
    assert mid is mid_event


def test_sse_fixture_vercel_ui_stream_yields_parts_in_order() -> None:
    events = decode([(FIXTURES / "vercel/ui_stream.sse").read_bytes()])
    types = [re.match(r'\{"type":"([^"]+)"', ev.data) for ev in events[:-1]]
    assert [m.group(1) if m else None for m in types] == [
        "start",
        "text-start",
        "text-delta",
        "text-end",
        "error",
        "reset-step",
        "finish",
    ]
    assert events[-1] == E("[DONE]")


# --- property: any stream, any chunking, same as the reference ------------------------------------

TOKENS = [
    b"data:",
    b"data: ",
    b"data",
    b"event: ",
    b"id: ",
    b"id",
    b"retry: ",
    b":",
    b" ",
    b"x",
    b"1",
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"\xef\xbb\xbf",
    "€😀".encode(),
    b"\xff",
    "\u2028".encode(),
    b"-",
]


STREAMS = st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_sse_decoder_any_stream_at_any_chunking_matches_reference(data: st.DataObject) -> None:
    raw = data.draw(STREAMS, label="raw")
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20), label="cuts")
    bounds = sorted({0, len(raw), *cuts})
    events, _, last_id, retry = decode_state([raw[a:b] for a, b in itertools.pairwise(bounds)])
    assert (events, last_id, retry) == reference_decode(raw)


# --- encode_sse -----------------------------------------------------------------------------------


def test_encode_sse_comment_is_exact() -> None:
    assert encode_sse(comment="ping") == b": ping\n\n"


def test_encode_sse_field_order_is_event_id_retry_data() -> None:
    raw = encode_sse('{"token":"Hello","index":0}', event="token", id="s1:1", retry=3000)
    assert raw == b'event: token\nid: s1:1\nretry: 3000\ndata: {"token":"Hello","index":0}\n\n'


def test_encode_sse_data_line_breaks_become_data_lines() -> None:
    assert encode_sse("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_encode_sse_multiline_comment_prefixes_every_line() -> None:
    assert encode_sse(comment="one\ntwo\n") == b": one\n: two\n:\n\n"


def test_encode_sse_removes_line_breaks_from_event_and_id_and_nul_from_id() -> None:
    assert (
        encode_sse("x", event="a\r\nb\nc", id="1\r2\n3\x00") == b"event: abc\nid: 123\ndata: x\n\n"
    )


def test_encode_sse_empty_data_is_one_empty_data_line_that_dispatches() -> None:
    raw = encode_sse("")
    assert raw == b"data: \n\n"
    assert decode([raw]) == [E("")]


def test_encode_sse_without_data_dispatches_nothing() -> None:
    assert decode([encode_sse(event="start", id="1")]) == []


def test_encode_sse_negative_retry_raises() -> None:
    with pytest.raises(ValueError, match="retry"):
        encode_sse("x", retry=-1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("plain", id="plain"),
        pytest.param("", id="empty"),
        pytest.param("\n", id="lf"),
        pytest.param("a\n\nb", id="blank-line-inside"),
        pytest.param(" leading space", id="leading-space"),
        pytest.param("  two spaces", id="two-spaces"),
        pytest.param(": looks like a comment", id="colon-first"),
        pytest.param("data: nested", id="nested-field"),
        pytest.param("nul\x00inside", id="nul"),
        pytest.param("é😀 日本 \u2028 \u2029 \x85", id="unicode"),
        pytest.param("\ufeffbom", id="bom-char"),
        pytest.param("trailing\n", id="trailing-lf"),
    ],
)
def test_encode_sse_round_trips_through_decoder(data: str) -> None:
    raw = encode_sse(data, event="token", id="s1:1")
    assert decode([raw]) == [E(data, "token", "s1:1")]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param("a\r\nb", "a\nb", id="crlf"),
        pytest.param("a\rb", "a\nb", id="cr"),
        pytest.param("\r\n\r", "\n\n", id="only-breaks"),
    ],
)
def test_encode_sse_round_trip_normalises_line_breaks_to_lf(data: str, expected: str) -> None:
    assert decode([encode_sse(data)]) == [E(expected)]


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(codec="utf-8")),
    st.text(st.characters(codec="utf-8")),
    st.text(st.characters(codec="utf-8")),
)
def test_encode_sse_any_text_round_trips(data: str, event: str, id: str) -> None:
    raw = encode_sse(data, event=event, id=id) + encode_sse(comment=data)
    clean_event = re.sub(r"[\r\n]", "", event) or "message"
    clean_id = re.sub(r"[\r\n\x00]", "", id) or None
    expected = E(re.sub(r"\r\n?", "\n", data), clean_event, clean_id)
    assert decode(chunked(raw, 5)) == [expected]
