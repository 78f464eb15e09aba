"""Fixtures: a cluster of replica processes on one real redis-server, behind a round robin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.redisserver import RedisServer
from tests.replicas.harness import Replica, RoundRobin

Cluster = tuple[list[Replica], RoundRobin]

# Fast but realistic defaults: 50 tokens/s, a 0.5 s lease, heartbeats every 0.2 s.
DEFAULTS: dict[str, Any] = {
    "demo_tokens_per_second": 50,
    "producer_lease": 0.5,
    "heartbeat_interval": 0.2,
    "resume_grace": 10.0,
    "replay_ttl": 60.0,
}


@pytest.fixture
async def cluster(
    redis_server: RedisServer, redis_url: str
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """`await cluster(n, **options)`: n replicas (started in parallel) and a RoundRobin."""
    replicas: list[Replica] = []
    proxies: list[RoundRobin] = []

    async def make(count: int = 2, **options: Any) -> Cluster:
        made = [Replica(store=redis_url, **{**DEFAULTS, **options}) for _ in range(count)]
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in made))
        replicas.extend(made)
        proxy = RoundRobin(lambda: [r.port for r in made if r.alive])
        await proxy.__aenter__()
        proxies.append(proxy)
        return made, proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.__aexit__(None, None, None)
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in replicas))
