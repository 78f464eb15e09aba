"""The campaign's checks catch a single lost or repeated token, and a secret anywhere.

Unit tests of `check_events` and `SecretSweep`, plus two short campaigns against a deliberately
broken resume (the server skips, or re-sends, one event), which must be reported.
"""

from __future__ import annotations

import logging
import random

import pytest

from aistream import ConnectionLostError, RetryEvent
from aistream._wire import _native
from aistream._wire._events import Frame, StreamEvent, TextDelta
from aistream.server import _app
from tests.chaos.campaign import (
    API_KEY,
    SecretSweep,
    check_events,
    plan_turn,
    run_campaign,
    sweeping_logs,
)

EXPECTED = ["Hello", " world", ",", " again", "."]


def retry(resume: bool) -> tuple[str, RetryEvent]:
    error = ConnectionLostError("dropped")
    return ("retry", RetryEvent(attempt=1, delay=0.0, error=error, resume=resume))


def tokens(*texts: str) -> list[tuple[str, object]]:
    return [("token", text) for text in texts]


@pytest.mark.parametrize("resumable", [True, False])
def test_check_events_passes_an_exact_reply(resumable: bool) -> None:
    check = check_events(tokens(*EXPECTED), EXPECTED, resumable=resumable)
    assert (check.lost, check.duplicated, check.retries) == (0, 0, 0)


@pytest.mark.parametrize("resumable", [True, False])
@pytest.mark.parametrize("missing", range(len(EXPECTED)))
def test_check_events_catches_a_single_lost_token(resumable: bool, missing: int) -> None:
    log = [*tokens(*EXPECTED[:2]), retry(resume=True), *tokens(*EXPECTED[2:])]
    del log[missing + (1 if missing >= 2 else 0)]
    check = check_events(log, EXPECTED, resumable=resumable)
    assert check.lost == 1


@pytest.mark.parametrize("repeated", range(len(EXPECTED)))
def test_check_events_catches_a_single_repeated_token_after_a_resume(repeated: int) -> None:
    log = [*tokens(*EXPECTED[: repeated + 1]), retry(resume=True)]
    log += tokens(*EXPECTED[repeated:])
    check = check_events(log, EXPECTED, resumable=True)
    assert (check.lost, check.duplicated) == (0, 1)


def test_check_events_counts_a_native_restart_after_tokens_as_duplication() -> None:
    log = [*tokens(*EXPECTED[:2]), retry(resume=False), *tokens(*EXPECTED)]
    check = check_events(log, EXPECTED, resumable=True)
    assert (check.duplicated, check.restarts_after_tokens) == (2, 1)


def test_check_events_accepts_an_announced_restart_without_ids() -> None:
    log = [*tokens(*EXPECTED[:3]), retry(resume=False), *tokens(*EXPECTED)]
    check = check_events(log, EXPECTED, resumable=False)
    assert (check.lost, check.duplicated) == (0, 0)
    assert (check.restarts, check.restarts_after_tokens, check.announced_repeats) == (1, 1, 3)


def test_check_events_catches_an_unannounced_restart_without_ids() -> None:
    log = [*tokens(*EXPECTED[:3]), retry(resume=True), *tokens(*EXPECTED)]
    check = check_events(log, EXPECTED, resumable=False)
    assert check.duplicated == 3


def test_check_events_catches_a_repeat_before_the_announcement() -> None:
    log = [*tokens("Hello", "Hello"), retry(resume=False), *tokens(*EXPECTED)]
    check = check_events(log, EXPECTED, resumable=False)
    assert check.duplicated == 1


def test_check_events_catches_a_wrong_token() -> None:
    log = tokens("Hello", " word", ",", " again", ".")
    check = check_events(log, EXPECTED, resumable=True)
    assert (check.lost, check.duplicated) == (1, 1)


def test_secret_sweep_finds_the_key_whole_or_in_part_anywhere() -> None:
    sweep = SecretSweep(API_KEY)
    sweep.text("repr", "AIStream(headers={'authorization': '[redacted]'})")
    assert sweep.leaks == []
    sweep.text("repr", f"Bearer {API_KEY}")
    sweep.text("repr", "key ..." + API_KEY[-12:])
    inner = ValueError(f"token={API_KEY[:20]}")
    outer = ConnectionLostError("dropped")
    outer.__cause__ = inner
    sweep.exception(outer)
    assert sweep.leaked == {"repr": 2, "exception": 3}  # str, repr and args of the ValueError
    assert sweep.exception_types == {
        "aistream.ConnectionLostError": 1,
        "builtins.ValueError": 1,
    }


def test_secret_sweep_sees_log_records_at_debug() -> None:
    sweep = SecretSweep(API_KEY)
    with sweeping_logs(sweep):
        logging.getLogger("httpx").debug("headers %s", {"authorization": API_KEY})
        logging.getLogger("aistream").info("all good")
    assert sweep.checked["log"] == 4  # message and args of each record
    assert sweep.leaked == {"log": 2}
    assert sweep.log_levels == {"httpx:DEBUG": 1, "aistream:INFO": 1}


def test_fault_plan_is_a_function_of_the_seed() -> None:
    def plans(seed: str) -> list[list[str]]:
        rng = random.Random(seed)
        return [[p.describe() for p in plan_turn(rng, "openai")] for _ in range(50)]

    assert plans("1") == plans("1")
    assert plans("1") != plans("2")
    counts = [len(plan) for plan in plans("1")]
    assert set(counts) == {1, 2, 3}


# --- the campaign without faults, and against a broken resume --------------------------------


async def test_control_run_without_faults_gives_the_computed_reply_on_every_target() -> None:
    """The reply the campaign expects is what the servers send when nothing goes wrong."""
    result = await run_campaign(6, 2, faults=False)
    for figures in result.figures.values():
        assert figures.failures == []
        # one connection per model call: a tool turn makes two
        assert (figures.turns, figures.retries) == (6, 0)
        assert figures.connections == 6 + figures.tool_turns
        assert sum(figures.injected.values()) == figures.lost == figures.duplicated == 0
        assert figures.tokens > 6 * 20


async def test_campaign_reports_a_server_that_skips_one_event_on_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parse = _app._parse_event_id

    def off_by_one(value: str) -> tuple[str, int]:
        stream_id, seq = parse(value)
        return stream_id, seq + 1

    monkeypatch.setattr(_app, "_parse_event_id", off_by_one)
    result = await run_campaign(12, 2, targets=("native",))
    native = result.figures["native"]
    assert native.resumes > 0
    assert native.lost > 0
    assert native.failures


async def test_campaign_reports_a_repeated_event_the_client_cannot_deduplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server re-sends the last event on resume and the tokens carry no index."""
    parse = _app._parse_event_id
    dialect_parse = _native.NativeDialect.parse

    def one_early(value: str) -> tuple[str, int]:
        stream_id, seq = parse(value)
        return stream_id, seq - 1

    def without_index(self: _native.NativeDialect, frame: Frame) -> list[StreamEvent]:
        events = dialect_parse(self, frame)
        return [TextDelta(e.text) if isinstance(e, TextDelta) else e for e in events]

    monkeypatch.setattr(_app, "_parse_event_id", one_early)
    monkeypatch.setattr(_native.NativeDialect, "parse", without_index)
    result = await run_campaign(12, 2, targets=("native",))
    native = result.figures["native"]
    assert native.resumes > 0
    assert native.duplicated > 0
    assert native.failures
