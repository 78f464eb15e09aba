"""`RedisReplayStore`: replay logs in Redis Streams, shared by every replica.

Imports redis-py (the `redis` extra); `create_app` imports this module only when a store URL is
given, so `import aistream.server` never loads redis.

Layout, per stream, every key hash-tagged on the stream id so one stream lives in one Cluster
slot (scripts and pipelines touch one slot only):

- ``<prefix>:{<id>}:log``: a Redis Stream, one entry per event, entry id ``0-<seq+1>`` (so an
  event's position is its id, a resume is one XRANGE, and a second writer of the same seq fails
  in XADD), field ``f`` = the frame; the end is an entry with field ``end``.
- ``<prefix>:{<id>}:meta``: a hash: ``owner`` (a principal id, "" for none), ``context`` (the
  request, for a takeover), ``cancel`` (set by a DELETE anywhere).
- ``<prefix>:{<id>}:lease``: the producer's token, expiring ``lease`` seconds after its last
  renewal. Whoever holds it may write; a replica that finds it gone takes it with SET NX (the
  lock: exactly one wins).
- ``<prefix>:cancel``: a pub/sub channel where a DELETE names the stream; the producer listens.

While live, log and meta expire ``ttl + lease`` after the last write or renewal (a stream
nobody takes over disappears on its own); finished, ``ttl`` seconds after the end.

Writes are write-through and batched: `append` queues the frame and a per-stream flusher writes
everything queued in one script call (lease check + XADDs), so a fast producer pays one round
trip per batch, not per event. A frame becomes readable here (the local mirror, a
`MemoryReplayStore`) only once Redis has it, and `listener.stored(id)` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from ._encoders import stream_tag
from ._replay import MemoryReplayStore, Replay, StoreListener, StoreUnavailable, Takeover
from ._replicas import store_error_frame

__all__ = ["RedisReplayStore", "redact_url"]

log = logging.getLogger("aistream.server")

_MAX_PENDING: Final = 512  # frames queued unflushed before append waits for Redis
_MAX_ID: Final = 256  # longest stream id looked up (a longer one is unknown)
_SEQ_CAP: Final = 1 << 62

# KEYS: log, lease, meta.  ARGV: token, lease_ms, live_ttl_ms, first_seq, end (0/1), ttl_ms,
# the frames' lengths ("12 40 40"), the frames joined (one argument: packing one argument per
# frame costs the client ~1 µs each).  Writes the frames (and the end) if this token holds the
# lease or nobody does.
# Returns the meta's cancel flag (false when not cancelled); errors LEASE when another replica
# holds the lease or ended the stream, GONE when the stream is no longer in Redis (a restart).
_WRITE = """
local holder = redis.call('GET', KEYS[2])
if holder ~= ARGV[1] then
  if holder or redis.call('HGET', KEYS[3], 'state') == 'done' then
    return redis.error_reply('LEASE lost')
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('GONE') end
end
local seq = tonumber(ARGV[4])
local data, pos, n = ARGV[8], 1, 0
for size in string.gmatch(ARGV[7], '%d+') do
  local stop = pos + tonumber(size)
  n = n + 1
  redis.call('XADD', KEYS[1], '0-' .. (seq + n), 'f', string.sub(data, pos, stop - 1))
  pos = stop
end
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[1], '0-' .. (seq + n + 1), 'end', '1')
  redis.call('HSET', KEYS[3], 'state', 'done')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
  redis.call('DEL', KEYS[2])
  return false
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if seq == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return redis.call('HGET', KEYS[3], 'cancel')
"""

# KEYS: log, lease, meta.  ARGV: token, lease_ms, live_ttl_ms.  Renews a held lease.
_RENEW = """
local holder = redis.call('GET', KEYS[2])
if holder ~= ARGV[1] then
  if holder or redis.call('HGET', KEYS[3], 'state') == 'done' then
    return redis.error_reply('LEASE lost')
  end
  if redis.call('EXISTS', KEYS[3]) == 0 then return redis.error_reply('GONE') end
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return redis.call('HGET', KEYS[3], 'cancel')
"""

# KEYS: log, lease, meta.  ARGV: token, lease_ms.  Takes an expired lease of an unfinished
# stream: 1 when this caller won, 0 otherwise (someone holds it, or the stream ended/expired).
_TAKE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('HGET', KEYS[3], 'state') == 'done' then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease.  ARGV: token.  Gives a held lease up (a replica shutting down hands over).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: meta.  ARGV: channel, stream id.  Marks a live stream cancelled and tells its producer.
_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'done' then return 2 end
redis.call('HSET', KEYS[1], 'cancel', '1')
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""


def redact_url(url: str) -> str:
    """The store's address for messages and logs: the password (and user) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _Producer:
    """The write side of one stream this replica holds the lease of."""

    __slots__ = ("error", "flushing", "keys", "next_seq", "pending", "renewing", "token")

    def __init__(self, keys: list[str], token: str, next_seq: int) -> None:
        self.keys = keys
        self.token = token
        self.next_seq = next_seq  # seq of pending[0]
        self.pending: list[bytes] = []
        self.flushing: asyncio.Task[None] | None = None
        self.renewing: asyncio.Task[None] | None = None
        self.error: Exception | None = None


class RedisReplayStore:
    """A `ReplayStore` in Redis, shared by replicas (module doc for the layout).

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        ttl: Seconds a finished stream stays replayable.
        lease: Seconds a producer's lease lasts without renewal (renewed every third of it).
        prefix: Key prefix, so several apps can share one Redis.
        timeout: Connect and command timeout, seconds: nothing waits on Redis longer.
        max_streams, max_bytes: Bounds of the local mirror (streams produced here).

    ```py
    store = RedisReplayStore("redis://127.0.0.1:6379/0", ttl=300, lease=5.0)
    app = create_app(store=store)          # or create_app(store="redis://...")
    ```
    """

    shared = True  # other replicas see what this store holds

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        lease: float = 5.0,
        prefix: str = "aistream",
        timeout: float = 2.0,
        max_streams: int = 1000,
        max_bytes: int = 64 << 20,
    ) -> None:
        if ttl <= 0 or lease <= 0 or timeout <= 0:
            raise ValueError(f"need ttl, lease and timeout > 0; got {ttl}, {lease}, {timeout}")
        self.address = redact_url(url)
        self._url = url
        self.ttl, self.lease, self.timeout, self.prefix = ttl, lease, timeout, prefix
        self._ttl_ms, self._lease_ms = int(ttl * 1000), max(int(lease * 1000), 1)
        self._live_ttl_ms = int((ttl + lease) * 1000)
        self.replica = f"{os.getpid()}-{secrets.token_hex(4)}"
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        try:
            self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout, **options)
            # blocking reads wait up to `timeout` in Redis: their socket allows twice that
            self._blocking = aioredis.Redis.from_url(
                url, socket_timeout=2 * timeout + 1, max_connections=1024, **options
            )
            # the cancel listener waits for messages indefinitely; a dead Redis closes it
            self._pubsub = aioredis.Redis.from_url(url, socket_timeout=None, **options)
        except ValueError as exc:
            raise ValueError(f"bad store URL {self.address}: {exc}") from None
        self._write = self._redis.register_script(_WRITE)
        self._renew = self._redis.register_script(_RENEW)
        self._take = self._redis.register_script(_TAKE)
        self._cancel = self._redis.register_script(_CANCEL)
        self._release = self._redis.register_script(_RELEASE)
        self._channel = f"{prefix}:cancel"
        self._mirror = MemoryReplayStore(ttl=ttl, max_streams=max_streams, max_bytes=max_bytes)
        self._producers: dict[str, _Producer] = {}
        self._listening: asyncio.Task[None] | None = None
        self._available = True
        self.listener: StoreListener | None = None

    # --- health -------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False since the last failed Redis call, until one succeeds."""
        return self._available

    async def check(self) -> None:
        """PING Redis. Raises StoreUnavailable naming the address (password redacted)."""
        await self._call(self._redis.ping())

    def check_now(self) -> None:
        """PING Redis from synchronous code (the CLI, before it serves): StoreUnavailable."""
        import redis

        client = redis.Redis.from_url(
            self._url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(
                f"the replay store at {self.address} is unavailable ({type(exc).__name__})"
            ) from None
        finally:
            client.close()

    async def start(self) -> None:
        """Check Redis and start listening for cancels (the app's startup)."""
        await self.check()
        if self._listening is None:
            self._listening = asyncio.create_task(self._listen(), name="aistream-store-cancels")

    async def aclose(self) -> None:
        """Stop listening and renewing, close the connections (the app's shutdown)."""
        tasks = [t for t in (self._listening,) if t is not None]
        for producer in self._producers.values():
            tasks += [t for t in (producer.renewing, producer.flushing) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._listening = None
        for client in (self._redis, self._blocking, self._pubsub):
            await client.aclose()

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            if isinstance(exc, ResponseError) and not str(exc).startswith("LOADING"):
                raise
            self._down(exc)
            raise StoreUnavailable(
                f"the replay store at {self.address} is unavailable ({type(exc).__name__})"
            ) from exc
        self._available = True
        return result

    def _down(self, exc: BaseException) -> None:
        if self._available:
            log.warning(
                "the replay store at %s is unavailable: %s",
                self.address,
                type(exc).__name__,
            )
        self._available = False

    def _keys(self, stream_id: str) -> list[str]:
        tag = f"{self.prefix}:{{{stream_id}}}"
        return [f"{tag}:log", f"{tag}:lease", f"{tag}:meta"]

    # --- ReplayStore --------------------------------------------------------------------------

    async def create(self, stream_id: str, owner: str = "", context: bytes = b"") -> None:
        """Open a stream this replica produces: its meta, its lease, its local mirror."""
        if self._listening is None:
            await self.start()
        await self._mirror.create(stream_id, owner)
        _, lease, meta = keys = self._keys(stream_id)
        token = f"{self.replica}-{secrets.token_hex(4)}"
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(meta, mapping={"owner": owner, "context": context, "state": "live"})
        pipe.pexpire(meta, self._live_ttl_ms)
        pipe.set(lease, token, px=self._lease_ms)
        try:
            await self._call(pipe.execute())
        except BaseException:
            self._mirror.drop(stream_id)
            raise
        self._producers[stream_id] = producer = _Producer(keys, token, 0)
        producer.renewing = asyncio.create_task(self._keep_lease(stream_id, producer))

    async def append(self, stream_id: str, frame: bytes) -> None:
        """Queue the frame; it is readable once written (`listener.stored`)."""
        producer = self._producers.get(stream_id)
        if producer is None:
            raise _LeaseLost(f"this replica does not produce stream {stream_id!r} (any more)")
        if producer.error is not None:
            raise producer.error
        producer.pending.append(frame)
        if producer.flushing is None or producer.flushing.done():
            producer.flushing = asyncio.create_task(self._flush(stream_id, producer, False))
        elif len(producer.pending) > _MAX_PENDING:
            await asyncio.shield(producer.flushing)
            if producer.error is not None:
                raise producer.error

    async def finish(self, stream_id: str) -> None:
        """Write what is queued and the end; start the expiry clock."""
        producer = self._producers.get(stream_id)
        if producer is None:
            return
        ended = False
        try:
            while producer.flushing is not None and not producer.flushing.done():
                await asyncio.shield(producer.flushing)
            if producer.error is None:
                await self._flush(stream_id, producer, True)
                ended = producer.error is None
        finally:
            self._producers.pop(stream_id, None)
            if producer.renewing is not None:
                producer.renewing.cancel()
            if ended or producer.error is not None:
                await self._mirror.finish(stream_id)
            else:  # interrupted before the end was stored: readers follow Redis from here
                self._mirror.drop(stream_id)
            self._stored(stream_id)

    async def hand_over(self, stream_id: str) -> None:
        """Write what is queued and give the lease up, without an end: this replica is shutting
        down, and a reader on another one takes the stream over at once instead of after the
        lease runs out (and nobody reads a "stopped" the user never asked for)."""
        producer = self._producers.get(stream_id)
        if producer is None:
            return
        try:
            while producer.flushing is not None and not producer.flushing.done():
                await asyncio.shield(producer.flushing)
            if producer.error is None and producer.pending:
                await self._flush(stream_id, producer, False)
            if producer.error is None:
                lease = producer.keys[1]
                await self._call(self._release(keys=[lease], args=[producer.token]))
        finally:
            self._producers.pop(stream_id, None)
            if producer.renewing is not None:
                producer.renewing.cancel()
            self._mirror.drop(stream_id)  # readers here (if any) follow Redis from now on
            self._stored(stream_id)
        log.info("handed a stream over: this replica is shutting down")

    async def read(self, stream_id: str, after: int) -> Replay | None:
        """The frames after event `after`: from the mirror when produced here, else Redis."""
        if stream_id in self._mirror:
            return await self._mirror.read(stream_id, after)
        return await self._read_redis(stream_id, after)

    async def hold(self, stream_id: str) -> None:
        await self._mirror.hold(stream_id)

    async def release(self, stream_id: str) -> None:
        await self._mirror.release(stream_id)

    # --- what replicas add --------------------------------------------------------------------

    def produces(self, stream_id: str) -> bool:
        """Whether this replica writes `stream_id` now."""
        return stream_id in self._producers

    async def wait(self, stream_id: str, after: int, block: float) -> Replay:
        """The frames after `after`, waiting up to `block` s for some (blocking XREAD).

        An empty, unfinished Replay means nothing came in time.
        """
        log_key = self._keys(stream_id)[0]
        block_ms = max(int(min(block, self.timeout) * 1000), 1)
        after = min(after, _SEQ_CAP)
        reply = await self._call(
            self._blocking.xread({log_key: f"0-{after + 1}"}, count=1000, block=block_ms)
        )
        entries = reply[0][1] if reply else []
        return _replay(entries, after)

    async def lease_left(self, stream_id: str) -> float:
        """Seconds until the stream's producer lease expires (0: nobody holds it)."""
        ms = await self._call(self._redis.pttl(self._keys(stream_id)[1]))
        return max(int(ms), 0) / 1000

    async def owner(self, stream_id: str) -> str | None:
        """The stream's owner ("" for none), None when the stream is unknown or expired."""
        if len(stream_id) > _MAX_ID:
            return None
        value = await self._call(self._redis.hget(self._keys(stream_id)[2], "owner"))
        return None if value is None else bytes(value).decode()

    async def take_over(self, stream_id: str) -> Takeover | None:
        """Take the expired lease of an unfinished stream; None if another replica has it.

        The winner produces the stream from now on: `append` continues at the next seq.
        """
        keys = self._keys(stream_id)
        token = f"{self.replica}-{secrets.token_hex(4)}"
        won = await self._call(self._take(keys=keys, args=[token, self._lease_ms]))
        if not won:
            return None
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(keys[0])
        pipe.hmget(keys[2], ["owner", "context"])
        entries, (owner, context) = await self._call(pipe.execute())
        frames = [fields[b"f"] for _, fields in entries if b"f" in fields]
        self._mirror.drop(stream_id)
        await self._mirror.create(stream_id, (owner or b"").decode())
        if frames:
            self._mirror.extend(stream_id, [len(f) for f in frames], b"".join(frames))
        producer = _Producer(keys, token, len(frames))
        self._producers[stream_id] = producer
        producer.renewing = asyncio.create_task(self._keep_lease(stream_id, producer))
        log.info("took over a stream whose producer's lease expired")
        return Takeover(frames, (owner or b"").decode(), bytes(context or b""))

    async def request_cancel(self, stream_id: str) -> str:
        """Ask the producer, wherever it is, to stop: "live", "done" or "unknown"."""
        keys = self._keys(stream_id)
        found = await self._call(self._cancel(keys=[keys[2]], args=[self._channel, stream_id]))
        return {0: "unknown", 1: "live", 2: "done"}.get(int(found), "unknown")

    async def _fail(self, stream_id: str, frame: bytes) -> None:
        """End a stream produced here with `frame`, in the mirror only (Redis is gone)."""
        producer = self._producers.pop(stream_id, None)
        if producer is not None and producer.renewing is not None:
            producer.renewing.cancel()
        if stream_id in self._mirror:
            with contextlib.suppress(ValueError):  # already finished
                await self._mirror.append(stream_id, frame)
            await self._mirror.finish(stream_id)
        self._stored(stream_id)
        self._cancel_local(stream_id)

    # --- internals ----------------------------------------------------------------------------

    async def _flush(self, stream_id: str, producer: _Producer, end: bool) -> None:
        """Write the queued frames (and the end) in one script call, until none is queued."""
        while producer.pending or end:
            batch, producer.pending = producer.pending, []
            sizes = [len(frame) for frame in batch]
            joined = b"".join(batch)
            try:
                cancel = await self._call(
                    self._write(
                        keys=producer.keys,
                        args=[
                            producer.token,
                            self._lease_ms,
                            self._live_ttl_ms,
                            producer.next_seq,
                            1 if end else 0,
                            self._ttl_ms,
                            " ".join(map(str, sizes)),
                            joined,
                        ],
                    )
                )
            except (StoreUnavailable, ResponseError) as exc:
                producer.error = self._failure(stream_id, exc)
                if isinstance(producer.error, _LeaseLost):
                    self._lost(stream_id)
                else:
                    await self._fail(stream_id, store_error_frame(str(producer.error)))
                return
            producer.next_seq += len(batch)
            if batch:
                self._mirror.extend(stream_id, sizes, joined)
            self._stored(stream_id)
            if cancel:
                self._cancel_local(stream_id)
            end = False

    def _failure(self, stream_id: str, exc: Exception) -> Exception:
        if isinstance(exc, ResponseError) and "LEASE" in str(exc):
            log.warning(
                "lost the lease of stream %s to another replica",
                stream_tag(stream_id),
            )
            return _LeaseLost(f"another replica produces stream {stream_id!r} now")
        if isinstance(exc, ResponseError) and str(exc).startswith("GONE"):
            log.warning("a live stream vanished from the replay store")
            return StoreUnavailable(
                f"the replay store at {self.address} lost this stream (restarted without "
                "persistence, or flushed)"
            )
        if isinstance(exc, ResponseError):
            log.error("the store refused a write: %s", exc)
            return _LeaseLost(f"the store refused a write of stream {stream_id!r}")
        return exc

    def _lost(self, stream_id: str) -> None:
        """Another replica took the stream: stop generating, serve it from Redis from now on."""
        producer = self._producers.pop(stream_id, None)
        if producer is not None and producer.renewing is not None:
            producer.renewing.cancel()
        self._mirror.drop(stream_id)
        self._cancel_local(stream_id)
        self._stored(stream_id)

    async def _keep_lease(self, stream_id: str, producer: _Producer) -> None:
        """Renew the lease every third of it while the stream is produced here."""
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                cancel = await self._call(
                    self._renew(
                        keys=producer.keys,
                        args=[producer.token, self._lease_ms, self._live_ttl_ms],
                    )
                )
            except StoreUnavailable:
                continue  # the next write says so to the generation; keep trying meanwhile
            except ResponseError as exc:
                producer.error = self._failure(stream_id, exc)
                producer.renewing = None
                if isinstance(producer.error, _LeaseLost):
                    self._lost(stream_id)
                else:
                    await self._fail(stream_id, store_error_frame(str(producer.error)))
                return
            if cancel:
                self._cancel_local(stream_id)

    async def _listen(self) -> None:
        """Hear cancels published by any replica; reconnect with backoff when Redis drops."""
        delay = 0.05
        while True:
            pubsub = self._pubsub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                delay = 0.05
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        stream_id = bytes(message["data"]).decode(errors="replace")
                        if stream_id in self._producers:
                            self._cancel_local(stream_id)
            except (RedisError, OSError) as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    # Typed from redis-py 8.2 on; bound to a typed name so both check.
                    aclose: Callable[[], Awaitable[None]] = pubsub.aclose
                    await aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _cancel_local(self, stream_id: str) -> None:
        if self.listener is not None:
            self.listener.cancel(stream_id)

    def _stored(self, stream_id: str) -> None:
        if self.listener is not None:
            self.listener.stored(stream_id)

    async def _read_redis(self, stream_id: str, after: int) -> Replay | None:
        if len(stream_id) > _MAX_ID:
            return None
        log_key, _, meta = self._keys(stream_id)
        after = max(min(after, _SEQ_CAP), -1)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(log_key, min=f"({'0-' + str(after + 1)}")
        pipe.exists(meta)
        pipe.xrevrange(log_key, count=1)
        entries, exists, last = await self._call(pipe.execute())
        if not exists and not entries and not last:
            return None
        if not last:
            return Replay(b"", 0, False)
        replay = _replay(entries, after)
        if not entries and last:  # nothing after `after`: say where the log stands
            seq, finished = _position(last[0])
            return Replay(b"", seq, finished)
        return replay


class _LeaseLost(StoreUnavailable):
    """Another replica holds this stream's lease: this one must stop writing it."""


def _position(entry: Any) -> tuple[int, bool]:
    """(next seq, finished) from the last entry of a log."""
    entry_id, fields = entry
    number = int(bytes(entry_id).split(b"-")[1])
    if b"end" in fields:
        return number - 1, True
    return number, False


def _replay(entries: list[Any], after: int) -> Replay:
    data = bytearray()
    next_seq, finished = after + 1, False
    for entry in entries:
        frame = entry[1].get(b"f")
        if frame is not None:
            data += frame
        next_seq, finished = _position(entry)
    return Replay(bytes(data), next_seq, finished)
