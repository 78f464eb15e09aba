"""Decode mode: per-event SSE decode cost of aistream's SSEDecoder vs httpx-sse, and a
correctness table (no network).

Run: ``make bench BENCH_ARGS="--only decode"``. httpx-sse is driven exactly as
``EventSource.iter_sse`` does per chunk (httpx ``TextDecoder`` + ``TextChunker`` as in
``iter_text``, then ``SSELineDecoder``, ``line.rstrip("\\n")`` and ``SSEDecoder.decode``), minus
the network.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Sequence

from httpx._decoders import TextChunker, TextDecoder
from httpx_sse._decoders import SSEDecoder as HxSSE
from httpx_sse._decoders import SSELineDecoder
from httpx_sse._models import ServerSentEvent

from aistream._wire._events import SSEEvent
from aistream._wire._sse import SSEDecoder

from .report import Report, Table, paired_ratio, spread

Frame = tuple[str, str, str | None, int | None]  # event, data, id, retry
CHUNK = (
    'data: {{"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk",'
    '"created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd",'
    '"choices":[{{"index":0,"delta":{{"content":{}}},"logprobs":null,"finish_reason":null}}]}}\n\n'
)


def openai_stream(n: int) -> list[bytes]:
    """One OpenAI chat.completion.chunk event per chunk, as servers flush them."""
    words = ["Hello", " there", "!", " How", " can", " I", " help", " you", " today", "?"]
    return [CHUNK.format(json.dumps(words[i % 10])).encode() for i in range(n)]


def rechunk(chunks: list[bytes], size: int) -> list[bytes]:
    raw = b"".join(chunks)
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def ours(chunks: list[bytes], parse: bool = False) -> list[SSEEvent]:
    decoder, out = SSEDecoder(), []
    for chunk in chunks:
        for ev in decoder.feed(chunk):
            if parse:
                json.loads(ev.data)
            out.append(ev)
    decoder.eof()
    return out


def httpx_sse(
    chunks: list[bytes], parse: bool = False, charset: str = "utf-8"
) -> list[ServerSentEvent]:
    text, chunker, lines, decoder = TextDecoder(charset), TextChunker(), SSELineDecoder(), HxSSE()
    out: list[ServerSentEvent] = []

    def run(line_list: list[str]) -> None:
        for line in line_list:
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                if parse:
                    json.loads(sse.data)
                out.append(sse)

    for chunk in chunks:
        for piece in chunker.decode(text.decode(chunk)):
            run(lines.decode(piece))
    for piece in chunker.decode(text.flush()) + chunker.flush():
        run(lines.decode(piece))
    run(lines.flush())
    return out


def frames(events: Sequence[SSEEvent | ServerSentEvent]) -> list[Frame]:
    return [(ev.event, ev.data, ev.id or None, ev.retry) for ev in events]


def timed(
    impl: Callable[[list[bytes], bool], Sequence[object]],
    chunks: list[bytes],
    parse: bool,
    n: int,
) -> float:
    """µs per event for one run of `n` events, garbage collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        impl(chunks, parse)
        return (time.perf_counter_ns() - start) / n / 1000
    finally:
        gc.enable()


def bench(report: Report, n: int, rounds: int) -> None:
    per_event = openai_stream(n)
    inputs = {"1 event/chunk": per_event, "4 KiB chunks": rechunk(per_event, 4096)}
    impls: dict[str, Callable[[list[bytes], bool], Sequence[object]]] = {
        "aistream": ours,
        "httpx-sse": httpx_sse,
    }
    expected = frames(ours(per_event))
    assert frames(httpx_sse(per_event)) == frames(ours(inputs["4 KiB chunks"])) == expected
    table = Table(
        f"SSE decode, {n:,} OpenAI chunk events ({len(per_event[0])} bytes each), {rounds} "
        "rounds alternating",
        ["case", "aistream µs/event", "httpx-sse µs/event", "ratio aistream/httpx-sse"],
    )
    for parse in (False, True):
        for label, chunks in inputs.items():
            times: dict[str, list[float]] = {name: [] for name in impls}
            for _ in range(rounds):
                for name, impl in impls.items():  # alternate implementations within each round
                    times[name].append(timed(impl, chunks, parse, n))
            ratio = paired_ratio(times["aistream"], times["httpx-sse"])
            table.rows.append(
                [
                    f"{label}{' + json.loads' if parse else ''}",
                    spread(times["aistream"], 2),
                    spread(times["httpx-sse"], 2),
                    f"{ratio:.2f}",
                ]
            )
            report.data[f"decode/{label}/{'json' if parse else 'raw'}"] = times
    table.notes.append("median (min–max) over rounds; the ratio is paired per round")
    report.add(table)


CASES: list[tuple[str, bytes, str]] = [
    ("id then ': ping' comment (b7)", b"id: 1\ndata: a\n\n: ping\n\n", "utf-8"),
    ("CRLF endings (b7)", b"data: x\r\n\r\n", "utf-8"),
    ("retry only (b7)", b"retry: 3000\n\n", "utf-8"),
    ("EOF mid-event (b7)", b"data: a\n\ndata: b", "utf-8"),
    ("NUL in id (b7)", b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", "utf-8"),
    ("leading BOM", b"\xef\xbb\xbfdata: first\n\ndata: second\n\n", "utf-8"),
    ("charset=latin-1 declared", "data: café\n\n".encode(), "latin-1"),
    ("retry: -5 / retry: 1_0", b"retry: -5\ndata: a\n\nretry: 1_0\ndata: b\n\n", "utf-8"),
]


def correctness(report: Report) -> None:
    table = Table(
        "SSE decode correctness: (event, data, id, retry) per event, bytes fed one at a time",
        ["case", "decoder", "frames"],
    )
    for name, raw, charset in CASES:
        chunks = [raw[i : i + 1] for i in range(len(raw))]
        table.rows.append([name, "aistream", str(frames(ours(chunks)))])
        table.rows.append(["", "httpx-sse", str(frames(httpx_sse(chunks, charset=charset)))])
    report.add(table)


def run(report: Report, *, n: int, rounds: int) -> None:
    """The decode mode: the cost table, then the correctness table."""
    bench(report, n, rounds)
    correctness(report)
