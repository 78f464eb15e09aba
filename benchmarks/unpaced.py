"""Unpaced mode: µs per event with the server flat out, and the ratio to the httpx ceiling.

The server writes a precomputed reply as fast as the client reads it, one SSE event per HTTP
chunk; the client variants run in one process, alternating in a rotating order, for several
rounds, on a warm connection. Wall time per event is what a proxy's throughput pays; with the
server on its own core it equals the client's CPU per event (shown too).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field

from . import clients as c
from ._server import LoopbackServer
from .report import Report, Table, Target, median, paired_ratio, spread

TARGET_RATIO = 0.65


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)  # µs per event, one per round
    cpu: list[float] = field(default_factory=list)
    server: float = 0.0  # server CPU seconds, summed over rounds
    events: int = 0


def variants(full: bool) -> list[c.Variant]:
    others = [c.LINES, c.ANTHROPIC, c.AISTREAM_ANTHROPIC, c.AISTREAM_NATIVE] if full else []
    chosen = [
        c.CEILING,
        c.HTTPX_SSE,
        c.HTTPX_SSE_ORJSON,
        c.HTTPX_SSE_PYEE,
        c.OPENAI,
        c.AISTREAM,
        c.AISTREAM_NO_OTEL,
        c.AISTREAM_OTEL,
        c.AISTREAM_JSON,
        *others,
    ]
    return [v for v in chosen if v.available]


async def measure(
    server: LoopbackServer, chosen: list[c.Variant], n: int, rounds: int
) -> dict[str, Samples]:
    env = c.Env(server.base)
    out = {v.name: Samples() for v in chosen}
    try:
        for v in chosen:  # warm up: imports, caches, the connection of each client
            await v(env, c.prompt(200), None)
        for v in chosen:  # and the process: the first full-size runs are slower
            await v(env, c.prompt(min(n, 2000)), None)
        for round_ in range(rounds):
            for v in c.rotated(chosen, round_):
                gc.collect()
                s0 = server.cpu_seconds()
                c0 = time.process_time_ns()
                t0 = time.perf_counter_ns()
                got = await v(env, c.prompt(n), None)
                t1 = time.perf_counter_ns()
                c1 = time.process_time_ns()
                s1 = server.cpu_seconds()
                if v.counts_tokens and got != n:
                    raise AssertionError(f"{v.name}: delivered {got} of {n} tokens")
                sample = out[v.name]
                sample.wall.append((t1 - t0) / n / 1000)
                sample.cpu.append((c1 - c0) / n / 1000)
                sample.server += s1 - s0
                sample.events += n
    finally:
        await env.aclose()
    return out


def run(
    report: Report, server: LoopbackServer, *, n: int, rounds: int, loops: str, full: bool
) -> None:
    chosen = variants(full)
    for loop_name, factory in c.loop_kinds(loops):
        with asyncio.Runner(loop_factory=factory) as runner:
            samples = runner.run(measure(server, chosen, n, rounds))
        ceiling = samples[c.CEILING.name]
        table = Table(
            f"unpaced, {loop_name} loop: {n:,} events per stream, {rounds} rounds",
            [
                "variant",
                "CPU µs/event median (min–max)",
                "ratio to ceiling",
                "wall µs/event",
                "wall ratio",
            ],
        )
        for v in chosen:
            s = samples[v.name]
            ratio = 1.0 if v.ceiling else paired_ratio(ceiling.cpu, s.cpu)
            wall = 1.0 if v.ceiling else paired_ratio(ceiling.wall, s.wall)
            name = v.name + (f" ({v.note})" if v.note else "")
            table.rows.append(
                [name, spread(s.cpu, 2), f"{ratio:.2f}", f"{median(s.wall):.2f}", f"{wall:.2f}"]
            )
        events = sum(s.events for s in samples.values())
        server_us = sum(s.server for s in samples.values()) / events
        if server_us == 0:  # below /proc's 10 ms tick over the whole mode
            server_us = 0.01 / events
        cheapest = min(median(s.cpu) for s in samples.values())
        table.notes.append(
            "CPU: the client process's (time.process_time); ratio: median over rounds of "
            "ceiling / variant, 1.00 = as cheap as counting bytes; wall: perf_counter"
        )
        table.notes.append(
            f"loopback server: {server_us * 1e6:.2f} µs CPU per event over all runs (/proc stat, "
            "10 ms ticks), "
            f"the cheapest client {cheapest:.2f} µs: "
            + ("not the bottleneck" if server_us * 1e6 < cheapest / 4 else "TOO SLOW, CHECK")
        )
        report.add(table)
        report.data[f"unpaced/{loop_name}"] = {k: vars(s) for k, s in samples.items()}
        ours = samples[c.AISTREAM.name]
        ratio = paired_ratio(ceiling.cpu, ours.cpu)
        wall = paired_ratio(ceiling.wall, ours.wall)
        parser = "orjson" if c.HAS_ORJSON else "stdlib json"
        other = ""
        if c.AISTREAM_JSON.name in samples:  # the same without the accelerator, for the record
            plain = samples[c.AISTREAM_JSON.name]
            other = f"; with stdlib json {paired_ratio(ceiling.cpu, plain.cpu):.2f}×"
        report.target(
            Target(
                1,
                f"unpaced AIStream e2e ≥ {TARGET_RATIO}× the httpx ceiling [{loop_name}, {parser}]",
                ratio >= TARGET_RATIO,
                f"{ratio:.2f}× in CPU, {wall:.2f}× in wall time (AIStream "
                f"{median(ours.cpu):.2f} µs/event, ceiling {median(ceiling.cpu):.2f}){other}",
            )
        )
