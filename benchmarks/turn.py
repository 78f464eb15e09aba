"""Turn mode: the fixed cost of a one-token turn on a warm connection.

Each turn is a whole request: send the chat request, receive the role chunk, one token, the
finish and usage chunks and ``[DONE]``. A notebook user feels this as the first-token delay a
library adds; a proxy pays it per request. Wall and CPU per turn, variants alternating; the
server's count of accepted connections tells whether a client kept its connection warm.
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field

from . import clients as c
from ._server import LoopbackServer
from .report import Report, Table, Target, median, paired_ratio, spread

TARGET_RATIO = 1.1


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)  # µs per turn, one per round
    cpu: list[float] = field(default_factory=list)
    connections: int = 0  # new connections the server accepted during this variant's turns
    turns: int = 0


def variants(full: bool) -> list[c.Variant]:
    chosen = [c.CEILING, c.HTTPX_SSE, c.AISTREAM, c.AISTREAM_JSON, c.OPENAI]
    if full:
        chosen += [c.ANTHROPIC]
    return [v for v in chosen if v.available]


async def connections(env: c.Env) -> int:
    return int((await env.http.get(f"{env.base}/stats")).json()["connections"])


async def measure(
    server: LoopbackServer, chosen: list[c.Variant], turns: int, rounds: int
) -> dict[str, Samples]:
    env = c.Env(server.base)
    out = {v.name: Samples() for v in chosen}
    text = c.prompt(1)
    try:
        for v in chosen:  # warm up: imports, caches, each client's connection
            for _ in range(20):
                await v(env, text, None)
        for round_ in range(rounds):
            for v in c.rotated(chosen, round_):
                gc.collect()
                before = await connections(env)
                c0 = time.process_time_ns()
                t0 = time.perf_counter_ns()
                for _ in range(turns):
                    got = await v(env, text, None)
                t1 = time.perf_counter_ns()
                c1 = time.process_time_ns()
                if v.counts_tokens and got != 1:
                    raise AssertionError(f"{v.name}: delivered {got} of 1 token")
                s = out[v.name]
                s.connections += await connections(env) - before
                s.turns += turns
                s.wall.append((t1 - t0) / turns / 1000)
                s.cpu.append((c1 - c0) / turns / 1000)
    finally:
        await env.aclose()
    return out


def run(
    report: Report, server: LoopbackServer, *, turns: int, rounds: int, loops: str, full: bool
) -> None:
    chosen = variants(full)
    for loop_name, factory in c.loop_kinds(loops):
        with asyncio.Runner(loop_factory=factory) as runner:
            samples = runner.run(measure(server, chosen, turns, rounds))
        base = samples[c.HTTPX_SSE.name]
        table = Table(
            f"one-token turns on a warm connection, {loop_name} loop: {turns} turns × {rounds} "
            "rounds",
            [
                "variant",
                "wall µs/turn median (min–max)",
                "ratio to httpx-sse",
                "CPU µs/turn",
                "CPU ratio",
                "new conns/turn",
            ],
        )
        for v in chosen:
            s = samples[v.name]
            table.rows.append(
                [
                    v.name + (f" ({v.note})" if v.note else ""),
                    spread(s.wall, 0),
                    f"{paired_ratio(s.wall, base.wall):.2f}",
                    f"{median(s.cpu):.0f}",
                    f"{paired_ratio(s.cpu, base.cpu):.2f}",
                    f"{s.connections / s.turns:.2f}",
                ]
            )
        table.notes.append(
            "new conns/turn: 0.00 = the connection stays in the pool; 1.00 = a TCP connect per turn"
        )
        table.notes.append(
            "the target is judged on client CPU (the library's own cost); wall time adds the "
            "server's reply time, the same for every variant"
        )
        report.add(table)
        report.data[f"turn/{loop_name}"] = {k: vars(s) for k, s in samples.items()}
        ours = samples[c.AISTREAM.name]
        wall = paired_ratio(ours.wall, base.wall)
        cpu = paired_ratio(ours.cpu, base.cpu)
        report.target(
            Target(
                5,
                f"one-token turn ≤ {TARGET_RATIO}× httpx-sse's fixed cost [{loop_name}]",
                cpu <= TARGET_RATIO,
                f"CPU {cpu:.2f}×, wall {wall:.2f}× (AIStream {median(ours.wall):.0f} µs/turn, "
                f"{ours.connections / ours.turns:.2f} new conns/turn; httpx-sse "
                f"{median(base.wall):.0f} µs/turn)",
            )
        )
