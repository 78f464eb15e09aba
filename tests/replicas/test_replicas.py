"""Replicas on a real redis-server, each in its own process, behind a round-robin proxy.

API.md §8: a resume lands on another replica and is exact; a producer killed with SIGKILL is
taken over (the reply continues exactly, or ends with producer_lost after every produced
token); DELETE on any replica stops the producer; Redis lost mid-stream ends streams with
store_unavailable and refuses new ones with 503 until it is back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from aistream import AIStream, RetryConfig, RetryEvent
from aistream._wire._sse import SSEDecoder
from aistream.server._demo import DemoModel
from aistream.server._formats import parse_native
from tests.redisserver import RedisServer
from tests.replicas.conftest import Cluster
from tests.replicas.harness import Replica

pytestmark = pytest.mark.timeout(120)

FAST_RETRY = RetryConfig(max_retries=6, initial_delay=0.01, max_delay=0.05, jitter=False)
MakeCluster = Callable[..., Awaitable[Cluster]]


def expected_tokens(prompt: str) -> list[str]:
    """What the demo model answers to `prompt` (deterministic, the same in every replica)."""
    request = parse_native({"messages": [{"role": "user", "content": prompt}]})
    return DemoModel(tokens_per_second=None).tokens(request)


def body(prompt: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}]}


class Events:
    """Reads one native SSE response as (event, data) pairs."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.decoder = SSEDecoder()
        self.chunks = response.aiter_bytes()
        self.pending: list[tuple[str, dict[str, Any], str]] = []

    async def next(self) -> tuple[str, dict[str, Any], str]:
        while not self.pending:
            chunk = await asyncio.wait_for(self.chunks.__anext__(), 10)
            for event in self.decoder.feed(chunk):
                self.pending.append((event.event, json.loads(event.data), event.id))
        return self.pending.pop(0)

    async def until_end(self) -> list[tuple[str, dict[str, Any], str]]:
        out = []
        while True:
            try:
                item = await self.next()
            except StopAsyncIteration:
                return out
            out.append(item)
            if item[0] in ("done", "error"):
                return out


def tokens_of(events: list[tuple[str, dict[str, Any], str]]) -> list[str]:
    return [data["token"] for name, data, _ in events if name == "token"]


_CLIENTS: list[httpx.AsyncClient] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().aclose()


def chat(url: str) -> tuple[AIStream, list[RetryEvent]]:
    """A native AIStream with fast retries and its own connections (so each turn's first
    connection is a new one through the proxy); closed when the test ends."""
    client = httpx.AsyncClient(timeout=10)
    _CLIENTS.append(client)
    stream = AIStream(f"{url}/api/chat", protocol="native", retry=FAST_RETRY, client=client)
    retries: list[RetryEvent] = []
    stream.on("retry", retries.append)
    return stream, retries


async def test_a_dropped_stream_resumes_on_another_replica_exactly(cluster: MakeCluster) -> None:
    _, proxy = await cluster(2)
    prompt = "resume me on the other replica please"
    proxy.cut = {0: 1500}  # the first connection breaks mid-reply
    stream, retries = chat(proxy.url)
    seen: list[str] = []
    stream.on("token", seen.append)
    reply = await stream.send(prompt)
    assert seen == expected_tokens(prompt)  # no token lost, none repeated
    assert reply.content == "".join(expected_tokens(prompt))
    assert [r.resume for r in retries] == [True]
    assert proxy.targets[0] != proxy.targets[1]  # the resume went to the other replica


async def test_a_browser_style_get_on_another_replica_replays_then_follows(
    cluster: MakeCluster,
) -> None:
    (a, b), _ = await cluster(2)
    prompt = "a browser resumes with EventSource"
    want = expected_tokens(prompt)
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", f"{a.url}/api/chat", json=body(prompt)) as response:
            first = Events(response)
            got = [await first.next() for _ in range(6)]  # start + 5 tokens, then it drops
        stream_id = got[0][1]["id"]
        last_id = got[-1][2]
        headers = {"Last-Event-ID": last_id}
        async with http.stream("GET", f"{b.url}/api/chat/{stream_id}", headers=headers) as rest:
            assert rest.status_code == 200
            tail = await Events(rest).until_end()
        async with http.stream("GET", f"{b.url}/api/chat/{stream_id}") as again:
            whole = await Events(again).until_end()
    assert tokens_of(got) + tokens_of(tail) == want
    assert next(d["index"] for n, d, _ in tail if n == "token") == 5
    assert tail[-1][0] == "done" and tail[-1][1] == {"finishReason": "stop"}
    assert tokens_of(whole) == want and whole[0][0] == "start"
    ids = [i for _, _, i in got + tail]
    assert ids == [f"{stream_id}:{n}" for n in range(len(ids))]


async def _kill_at(
    replicas: list[Replica], port_of_producer: Callable[[], int], index: int, stream: AIStream
) -> list[float]:
    """Kill the replica producing `stream` when its `index`-th token arrives."""
    killed: list[float] = []

    def on_token(_: str) -> None:
        on_token.count += 1  # type: ignore[attr-defined]
        if on_token.count == index:  # type: ignore[attr-defined]
            port = port_of_producer()
            for replica in replicas:
                if replica.port == port:
                    replica.kill()
                    killed.append(time.monotonic())

    on_token.count = 0  # type: ignore[attr-defined]
    stream.on("token", on_token)
    return killed


async def test_killed_producers_are_taken_over_and_replies_stay_exact(
    cluster: MakeCluster,
) -> None:
    replicas, proxy = await cluster(3)
    rng = random.Random(13)
    for round_ in range(4):
        prompt = f"kill the producer at a random point, round {round_}"
        want = expected_tokens(prompt)
        stream, retries = chat(proxy.url)
        seen: list[str] = []
        stream.on("token", seen.append)
        first = len(proxy.targets)
        killed = await _kill_at(
            replicas, lambda first=first: proxy.targets[first], rng.randint(1, 30), stream
        )
        reply = await asyncio.wait_for(stream.send(prompt), 30)
        assert killed, "the producer was not killed"
        assert seen == want, f"round {round_}"
        assert reply.content == "".join(want)
        assert retries and all(r.resume for r in retries)
        for replica in replicas:
            if not replica.alive:
                await asyncio.to_thread(replica.start)


async def read_until_lost(
    http: httpx.AsyncClient, replica: Replica, prompt: str, lose: Callable[[], Awaitable[None]]
) -> list[tuple[str, dict[str, Any], str]]:
    """POST `prompt` to `replica`, read 8 events, `lose` the replica (kill or stop it) and read
    on until its connection ends; what was read."""
    async with http.stream("POST", f"{replica.url}/api/chat", json=body(prompt)) as response:
        reader = Events(response)
        got = [await reader.next() for _ in range(8)]
        losing = asyncio.create_task(lose())
        with pytest.raises((httpx.HTTPError, StopAsyncIteration)):
            while True:
                got.append(await reader.next())
        await losing
    return got


async def test_a_replica_stopped_with_sigterm_hands_its_streams_over(
    cluster: MakeCluster,
) -> None:
    """A rolling deploy: SIGTERM, uvicorn's graceful wait runs out with a reply in flight, the
    app shuts down. Its generation must not end the shared stream as "stopped" (the user did
    not stop it): the replica gives its lease up, and another one continues the reply."""
    (a, b), _ = await cluster(2, graceful_shutdown=0.2, producer_lease=3.0)
    prompt = "a replica stopped for a deploy, mid-reply"
    want = expected_tokens(prompt)
    async with httpx.AsyncClient(timeout=10) as http:
        got = await read_until_lost(http, a, prompt, lambda: asyncio.to_thread(a.stop))  # SIGTERM
        stream_id = got[0][1]["id"]
        seen = len(tokens_of(got))
        started = time.monotonic()
        async with http.stream("GET", f"{b.url}/api/chat/{stream_id}") as whole:
            reader = Events(whole)
            events = []
            while len(tokens_of(events)) <= seen:  # what a replayed, then b's first new token
                events.append(await reader.next())
            waited = time.monotonic() - started
            events += await reader.until_end()
    assert tokens_of(events) == want  # all of it: replayed, then continued by b
    assert events[-1][0] == "done" and events[-1][1].get("reason") != "stopped", events[-3:]
    assert waited < 1.5  # the lease was given up: no wait for it to run out (3 s)


async def test_a_producer_that_cannot_be_continued_ends_with_producer_lost(
    cluster: MakeCluster,
) -> None:
    (a, b), proxy = await cluster(2, continuable=False)
    prompt = "this upstream cannot continue a partial reply"
    want = expected_tokens(prompt)
    async with httpx.AsyncClient(timeout=10) as http:
        got = await read_until_lost(http, a, prompt, lambda: asyncio.to_thread(a.kill))
        stream_id = got[0][1]["id"]
        started = time.monotonic()
        async with http.stream("GET", f"{b.url}/api/chat/{stream_id}") as whole:
            events = await Events(whole).until_end()
        waited = time.monotonic() - started
    produced = tokens_of(events)
    assert tokens_of(got) == produced[: len(tokens_of(got))]  # what anyone saw, all replayed
    assert produced == want[: len(produced)] and len(produced) < len(want)
    name, data, _ = events[-1]
    assert name == "error" and data["code"] == "producer_lost" and data["retryable"] is True
    assert waited < 0.5 + 1.0 + 0.5  # within producer_lease + 1 s (and some slack)
    # AIStream retries producer_lost as a restart
    a.start()
    stream, retries = chat(proxy.url)
    killed = await _kill_at([a, b], lambda: proxy.targets[-1], 5, stream)
    reply = await asyncio.wait_for(stream.send(prompt), 30)
    assert killed
    assert reply.content == "".join(want)
    assert [r.resume for r in retries][-1] is False


async def test_delete_through_another_replica_stops_the_producer_within_a_token(
    cluster: MakeCluster,
) -> None:
    (a, b), _ = await cluster(2, demo_tokens_per_second=20)  # one token every 50 ms
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("POST", f"{a.url}/api/chat", json=body("stop me")) as response:
            reader = Events(response)
            start = await reader.next()
            for _ in range(3):
                await reader.next()
            deleted = await http.delete(f"{b.url}/api/chat/{start[1]['id']}")
            assert deleted.status_code == 204
            rest = await reader.until_end()
        again = await http.delete(f"{b.url}/api/chat/{start[1]['id']}")
        unknown = await http.delete(f"{b.url}/api/chat/nosuchstream")
    assert len(tokens_of(rest)) <= 1  # at most the token already on its way
    assert rest[-1][0] == "done" and rest[-1][1] == {"finishReason": "stopped"}
    assert again.status_code == 204
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_stream"


async def test_redis_lost_mid_stream_then_back(own_redis: RedisServer, cluster: Any) -> None:
    replica = Replica(store=own_redis.url, demo_tokens_per_second=50, producer_lease=0.5)
    await asyncio.to_thread(replica.start)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"{replica.url}/api/chat"
            async with http.stream("POST", url, json=body("redis goes away")) as response:
                reader = Events(response)
                for _ in range(4):
                    await reader.next()
                own_redis.stop()
                rest = await reader.until_end()
            name, data, _ = rest[-1]
            assert name == "error" and data["code"] == "store_unavailable"
            assert data["retryable"] is True
            refused = await http.post(url, json=body("while it is down"))
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert refused.json()["code"] == "store_unavailable"
            health = await http.get(f"{replica.url}/healthz")
            assert health.status_code == 503 and health.json()["store"] == "unavailable"
            own_redis.restart()
            health = await http.get(f"{replica.url}/healthz")
            assert health.status_code == 200 and health.json()["store"] == "ok"
            async with http.stream("POST", url, json=body("it is back")) as response:
                events = await Events(response).until_end()
            assert tokens_of(events) == expected_tokens("it is back")
    finally:
        await asyncio.to_thread(replica.stop)


async def test_redis_restarted_mid_stream(own_redis: RedisServer) -> None:
    """Redis comes back empty (no persistence) while a reply streams: the stream ends with
    store_unavailable, and AIStream's retry restarts the reply on the Redis that is back."""
    replica = Replica(store=own_redis.url, demo_tokens_per_second=50, producer_lease=0.5)
    await asyncio.to_thread(replica.start)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            url = f"{replica.url}/api/chat"
            async with http.stream("POST", url, json=body("redis restarts")) as response:
                reader = Events(response)
                for _ in range(4):
                    await reader.next()
                own_redis.restart()
                rest = await reader.until_end()
        name, data, _ = rest[-1]
        assert name == "error" and data["code"] == "store_unavailable"
        assert data["retryable"] is True
        stream, retries = chat(replica.url)
        restarted = False

        def on_token(_: str) -> None:
            nonlocal restarted
            if not restarted:
                restarted = True
                own_redis.restart()

        stream.on("token", on_token)
        reply = await asyncio.wait_for(stream.send("restart during this one"), 30)
        assert reply.content == "".join(expected_tokens("restart during this one"))
        assert retries and retries[-1].resume is False
    finally:
        await asyncio.to_thread(replica.stop)
