"""Paced mode: CPU per token and server-stamp-to-handler latency at 200 tok/s.

The server sends token i at ``start + i / 200 s`` and stamps each send (``time.monotonic_ns``,
the same clock in both processes); each variant's token handler stamps the arrival. At this
pace every token wakes the event loop, so the CPU per token is dominated by the wake-up and the
HTTP stack, which is what a proxy relaying hundreds of slow streams pays. Variants alternate in
a rotating order; the ratio to httpx-sse is the median over rounds of the paired ratio.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from dataclasses import dataclass, field

from . import clients as c
from ._server import LoopbackServer
from .report import Report, Table, Target, median, paired_ratio, percentile, spread

RATE = 200.0
TARGET_RATIO = 1.05


@dataclass
class Samples:
    cpu: list[float] = field(default_factory=list)  # CPU µs per token, one per round
    latency: list[float] = field(default_factory=list)  # µs, every token of every round


def variants(full: bool) -> list[c.Variant]:
    chosen = [c.HTTPX_SSE, c.AISTREAM, c.AISTREAM_JSON]
    if full:
        chosen = [c.CEILING, *chosen, c.HTTPX_SSE_PYEE, c.OPENAI]
    return [v for v in chosen if v.available]


_ids = itertools.count()


async def one(env: c.Env, v: c.Variant, n: int) -> tuple[float, list[float]]:
    """Stream n paced tokens; return (CPU µs per token, latencies in µs)."""
    sid = f"p{next(_ids)}"
    arrivals: list[int] = []
    stamp = time.monotonic_ns
    append = arrivals.append

    def on_token(token: str) -> None:
        append(stamp())

    gc.collect()
    c0 = time.process_time_ns()
    got = await v(env, c.prompt(n, RATE, sid), on_token)
    c1 = time.process_time_ns()
    sent = (await env.http.get(f"{env.base}/stamps/{sid}")).json()
    if v.counts_tokens:
        if got != n or len(arrivals) != n:
            raise AssertionError(f"{v.name}: delivered {got} ({len(arrivals)}) of {n} tokens")
        latencies = [(a - s) / 1000 for a, s in zip(arrivals, sent, strict=True)]
    else:  # one HTTP chunk per event: the role chunk, n tokens, then the epilogue's chunks
        tokens = arrivals[1 : n + 1]
        latencies = [(a - s) / 1000 for a, s in zip(tokens, sent, strict=True)]
    return (c1 - c0) / n / 1000, latencies


async def measure(
    server: LoopbackServer, chosen: list[c.Variant], n: int, rounds: int
) -> dict[str, Samples]:
    env = c.Env(server.base)
    out = {v.name: Samples() for v in chosen}
    try:
        for v in chosen:  # warm up, unpaced
            await v(env, c.prompt(500), None)
        for round_ in range(rounds):
            for v in c.rotated(chosen, round_):
                cpu, latencies = await one(env, v, n)
                out[v.name].cpu.append(cpu)
                out[v.name].latency.extend(latencies)
    finally:
        await env.aclose()
    return out


def run(
    report: Report, server: LoopbackServer, *, n: int, rounds: int, loops: str, full: bool
) -> None:
    chosen = variants(full)
    for loop_name, factory in c.loop_kinds(loops):
        s0 = server.cpu_seconds()
        with asyncio.Runner(loop_factory=factory) as runner:
            samples = runner.run(measure(server, chosen, n, rounds))
        server_us = (server.cpu_seconds() - s0) / (len(chosen) * (rounds * n + 500)) * 1e6
        base = samples[c.HTTPX_SSE.name]
        table = Table(
            f"paced {RATE:g} tok/s, {loop_name} loop: {n} tokens per stream ({n / RATE:g} s), "
            f"{rounds} rounds",
            [
                "variant",
                "CPU µs/token median (min–max)",
                "ratio to httpx-sse",
                "latency p50 µs",
                "p99 µs",
            ],
        )
        for v in chosen:
            s = samples[v.name]
            table.rows.append(
                [
                    v.name,
                    spread(s.cpu, 1),
                    f"{paired_ratio(s.cpu, base.cpu):.2f}",
                    f"{percentile(s.latency, 50):.0f}",
                    f"{percentile(s.latency, 99):.0f}",
                ]
            )
        table.notes.append(
            "latency: server send stamp to the token handler (ceiling: to the chunk's arrival)"
        )
        table.notes.append(
            f"loopback server: ~{server_us:.1f} µs CPU per event (incl. warm-up, /proc stat)"
        )
        report.add(table)
        report.data[f"paced/{loop_name}"] = {k: vars(s) for k, s in samples.items()}
        ours = samples[c.AISTREAM.name]
        ratio = paired_ratio(ours.cpu, base.cpu)
        report.target(
            Target(
                2,
                f"paced CPU per token ≤ {TARGET_RATIO}× httpx-sse's [{loop_name}]",
                ratio <= TARGET_RATIO,
                f"{ratio:.2f}× (AIStream {median(ours.cpu):.1f} µs/token, httpx-sse "
                f"{median(base.cpu):.1f}; latency p50 {percentile(ours.latency, 50):.0f} vs "
                f"{percentile(base.latency, 50):.0f} µs)",
            )
        )
