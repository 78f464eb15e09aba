"""NDJSONDecoder: LF-split lines, blank lines skipped, unterminated last line kept, limits."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from aistream._wire._events import NDJSONLine, WireError
from aistream._wire._ndjson import NDJSONDecoder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NDJSON_FIXTURES = sorted(FIXTURES.rglob("*.ndjson"))
L = NDJSONLine


def chunked(raw: bytes, size: int | None) -> list[bytes]:
    """Split `raw` into chunks of `size` bytes (None: one chunk)."""
    if size is None:
        return [raw]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode(chunks: list[bytes], max_line_bytes: int = 1 << 20) -> list[NDJSONLine]:
    decoder = NDJSONDecoder(max_line_bytes=max_line_bytes)
    lines = [line for chunk in chunks for line in decoder.feed(chunk)]
    return lines + decoder.eof()


def test_ndjson_decoder_splits_on_lf() -> None:
    assert decode([b'{"a":1}\n{"b":2}\n']) == [L('{"a":1}'), L('{"b":2}')]


def test_ndjson_decoder_strips_one_trailing_cr() -> None:
    assert decode([b'{"a":1}\r\n{"b":2}\r\r\n']) == [L('{"a":1}'), L('{"b":2}\r')]


def test_ndjson_decoder_crlf_split_across_chunks_yields_one_line() -> None:
    assert decode([b'{"a":1}\r', b"\n"]) == [L('{"a":1}')]


def test_ndjson_decoder_does_not_split_on_cr_or_unicode_separators() -> None:
    text = '{"a":\r1,"t":"x\u2028y\x85z"}'
    assert decode([text.encode() + b"\n"]) == [L(text)]


@pytest.mark.parametrize(
    "blank",
    [
        pytest.param(b"\n", id="empty"),
        pytest.param(b"\r\n", id="cr"),
        pytest.param(b"  \t \n", id="spaces-tabs"),
        pytest.param(b" \r\n", id="space-cr"),
    ],
)
def test_ndjson_decoder_skips_blank_lines(blank: bytes) -> None:
    assert decode([b"{}\n" + blank + b"[]\n" + blank]) == [L("{}"), L("[]")]


def test_ndjson_decoder_multibyte_char_split_across_chunks_decodes_correctly() -> None:
    raw = '{"t":"é😀€"}\n'.encode()
    for i in range(len(raw)):
        assert decode([raw[:i], raw[i:]]) == [L('{"t":"é😀€"}')], i


def test_ndjson_decoder_invalid_utf8_is_replaced() -> None:
    assert decode([b'{"t":"\xff"}\n']) == [L('{"t":"\ufffd"}')]


def test_ndjson_decoder_eof_returns_unterminated_last_line() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"done":true}') == [L('{"a":1}')]
    assert decoder.mid_event
    assert decoder.eof() == [L('{"done":true}')]
    assert not decoder.mid_event


def test_ndjson_decoder_eof_strips_cr_from_last_line() -> None:
    assert decode([b'{"a":1}\r']) == [L('{"a":1}')]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"", False, id="nothing"),
        pytest.param(b"{}\n", False, id="complete"),
        pytest.param(b'{"a"', True, id="partial"),
        pytest.param(b"{}\n  ", False, id="whitespace-tail"),
    ],
)
def test_ndjson_decoder_mid_event_reports_pending_line(raw: bytes, expected: bool) -> None:
    decoder = NDJSONDecoder()
    decoder.feed(raw)
    assert decoder.mid_event is expected


def test_ndjson_decoder_eof_with_whitespace_tail_returns_nothing() -> None:
    assert decode([b"{}\n \t"]) == [L("{}")]


def test_ndjson_decoder_20mb_line_without_newline_raises_early_without_buffering_it() -> None:
    chunk_size, limit = 64 * 1024, 1 << 20
    chunk = b"x" * chunk_size
    decoder = NDJSONDecoder(max_line_bytes=limit)
    fed = 0
    tracemalloc.start()
    try:
        with pytest.raises(WireError, match="exceeded 1048576 bytes"):
            while fed < 20 * 1024 * 1024:
                fed += chunk_size
                decoder.feed(chunk)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fed <= limit + chunk_size
    assert peak < 3 * limit


def test_ndjson_decoder_complete_oversized_line_raises() -> None:
    with pytest.raises(WireError, match="max_line_bytes"):
        decode([b"x" * 101 + b"\n"], max_line_bytes=100)


def test_ndjson_decoder_after_wire_error_keeps_raising() -> None:
    decoder = NDJSONDecoder(max_line_bytes=4)
    with pytest.raises(WireError):
        decoder.feed(b"12345")
    with pytest.raises(WireError):
        decoder.feed(b"\n")
    with pytest.raises(WireError):
        decoder.eof()


@pytest.mark.parametrize("size", [pytest.param(s, id=str(s)) for s in (1, 3, None)])
def test_ndjson_decoder_limit_outcome_is_independent_of_chunking(size: int | None) -> None:
    assert decode(chunked(b"x" * 10 + b"\n", size), max_line_bytes=10) == [L("x" * 10)]
    with pytest.raises(WireError):
        decode(chunked(b"x" * 10 + b"\n", size), max_line_bytes=9)


# --- fixtures -------------------------------------------------------------------------------------


def fixture_id(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def test_ndjson_fixtures_exist() -> None:
    assert len(NDJSON_FIXTURES) >= 2


@pytest.mark.parametrize("path", [pytest.param(p, id=fixture_id(p)) for p in NDJSON_FIXTURES])
@pytest.mark.parametrize("size", [pytest.param(s, id=f"chunk-{s}") for s in (1, 7, 64)])
def test_ndjson_fixture_is_identical_at_any_chunk_size(path: Path, size: int) -> None:
    raw = path.read_bytes()
    assert decode(chunked(raw, size)) == decode([raw])


@pytest.mark.parametrize("path", [pytest.param(p, id=fixture_id(p)) for p in NDJSON_FIXTURES])
def test_ndjson_fixture_is_identical_split_at_every_index(path: Path) -> None:
    raw = path.read_bytes()
    whole = decode([raw])
    for i in range(len(raw) + 1):
        assert decode([raw[:i], raw[i:]]) == whole, f"split at {i}"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("ollama/basic.ndjson", id="basic"),
        pytest.param("ollama/no_final_newline.ndjson", id="no-final-newline"),
    ],
)
def test_ndjson_fixture_ollama_basic_yields_content_then_done(name: str) -> None:
    objs = [json.loads(line.text) for line in decode([(FIXTURES / name).read_bytes()])]
    assert "".join(o["message"]["content"] for o in objs) == "The sky is blue."
    assert [o["done"] for o in objs] == [False] * 5 + [True]
    assert objs[-1]["done_reason"] == "stop"
    assert (objs[-1]["prompt_eval_count"], objs[-1]["eval_count"]) == (26, 282)


def test_ndjson_fixture_ollama_crlf_blank_lines_yields_three_records() -> None:
    lines = decode([(FIXTURES / "ollama/crlf_blank_lines.ndjson").read_bytes()])
    assert [json.loads(line.text)["done"] for line in lines] == [False, False, True]
    assert not any(line.text.endswith("\r") for line in lines)


def test_ndjson_fixture_ollama_error_ends_with_error_object() -> None:
    lines = decode([(FIXTURES / "ollama/error.ndjson").read_bytes()])
    assert lines[-1] == L(
        '{"error":"an error was encountered while running the model: unexpected EOF"}'
    )
    assert len(lines) == 3


def test_ndjson_fixture_ollama_multibyte_decodes_text() -> None:
    lines = decode(chunked((FIXTURES / "ollama/multibyte.ndjson").read_bytes(), 1))
    contents = [json.loads(line.text)["message"]["content"] for line in lines]
    assert contents == ["Café ☕ ", "😀 日本語 \u2028 ok"]
