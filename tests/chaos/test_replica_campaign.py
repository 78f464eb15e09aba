"""The chaos campaign's replica mode: client faults plus producer kills, across replicas.

AISTREAM_CHAOS_TURNS turns (500 in `make test`, 10,000 in `make chaos`) through fault proxies
into a round robin of three replica processes on one redis-server, while replicas are killed
with SIGKILL and restarted (see campaign.py). Every reply must be exact: lost=0 duplicated=0.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.chaos.campaign import (
    LANES,
    PROXY_KINDS,
    SUMMARY,
    TURNS,
    CampaignResult,
    run_campaign,
)
from tests.chaos.test_campaign import assert_faults_took_effect

pytestmark = pytest.mark.timeout(max(300, TURNS // 2))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def campaign() -> CampaignResult:
    result = await run_campaign(TURNS, LANES, targets=("replica",))
    print("\n" + result.report())
    for failure in result.figures["replica"].failures[:20]:
        print("FAILED TURN", failure)
    if result.figures["replica"].failures:
        print("replicas logged:", *result.figures["replica"].replica_output[-60:], sep="\n")
    SUMMARY.append("replica " + result.summary())
    return result


@pytest.mark.asyncio(loop_scope="module")
async def test_replies_across_killed_replicas_are_exact(campaign: CampaignResult) -> None:
    figures = campaign.figures["replica"]
    assert figures.failures == [], "\n".join(figures.failures[:20])
    assert (figures.lost, figures.duplicated) == (0, 0), figures.row()
    assert figures.restarts_after_tokens == 0, figures.row()  # every drop resumed
    assert figures.kills >= 3, figures.row()  # producers really died mid-campaign
    assert_faults_took_effect(figures, list(PROXY_KINDS))
