"""MemoryReplayStore: pure, clock injected; replay slices, ttl, bounds, memory per stream."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from aistream._wire._events import TextDelta, UsageReport
from aistream.server import MemoryReplayStore, Replay, ReplayFull
from aistream.server._encoders import NativeEncoder

from .helpers import FakeClock


async def filled(
    store: MemoryReplayStore, stream_id: str, count: int, finish: bool = True
) -> list[bytes]:
    await store.create(stream_id)
    frames = [f"event: token\nid: {stream_id}:{i}\ndata: {i}\n\n".encode() for i in range(count)]
    for frame in frames:
        await store.append(stream_id, frame)
    if finish:
        await store.finish(stream_id)
    return frames


async def test_replay_read_returns_the_frames_after_the_given_seq() -> None:
    store = MemoryReplayStore()
    frames = await filled(store, "s", 5, finish=False)
    assert await store.read("s", -1) == Replay(b"".join(frames), 5, False)
    assert await store.read("s", 2) == Replay(b"".join(frames[3:]), 5, False)
    assert await store.read("s", 4) == Replay(b"", 5, False)
    assert await store.read("s", 99) == Replay(b"", 5, False)
    await store.finish("s")
    assert await store.read("s", 3) == Replay(frames[4], 5, True)


async def test_replay_unknown_stream_reads_none_and_duplicates_are_refused() -> None:
    store = MemoryReplayStore()
    assert await store.read("nope", -1) is None
    await store.create("s")
    with pytest.raises(ValueError, match="already exists"):
        await store.create("s")


async def test_replay_appending_to_a_finished_stream_is_an_error() -> None:
    store = MemoryReplayStore()
    await filled(store, "s", 1)
    with pytest.raises(ValueError, match="finished"):
        await store.append("s", b"x")


async def test_replay_finished_stream_expires_after_ttl(fake_clock: FakeClock) -> None:
    store = MemoryReplayStore(ttl=10.0, clock=fake_clock)
    await filled(store, "s", 2)
    fake_clock.advance(9.9)
    assert await store.read("s", -1) is not None
    fake_clock.advance(0.2)
    assert await store.read("s", -1) is None
    assert store.stream_count == 0 and store.byte_count == 0


async def test_replay_live_streams_never_expire(fake_clock: FakeClock) -> None:
    store = MemoryReplayStore(ttl=1.0, clock=fake_clock)
    await filled(store, "s", 2, finish=False)
    fake_clock.advance(1000)
    assert await store.read("s", -1) is not None


async def test_replay_max_streams_evicts_the_oldest_finished_first() -> None:
    store = MemoryReplayStore(max_streams=2)
    await filled(store, "old", 1)
    await filled(store, "live", 1, finish=False)
    await filled(store, "new", 1)
    assert await store.read("old", -1) is None
    assert await store.read("live", -1) is not None
    assert await store.read("new", -1) is not None


async def test_replay_full_of_live_streams_refuses_a_new_one() -> None:
    store = MemoryReplayStore(max_streams=2)
    await filled(store, "a", 1, finish=False)
    await filled(store, "b", 1, finish=False)
    with pytest.raises(ReplayFull, match="live"):
        await store.create("c")


async def test_replay_max_bytes_evicts_finished_logs_but_never_a_live_one() -> None:
    store = MemoryReplayStore(max_bytes=200)
    await filled(store, "done1", 3)  # ~90 bytes
    await filled(store, "live", 3, finish=False)
    assert store.byte_count <= 200
    await store.append("live", b"x" * 150)  # over the bound: the finished log goes
    assert await store.read("done1", -1) is None
    replay = await store.read("live", -1)
    assert replay is not None and replay.data.endswith(b"x" * 150)
    with pytest.raises(ReplayFull, match="bytes"):
        await store.create("another")


def test_replay_store_rejects_a_zero_ttl() -> None:
    with pytest.raises(ValueError, match="ttl > 0"):
        MemoryReplayStore(ttl=0)


async def test_replay_memory_per_finished_60_token_stream_is_bounded() -> None:
    """1,000 finished 60-token streams: measured with tracemalloc (printed with -s)."""
    store = MemoryReplayStore(max_streams=2000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(1000):
        encoder = NativeEncoder(f"stream-{n:010d}", "demo")
        stream_id = encoder.stream_id
        await store.create(stream_id)
        await store.append(stream_id, encoder.start())
        for i in range(60):
            await store.append(stream_id, encoder.token(f" word{i % 7}"))
        await store.append(stream_id, encoder.encode(UsageReport(10, 60)) or b"")
        await store.append(stream_id, encoder.done())
        await store.finish(stream_id)
    gc.collect()
    per_stream = (tracemalloc.get_traced_memory()[0] - before) / 1000
    tracemalloc.stop()
    frame_bytes = store.byte_count / 1000
    print(f"\nreplay store: {per_stream:.0f} B per finished stream ({frame_bytes:.0f} B of frames)")
    assert per_stream < frame_bytes + 1024  # the frames plus a small, fixed overhead
    assert TextDelta  # the token frames above are what TextDelta events encode to
