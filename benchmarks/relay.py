"""Relay mode: a server relaying an OpenAI-format upstream, three ways, under one load.

The upstream is the loopback benchmark server (its own process, paced tokens). Each relay runs
in its own process on 127.0.0.1 and gets the same load: N concurrent streams at R tok/s from
the raw-socket client of the concurrency mode (one asyncio Protocol per stream, chunked SSE
parsed by hand: the cheapest client, so the relay is what is measured), all reading the
OpenAI chat-completions stream from ``/v1/chat/completions``. Measured per relay: its CPU per
relayed token (from /proc over the window), the time until every stream had its first token,
and the relayed tok/s.

- ``aistream create_app``: ``create_app(upstream=..., protocol="openai")`` on uvicorn, as
  ``aistream serve --upstream`` runs it (its OpenAI-format output endpoint).
- ``aistream create_app (native)``: the same app, read by native clients (``/api/chat``).
- ``FastAPI + openai SDK``: the relay people write by hand (``benchmarks/_hand_relay.py``): an
  ``AsyncOpenAI`` client, a ``StreamingResponse`` of ``chunk.model_dump_json()`` lines, on
  uvicorn.
- ``LiteLLM proxy``: ``litellm --config`` with the upstream as an ``openai/`` model, installed
  into its own environment (``make bench-litellm``: ``.cache/bench-litellm``); the row is left
  out, with a note, when that environment is missing.

``python -m benchmarks.relay --serve <kind> --upstream URL --port P`` runs one relay (used by
the parent; kinds: aistream, openai-sdk).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from . import clients as c
from ._server import ROOT, LoopbackServer, stop_process
from .concurrency import Plan, _first, run_child
from .report import Report, Table, Target

LITELLM = Path(  # BENCH_LITELLM: another litellm executable
    os.environ.get("BENCH_LITELLM") or ROOT / ".cache" / "bench-litellm" / "bin" / "litellm"
)
KEY = "sk-bench-0123456789"
RATE = 5.0  # tok/s per stream
LOADS = (100, 1000)  # streams: one every relay keeps up with (CPU per token), and the issue's
TARGET_LITELLM = 0.5
TARGET_HAND = 0.7


# --- the relays (child processes) ------------------------------------------------------------


def _aistream_app(upstream: str) -> Any:
    from aistream.server import Limits, create_app

    return create_app(
        upstream=upstream + "/v1",
        api_key=KEY,
        protocol="openai",
        model=c.MODEL,
        limits=Limits(max_reply_chars=None),
    )


def _openai_sdk_app(upstream: str) -> Any:
    """The hand-written relay (benchmarks/_hand_relay.py), pointed at the upstream."""
    os.environ["BENCH_UPSTREAM"], os.environ["BENCH_UPSTREAM_KEY"] = upstream, KEY
    from . import _hand_relay

    return _hand_relay.app


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", required=True, choices=["aistream", "openai-sdk"])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvicorn

    from ._server import raise_fd_limit

    raise_fd_limit()
    app = (
        _aistream_app(args.upstream) if args.serve == "aistream" else _openai_sdk_app(args.upstream)
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="h11",
        timeout_keep_alive=30,
        backlog=4096,
    )


# --- the parent -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Relay:
    """What `run_child` needs of a server: its base URL and its process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"


def _ready(relay: _Relay, path: str, seconds: float) -> str | None:
    """None once the relay answers a one-token stream on `path`, else why not."""
    body = c.payload(c.prompt(1, 0))
    deadline = time.monotonic() + seconds
    last = "never answered"
    while time.monotonic() < deadline:
        if relay.proc.poll() is not None:
            return f"exited with {relay.proc.returncode}"
        try:
            response = httpx.post(relay.base + path, json=body, timeout=5)
            if response.status_code == 200:
                return None
            last = f"{response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)  # a benchmark waiting for a process to listen, not a test
    return last


@contextmanager
def _relay(kind: str, upstream: str) -> Iterator[_Relay | str]:
    """A running relay, or a string saying why there is none."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    files: list[str] = []
    if kind == "litellm":
        if not LITELLM.exists():
            yield "not installed: make bench-litellm (its own environment, .cache/bench-litellm)"
            return
        config = {
            "model_list": [
                {
                    "model_name": c.MODEL,
                    "litellm_params": {
                        "model": f"openai/{c.MODEL}",
                        "api_base": upstream + "/v1",
                        "api_key": KEY,
                    },
                }
            ],
            "litellm_settings": {"telemetry": False, "drop_params": True},
            # no key for the proxy's callers, like the other two on loopback (LiteLLM
            # refuses to start so unless told this is local)
            "general_settings": {
                "disable_spend_logs": True,
                "dangerously_permit_weak_or_unset_master_key": True,
            },
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(config, f)
            files.append(f.name)
        cmd = [str(LITELLM), "--config", f.name, "--host", "127.0.0.1", "--port", str(port)]
        env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    else:
        cmd = [sys.executable, "-m", "benchmarks.relay", "--serve", kind]
        cmd += ["--upstream", upstream, "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    relay = _Relay(proc, port)
    try:
        why = _ready(relay, "/v1/chat/completions", 120 if kind == "litellm" else 30)
        yield relay if why is None else f"did not start: {why}"
    finally:
        stop_process(proc)
        for name in files:
            os.unlink(name)


VARIANTS = (
    ("aistream create_app", "aistream", "floor (raw socket)"),
    ("aistream create_app (native clients)", "aistream", "floor native"),
    ("FastAPI + openai SDK", "openai-sdk", "floor (raw socket)"),
    ("LiteLLM proxy", "litellm", "floor (raw socket)"),
)


def run(report: Report, server: LoopbackServer, *, full: bool) -> None:
    seconds = 10.0 if full else 6.0
    table = Table(
        f"relay: N streams at {RATE:g} tok/s each through a relay of the OpenAI-format "
        f"upstream ({seconds:g} s window{'' if full else ', quick'})",
        [
            "relay",
            "streams",
            "all first token s",
            "median first s",
            "tok/s sustained",
            "offered",
            "relay CPU %",
            "relay CPU µs/token",
            "client CPU %",
        ],
    )
    per_token: dict[str, float] = {}  # at the load every relay keeps up with
    for name, kind, client in VARIANTS:
        for streams in LOADS:
            # a fresh relay per load: the last load's cut streams would still hold its slots
            # (a native generation outlives its client for the resume grace)
            with _relay(kind, server.base) as relay:
                if isinstance(relay, str):
                    table.notes.append(f"{name}: left out, {relay}")
                    break
                plan = Plan(client, streams, seconds, seconds * 3, phases="spread", rate=RATE)
                result = run_child(relay, plan)  # type: ignore[arg-type]
            _row(table, name, plan, result, per_token)
    table.notes.append(
        "relay CPU µs/token: the relay process's CPU / tokens relayed, over the window's second "
        "half "
        "(its uvicorn, its HTTP client to the upstream and its encoding); the upstream and the "
        "client run in their own processes. A relay that does not keep up (tok/s below "
        "offered) spends its CPU on starting streams: its µs/token is not a per-token cost"
    )
    report.add(table)
    ours = per_token.get("aistream create_app")
    for other, limit in (("LiteLLM proxy", TARGET_LITELLM), ("FastAPI + openai SDK", TARGET_HAND)):
        theirs = per_token.get(other)
        if ours is None or theirs is None:
            report.target(Target(16, f"relay CPU per token ≤ {limit}× {other}'s", None, "not run"))
            continue
        ratio = ours / theirs
        report.target(
            Target(
                16,
                f"create_app relay CPU per token ≤ {limit}× {other}'s ({LOADS[0]} streams at "
                f"{RATE:g} tok/s, which every relay keeps up with)",
                ratio <= limit,
                f"{ratio:.2f}× ({ours:.0f} vs {theirs:.0f} µs/token)",
            )
        )


def _row(
    table: Table, name: str, plan: Plan, result: dict[str, Any], per_token: dict[str, float]
) -> None:
    if "error" in result:
        table.rows.append([name, str(plan.streams), "ERROR"] + [""] * 6)
        table.notes.append(f"{name}: {result['error']}")
        return
    toks = result["toks_sustained"]
    us = result["server_us_per_token"]  # over the window's second half, once streams run
    if plan.streams == LOADS[0]:
        per_token[name] = us
    first = result["all_first"]
    table.rows.append(
        [
            name,
            str(plan.streams),
            f"{first:.2f}" if first is not None else _first(result),
            f"{result['median_first']:.2f}" if result["median_first"] is not None else "-",
            f"{toks:,.0f}",
            f"{plan.streams * RATE:,.0f}",
            f"{result['server_cpu_pct']:.0f}",
            f"{us:.0f}",
            f"{result['cpu_pct']:.0f}",
        ]
    )
    for error in result["errors"]:
        table.notes.append(f"{name} ({plan.streams}): {error}")


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve_main(sys.argv[1:])
    else:
        with LoopbackServer() as srv:
            rep = Report()
            run(rep, srv, full="--full" in sys.argv)
