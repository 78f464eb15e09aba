"""Replay logs for resumable streams: each stream's encoded events, bounded and expiring.

Pure: no I/O, no event loop state, the clock is injected. Imports the stdlib only.

`ReplayStore` is the interface (async, so a networked store such as Redis can implement it);
`MemoryReplayStore` is the default, owned by one app instance. A log holds the stream's frames
exactly as sent (`NativeEncoder` output), so a replay is one slice of bytes.

Memory bounds of `MemoryReplayStore`:

- `max_streams`: logs kept, live and finished. A new stream evicts the oldest finished log
  when full; when every log is live, `create` raises `ReplayFull` (the app answers 503).
- Fair shares: a log is evicted for a principal (its `owner`) only if it is that
  principal's own, or its owner holds more logs than the principal would with its new one.
  A principal that fills the store evicts its own logs, never the others'; one that cannot
  make room gets `ReplayFull` with `over_share` set when it holds its share already (429).
- `max_bytes`: bytes of frames kept. Appending past it evicts finished logs, oldest first.
  Live logs are never cut (a live reply would lose its resume point), so the live streams
  alone may exceed it by at most their own size; `create` refuses new streams meanwhile.
- A finished log that a follower is still sending (`hold`) is not evicted for space: a new
  stream is refused instead, until that follower is done.
- `ttl`: a finished log is dropped `ttl` seconds after it finished. Live logs do not expire.
  The ttl also bounds how long a slow client may take to read the end of a finished reply.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "MemoryReplayStore",
    "Replay",
    "ReplayFull",
    "ReplayStore",
    "SharedReplayStore",
    "StoreUnavailable",
    "Takeover",
]


class ReplayFull(Exception):
    """The store cannot take another stream now (too many live streams or bytes).

    `over_share`: the principal asking holds its fair share of the store already (its own
    limit, 429), rather than the store being full of others' live streams (503).
    """

    def __init__(self, message: str, over_share: bool = False) -> None:
        super().__init__(message)
        self.over_share = over_share


class StoreUnavailable(Exception):
    """A networked store cannot be reached now (the app answers 503 / `store_unavailable`)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reader gets: the frames after its last event, and where the log stands.

    Attributes:
        data: The frames of events ``after + 1 .. next_seq - 1``, concatenated.
        next_seq: The seq the next stored event will have (events stored so far).
        finished: No event will follow `data`.
    """

    data: bytes
    next_seq: int
    finished: bool


class ReplayStore(Protocol):
    """Where an app keeps each stream's events for Last-Event-ID replay.

    Events are numbered from 0 in append order (the `<seq>` of ``<stream-id>:<seq>``).
    """

    async def create(self, stream_id: str, owner: str = "", context: bytes = b"") -> None:
        """Open an empty log. Raises ReplayFull when the store is at its bounds.

        `owner` is the principal id the stream belongs to ("" for none); `context` describes
        the request, for a store whose streams another replica may have to take over.
        """
        ...

    async def owner(self, stream_id: str) -> str | None:
        """The owner given to `create` ("" for none), None when the stream is unknown."""
        ...

    async def append(self, stream_id: str, frame: bytes) -> None:
        """Add the next event's frame to a live log."""
        ...

    async def finish(self, stream_id: str) -> None:
        """Mark a log complete; its expiry clock starts."""
        ...

    async def read(self, stream_id: str, after: int) -> Replay | None:
        """The frames after event `after` (-1: from the start), or None if unknown/expired."""
        ...

    async def hold(self, stream_id: str) -> None:
        """A follower is sending this stream: do not evict its log for space until released."""
        ...

    async def release(self, stream_id: str) -> None:
        """The follower that called `hold` is done."""
        ...


@dataclass(frozen=True, slots=True)
class Takeover:
    """A stream this replica now produces, its producer's lease having expired.

    Attributes:
        frames: Every frame stored so far, in order (seq 0 .. len-1).
        owner: The stream's owner ("" for none).
        context: What the producer stored about its request (`create`'s `context`).
    """

    frames: list[bytes]
    owner: str
    context: bytes


class StoreListener(Protocol):
    """What an app hears from a shared store about the streams its replica produces."""

    def stored(self, stream_id: str) -> None:
        """Frames of `stream_id` became readable."""

    def cancel(self, stream_id: str) -> None:
        """Stop generating `stream_id`: a DELETE elsewhere, or another replica took it over."""


class SharedReplayStore(ReplayStore, Protocol):
    """A store that several replicas share (`RedisReplayStore`): what replicas add.

    Every call may raise `StoreUnavailable`. Appends may become readable after `append`
    returns; the store says when through `listener.stored`.
    """

    shared: bool
    address: str
    listener: StoreListener | None

    async def start(self) -> None:
        """Connect and listen for cancels (raises StoreUnavailable naming the address)."""
        ...

    def produces(self, stream_id: str) -> bool:
        """Whether this replica writes `stream_id` now (it holds the lease)."""
        ...

    async def check(self) -> None:
        """One round trip to the store (raises StoreUnavailable)."""
        ...

    async def aclose(self) -> None: ...

    async def wait(self, stream_id: str, after: int, block: float) -> Replay:
        """The frames after `after`, waiting up to `block` seconds for some."""
        ...

    async def lease_left(self, stream_id: str) -> float:
        """Seconds until the stream's producer lease expires (0: nobody holds it)."""
        ...

    async def take_over(self, stream_id: str) -> Takeover | None:
        """Take an expired lease of an unfinished stream; None when another replica has it."""
        ...

    async def request_cancel(self, stream_id: str) -> str:
        """Ask the stream's producer, wherever it is, to stop: "live", "done" or "unknown"."""
        ...

    async def hand_over(self, stream_id: str) -> None:
        """Store what is queued and give the lease up, without an end (this replica is
        shutting down): another replica's reader takes the stream over at once."""
        ...


class _Log:
    __slots__ = ("data", "finished_at", "offsets", "owner")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.data: bytearray | bytes = bytearray()
        self.offsets = array("I")  # where each event's frame starts in `data`
        self.finished_at: float | None = None


class MemoryReplayStore:
    """An in-process `ReplayStore` with a TTL and bounds on streams and bytes (see module doc).

    Args:
        ttl: Seconds a finished stream stays replayable.
        max_streams: Logs kept at once, live and finished.
        max_bytes: Frame bytes kept at once (finished logs are evicted to honour it).
        clock: Monotonic seconds (injected in tests).

    ```py
    store = MemoryReplayStore(ttl=300, max_streams=1000)
    await store.create("s1"); await store.append("s1", frame)
    replay = await store.read("s1", after=-1)    # Replay(data=frame, next_seq=1, finished=False)
    ```
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        max_streams: int = 1000,
        max_bytes: int = 64 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_streams < 1 or max_bytes < 1:
            raise ValueError(
                f"need ttl > 0 (a finished stream must stay readable while its clients catch "
                f"up), max_streams >= 1 and max_bytes >= 1; got {ttl}, {max_streams}, {max_bytes}"
            )
        self.ttl = ttl
        self.max_streams = max_streams
        self.max_bytes = max_bytes
        self._clock = clock
        self._logs: dict[str, _Log] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest finish first
        self._bytes = 0
        self._held: dict[str, int] = {}  # stream id -> followers still sending it
        self._owned: dict[str, int] = {}  # owner -> logs it holds

    @property
    def stream_count(self) -> int:
        """Logs held now (live and finished, expired ones not yet purged included)."""
        return len(self._logs)

    @property
    def byte_count(self) -> int:
        """Frame bytes held now."""
        return self._bytes

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._logs

    async def create(self, stream_id: str, owner: str = "", context: bytes = b"") -> None:
        self._purge()
        if stream_id in self._logs:
            raise ValueError(f"stream {stream_id!r} already exists")
        while (
            len(self._logs) >= self.max_streams or self._bytes >= self.max_bytes
        ) and self._evict_oldest(owner):
            pass
        over = self._over_share(owner)
        if len(self._logs) >= self.max_streams:
            raise ReplayFull(
                f"{len(self._logs)} streams are live or still being sent (replay_max_streams)", over
            )
        if self._bytes >= self.max_bytes:
            raise ReplayFull(f"streams hold {self._bytes} bytes (replay_max_bytes)", over)
        self._logs[stream_id] = _Log(owner)
        self._owned[owner] = self._owned.get(owner, 0) + 1

    async def owner(self, stream_id: str) -> str | None:
        self._purge()
        log = self._logs.get(stream_id)
        return None if log is None else log.owner

    def drop(self, stream_id: str) -> None:
        """Forget a log now, live or finished (a store that mirrors another one uses it)."""
        log = self._logs.pop(stream_id, None)
        if log is not None:
            self._finished.pop(stream_id, None)
            self._bytes -= len(log.data)
            self._disown(log.owner)

    async def append(self, stream_id: str, frame: bytes) -> None:
        log = self._logs[stream_id]
        data = log.data
        if log.finished_at is not None or not isinstance(data, bytearray):
            raise ValueError(f"stream {stream_id!r} is finished")
        log.offsets.append(len(data))
        data += frame
        self._bytes += len(frame)
        while self._bytes > self.max_bytes and self._evict_oldest(log.owner):
            pass

    def extend(self, stream_id: str, sizes: list[int], joined: bytes) -> None:
        """`append` for several frames at once, given joined with their sizes, without awaiting
        (a mirroring store's batch, already joined to be sent elsewhere)."""
        log = self._logs[stream_id]
        data = log.data
        if log.finished_at is not None or not isinstance(data, bytearray):
            raise ValueError(f"stream {stream_id!r} is finished")
        offsets, at = log.offsets, len(data)
        for size in sizes:
            offsets.append(at)
            at += size
        data += joined
        self._bytes += len(joined)
        while self._bytes > self.max_bytes and self._evict_oldest(log.owner):
            pass

    async def finish(self, stream_id: str) -> None:
        log = self._logs.get(stream_id)
        if log is None or log.finished_at is not None:
            return
        log.finished_at = self._clock()
        log.data = bytes(log.data)  # drop the bytearray's spare capacity
        log.offsets = array("I", log.offsets)
        self._finished[stream_id] = None
        self._purge()

    async def read(self, stream_id: str, after: int) -> Replay | None:
        self._purge()
        log = self._logs.get(stream_id)
        if log is None:
            return None
        offsets = log.offsets
        count = len(offsets)
        start = offsets[after + 1] if -1 <= after < count - 1 else len(log.data)
        if after < -1:
            start = 0
        return Replay(bytes(log.data[start:]), count, log.finished_at is not None)

    def _purge(self) -> None:
        """Drop finished logs whose ttl has passed (they are in finish order)."""
        if not self._finished:
            return
        deadline = self._clock() - self.ttl
        logs = self._logs
        while self._finished:
            oldest = next(iter(self._finished))
            finished_at = logs[oldest].finished_at
            assert finished_at is not None
            if finished_at > deadline:
                break
            self._drop(oldest)

    async def hold(self, stream_id: str) -> None:
        self._held[stream_id] = self._held.get(stream_id, 0) + 1

    async def release(self, stream_id: str) -> None:
        count = self._held.get(stream_id, 0) - 1
        if count > 0:
            self._held[stream_id] = count
        else:
            self._held.pop(stream_id, None)

    def _evict_oldest(self, owner: str) -> bool:
        """Drop the oldest finished log `owner` may evict (its own, or one of an owner holding
        more than `owner` would) that no follower is sending; False if there is none."""
        mine = self._owned.get(owner, 0) + 1
        logs, owned = self._logs, self._owned
        for stream_id in self._finished:
            if stream_id in self._held:
                continue
            other = logs[stream_id].owner
            if other == owner or owned[other] > mine:
                self._drop(stream_id)
                return True
        return False

    def _over_share(self, owner: str) -> bool:
        """Whether `owner` (a principal, not "") holds its equal share of `max_streams`."""
        if not owner:
            return False
        owners = len(self._owned) + (owner not in self._owned)
        return self._owned.get(owner, 0) * owners >= self.max_streams

    def _disown(self, owner: str) -> None:
        left = self._owned[owner] - 1
        if left:
            self._owned[owner] = left
        else:
            del self._owned[owner]

    def _drop(self, stream_id: str) -> None:
        del self._finished[stream_id]
        log = self._logs.pop(stream_id)
        self._bytes -= len(log.data)
        self._disown(log.owner)
