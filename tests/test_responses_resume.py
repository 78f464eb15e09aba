"""Resuming a background Responses stream (API.md §7): a fault proxy cuts the stream at random
points, AIStream resumes each time with ``GET …/responses/<id>?stream=true&starting_after=<n>``,
and the reply is exact: nothing lost, nothing repeated, every ``retry`` says ``resume=True``."""

from __future__ import annotations

import asyncio
import random

import pytest

from aistream import AIStream, RetryConfig, RetryEvent, Usage
from aistream._proxy import FaultProxy, Faults
from tests.helpers import RecordingSleep
from tests.loopback import LoopbackServer, Reply, Request
from tests.responses_upstream import BackgroundResponses, responses_events

TOKENS = [f"w{i} " for i in range(40)] + ["end."]
PATIENT = RetryConfig(max_retries=4, initial_delay=0.01, jitter=False)


def events_bytes(background: bool) -> int:
    return sum(len(e) for e in responses_events("resp_0001", TOKENS, background=background))


@pytest.mark.parametrize("seed", range(8))
async def test_background_stream_cut_at_random_points_resumes_exactly(seed: int) -> None:
    rng = random.Random(seed)
    upstream = BackgroundResponses(lambda body: TOKENS)
    first_event = len(responses_events("resp_0001", TOKENS, background=True)[0])
    total = events_bytes(True)
    cuts = rng.randint(2, 6)

    def plan(index: int) -> Faults:
        if index >= cuts:
            return Faults()
        # past the headers (~150 bytes) and response.created on the POST; anywhere on a GET
        low = 200 + first_event if index == 0 else 1
        return Faults(cut_after=rng.randint(low, total))

    async with (
        LoopbackServer(upstream) as server,
        FaultProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1]), plan=plan) as proxy,
    ):
        sleep = RecordingSleep()
        chat = AIStream(
            f"http://127.0.0.1:{proxy.port}/v1/responses",
            model="gpt-5.1",
            options={"background": True},
            retry=PATIENT,
            sleep=sleep,
        )
        tokens: list[str] = []
        retries: list[RetryEvent] = []
        chat.on("token", tokens.append)
        chat.on("retry", retries.append)
        reply = await chat.send("Count")
        await chat.aclose()

    assert reply.content == "".join(TOKENS)
    assert "".join(tokens) == reply.content  # no token twice
    assert reply.finish_reason == "stop"
    assert reply.usage == Usage(prompt_tokens=5, completion_tokens=41, total_tokens=46)
    assert upstream.posts == 1  # never restarted
    assert all(r.resume for r in retries), retries
    assert upstream.gets == len(retries)
    assert upstream.starting_after == sorted(upstream.starting_after)
    assert len(retries) == sum(1 for c in proxy.connections if c.fault == "cut")


async def test_foreground_stream_cut_restarts_with_resume_false() -> None:
    upstream = BackgroundResponses(lambda body: TOKENS)
    async with (
        LoopbackServer(upstream) as server,
        FaultProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1]), cut_after={0: 1500}) as proxy,
    ):
        chat = AIStream(
            f"http://127.0.0.1:{proxy.port}/v1/responses", retry=PATIENT, sleep=RecordingSleep()
        )
        retries: list[RetryEvent] = []
        chat.on("retry", retries.append)
        reply = await chat.send("Count")
        await chat.aclose()
    assert reply.content == "".join(TOKENS)
    assert [r.resume for r in retries] == [False]
    assert (upstream.posts, upstream.gets) == (2, 0)


async def test_resume_refused_as_too_old_restarts_the_reply() -> None:
    """The API answers 400 once a background response is more than five minutes old."""
    upstream = BackgroundResponses(lambda body: TOKENS)

    async def handler(request: Request, reply: Reply) -> None:
        if request.method == "GET":
            message = (
                "This response can no longer be streamed because it is more than 5 minutes old"
            )
            await reply.body(400, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        await upstream(request, reply)

    async with (
        LoopbackServer(handler) as server,
        FaultProxy("127.0.0.1", int(server.url.rsplit(":", 1)[1]), cut_after={0: 1500}) as proxy,
    ):
        chat = AIStream(
            f"http://127.0.0.1:{proxy.port}/v1/responses",
            options={"background": True},
            retry=PATIENT,
            sleep=RecordingSleep(),
        )
        retries: list[RetryEvent] = []
        chat.on("retry", retries.append)
        reply = await chat.send("Count")
        await chat.aclose()
    assert reply.content == "".join(TOKENS)
    assert [r.resume for r in retries] == [True, False]
    assert "5 minutes old" in str(retries[1].error)
    assert upstream.posts == 2


async def test_stop_cancels_a_background_response_and_only_a_background_one() -> None:
    """A background response runs on after its stream closes: stop() cancels it by POST."""
    release = asyncio.Event()
    upstream = BackgroundResponses(lambda body: TOKENS)

    async def handler(request: Request, reply: Reply) -> None:
        if request.method == "POST" and request.path == "/v1/responses":
            events = responses_events(
                "resp_0001", TOKENS, background=request.json().get("background") is True
            )
            await reply.start()
            for event in events[:6]:  # created, …, the first deltas: then it hangs
                await reply.send(event)
            await release.wait()
            return
        await upstream(request, reply)

    async with LoopbackServer(handler) as server:
        for background in (True, False):
            chat = AIStream(
                server.url + "/v1/responses",
                options={"background": background},
                retry=RetryConfig(max_retries=0),
            )
            chat.on("token", lambda _, chat=chat: chat.stop())
            reply = await chat.send("Count")
            await chat.aclose()
            assert reply.finish_reason == "stopped"
        release.set()
    assert upstream.cancelled == ["resp_0001"]  # the foreground one has nothing to cancel
