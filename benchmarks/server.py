"""Server mode: server CPU per event of EventStreamResponse next to what users would pick.

The ASGI app runs under uvicorn (h11, one worker) in a subprocess pinned to its own CPU; this
process reads each stream with httpx ``aiter_bytes()``. Server CPU is ``getrusage`` of the server
process read through ``GET /cpu`` before and after each stream, so it includes uvicorn's own
work: what a deployment pays per event. Every variant sends the same native events (``start``,
N ``token`` events, ``done``, ids ``<stream-id>:<seq>``); the ratio is the median over rounds of
variant / Starlette StreamingResponse of the same round.

- starlette StreamingResponse: a generator that encodes each native event itself (json.dumps
  and an f-string), what users write without a helper: the baseline of target 4.
- starlette, pre-encoded: the same frames encoded before the request: the floor (no encoding).
- sse-starlette EventSourceResponse: dicts, the JSON encoded in the generator.
- EventStreamResponse fed TextDelta events, and fed plain str tokens.
- create_app: a backend yielding the tokens, through the replay store.
- EventStreamResponse with ``format="openai"`` (``chat.completion.chunk`` objects) and
  ``format="vercel"`` (UI message stream ``text-delta`` parts): the same events through the
  other encoders; create_app with ``?format=openai`` (straight from the backend, no replay
  store, since that format cannot resume). These frames differ from the native ones, so their
  ratios compare costs, not bytes. (They came from the retired standalone
  ``benchmarks/server_events.py``.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

from ._server import ROOT, cpus, pin_client
from .report import Report, Table, Target, median, paired_ratio, spread

WORDS = ["Hello", " there", ",", " how", " are", " you", " today", "?", " Fine", " thanks"]
STREAM_ID = "bench-stream-id0"
BASELINE = "starlette StreamingResponse"
PRE = "starlette, pre-encoded (floor)"
OURS = "EventStreamResponse (TextDelta)"
VARIANTS = {
    BASELINE: "starlette",
    PRE: "pre",
    "sse-starlette EventSourceResponse": "sse-starlette",
    OURS: "ours",
    "EventStreamResponse (str)": "ours-str",
    "create_app (replay store)": "app",
    "EventStreamResponse, openai format": "ours-openai",
    "EventStreamResponse, vercel format": "ours-vercel",
    "create_app, openai format": "app-openai",
}
TARGET_RATIO = 1.2


def serve(loop: str) -> None:
    """The server process: print the port, then serve until terminated."""
    import uvicorn
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route

    from aistream.server import ChatRequest, EventStreamResponse, StreamEvent, TextDelta, create_app

    dumps = json.dumps

    def frame(event: str, seq: int, data: str) -> bytes:
        return f"event: {event}\nid: {STREAM_ID}:{seq}\ndata: {data}\n\n".encode()

    def frames(n: int) -> list[bytes]:
        out = [frame("start", 0, dumps({"id": STREAM_ID, "model": "bench"}))]
        for i in range(n):
            data = dumps({"token": WORDS[i % 10], "index": i}, ensure_ascii=False)
            out.append(frame("token", i + 1, data))
        return [*out, frame("done", n + 1, '{"finishReason":"stop"}')]

    cache: dict[int, list[bytes]] = {}

    async def pre(request: Request) -> Response:
        n = int(request.query_params["n"])
        encoded = cache.get(n) or cache.setdefault(n, frames(n))

        async def gen() -> AsyncIterator[bytes]:
            for f in encoded:
                yield f

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def starlette(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen() -> AsyncIterator[bytes]:
            yield frame("start", 0, dumps({"id": STREAM_ID, "model": "bench"}))
            for i in range(n):
                data = dumps({"token": WORDS[i % 10], "index": i}, ensure_ascii=False)
                yield frame("token", i + 1, data)
            yield frame("done", n + 1, dumps({"finishReason": "stop"}))

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def sse_starlette(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen() -> AsyncIterator[dict[str, str]]:
            yield {"event": "start", "id": f"{STREAM_ID}:0", "data": dumps({"id": STREAM_ID})}
            for i in range(n):
                data = dumps({"token": WORDS[i % 10], "index": i}, ensure_ascii=False)
                yield {"event": "token", "id": f"{STREAM_ID}:{i + 1}", "data": data}
            yield {"event": "done", "id": f"{STREAM_ID}:{n + 1}", "data": '{"finishReason":"stop"}'}

        return EventSourceResponse(gen(), sep="\n")

    async def ours(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen() -> AsyncIterator[TextDelta]:
            for i in range(n):
                yield TextDelta(WORDS[i % 10])

        return EventStreamResponse(gen(), stream_id=STREAM_ID, model="bench")

    async def ours_str(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen() -> AsyncIterator[str]:
            for i in range(n):
                yield WORDS[i % 10]

        return EventStreamResponse(gen(), stream_id=STREAM_ID, model="bench")

    def formatted(fmt: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            n = int(request.query_params["n"])

            async def gen() -> AsyncIterator[TextDelta]:
                for i in range(n):
                    yield TextDelta(WORDS[i % 10])

            return EventStreamResponse(gen(), stream_id=STREAM_ID, model="bench", format=fmt)

        return route

    class Tokens:
        """A backend for create_app: the first message's content is the number of tokens."""

        def model_for(self, request: ChatRequest) -> str:
            return "bench"

        async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
            for i in range(int(request.messages[0].content)):
                yield TextDelta(WORDS[i % 10])

    async def cpu(request: Request) -> Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return JSONResponse({"cpu": usage.ru_utime + usage.ru_stime})

    app = Starlette(
        routes=[
            Route("/pre", pre),
            Route("/starlette", starlette),
            Route("/sse-starlette", sse_starlette),
            Route("/ours", ours),
            Route("/ours-str", ours_str),
            Route("/ours-openai", formatted("openai")),
            Route("/ours-vercel", formatted("vercel")),
            Route("/cpu", cpu),
            Mount("/app", create_app(backend=Tokens(), replay_ttl=5)),
        ]
    )

    async def run() -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", http="h11", loop=loop
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event
            await asyncio.sleep(0.01)
        print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
        await task

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    else:
        asyncio.run(run())


async def read(client: httpx.AsyncClient, base: str, route: str, n: int) -> float:
    """Stream one variant; return the server CPU seconds it took."""
    cpu0 = (await client.get(f"{base}/cpu")).json()["cpu"]
    if route in ("app", "app-openai"):
        body = {"messages": [{"role": "user", "content": str(n)}]}
        query = "?format=openai" if route == "app-openai" else ""
        request = client.build_request("POST", f"{base}/app/api/chat{query}", json=body)
    else:
        request = client.build_request("GET", f"{base}/{route}", params={"n": n})
    response = await client.send(request, stream=True)
    tail = b""
    try:
        async for chunk in response.aiter_bytes():
            tail = (tail + chunk)[-64:]
    finally:
        await response.aclose()
    end = b"[DONE]" if "openai" in route or "vercel" in route else b"finishReason"
    assert end in tail, f"{route}: the stream did not end with its end marker: {tail!r}"
    cpu1 = (await client.get(f"{base}/cpu")).json()["cpu"]
    return float(cpu1 - cpu0)


async def measure(port: int, n: int, rounds: int) -> dict[str, list[float]]:
    base = f"http://127.0.0.1:{port}"
    names = list(VARIANTS)
    cpu: dict[str, list[float]] = {v: [] for v in names}
    async with httpx.AsyncClient(timeout=60) as client:
        for name in names:  # warm up: imports, caches, the connection
            await read(client, base, VARIANTS[name], 500)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seconds = await read(client, base, VARIANTS[name], n)
                cpu[name].append(seconds / n * 1e6)
    return cpu


def run(report: Report, *, n: int, rounds: int, loops: list[str]) -> None:
    for loop in loops:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", "--serve", loop],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            mine = cpus()
            if len(mine) >= 2:
                import os

                os.sched_setaffinity(proc.pid, {mine[-1]})
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if not line or line[0] != "PORT":
                raise SystemExit("the benchmark ASGI server did not start")
            t0 = time.perf_counter()
            cpu = asyncio.run(measure(int(line[1]), n, rounds))
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(10)
        table = Table(
            f"server CPU per event, uvicorn (h11) on {loop}: {n:,} token events per stream, "
            f"{rounds} rounds",
            ["variant", "server CPU µs/event median (min–max)", "ratio to StreamingResponse"],
        )
        base = cpu[BASELINE]
        for name in VARIANTS:
            table.rows.append([name, spread(cpu[name], 2), f"{paired_ratio(cpu[name], base):.2f}"])
        table.notes.append(f"{elapsed:.1f} s; server CPU = getrusage of the uvicorn process")
        report.add(table)
        report.data[f"server/{loop}"] = cpu
        ratio = paired_ratio(cpu[OURS], base)
        floor = paired_ratio(cpu[OURS], cpu[PRE])
        report.target(
            Target(
                4,
                f"EventStreamResponse ≤ {TARGET_RATIO}× Starlette StreamingResponse's server CPU "
                f"per event [{loop}]",
                ratio <= TARGET_RATIO,
                f"{ratio:.2f}× ({median(cpu[OURS]):.2f} vs {median(base):.2f} µs/event; "
                f"{floor:.2f}× the pre-encoded floor of {median(cpu[PRE]):.2f})",
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--serve", metavar="LOOP", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    pin_client()
    run(Report(), n=args.events, rounds=args.rounds, loops=["asyncio"])


if __name__ == "__main__":
    main()
