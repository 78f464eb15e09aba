"""Replicas mode: the Redis store against the in-memory one, resume latency, memory per stream.

Needs redis-server (``make bench`` installs it like ``make test``) and the ``redis`` extra.

- Server CPU per event: one uvicorn process serves ``create_app`` twice, on the memory store
  (``/mem``) and on a Redis store (``/redis``); streams of N token events alternate between
  them and the server's CPU (getrusage, read through ``GET /cpu``) is divided by N. The ratio
  is the median over rounds of redis / memory of the same round. Redis's own CPU is shown
  beside it (it is another process: a deployment pays it too).
- Resume latency across replicas: two replica processes on the same Redis; a reply is produced
  on replica A and each resume is a ``GET /api/chat/<id>`` with ``Last-Event-ID`` on replica B,
  timed from the request to the first replayed byte (p50 / p99).
- Redis memory per stream: ``used_memory`` before and after 1,000 finished streams of a
  ~60-token reply (before their TTL), divided by 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx

from ._server import ROOT, cpus, pin_client
from .report import Report, Table, Target, median, paired_ratio, percentile, spread

TARGET_RATIO = 1.3
WORDS = ["Hello", " there", ",", " how", " are", " you", " today", "?", " Fine", " thanks"]


def serve(redis_url: str) -> None:
    """The server process: print the port, then serve until terminated."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    from aistream._wire._dialect import ChatRequest
    from aistream._wire._events import StreamEvent, TextDelta
    from aistream.server import create_app

    class Tokens:
        """A backend: the first message's content is the number of tokens."""

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
            Route("/cpu", cpu),
            Mount("/mem", create_app(backend=Tokens(), replay_ttl=30)),
            Mount("/redis", create_app(backend=Tokens(), replay_ttl=30, store=redis_url)),
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


def _proc_cpu(pid: int) -> float:
    """CPU seconds of another process (utime + stime from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stream(client: httpx.AsyncClient, url: str, n: int) -> None:
    body = {"messages": [{"role": "user", "content": str(n)}]}
    async with client.stream("POST", url, json=body) as response:
        tail = b""
        async for chunk in response.aiter_bytes():
            tail = (tail + chunk)[-64:]
    assert b"finishReason" in tail, f"{url}: the stream did not end with done: {tail!r}"


async def _cpu_per_event(port: int, redis_pid: int, n: int, rounds: int) -> dict[str, list[float]]:
    base = f"http://127.0.0.1:{port}"
    out: dict[str, list[float]] = {"memory": [], "redis": [], "redis-server": []}
    async with httpx.AsyncClient(timeout=60) as client:
        for store in ("mem", "redis"):
            await _stream(client, f"{base}/{store}/api/chat", 200)  # warm up
        for round_ in range(rounds):
            order = ("mem", "redis") if round_ % 2 == 0 else ("redis", "mem")
            for store in order:
                cpu0 = (await client.get(f"{base}/cpu")).json()["cpu"]
                redis0 = _proc_cpu(redis_pid)
                await _stream(client, f"{base}/{store}/api/chat", n)
                cpu1 = (await client.get(f"{base}/cpu")).json()["cpu"]
                if store == "mem":
                    out["memory"].append((cpu1 - cpu0) / n * 1e6)
                else:
                    out["redis"].append((cpu1 - cpu0) / n * 1e6)
                    out["redis-server"].append((_proc_cpu(redis_pid) - redis0) / n * 1e6)
    return out


async def _resume_latency(a: str, b: str, resumes: int) -> list[float]:
    """Seconds from a GET with Last-Event-ID on replica B to the first replayed byte."""
    body = {"messages": [{"role": "user", "content": "a long reply to resume many times"}]}
    latencies: list[float] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{a}/api/chat", json=body) as response,
    ):
        chunks = response.aiter_bytes()
        first = await chunks.__anext__()
        stream_id = json.loads(first.split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
        for _ in range(resumes):
            headers = {"Last-Event-ID": f"{stream_id}:0"}
            started = time.perf_counter()
            async with client.stream(
                "GET", f"{b}/api/chat/{stream_id}", headers=headers
            ) as resumed:
                async for _chunk in resumed.aiter_bytes():
                    latencies.append(time.perf_counter() - started)
                    break
    return latencies


async def _memory_per_stream(url: str, redis: object, streams: int) -> tuple[float, int]:
    used = redis.used_memory  # type: ignore[attr-defined]
    before = used()
    async with httpx.AsyncClient(timeout=60) as client:
        queue = iter(range(streams))

        async def worker() -> None:
            for _ in queue:
                await _stream(client, url, 60)

        await asyncio.gather(*(worker() for _ in range(10)))
    return (used() - before) / streams, 60


class _Redis:
    """A redis-server for the benchmark (tests/redisserver.py), with its used_memory."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.redisserver import RedisServer

        self.server = RedisServer()
        self.server.start()
        self.url = self.server.url
        assert self.server.process is not None
        self.pid = self.server.process.pid

    def used_memory(self) -> int:
        info = self.server.command("INFO", "memory")
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        return int(fields["used_memory"]) - int(fields["mem_clients_normal"])

    def close(self) -> None:
        self.server.close()


def run(report: Report, *, n: int, rounds: int, resumes: int, streams: int) -> None:
    try:
        redis = _Redis()
    except RuntimeError as exc:
        report.target(Target(13, "Redis store ≤ 1.3× the memory store", None, str(exc)))
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.replicas", "--serve", redis.url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        mine = cpus()
        if len(mine) >= 2:
            os.sched_setaffinity(proc.pid, {mine[-1]})
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "PORT":
            raise SystemExit("the benchmark ASGI server did not start")
        port = int(line[1])
        cpu = asyncio.run(_cpu_per_event(port, redis.pid, n, rounds))
        per_stream, tokens = asyncio.run(
            _memory_per_stream(f"http://127.0.0.1:{port}/redis/api/chat", redis, streams)
        )
    finally:
        proc.terminate()
        proc.wait(10)
    sys.path.insert(0, str(ROOT))
    from tests.replicas.harness import Replica

    replicas = [Replica(store=redis.url, demo_tokens_per_second=2) for _ in range(2)]
    try:
        for replica in replicas:
            replica.start()
        latencies = asyncio.run(_resume_latency(replicas[0].url, replicas[1].url, resumes))
    finally:
        for replica in replicas:
            replica.stop()
        redis.close()

    ratio = paired_ratio(cpu["redis"], cpu["memory"])
    table = Table(
        f"replay store: server CPU per event, {n:,} token events per stream, {rounds} rounds",
        ["store", "server CPU µs/event median (min–max)", "ratio to memory"],
    )
    table.rows.append(["memory (default)", spread(cpu["memory"], 2), "1.00"])
    table.rows.append(["redis", spread(cpu["redis"], 2), f"{ratio:.2f}"])
    table.rows.append(["(redis-server itself)", spread(cpu["redis-server"], 2), "-"])
    table.notes.append(
        f"resume on another replica, request to first replayed byte ({len(latencies)} resumes): "
        f"p50 {percentile(latencies, 50) * 1e3:.2f} ms, "
        f"p99 {percentile(latencies, 99) * 1e3:.2f} ms"
    )
    table.notes.append(
        f"Redis memory per finished stream ({streams} streams of {tokens} tokens, before their "
        f"TTL): {per_stream / 1024:.1f} KiB"
    )
    report.add(table)
    report.data["replicas"] = {
        "cpu": cpu,
        "resume_latency": latencies,
        "memory_per_stream": per_stream,
    }
    report.target(
        Target(
            13,
            f"Redis store ≤ {TARGET_RATIO}× the memory store's server CPU per event",
            ratio <= TARGET_RATIO,
            f"{ratio:.2f}× ({median(cpu['redis']):.2f} vs {median(cpu['memory']):.2f} µs/event; "
            f"redis-server adds {median(cpu['redis-server']):.2f})",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--serve", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    pin_client()
    report = Report()
    run(report, n=args.events, rounds=args.rounds, resumes=200, streams=1000)
    print(report.summary())


if __name__ == "__main__":
    main()
