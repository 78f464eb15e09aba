"""The redis-server test fixture itself: a real server, emptied per test, restartable."""

from __future__ import annotations

from tests.redisserver import RedisServer


def test_redis_url_is_a_live_empty_server(redis_server: RedisServer, redis_url: str) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("PING") == "PONG"
    assert redis_server.command("DBSIZE") == "0"
    assert redis_server.command("CONFIG", "GET", "save").splitlines() == ["save"]  # no RDB


def test_restart_keeps_the_port_and_loses_the_data(own_redis: RedisServer) -> None:
    own_redis.command("SET", "k", "v")
    port = own_redis.port
    own_redis.restart()
    assert own_redis.port == port
    assert own_redis.command("GET", "k") == ""
