"""The chaos campaign: AISTREAM_CHAOS_TURNS turns per target (500 in CI, 10,000 in `make chaos`).

The campaign runs once per module (see `campaign.py`); each test reads one side of its result.
Its figures are printed with ``-s`` and summarised on one line in pytest's terminal summary.
Reproduce a failure with the seed it prints: ``AISTREAM_CHAOS_SEED=<seed>``.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.chaos.campaign import (
    LANES,
    PROXY_KINDS,
    SEED,
    SUMMARY,
    TURNS,
    CampaignResult,
    Figures,
    run_campaign,
)

# The campaign runs inside the first test's time budget: scale it with the campaign's size.
pytestmark = pytest.mark.timeout(max(300, TURNS // 2))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def campaign() -> CampaignResult:
    result = await run_campaign(TURNS, LANES)
    print("\n" + result.report())  # shown with -s (make chaos)
    for figures in result.figures.values():
        for failure in figures.failures[:20]:
            print("FAILED TURN", failure)
    SUMMARY.append(result.summary())
    return result


def assert_faults_took_effect(figures: Figures, kinds: list[str]) -> None:
    """The campaign was not vacuous: the planned faults happened, every kind of them."""
    assert figures.turns == TURNS
    for kind in kinds:
        assert figures.injected[kind] > 0, f"no {kind} fault took effect: {figures.row()}"
    injected, planned = sum(figures.injected.values()), sum(figures.planned.values())
    assert injected >= 0.9 * planned, figures.row()
    assert figures.turns_without_fault <= 0.05 * figures.turns, figures.row()


def test_native_replies_equal_the_fault_free_reply_and_no_token_event_repeats(
    campaign: CampaignResult,
) -> None:
    native = campaign.figures["native"]
    assert native.failures == [], "\n".join(native.failures[:20])
    assert (native.lost, native.duplicated) == (0, 0), native.row()
    assert native.restarts_after_tokens == 0, native.row()  # every drop after tokens resumed
    assert native.resumes > 0.5 * native.retries, native.row()
    assert_faults_took_effect(native, list(PROXY_KINDS))


def test_idless_replies_are_exact_and_every_restart_is_announced_before_repeats(
    campaign: CampaignResult,
) -> None:
    openai = campaign.figures["openai"]
    assert openai.failures == [], "\n".join(openai.failures[:20])
    assert (openai.lost, openai.duplicated) == (0, 0), openai.row()
    assert openai.resumes == 0, openai.row()  # no ids: every retry says resume=False
    assert openai.restarts == openai.retries, openai.row()
    # Restarts after tokens happened, and the tokens they repeat were all announced.
    assert openai.restarts_after_tokens > 0, openai.row()
    assert openai.announced_repeats > 0, openai.row()
    assert_faults_took_effect(openai, [*PROXY_KINDS, "status", "stream-error"])


def test_responses_replies_resume_by_sequence_number_and_are_exact(
    campaign: CampaignResult,
) -> None:
    responses = campaign.figures["responses"]
    assert responses.failures == [], "\n".join(responses.failures[:20])
    assert (responses.lost, responses.duplicated) == (0, 0), responses.row()
    assert responses.restarts_after_tokens == 0, responses.row()  # every drop after tokens resumed
    assert responses.resumes > 0.5 * responses.retries, responses.row()
    assert_faults_took_effect(responses, list(PROXY_KINDS))


def test_tool_turns_with_faults_in_step_two_ran_each_tool_once_and_lost_nothing(
    campaign: CampaignResult,
) -> None:
    """Failures above cover the checks of each tool turn (the tool ran once, step 1 was never
    generated again, the reply is exact); here: there were such turns, with faults."""
    for target in ("native", "openai"):  # the Responses upstream speaks no tools
        figures = campaign.figures[target]
        assert figures.tool_turns > 0.1 * figures.turns, figures.row()
        assert figures.tool_turns_with_fault > 0.8 * figures.tool_turns, figures.row()
        assert figures.failures == [], "\n".join(figures.failures[:20])


def test_campaign_leaks_the_api_key_into_no_exception_log_line_or_repr(
    campaign: CampaignResult,
) -> None:
    sweep = campaign.sweep
    # The key was really on the wire, and the sweep really looked at a lot of output.
    assert campaign.authorization_seen > 0
    assert sweep.checked["exception"] > campaign.total("retries")
    assert sweep.checked["log"] > campaign.total("turns")
    assert sweep.checked["repr"] > campaign.total("turns")
    assert {"aistream.APIStatusError", "aistream.ConnectionLostError"} <= set(sweep.exception_types)
    assert "aistream.StreamTimeoutError" in sweep.exception_types
    leaked = {category: n for category, n in sweep.leaked.items() if category != "exception-body"}
    assert leaked == {}, sweep.leaks


def test_campaign_leaks_the_api_key_into_no_exception_body(campaign: CampaignResult) -> None:
    assert campaign.figures["openai"].injected["stream-error"] > 0
    assert campaign.sweep.leaked["exception-body"] == 0, campaign.sweep.examples["exception-body"]


def test_campaign_logged_no_warning_or_error(campaign: CampaignResult) -> None:
    """No skipped event (a silent loss), no server error, no stray asyncio error."""
    noisy = {
        name: count
        for name, count in campaign.sweep.log_levels.items()
        if name.rsplit(":", 1)[1] not in ("DEBUG", "INFO")
    }
    assert noisy == {}


def test_campaign_is_seeded(campaign: CampaignResult) -> None:
    assert campaign.seed == SEED
    assert campaign.summary().startswith(f"chaos: {3 * TURNS} turns (seed {SEED})")
