"""RedisReplayStore against a real redis-server: write-through, replay, follow, lease, cancel."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from aistream.server import create_app
from aistream.server._redis import RedisReplayStore, redact_url
from aistream.server._replay import MemoryReplayStore, StoreUnavailable
from tests.redisserver import RedisServer, free_port

GUARD = 5.0


class Listener:
    """A StoreListener that records what it hears; `until` waits for a condition."""

    def __init__(self) -> None:
        self.stored_ids: list[str] = []
        self.cancelled: list[str] = []
        self.event = asyncio.Event()

    def stored(self, stream_id: str) -> None:
        self.stored_ids.append(stream_id)
        self.event.set()

    def cancel(self, stream_id: str) -> None:
        self.cancelled.append(stream_id)
        self.event.set()

    async def until(self, predicate: object) -> None:
        async def wait() -> None:
            while not predicate():  # type: ignore[operator]
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(wait(), GUARD)


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[RedisReplayStore, RedisReplayStore]]:
    """Two stores on one Redis: two replicas' views."""
    a = RedisReplayStore(redis_url, ttl=30, lease=0.5)
    b = RedisReplayStore(redis_url, ttl=30, lease=0.5)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


async def test_frames_written_on_one_replica_replay_on_another(
    stores: tuple[RedisReplayStore, RedisReplayStore],
) -> None:
    a, b = stores
    heard = Listener()
    a.listener = heard
    await a.create("s1", owner="alice", context=b'{"messages": []}')
    for n in range(5):
        await a.append("s1", f"frame{n}\n".encode())
    await heard.until(lambda: len(heard.stored_ids) >= 1 and not a._producers["s1"].pending)
    await _drain(a, "s1")
    replay = await b.read("s1", -1)
    assert replay is not None
    assert replay.data == b"frame0\nframe1\nframe2\nframe3\nframe4\n"
    assert (replay.next_seq, replay.finished) == (5, False)
    after = await b.read("s1", 2)
    assert after is not None and after.data == b"frame3\nframe4\n"
    await a.finish("s1")
    done = await b.read("s1", 4)
    assert done is not None and (done.data, done.next_seq, done.finished) == (b"", 5, True)
    assert await b.owner("s1") == "alice"
    assert await b.read("nope", -1) is None
    assert await b.owner("nope") is None


async def test_a_follower_elsewhere_blocks_until_frames_come(
    stores: tuple[RedisReplayStore, RedisReplayStore],
) -> None:
    a, b = stores
    await a.create("s2")
    waiting = asyncio.create_task(b.wait("s2", -1, block=GUARD))
    await asyncio.sleep(0.05)  # let the XREAD block (it must not return empty)
    assert not waiting.done()
    await a.append("s2", b"x\n")
    replay = await asyncio.wait_for(waiting, GUARD)
    assert (replay.data, replay.next_seq, replay.finished) == (b"x\n", 1, False)
    await a.finish("s2")
    end = await b.wait("s2", 0, block=GUARD)
    assert (end.data, end.finished) == (b"", True)


async def test_an_expired_lease_is_taken_over_by_exactly_one(
    stores: tuple[RedisReplayStore, RedisReplayStore], redis_url: str
) -> None:
    a, b = stores
    c = RedisReplayStore(redis_url, ttl=30, lease=0.5)
    await a.create("s3", owner="bob", context=b"ctx")
    await a.append("s3", b"f0\n")
    producer = a._producers["s3"]
    await asyncio.wait_for(_drain(a, "s3"), GUARD)
    # a is "killed": its renewals stop
    assert producer.renewing is not None
    producer.renewing.cancel()
    assert 0 < await b.lease_left("s3") <= 0.5
    assert await b.take_over("s3") is None  # the lease still runs
    while left := await b.lease_left("s3"):
        await b.wait("s3", 0, block=left)
    won = await asyncio.gather(b.take_over("s3"), c.take_over("s3"))
    winners = [w for w in won if w is not None]
    assert len(winners) == 1
    assert winners[0].frames == [b"f0\n"] and winners[0].owner == "bob"
    assert winners[0].context == b"ctx"
    winner = b if won[0] is not None else c
    await winner.append("s3", b"f1\n")
    await winner.finish("s3")
    # the old producer wakes up and writes: refused, and it is told to stop
    heard = Listener()
    a.listener = heard
    await a.append("s3", b"stale\n")
    await heard.until(lambda: "s3" in heard.cancelled)
    replay = await c.read("s3", -1) if winner is b else await b.read("s3", -1)
    assert replay is not None and replay.data == b"f0\nf1\n" and replay.finished
    await c.aclose()


async def _drain(store: RedisReplayStore, stream_id: str) -> None:
    producer = store._producers[stream_id]
    while producer.flushing is not None and not producer.flushing.done():
        await producer.flushing


async def test_a_cancel_on_another_replica_reaches_the_producer(
    stores: tuple[RedisReplayStore, RedisReplayStore],
) -> None:
    a, b = stores
    heard = Listener()
    a.listener = heard
    await a.create("s4")
    assert await b.request_cancel("s4") == "live"
    await heard.until(lambda: "s4" in heard.cancelled)
    await a.finish("s4")
    assert await b.request_cancel("s4") == "done"
    assert await b.request_cancel("unknown") == "unknown"


async def test_finished_streams_expire_after_the_ttl(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisReplayStore(redis_url, ttl=0.2, lease=5)
    await store.start()
    try:
        await store.create("s5")
        await store.append("s5", b"a\n")
        await store.finish("s5")
        assert int(redis_server.command("DBSIZE")) == 2  # log and meta; the lease is gone
        ttl = int(redis_server.command("PTTL", "aistream:{s5}:log"))
        assert 0 < ttl <= 200
    finally:
        await store.aclose()


async def test_redis_down_is_store_unavailable_fast(own_redis: RedisServer) -> None:
    store = RedisReplayStore(own_redis.url.replace("redis://", "redis://:hunter2@"), lease=5)
    own_redis.stop()
    with pytest.raises(StoreUnavailable) as info:
        await asyncio.wait_for(store.create("s6"), GUARD)
    assert "hunter2" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert not store.available
    await store.aclose()


def test_redact_url() -> None:
    assert redact_url("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert redact_url("redis://u:pw@h/0") == "redis://***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_importing_aistream_and_its_server_does_not_load_redis() -> None:
    code = (
        "import sys, aistream, aistream.server\n"
        "loaded = [m for m in sys.modules if m == 'redis' or m.startswith('redis.')]\n"
        "assert not loaded, loaded\n"
        "assert aistream.server.RedisReplayStore.__name__ == 'RedisReplayStore'\n"
        "assert 'redis' in sys.modules  # loaded on first use\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_with_an_unreachable_store_exits_naming_it_without_the_password() -> None:
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [
            sys.executable, "-m", "aistream", "serve", "--port", "0",
            "--store", f"redis://:hunter2@127.0.0.1:{port}/0",
        ],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"redis://***@127.0.0.1:{port}/0" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_create_app_refuses_a_store_url_that_is_not_redis() -> None:
    with pytest.raises(ValueError, match="Redis URL"):
        create_app(store="http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="not both"):
        create_app(store="redis://127.0.0.1", replay_store=MemoryReplayStore())


async def test_an_app_whose_store_is_down_at_startup_fails_to_start(own_redis: RedisServer) -> None:
    app = create_app(store=own_redis.url.replace("redis://", "redis://:pw@"))
    own_redis.stop()
    with pytest.raises(RuntimeError, match=r"redis://\*\*\*@127\.0\.0\.1") as info:
        async with app.router.lifespan_context(app):
            pass
    assert "pw" not in str(info.value)


async def test_a_stream_that_vanished_from_redis_ends_with_store_unavailable(
    stores: tuple[RedisReplayStore, RedisReplayStore], redis_server: RedisServer
) -> None:
    a, _ = stores
    heard = Listener()
    a.listener = heard
    await a.create("s7")
    await a.append("s7", b"f0\n")
    await _drain(a, "s7")
    redis_server.command("FLUSHALL")  # what a restart without persistence leaves
    await a.append("s7", b"f1\n")
    await heard.until(lambda: "s7" in heard.cancelled)  # the generation is told to stop
    replay = await a.read("s7", 0)
    assert replay is not None and replay.finished
    assert b"store_unavailable" in replay.data and b"f1" not in replay.data
    with pytest.raises(StoreUnavailable):
        await a.append("s7", b"f2\n")
