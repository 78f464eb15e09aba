"""Server CPU per event: Starlette StreamingResponse vs sse-starlette vs our EventStreamResponse.

Run: ``.venv/bin/python benchmarks/server_events.py [--events N] [--rounds R]``.

The server runs in a subprocess (uvicorn, h11, one worker) with one route per variant; this
process reads each stream with httpx ``aiter_bytes()``. Server CPU is ``getrusage(RUSAGE_SELF)``
of the server process (user + sys, and user alone), read through ``GET /cpu`` before and after
each stream, so it includes uvicorn's own work: what a deployment pays per event. Every variant
sends the same native events (start, N tokens, done; ids ``<stream-id>:<seq>``). Rounds are
interleaved in a rotating order, the server and the client are pinned to different cores when
there are two, and the ratio is the median over rounds of (variant / baseline of the same
round), which cancels slow drifts. System CPU is mostly the loopback ``send()`` syscalls, whose
cost depends on whether the reader is awake (it is when the server is the slower side), hence
the separate user-CPU column.

- baseline: ``StreamingResponse`` yielding frames encoded up front (no encoding cost at all).
- sse-starlette: ``EventSourceResponse`` (sep LF) fed dicts, the JSON encoded in the generator.
- ours: ``EventStreamResponse`` fed ``TextDelta`` events (encodes JSON and SSE itself).
- ours-str: the same fed plain ``str`` tokens (no event object to build per token).
- ours-app: ``create_app`` with a backend yielding N tokens: the replay-store path, where a
  client that lags behind the generation gets several events per send.
- ours-openai, ours-vercel: ``EventStreamResponse`` fed ``TextDelta`` events with
  ``format="openai"`` (``chat.completion.chunk`` objects) or ``format="vercel"`` (UI message
  stream ``text-delta`` parts): the same events through the other encoders.
- ours-app-openai: ``create_app`` with ``?format=openai`` (streams straight from the backend;
  no replay store, since that format cannot resume).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx

WORDS = ["Hello", " there", ",", " how", " are", " you", " today", "?", " Fine", " thanks"]
STREAM_ID = "bench-stream-id0"
VARIANTS = (
    "baseline",
    "sse-starlette",
    "ours",
    "ours-str",
    "ours-app",
    "ours-openai",
    "ours-vercel",
    "ours-app-openai",
)


def serve() -> None:
    """The server process: print the port, then serve until terminated."""
    import uvicorn
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route

    from aistream._wire._dialect import ChatRequest
    from aistream._wire._events import StreamEvent, TextDelta
    from aistream.server import EventStreamResponse, create_app
    from aistream.server._encoders import NativeEncoder

    def frames(n: int) -> list[bytes]:
        enc = NativeEncoder(STREAM_ID, "bench")
        out = [enc.start()]
        out += [enc.token(WORDS[i % 10]) for i in range(n)]
        return [*out, enc.done()]

    cache: dict[int, list[bytes]] = {}
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    async def baseline(request: Request) -> Response:
        n = int(request.query_params["n"])
        encoded = cache.get(n) or cache.setdefault(n, frames(n))

        async def gen() -> AsyncIterator[bytes]:
            for frame in encoded:
                yield frame

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def sse_starlette(request: Request) -> Response:
        n = int(request.query_params["n"])

        async def gen() -> AsyncIterator[dict[str, str]]:
            yield {"event": "start", "id": f"{STREAM_ID}:0", "data": dumps({"id": STREAM_ID})}
            for i in range(n):
                data = dumps({"token": WORDS[i % 10], "index": i})
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
        return JSONResponse({"user": usage.ru_utime, "sys": usage.ru_stime})

    app = Starlette(
        routes=[
            Route("/baseline", baseline),
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
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http="h11")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no startup event
            await asyncio.sleep(0.01)
        print("PORT", server.servers[0].sockets[0].getsockname()[1], flush=True)
        await task

    asyncio.run(run())


async def read(
    client: httpx.AsyncClient, base: str, variant: str, n: int
) -> tuple[float, float, float]:
    """Stream one variant; return (server user CPU s, server system CPU s, wall s)."""
    cpu0 = (await client.get(f"{base}/cpu")).json()
    start = time.perf_counter()
    if variant in ("ours-app", "ours-app-openai"):
        body = {"messages": [{"role": "user", "content": str(n)}]}
        fmt = "openai" if variant == "ours-app-openai" else "native"
        url = f"{base}/app/api/chat?format={fmt}"
        request = client.build_request("POST", url, json=body)
    else:
        request = client.build_request("GET", f"{base}/{variant}", params={"n": n})
    response = await client.send(request, stream=True)
    tail = b""
    try:
        async for chunk in response.aiter_bytes():
            tail = (tail + chunk)[-64:]
    finally:
        await response.aclose()
    wall = time.perf_counter() - start
    end = b"[DONE]" if "openai" in variant or "vercel" in variant else b"finishReason"
    assert end in tail, f"{variant}: the stream did not end as it should: {tail!r}"
    cpu1 = (await client.get(f"{base}/cpu")).json()
    return cpu1["user"] - cpu0["user"], cpu1["sys"] - cpu0["sys"], wall


async def measure(port: int, n: int, rounds: int) -> None:
    base = f"http://127.0.0.1:{port}"
    user: dict[str, list[float]] = {v: [] for v in VARIANTS}
    total: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    async with httpx.AsyncClient(timeout=60) as client:
        for variant in VARIANTS:  # warm up: imports, caches, the connection
            await read(client, base, variant, 1000)
        for round_ in range(rounds):
            shift = round_ % len(VARIANTS)  # rotate the order: no variant always runs first
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                user_s, sys_s, elapsed = await read(client, base, variant, n)
                user[variant].append(user_s / n * 1e6)
                total[variant].append((user_s + sys_s) / n * 1e6)
                wall[variant].append(elapsed)

    def ratio(series: dict[str, list[float]], variant: str) -> float:
        pairs = zip(series[variant], series["baseline"], strict=True)
        return statistics.median(v / b for v, b in pairs)

    print(f"{n} token events per stream, {rounds} rounds; server CPU in µs per event (medians)")
    print("ratio: median over rounds of (variant / baseline of the same round)")
    print(f"{'variant':<14}{'user+sys':>9}{'ratio':>7}{'user':>8}{'ratio':>7}{'events/s':>10}")
    for variant in VARIANTS:
        print(
            f"{variant:<14}{statistics.median(total[variant]):>9.2f}"
            f"{ratio(total, variant):>6.2f}x{statistics.median(user[variant]):>8.2f}"
            f"{ratio(user, variant):>6.2f}x{n / statistics.median(wall[variant]):>10,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if len(cpus) >= 2:  # the server and the client on their own cores: less noise
            os.sched_setaffinity(proc.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            raise SystemExit("the benchmark server did not start")
        asyncio.run(measure(int(line[1]), args.events, args.rounds))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
