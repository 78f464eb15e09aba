"""aistream's benchmark suite: ``make bench`` (quick) or ``make bench BENCH_ARGS=--full``.

Modes: ``unpaced`` (µs per event flat out, ratio to the httpx ceiling), ``paced`` (CPU per token
and latency at 200 tok/s), ``turn`` (fixed cost of a one-token turn), ``concurrency`` (1,000
streams in one process), ``server`` (server CPU per event of EventStreamResponse, in each
output format), ``decode`` (SSE decode cost against httpx-sse, and a correctness table). See
benchmarks/README.md.
"""
