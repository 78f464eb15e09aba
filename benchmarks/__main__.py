"""``python -m benchmarks [--full] [--only MODE,...] [--loop asyncio|uvloop|both] [--json PATH]``.

Quick mode (the default, under a minute on two cores) runs every mode briefly; ``--full`` runs
them at larger sizes (10,000-event streams, 1,000 concurrent streams for 10 s, both event
loops). The client modes share one loopback server subprocess pinned to the last CPU; the client
(this process) is pinned to the first.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import clients as c
from ._server import LoopbackServer, pin_client, raise_fd_limit
from .report import Report, machine_line

MODES = ("unpaced", "paced", "turn", "server", "concurrency", "relay", "decode", "replicas")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="aistream's benchmark suite: side-by-side ratios and the issue's targets.",
    )
    parser.add_argument("--full", action="store_true", help="full sizes (a few minutes)")
    parser.add_argument(
        "--only",
        default=",".join(MODES),
        help=f"comma-separated modes to run, of: {', '.join(MODES)} (default: all)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default=None,
        help="client event loop(s); default: both when uvloop is installed",
    )
    parser.add_argument("--json", type=Path, help="also write all samples to this JSON file")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.only.split(",") if m.strip()]
    if not args.full and args.only == parser.get_default("only"):
        modes.remove("relay")  # ~2 min (it starts LiteLLM's proxy): --full, or --only relay
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    args.modes = modes
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    full: bool = args.full
    loops = args.loop or ("both" if c.HAS_UVLOOP else "asyncio")
    quick_loops = args.loop or "asyncio"  # the slow paced/turn modes: one loop in quick mode
    raise_fd_limit()
    pin_client()
    report = Report()
    load = os.getloadavg()[0]
    print(machine_line())
    print(
        f"mode: {'full' if full else 'quick'}; load average at start {load:.2f}"
        + (" (the box is busy: expect noise)" if load > 0.5 else "")
        + f"; accelerators: uvloop {'yes' if c.HAS_UVLOOP else 'no'}, "
        f"orjson {'yes' if c.HAS_ORJSON else 'no'} (both optional)\n",
        flush=True,
    )
    times: dict[str, float] = {}
    mark = time.perf_counter()

    def done(mode: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        times[mode] = now - mark
        mark = now

    with LoopbackServer() as server:
        done("startup")
        if "unpaced" in args.modes:
            from . import unpaced

            unpaced.run(
                report,
                server,
                n=10_000 if full else 2_000,
                rounds=5 if full else 3,
                loops=loops,
                full=full,
            )
            done("unpaced")
        if "paced" in args.modes:
            from . import paced

            paced.run(
                report,
                server,
                n=300 if full else 100,
                rounds=4 if full else 5,
                loops=loops if full else quick_loops,
                full=full,
            )
            done("paced")
        if "turn" in args.modes:
            from . import turn

            turn.run(
                report,
                server,
                turns=300 if full else 150,
                rounds=5 if full else 3,
                loops=loops if full else quick_loops,
                full=full,
            )
            done("turn")
        if "concurrency" in args.modes:
            from . import concurrency

            concurrency.run(report, server, full=full)
            done("concurrency")
        if "relay" in args.modes:
            from . import relay

            relay.run(report, server, full=full)
            done("relay")
    if "server" in args.modes:
        from . import server as server_mode

        server_mode.run(
            report,
            n=10_000 if full else 4_000,
            rounds=5 if full else 3,
            loops=["asyncio", "uvloop"] if full and c.HAS_UVLOOP else ["asyncio"],
        )
        done("server")
    if "decode" in args.modes:
        from . import decode

        decode.run(report, n=10_000, rounds=9 if full else 5)
        done("decode")
    if "replicas" in args.modes:
        from . import replicas

        replicas.run(
            report,
            n=20_000 if full else 4_000,
            rounds=5 if full else 3,
            resumes=500 if full else 100,
            streams=1000 if full else 300,
        )
        done("replicas")
    elapsed = time.perf_counter() - start
    print(report.summary())
    print(
        f"\n{'full' if full else 'quick'} run: {elapsed:.1f} s ("
        + ", ".join(f"{mode} {seconds:.1f}" for mode, seconds in times.items())
        + f"); load average now {os.getloadavg()[0]:.2f}"
    )
    if args.json:
        report.data["elapsed"] = elapsed
        report.save(args.json)
        print(f"samples written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
