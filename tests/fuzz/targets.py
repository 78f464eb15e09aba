"""What the decoder fuzzer checks for one input: plain Python, shared with pytest.

`check(data)` raises (AssertionError or whatever escapes the code under test) when a property
fails; atheris reports that as a crash and saves the input. The same function replays the seed
corpus and every saved crash in `test_fuzz_regressions.py`, without atheris.

Input layout: byte 0 picks the decoders' size limit, bytes 1-2 seed the chunking, the rest is
the stream. For that stream:

1. SSEDecoder and NDJSONDecoder give the same result (events and end state, or WireError) for
   the whole stream in one chunk and for a seeded random chunking, single bytes included.
2. Nothing but WireError leaves a decoder, and a decoder that failed keeps failing.
3. Without a limit in the way, the SSE events equal a literal transcription of the WHATWG
   algorithm (decode everything, then split lines), and the NDJSON lines equal a plain split
   on LF (one CR before it dropped, blank lines skipped).
4. Every dialect parses every frame without raising.
5. The stream's text round-trips through `encode_sse` (line breaks become LF) and, exactly,
   through a native `token` event.
"""

from __future__ import annotations

import itertools
import random
import re
from typing import Any

from aistream._wire._anthropic import AnthropicDialect
from aistream._wire._events import NDJSONLine, SSEEvent, TextDelta, WireError
from aistream._wire._native import NativeDialect
from aistream._wire._ndjson import NDJSONDecoder
from aistream._wire._ollama import OllamaDialect
from aistream._wire._openai import OpenAIDialect
from aistream._wire._sse import SSEDecoder, encode_sse
from aistream.server._encoders import NativeEncoder

LIMITS = (1, 7, 16, 64, 256, 4096, 1 << 20)
DIALECTS = (NativeDialect, OpenAIDialect, AnthropicDialect, OllamaDialect)


def split(data: bytes) -> tuple[int, random.Random, bytes]:
    """(limit, chunking rng, stream) from a fuzz input."""
    head = data[:3].ljust(3, b"\0")
    limit = LIMITS[head[0] % len(LIMITS)]
    return limit, random.Random(int.from_bytes(head[1:3], "big")), data[3:]


def chunk(stream: bytes, rng: random.Random) -> list[bytes]:
    if not stream:
        return [b""]
    if rng.random() < 0.125:
        return [stream[i : i + 1] for i in range(len(stream))]
    cuts = sorted({0, len(stream), *(rng.randrange(len(stream) + 1) for _ in range(8))})
    return [stream[a:b] for a, b in itertools.pairwise(cuts)] or [b""]


def run_decoder(decoder: SSEDecoder | NDJSONDecoder, chunks: list[bytes]) -> tuple[Any, ...]:
    """Feed `chunks`; return ("ok", frames, end state) or ("error", frames before it)."""
    frames: list[SSEEvent | NDJSONLine] = []
    for piece in chunks:
        try:
            frames += decoder.feed(piece)
        except WireError:
            for _ in range(2):  # it keeps failing, on feed and on eof
                try:
                    decoder.feed(b"x\n\n")
                except WireError:
                    pass
                else:
                    raise AssertionError("a failed decoder accepted more bytes") from None
            try:
                decoder.eof()
            except WireError:
                return ("error",)
            raise AssertionError("a failed decoder ended cleanly") from None
    frames += decoder.eof()
    if isinstance(decoder, SSEDecoder):
        return ("ok", frames, decoder.last_event_id, decoder.retry_ms, decoder.mid_event)
    return ("ok", frames)


def reference_sse(raw: bytes) -> tuple[list[SSEEvent], str, int | None]:
    """The WHATWG event-stream interpretation, transcribed literally."""
    text = raw.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the last piece has no line end
    events: list[SSEEvent] = []
    data, event, last_id, retry = "", "", "", None
    for line in lines:
        if not line:
            if data:
                events.append(SSEEvent(data[:-1], event or "message", last_id or None, retry))
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


def reference_ndjson(raw: bytes) -> list[NDJSONLine]:
    """NDJSON as documented: LF ends a line, one CR before it is dropped, blank lines skipped."""
    lines = []
    for piece in raw.split(b"\n"):
        if piece.strip():
            line = piece[:-1] if piece.endswith(b"\r") else piece
            lines.append(NDJSONLine(line.decode("utf-8", "replace")))
    return lines


def check(data: bytes) -> None:
    limit, rng, stream = split(data)
    chunks = chunk(stream, rng)

    # 1, 2: chunking never changes the outcome; only WireError escapes.
    sse_whole = run_decoder(SSEDecoder(max_event_bytes=limit), [stream])
    sse_chunked = run_decoder(SSEDecoder(max_event_bytes=limit), chunks)
    assert sse_whole == sse_chunked, (sse_whole, sse_chunked)
    nd_whole = run_decoder(NDJSONDecoder(max_line_bytes=limit), [stream])
    nd_chunked = run_decoder(NDJSONDecoder(max_line_bytes=limit), chunks)
    assert nd_whole == nd_chunked, (nd_whole, nd_chunked)

    # 3: the WHATWG algorithm, when the limit is out of the way.
    unlimited = run_decoder(SSEDecoder(max_event_bytes=len(stream) + 8), chunks)
    assert unlimited[0] == "ok"
    events, last_id, retry = reference_sse(stream)
    assert (unlimited[1], unlimited[2], unlimited[3]) == (events, last_id, retry)
    lines = run_decoder(NDJSONDecoder(max_line_bytes=len(stream) + 8), chunks)
    assert lines == ("ok", reference_ndjson(stream)), (lines, reference_ndjson(stream))

    # 4: dialects take any frame.
    frames: list[SSEEvent | NDJSONLine] = [*unlimited[1]]
    if nd_whole[0] == "ok":
        frames += nd_whole[1]
    for dialect_class in DIALECTS:
        dialect = dialect_class()
        for frame in frames:
            dialect.parse(frame)

    # 5: round trips.
    text = stream.decode("utf-8", "replace")
    raw = encode_sse(text, event="token", id="s1:1")
    decoded = run_decoder(SSEDecoder(max_event_bytes=len(raw) + 1), chunk(raw, rng))
    expected = SSEEvent(re.sub(r"\r\n?", "\n", text), "token", "s1:1")
    assert decoded[:2] == ("ok", [expected]), decoded
    if text:
        encoder = NativeEncoder("s1")
        frame_bytes = encoder.token(text)
        decoded = run_decoder(SSEDecoder(max_event_bytes=len(frame_bytes)), chunk(frame_bytes, rng))
        assert decoded[0] == "ok"
        parsed = [e for f in decoded[1] for e in NativeDialect().parse(f)]
        assert parsed == [TextDelta(text, 0)], parsed
