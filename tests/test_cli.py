"""The ``aistream`` command: demo, chat (piped and interrupted), serve, version, bad arguments.

The end-to-end tests run ``python -m aistream`` as a subprocess against the real embedded
server (no key, no network); the rest call `main()` in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import get_args

import httpx
import pytest

import aistream
from aistream._cli import build_parser, main
from aistream._console import colour_enabled
from aistream._tour import _token_indices
from aistream._wire._anthropic import ANTHROPIC_VERSION
from aistream.server._relay import UPSTREAM_PROTOCOLS
from aistream.types import ProtocolName
from tests.loopback import Handler, Reply, Request, openai_events
from tests.responses_upstream import responses_events

GUARD = 60  # seconds: a bound on each subprocess, never a way to wait
GEMINI_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def aistream_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "aistream", *args]


def interruptible_cmd(*args: str) -> list[str]:
    """`aistream_cmd` with Ctrl-C live even when this test runs as a background job.

    A shell without job control starts `cmd &` with SIGINT ignored, and a Python started with it
    ignored keeps it so (as `nohup` wants), so the child would never see the test's SIGINT.
    """
    start = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from aistream._cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", start, *args]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        aistream_cmd(*args), input=stdin, capture_output=True, text=True, timeout=GUARD, env=env
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- end to end ------------------------------------------------------------------------------


def test_demo_passes_every_check_without_colour() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"All \d+ checks passed\.", out)
    assert "[FAIL]" not in out
    assert "resume=True" in out
    assert "Last-Event-ID: " in out
    assert "finish_reason='stopped'" in out
    assert "\x1b[" not in out  # NO_COLOR and not a tty


def test_chat_piped_prints_the_reply_and_usage_then_exits_0() -> None:
    result = run("chat", stdin="hi\n")
    assert result.returncode == 0, result.stderr
    assert '"hi"' in result.stdout  # the demo model quotes the question
    assert len(result.stdout.strip().splitlines()) == 1
    assert re.search(
        r"\[usage: \d+ prompt \+ \d+ completion = \d+ tokens; conversation \d+]", result.stderr
    )


def test_chat_piped_lines_are_one_conversation() -> None:
    result = run("chat", stdin="hi\n\nhow are you?\n")
    assert result.returncode == 0, result.stderr
    totals = [int(n) for n in re.findall(r"conversation (\d+)]", result.stderr)]
    assert len(totals) == 2 and totals[1] > totals[0]
    assert "message 2 from you" in result.stdout  # the model saw the first turn


def test_chat_piped_error_is_one_line_and_exits_1() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/chat"
    result = run("chat", "--endpoint", url, "--retries", "0", stdin="hi\n")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not connect"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, a POSIX signal")
def test_chat_ctrl_c_during_a_reply_stops_it_and_the_chat_goes_on() -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(
        interruptible_cmd("chat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(b"hi\n")
            proc.stdin.flush()
            first = os.read(proc.stdout.fileno(), 100)  # the reply has started (40 tokens/s)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(b"bye\n", timeout=GUARD)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    text = err.decode()
    assert "[stopped: the partial reply stays in the conversation]" in text
    assert text.count("[usage:") == 2
    assert first
    assert "message 2 from you" in (first + out).decode()  # the stopped turn stays in history


@pytest.fixture
def served() -> Iterator[str]:
    """``aistream serve --port 0`` as a subprocess; yields the URL it prints."""
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(
        interruptible_cmd("serve", "--port", "0", "--demo-rate", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = None
            for line in proc.stdout:  # bounded by the process: EOF if it dies
                if match := re.match(r"listening on (http://\S+)", line):
                    url = match.group(1)
                    break
            assert url, proc.communicate(timeout=GUARD)
            yield url
            proc.send_signal(signal.SIGINT if sys.platform != "win32" else signal.SIGTERM)
            proc.communicate(timeout=GUARD)
            assert proc.returncode == 0 or sys.platform == "win32"
        finally:
            proc.kill()


def test_serve_port_0_prints_its_url_and_answers(served: str) -> None:
    response = httpx.get(f"{served}/healthz", timeout=GUARD)
    assert response.status_code == 200
    chat = run("chat", "--endpoint", f"{served}/api/chat", stdin="hello there\n")
    assert chat.returncode == 0, chat.stderr
    assert '"hello there"' in chat.stdout
    page = httpx.get(f"{served}/", timeout=GUARD)  # the chat page, open like /healthz
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>aistream chat</title>" in page.text


# --- arguments -------------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"aistream {aistream.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: aistream")
    for command in ("chat", "serve", "demo"):
        assert command in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["chat", "--protocol", "nope"], "invalid choice: 'nope'", id="protocol"),
        pytest.param(["serve", "--port", "70000"], "70000 is not a port", id="port-range"),
        pytest.param(["serve", "--port", "http"], "'http' is not a port number", id="port-text"),
        pytest.param(["serve", "--demo-rate", "-1"], "-1 is not a rate", id="rate"),
        pytest.param(["chat", "--retries", "-1"], "-1 is negative", id="retries"),
        pytest.param(["frobnicate"], "invalid choice: 'frobnicate'", id="command"),
        pytest.param(["chat", "--bogus"], "unrecognized arguments: --bogus", id="option"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: aistream")


@pytest.mark.parametrize("command", ["serve", "demo", "chat"])
def test_missing_server_extra_names_the_install_command(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ModuleNotFoundError
    assert main([command]) == 1
    err = capsys.readouterr().err
    assert "pip install 'aistream[server]'" in err
    assert len(err.strip().splitlines()) == 1


def test_chat_bad_endpoint_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--endpoint", "localhost:8000"]) == 2
    assert "endpoint must be an http:// or https:// URL" in capsys.readouterr().err


# --- helpers ---------------------------------------------------------------------------------


class _Tty:
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"NO_COLOR": ""}, True), ({"TERM": "dumb"}, False)],
)
def test_colour_only_on_a_tty_without_no_color(
    environ: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert colour_enabled(_Tty()) is expected  # type: ignore[arg-type]
    assert colour_enabled(sys.stderr) is False or sys.stderr.isatty()


def test_token_indices_count_only_whole_events_of_a_cut_chunked_response() -> None:
    events = [
        b'event: start\nid: s:0\ndata: {"id": "s"}\n\n',
        b'event: token\nid: s:1\ndata: {"token": "a", "index": 0}\n\n',
        b'event: token\nid: s:2\ndata: {"token": "b", "index": 1}\n\n',
        b'event: token\nid: s:3\ndata: {"token": "c", "index": 2}\n\n',
    ]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    assert _token_indices(raw) == [0, 1, 2]
    assert _token_indices(raw[:-10]) == [0, 1]  # the cut event never arrived whole


# --- issue 17: what a newcomer tripped over ----------------------------------------------------


def anthropic_events(text: str) -> list[bytes]:
    """A minimal Anthropic Messages stream that says `text`."""

    def event(name: str, data: dict[str, object]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    return [
        event("message_start", {"message": {"usage": {"input_tokens": 1}}}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}),
        event("content_block_stop", {"index": 0}),
        event(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}
        ),
        event("message_stop", {}),
    ]


@pytest.mark.parametrize(
    ("path", "variable", "header", "expected"),
    [
        ("/v1/chat/completions", "OPENAI_API_KEY", "authorization", "Bearer sk-test"),
        ("/v1/messages", "ANTHROPIC_API_KEY", "x-api-key", "sk-ant-test"),
        ("/v1/responses", "OPENAI_API_KEY", "authorization", "Bearer sk-test"),
        (GEMINI_PATH, "GEMINI_API_KEY", "x-goog-api-key", "AIza-test"),
        (GEMINI_PATH, "GOOGLE_API_KEY", "x-goog-api-key", "AIza-test"),
    ],
)
def test_chat_default_protocol_reads_the_key_of_the_protocol_the_url_resolves_to(
    path: str,
    variable: str,
    header: str,
    expected: str,
    threaded_server: Callable[[Handler], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[Request] = []

    async def handler(request: Request, reply: Reply) -> None:
        seen.append(request)
        if request.headers.get(header) != expected:
            await reply.body(401, {"error": {"message": "no key", "type": "auth"}})
            return
        if "completions" in path:
            events = openai_events(["ok"])
        elif path.endswith("/responses"):
            assert request.json()["model"]  # the API refuses a request without one
            events = responses_events("resp_1", ["ok"])
        elif "streamGenerateContent" in path:
            assert request.path.endswith("?alt=sse")
            chunk = {
                "candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]
            }
            events = [b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"]
        else:
            events = anthropic_events("ok")
        await reply.start()
        for event in events:
            await reply.send(event)
        await reply.end()

    url = threaded_server(handler) + path
    for name in ("AISTREAM_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, expected.removeprefix("Bearer "))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    assert main(["chat", "--endpoint", url, "--retries", "0"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == "ok"
    assert seen[0].headers[header] == expected
    if header == "x-api-key":  # the dialect's version header, sent once, not re-sent by the CLI
        assert seen[0].headers["anthropic-version"] == ANTHROPIC_VERSION


def test_protocol_choices_come_from_the_protocol_names_and_the_relay_table() -> None:
    def choices(command: str) -> list[str]:
        sub = next(
            a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[command]
        return list(next(a for a in sub._actions if a.dest == "protocol").choices or ())

    assert sorted(choices("chat")) == sorted(get_args(ProtocolName))
    assert choices("serve") == list(UPSTREAM_PROTOCOLS)
    assert "ollama" in choices("serve")
    assert build_parser().parse_args(["serve", "--protocol", "ollama"]).protocol == "ollama"


def test_serve_refuses_an_upstream_that_is_not_an_http_url_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--port", "0", "--upstream", "ftp://x"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "http:// or https:// URL" in err and "'ftp://x'" in err


def test_chat_slash_lines_are_commands_never_sent_to_the_model() -> None:
    result = run("chat", stdin="/help\n/rset\n//etc is a folder\nhi\n")
    assert result.returncode == 0, result.stderr
    assert "commands: /help" in result.stderr
    assert "unknown command '/rset' (not sent); did you mean /reset?" in result.stderr
    replies = result.stdout.strip().splitlines()
    assert len(replies) == 2  # "//etc ..." and "hi": the two lines that were messages
    assert "'/etc is a folder'" in replies[0] or '"/etc is a folder"' in replies[0]
    assert "message 2 from you" in replies[1]  # /help and /rset never reached the model
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT, a POSIX signal")
def test_chat_ctrl_c_at_the_prompt_prints_a_line_and_exits_130() -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(
        interruptible_cmd("chat"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        try:
            proc.stdin.write("hi\n")
            proc.stdin.flush()
            for line in proc.stderr:  # bounded by the process: EOF if it dies
                if line.startswith("[usage:"):
                    break  # the reply is over: the chat waits for the next line
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=GUARD)
            err = proc.stderr.read()  # the rest, after what the loop above buffered
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert "[interrupted: exiting]" in err and "Traceback" not in err
