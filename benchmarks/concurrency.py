"""Concurrency mode: N streams at 20 tok/s in one process.

Each variant runs in a fresh child process (``python -m benchmarks.concurrency --child ...``),
pinned to the client CPU, so its memory and its pool start clean. The child launches N
conversations at t0 and reports:

- time until every stream had its first token (and the median stream's), from t0;
- achieved tok/s: sustained over the second half of the window, and over the whole window;
- client CPU % over the window (100 % = one core) and the server's, from /proc stat;
- RSS per stream: (highest RSS sampled from t0 to the end of the window, and on until every
  stream started or the cap, minus RSS just before t0) / N: it includes what each stream keeps
  of its reply (AIStream keeps the text; the raw loops only count tokens); "(partial)" when
  not every stream had started by then.

If some stream has no token by the end of the window, the child waits on for them up to the cap
(full mode), so a slow ramp is measured rather than cut off.

Variants. ``aistream``: ``AIStream(url)`` per conversation, as users write it (they share the
event loop's pool, on aistream's asyncio backend). ``aistream client=``: all share one plain
httpx.AsyncClient with limits raised to N; ``aistream client= default-limits``: one
``httpx.AsyncClient()`` as users make it (100 connections). ``phases``: ``arrival`` (each
stream ticks from its request's arrival) or ``spread`` (stream i at i/N of the token period).
``raw ...``: the same minimal consume loop (aiter_bytes, aistream's SSEDecoder, json.loads) over
one httpx pool, K pools, one httpx2 pool, or one pool per stream: which pool design meets the
target. ``aistream x-...``: AIStream with a patched ``_client`` (the pool it uses when given
none): one per conversation, the shared one on httpx's anyio backend, 16 pools, one httpx2 pool.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aistream._pool import ssl_context as _ssl_context  # the one AIStream's pools share

from . import clients as c
from ._server import ROOT, LoopbackServer, pin_client, proc_cpu_seconds, raise_fd_limit
from .report import Report, Table, Target, median

RATE = 20.0
TARGET_START = 3.0
TARGET_TOKS = 12_000
TARGET_RSS_KB = 40.0


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Plan:
    """One child run."""

    variant: str
    streams: int
    seconds: float
    cap: float
    loop: str = "asyncio"
    phases: str = "arrival"  # "spread": stream i at phase i/N of the token period
    rate: float = RATE  # tokens per second of each stream


# --- the child ---------------------------------------------------------------------------------


class Counter:
    __slots__ = ("first", "started", "tokens")

    def __init__(self, streams: int) -> None:
        self.tokens = 0
        self.started = 0
        self.first: list[float] = []


Stream = Callable[[int, Counter], Awaitable[None]]


def _clients(kind: str, count: int, streams: int) -> list[Any]:
    """`count` pools of the given library, limits raised so that N streams fit."""
    per = max(1, -(-streams // count))
    if kind == "httpx2":
        import httpx2

        limits2 = httpx2.Limits(max_connections=per, max_keepalive_connections=per)
        return [httpx2.AsyncClient(timeout=60, limits=limits2) for _ in range(count)]
    import httpx

    ctx = _ssl_context()  # one CA bundle load per process, as AIStream's own pools share
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    return [httpx.AsyncClient(timeout=60, limits=limits, verify=ctx) for _ in range(count)]


def _raw(base: str, pools: list[Any]) -> Stream:
    """The minimal consume loop, over `pools` round-robin."""
    from aistream._wire._sse import SSEDecoder

    url = f"{base}/{c.PATHS['openai']}"
    loads = json.loads

    async def stream(i: int, counter: Counter) -> None:
        body = json.dumps(c.payload(prompt_of(i))).encode()
        client = pools[i % len(pools)]
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        async with client.stream("POST", url, content=body, headers=headers) as response:
            decoder = SSEDecoder()
            first = True
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    if event.data == "[DONE]":
                        return
                    obj = loads(event.data)
                    choices = obj.get("choices")
                    if choices and choices[0]["delta"].get("content"):
                        counter.tokens += 1
                        if first:
                            first = False
                            counter.first.append(time.perf_counter())

    return stream


class _Floor(asyncio.Protocol):
    """The floor: one asyncio Protocol per stream, chunked SSE parsed by hand, no HTTP library
    (no pool, no header parsing beyond finding their end). It counts what the raw loop counts."""

    def __init__(self, counter: Counter, done: asyncio.Future[None], native: bool = False) -> None:
        self.counter = counter
        self.done = done
        self.native = native  # aistream's native frames (the relay mode), not OpenAI chunks
        self.buf = b""
        self.head = True
        self.first = True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            buf = buf[end + 4 :]
            self.head = False
        pos = 0
        loads = json.loads
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            if size == 0:
                _done(self.done)
                return
            chunk = buf[eol + 2 : eol + 2 + size]
            pos = eol + 4 + size
            for line in chunk.split(b"\n"):
                if not line.startswith(b"data: "):
                    if self.native and line == b"event: done":
                        _done(self.done)
                        return
                    continue
                data_ = line[6:]
                if self.native:
                    if b'"token"' in data_ and loads(data_).get("token"):
                        self.counter.tokens += 1
                        if self.first:
                            self.first = False
                            self.counter.first.append(time.perf_counter())
                    continue
                if data_ == b"[DONE]":
                    _done(self.done)
                    return
                obj = loads(data_)
                choices = obj.get("choices")
                if choices and choices[0]["delta"].get("content"):
                    self.counter.tokens += 1
                    if self.first:
                        self.first = False
                        self.counter.first.append(time.perf_counter())
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        _done(self.done)


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _floor(base: str, native: bool = False) -> Stream:
    host, _, port = base.removeprefix("http://").partition(":")
    path = "/" + c.PATHS["native" if native else "openai"]

    def payload(i: int) -> dict[str, Any]:
        if native:
            return {"model": c.MODEL, "messages": [{"role": "user", "content": prompt_of(i)}]}
        return c.payload(prompt_of(i))

    async def stream(i: int, counter: Counter) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _Floor(counter, done, native), host, int(port)
        )
        body = json.dumps(payload(i)).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            "content-type: application/json\r\naccept: text/event-stream\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        transport.write(head.encode() + body)
        try:
            await done
        finally:
            transport.close()

    return stream


def _aiohttp(base: str) -> Stream:
    """aiohttp's client, one session, no connection limit, the same consume loop."""
    import aiohttp

    from aistream._wire._sse import SSEDecoder

    url = f"{base}/{c.PATHS['openai']}"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    loads = json.loads

    async def stream(i: int, counter: Counter) -> None:
        body = json.dumps(c.payload(prompt_of(i))).encode()
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        async with session.post(url, data=body, headers=headers) as response:
            decoder = SSEDecoder()
            first = True
            async for chunk in response.content.iter_any():
                for event in decoder.feed(chunk):
                    if event.data == "[DONE]":
                        return
                    obj = loads(event.data)
                    choices = obj.get("choices")
                    if choices and choices[0]["delta"].get("content"):
                        counter.tokens += 1
                        if first:
                            first = False
                            counter.first.append(time.perf_counter())

    return stream


def _aistream(base: str, make: Callable[[str], Any]) -> Stream:
    url = f"{base}/{c.PATHS['openai']}"

    async def stream(i: int, counter: Counter) -> None:
        chat = make(url)
        first = True

        def on_token(token: str) -> None:
            nonlocal first
            counter.tokens += 1
            if first:
                first = False
                counter.first.append(time.perf_counter())

        chat.on("token", on_token)
        await chat.send(prompt_of(i))

    return stream


PROMPT = ""


def _openai(base: str) -> Stream:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="sk-bench", base_url=f"{base}/v1", max_retries=0)

    async def stream(i: int, counter: Counter) -> None:
        first = True
        response = await client.chat.completions.create(
            model=c.MODEL,
            messages=[{"role": "user", "content": prompt_of(i)}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                counter.tokens += 1
                if first:
                    first = False
                    counter.first.append(time.perf_counter())

    return stream


def _patched_client(make_pool: Callable[[], Any]) -> Callable[..., Any]:
    """A ``ClientLease.client`` that returns a pool shared by every AIStream on this loop."""
    pools: dict[int, Any] = {}

    def _client(self: Any, *, own_pool: bool = False) -> Any:
        if self._borrowed is not None and not own_pool:
            return self._borrowed
        loop = asyncio.get_running_loop()
        pool = pools.get(id(loop))
        if pool is None:
            pool = pools[id(loop)] = make_pool()
        return pool

    return _client


def build(variant: str, base: str, streams: int) -> Stream:
    """The stream function of a variant (patches applied here stay for the child's life)."""
    from aistream import AIStream
    from aistream._transport import ClientLease as Impl

    if variant == "aistream":
        return _aistream(base, lambda url: AIStream(url, model=c.MODEL))
    if variant == "aistream client=":
        import httpx

        limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
        shared = httpx.AsyncClient(timeout=30, limits=limits)
        return _aistream(base, lambda url: AIStream(url, model=c.MODEL, client=shared))
    if variant == "aistream client= default-limits":  # httpx.AsyncClient(): 100 connections
        import httpx

        plain = httpx.AsyncClient(timeout=30)
        return _aistream(base, lambda url: AIStream(url, model=c.MODEL, client=plain))
    if variant == "raw httpx 1 default-limits":  # httpx.AsyncClient(): 100 connections at most
        import httpx

        return _raw(base, [httpx.AsyncClient(timeout=60)])
    if variant.startswith("raw "):
        _, lib, count = variant.split()
        pools = _clients(lib, streams if count == "per-stream" else int(count), streams)
        return _raw(base, pools)
    if variant == "openai SDK":
        return _openai(base)
    if variant == "floor (raw socket)":
        return _floor(base)
    if variant == "floor native":  # the relay mode's native clients
        return _floor(base, native=True)
    if variant == "aiohttp":
        return _aiohttp(base)
    if variant.startswith("aistream x-"):
        return _experimental(variant, base, streams, Impl)
    raise SystemExit(f"unknown variant {variant!r}")


def _experimental(variant: str, base: str, streams: int, impl: Any) -> Stream:
    """AIStream with `ClientLease.client` patched: the pool it uses when no client= is given."""
    if not callable(getattr(impl, "client", None)):  # (a patch of a gone name measures nothing)
        raise SystemExit(f"{impl.__name__}.client is gone: update the x- variants")
    import httpx

    from aistream import AIStream

    name = variant
    ctx = _ssl_context()
    configure: Callable[[Any], None] = lambda chat: None  # noqa: E731
    if name == "aistream x-own-pool":  # one pool per conversation (what 0.1 shipped), our backend
        from aistream._pool import UNLIMITED, new_client

        def _own(self: Any, *, own_pool: bool = False) -> Any:
            loop = asyncio.get_running_loop()
            if loop not in self._pools:
                self._pools[loop] = new_client(None, UNLIMITED)
            return self._pools[loop]

        impl.client = _own
    elif name == "aistream x-anyio":  # the shared pool on httpx's own (anyio) backend
        shared = httpx.AsyncClient(
            verify=ctx, limits=httpx.Limits(max_connections=None, max_keepalive_connections=100)
        )
        impl.client = lambda self, *, own_pool=False: shared
    elif name == "aistream x-httpx2":  # one process-wide httpx2 pool per loop
        import httpx2

        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=streams)
        impl.client = _patched_client(lambda: httpx2.AsyncClient(verify=ctx, limits=limits))

        def configure(chat: Any) -> None:
            transport = chat._transport
            transport._httpx_timeout = httpx2.Timeout(transport.timeout)
            transport._url = lambda url: (httpx2.URL(url), url)  # httpx2 wants its own URL

    elif name.startswith("aistream x-sharded"):  # K process-wide httpx pools per loop
        shards = int(name.removeprefix("aistream x-sharded"))
        limits1 = httpx.Limits(max_connections=None, max_keepalive_connections=streams)
        made: list[Any] = []

        def make() -> Any:
            made.extend(
                httpx.AsyncClient(verify=ctx, limits=limits1, timeout=30) for _ in range(shards)
            )
            return made

        pool_of = _patched_client(make)

        def _sharded(self: Any, *, own_pool: bool = False) -> Any:
            pools = pool_of(self)
            return pools[id(self) % len(pools)]

        impl.client = _sharded
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    def make_chat(url: str) -> Any:
        chat = AIStream(url, model=c.MODEL)
        configure(chat)
        return chat

    return _aistream(base, make_chat)


def monitor(
    plan: Plan, counter: Counter, started: threading.Event, server_pid: int, base_rss: int
) -> None:
    """The measuring thread: it keeps time even when the loop is blocked for seconds (as it is
    while 1,000 AIStreams start), then prints the result and ends the
    process. Reads of ints and list lengths are atomic under the GIL."""
    started.wait()
    t0 = T0
    s0 = proc_cpu_seconds(server_pid)
    c0 = time.process_time()
    peak = base_rss

    def sleep_until(deadline: float) -> None:
        nonlocal peak
        while (left := deadline - time.perf_counter()) > 0:
            peak = max(peak, rss_kb())
            time.sleep(min(0.1, left))

    sleep_until(t0 + plan.seconds / 2)
    half_tokens, half_time, c_half = counter.tokens, time.perf_counter(), time.process_time()
    s_half = proc_cpu_seconds(server_pid)
    sleep_until(t0 + plan.seconds)
    end_tokens, end_time = counter.tokens, time.perf_counter()
    c1 = time.process_time()
    s1 = proc_cpu_seconds(server_pid)
    in_window = len(counter.first)
    while len(counter.first) < plan.streams and time.perf_counter() - t0 < plan.cap:
        sleep_until(time.perf_counter() + 0.05)  # still sampling RSS: every stream counts
    firsts = sorted(t - t0 for t in list(counter.first))
    result = {
        "variant": plan.variant,
        "loop": plan.loop,
        "phases": plan.phases,
        "streams": plan.streams,
        "rate": plan.rate,
        "seconds": plan.seconds,
        "cap": plan.cap,
        "started": len(firsts),
        "started_in_window": in_window,
        "all_first": firsts[-1] if len(firsts) == plan.streams else None,
        "median_first": median(firsts) if firsts else None,
        "last_first": firsts[-1] if firsts else None,
        "toks_sustained": (end_tokens - half_tokens) / (end_time - half_time),
        "toks_window": end_tokens / (end_time - t0),
        "cpu_pct": (c1 - c0) / (end_time - t0) * 100,
        "cpu_us_per_token": (c1 - c_half) / max(end_tokens - half_tokens, 1) * 1e6,
        "server_cpu_pct": (s1 - s0) / (end_time - t0) * 100,
        # the server's CPU per token over the second half (the relay mode's measure)
        "server_us_per_token": (s1 - s_half) / max(end_tokens - half_tokens, 1) * 1e6,
        "rss_kb_per_stream": (peak - base_rss) / plan.streams,
        "errors": list(ERRORS),
    }
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip tearing down thousands of streams: not part of the measurement


T0 = 0.0
ERRORS: list[str] = []


def prompt_of(i: int) -> str:
    """Stream i's user message: with spread phases, its phase is i/N of the token period."""
    return PROMPT if not SPREAD else f"{PROMPT} phase={i / SPREAD:.6f}"


SPREAD = 0  # N when phases are spread, else 0


async def child(plan: Plan, base: str, server_pid: int) -> None:
    global PROMPT, T0, SPREAD
    n_tokens = int(plan.rate * (plan.cap + plan.seconds + 30))
    PROMPT = c.prompt(n_tokens, plan.rate)
    SPREAD = plan.streams if plan.phases == "spread" else 0
    _ssl_context()  # a once-per-process cost (~870 KB), whichever variant, so not per stream
    base_rss = rss_kb()  # before build(): the pools a variant makes count as its streams' memory
    stream = build(plan.variant, base, plan.streams)
    counter = Counter(plan.streams)

    async def guarded(i: int) -> None:
        try:
            await stream(i, counter)
        except Exception as exc:
            if len(ERRORS) < 5:
                ERRORS.append(f"{type(exc).__name__}: {exc}"[:300])

    started = threading.Event()
    args = (plan, counter, started, server_pid, base_rss)
    threading.Thread(target=monitor, args=args, daemon=True).start()
    T0 = time.perf_counter()
    started.set()
    tasks = [asyncio.create_task(guarded(i)) for i in range(plan.streams)]
    await asyncio.sleep(plan.cap + plan.seconds + 60)  # the monitor ends the process
    del tasks


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--cap", type=float, required=True)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--phases", default="arrival", choices=["arrival", "spread"])
    parser.add_argument("--rate", type=float, default=RATE)
    parser.add_argument("--base", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    pin_client()
    plan = Plan(args.child, args.streams, args.seconds, args.cap, args.loop, args.phases, args.rate)
    factory = dict(c.loop_kinds("both"))[args.loop]
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(child(plan, args.base, args.server_pid))


# --- the parent --------------------------------------------------------------------------------


def run_child(server: LoopbackServer, plan: Plan) -> dict[str, Any]:
    assert server.proc is not None
    python = AIOHTTP_PYTHON if plan.variant == "aiohttp" and AIOHTTP_PYTHON else sys.executable
    env = None
    if python != sys.executable:  # the peers environment: aistream from this checkout
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [
        python,
        "-m",
        "benchmarks.concurrency",
        "--child",
        plan.variant,
        "--streams",
        str(plan.streams),
        "--seconds",
        str(plan.seconds),
        "--cap",
        str(plan.cap),
        "--loop",
        plan.loop,
        "--phases",
        plan.phases,
        "--rate",
        str(plan.rate),
        "--base",
        server.base,
        "--server-pid",
        str(server.proc.pid),
    ]
    timeout = plan.cap + plan.seconds + 120
    try:
        out = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"variant": plan.variant, "streams": plan.streams, "error": "timed out"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (out.stderr or out.stdout)[-500:]
    return {"variant": plan.variant, "streams": plan.streams, "error": tail}


def _first(result: dict[str, Any]) -> str:
    if result.get("all_first") is not None:
        return f"{result['all_first']:.2f}"
    waited = max(result["seconds"], result["cap"])
    return f"> {waited:g} ({result['started']}/{result['streams']})"


def _available(plans: list[Plan]) -> list[Plan]:
    """Leave out what needs a package that is not installed (httpx2, the openai SDK)."""
    return [
        p
        for p in plans
        if (c.HAS_HTTPX2 or "httpx2" not in p.variant)
        and (c.HAS_OPENAI or p.variant != "openai SDK")
        and (HAS_AIOHTTP or p.variant != "aiohttp")
    ]


def _aiohttp_python() -> str | None:
    """The interpreter that runs the aiohttp variant: this one when aiohttp is installed, else
    the benchmark's peers environment (``make bench-litellm``: LiteLLM depends on aiohttp).
    aiohttp stays out of the dev extra: with it installed, google-genai switches to it, and its
    DeprecationWarning fails tests/test_sdk_providers.py under the suite's warning filters."""
    if importlib.util.find_spec("aiohttp") is not None:
        return sys.executable
    peers = ROOT / ".cache" / "bench-litellm" / "bin" / "python"
    return str(peers) if peers.exists() else None


AIOHTTP_PYTHON = _aiohttp_python()
HAS_AIOHTTP = AIOHTTP_PYTHON is not None
FLOORS = ("floor (raw socket)", "aiohttp")  # what the spread AIStream row is held against
FIVE_K = ("aistream", "floor (raw socket)")  # 5,000 streams at 4 tok/s


def plans(full: bool) -> tuple[list[Plan], list[Plan]]:
    """(the AIStream rows, the experiments); full mode: 10 s windows and 1,000 streams."""
    if full:
        seconds, cap = 10.0, 20.0
        main = [Plan("aistream", n, seconds, 60.0) for n in (100, 500, 1000)]
        main.append(Plan("aistream", 1000, seconds, 60.0, phases="spread"))
        main.append(Plan("aistream client=", 1000, seconds, cap))
        main.append(Plan("aistream client=", 1000, seconds, cap, phases="spread"))
        main.append(Plan("aistream client= default-limits", 1000, seconds, cap, phases="spread"))
        main.append(Plan("openai SDK", 1000, seconds, cap))
        main += [Plan(v, 1000, seconds, cap, phases="spread") for v in FLOORS]
        main += [Plan(v, 5000, seconds, 60.0, phases="spread", rate=4.0) for v in FIVE_K]
        exps = [
            Plan(v, 1000, seconds, cap)
            for v in (
                "raw httpx 1 default-limits",
                "raw httpx 1",
                "raw httpx 8",
                "raw httpx 16",
                "raw httpx 32",
                "raw httpx per-stream",
                "raw httpx2 1",
                "aistream x-own-pool",
                "aistream x-anyio",
                "aistream x-sharded16",
                "aistream x-httpx2",
            )
        ]
        if c.HAS_UVLOOP:
            exps += [
                Plan(v, 1000, seconds, cap, "uvloop")
                for v in ("raw httpx2 1", "aistream", "aistream x-httpx2")
            ]
        return _available(main), _available(exps)
    seconds = 4.0  # AIStream as shipped is cut off at the window: its ramp is CPU-bound
    # (quick stays under a minute: the 100-stream and aiohttp rows are in --full only)
    main = [Plan("aistream", 1000, seconds, seconds)]
    main.append(Plan("aistream", 1000, seconds, seconds, phases="spread"))
    main.append(Plan("aistream client=", 1000, seconds, seconds, phases="spread"))
    main.append(Plan(FLOORS[0], 1000, seconds, seconds, phases="spread"))
    # 5,000 streams take longer to start than the quick window: their own, longer one
    main += [Plan(v, 5000, 8.0, 12.0, phases="spread", rate=4.0) for v in FIVE_K]
    return _available(main), []


def run(report: Report, server: LoopbackServer, *, full: bool, only_main: bool = False) -> None:
    main, exps = plans(full)
    table = Table(
        f"concurrency: N streams at {RATE:g} tok/s (unless said) in one process "
        f"({main[0].seconds:g} s window{'' if full else ', quick'})",
        [
            "variant",
            "loop",
            "phases",
            "streams",
            "tok/s each",
            "all first token s",
            "median first s",
            "tok/s sustained",
            "tok/s window",
            "offered",
            "client CPU %",
            "CPU µs/token",
            "server CPU %",
            "RSS KB/stream",
            "started in window",
        ],
    )
    results = []
    for plan in main + ([] if only_main else exps):
        result = run_child(server, plan)
        results.append(result)
        if "error" in result:
            table.rows.append(
                [plan.variant, plan.loop, plan.phases, str(plan.streams), f"{plan.rate:g}", "ERROR"]
                + [""] * 9
            )
            table.notes.append(f"{plan.variant}: {result['error']}")
            continue
        table.rows.append(
            [
                plan.variant,
                plan.loop,
                plan.phases,
                str(plan.streams),
                f"{plan.rate:g}",
                _first(result),
                f"{result['median_first']:.2f}" if result["median_first"] is not None else "-",
                f"{result['toks_sustained']:,.0f}",
                f"{result['toks_window']:,.0f}",
                f"{plan.streams * plan.rate:,.0f}",
                f"{result['cpu_pct']:.0f}",
                f"{result['cpu_us_per_token']:.0f}" if result["toks_sustained"] else "-",
                f"{result['server_cpu_pct']:.0f}",
                f"{result['rss_kb_per_stream']:.1f}"
                + ("" if result["started"] == plan.streams else " (partial)"),
                f"{result['started_in_window']}",
            ]
        )
        for error in result["errors"]:
            table.notes.append(f"{plan.variant} ({plan.streams}): {error}")
    table.notes.append(
        "tok/s sustained: over the second half of the window; window: over all of it; "
        "CPU 100 % = one core; (partial): not every stream had started by the end of the window"
    )
    table.notes.append(
        "phases: arrival = each stream ticks from its request's arrival; spread = stream i at "
        "i/N of the token period on a shared grid (every token its own wakeup)"
    )
    table.notes.append(
        "CPU µs/token: client CPU per token over the second half (1e6 / it = the tok/s one "
        "whole core would sustain: the capacity, whatever else runs on the box)"
    )
    report.add(table)
    report.data["concurrency"] = results
    _target_floor(report, results)
    _target_client(report, results)
    _target_5000(report, results)
    target = next(
        (
            r
            for r in results
            if r.get("variant") == "aistream" and r.get("streams") == 1000 and "error" not in r
        ),
        None,
    )
    if target is None:
        report.target(
            Target(3, "1,000 concurrent AIStream conversations", None, "not run in this mode")
        )
        return
    first = target["all_first"]
    ok = (
        first is not None
        and first <= TARGET_START
        and target["toks_sustained"] >= TARGET_TOKS
        and target["rss_kb_per_stream"] <= TARGET_RSS_KB
    )
    report.target(
        Target(
            3,
            f"1,000 AIStream conversations: all first tokens ≤ {TARGET_START:g} s, "
            f"≥ {TARGET_TOKS:,} tok/s, ≤ {TARGET_RSS_KB:g} KB RSS/stream",
            ok,
            f"first tokens {_first(target)} s, {target['toks_sustained']:,.0f} tok/s sustained, "
            f"{target['rss_kb_per_stream']:.0f} KB/stream, client CPU {target['cpu_pct']:.0f} %",
        )
    )


def _target_floor(report: Report, results: list[dict[str, Any]]) -> None:
    """Issue 16's target 1: 1,000 spread streams against the raw-socket floor."""

    def row(variant: str) -> dict[str, Any] | None:
        for r in results:
            ok = r.get("streams") == 1000 and r.get("phases") == "spread" and "error" not in r
            if ok and r.get("variant") == variant:
                return r
        return None

    ours, floor, aio = row("aistream"), row("floor (raw socket)"), row("aiohttp")
    if ours is None or floor is None:
        return
    ratio = ours["cpu_us_per_token"] / max(floor["cpu_us_per_token"], 1e-9)
    first = ours["all_first"]
    ok = ratio <= 1.5 and ours["rss_kb_per_stream"] <= 30.0 and first is not None and first <= 1.5
    other = (
        f"; aiohttp {aio['cpu_us_per_token']:.0f} µs, {aio['rss_kb_per_stream']:.1f} KB, "
        f"first {_first(aio)} s"
        if aio is not None
        else ""
    )
    report.target(
        Target(
            16,
            "1,000 spread AIStreams: CPU per token ≤ 1.5× the raw-socket floor's, "
            "≤ 30 KB RSS per stream, all first tokens ≤ 1.5 s",
            ok,
            f"{ratio:.2f}× ({ours['cpu_us_per_token']:.0f} vs {floor['cpu_us_per_token']:.0f} "
            f"µs/token), {ours['rss_kb_per_stream']:.1f} KB (floor "
            f"{floor['rss_kb_per_stream']:.1f}), first {_first(ours)} s{other}",
        )
    )


def _target_client(report: Report, results: list[dict[str, Any]]) -> None:
    """Issue 16's target 2: 1,000 AIStreams on one user-made client, spread phases."""
    found = [
        r for r in results if r.get("variant") == "aistream client=" and r.get("phases") == "spread"
    ]
    if not found or "error" in found[0]:
        return
    r = found[0]
    offered = r["streams"] * r["rate"]
    first = r["all_first"]
    ok = first is not None and first <= 3.0 and r["toks_sustained"] >= 0.95 * offered
    report.target(
        Target(
            16,
            "1,000 AIStreams sharing one httpx.AsyncClient (client=, limits raised), phases "
            "spread: all first tokens ≤ 3 s, ≥ 95 % of offered tok/s",
            ok,
            f"first tokens {_first(r)} s, {r['toks_sustained']:,.0f} of {offered:,.0f} tok/s "
            f"({r['toks_sustained'] / offered:.0%}), {r['rss_kb_per_stream']:.0f} KB/stream",
        )
    )


def _target_5000(report: Report, results: list[dict[str, Any]]) -> None:
    """Issue 16's target 3: 5,000 AIStreams at 4 tok/s in one process, phases spread."""
    found = [r for r in results if r.get("variant") == "aistream" and r.get("streams") == 5000]
    if not found or "error" in found[0]:
        return
    r = found[0]
    offered = r["streams"] * r["rate"]
    first = r["all_first"]
    ok = (
        first is not None
        and first <= 5.0
        and r["toks_sustained"] >= 0.95 * offered
        and r["rss_kb_per_stream"] <= 30.0
    )
    report.target(
        Target(
            16,
            "5,000 AIStreams at 4 tok/s, phases spread: all first tokens ≤ 5 s, ≥ 95 % of "
            "offered tok/s, ≤ 30 KB RSS per stream",
            ok,
            f"first tokens {_first(r)} s, {r['toks_sustained']:,.0f} of {offered:,.0f} tok/s "
            f"({r['toks_sustained'] / offered:.0%}), {r['rss_kb_per_stream']:.1f} KB/stream, "
            f"client CPU {r['cpu_pct']:.0f} %",
        )
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv[1:])
    else:
        pin_client()
        with LoopbackServer() as srv:
            rep = Report()
            run(rep, srv, full="--full" in sys.argv)
