"""The security review's findings (shared/reviews/security-review.md), each a regression test.

Every test names its finding (F1..F14). Servers are real uvicorn on 127.0.0.1; the upstream is
`HostileUpstream`, which records what it was sent and echoes the operator's key on demand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from aistream._wire._events import TextDelta
from aistream.server import Principal, create_app

from .helpers import EventReader, ScriptedBackend, chat_body, guard, native_events
from .hostile_upstream import HostileUpstream

KEY = "sk-SECRET0123456789abcdefXYZ"
ALICE, BOB = "alice-token-0000", "bob-token-1111"
TOKENS = {ALICE: "alice", BOB: "bob"}
Serve = Callable[[Any], Awaitable[str]]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def by_token(request: Request) -> Principal | None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    user = TOKENS.get(token)
    return None if user is None else Principal(id=user)


@pytest.fixture
async def upstream(serve_app: Serve) -> tuple[HostileUpstream, str]:
    hostile = HostileUpstream()
    return hostile, await serve_app(hostile.app()) + "/v1"


def asgi(app: Any, client: tuple[str, int] = ("127.0.0.1", 5000)) -> httpx.AsyncClient:
    """For finite responses only (ASGITransport buffers bodies)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=client), base_url="http://127.0.0.1"
    )


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    payload: dict[str, Any] = response.json()
    error = payload["error"]
    if isinstance(error, dict):  # OpenAI's shape on /v1
        assert error["code"] == code and error["message"], payload
    else:
        assert payload["code"] == code and error, payload
        assert isinstance(payload["retryable"], bool)
    return payload


# --- F1: authentication -------------------------------------------------------------------------


async def test_f1_relay_without_authentication_serves_loopback_callers_only(
    upstream: tuple[HostileUpstream, str], serve_app: Serve
) -> None:
    hostile, base = upstream
    url = await serve_app(create_app(upstream=base, api_key=KEY, model="cheap-model"))
    async with httpx.AsyncClient() as client:
        local = await client.post(url + "/api/chat", json=chat_body("hi"))
        proxied = await client.post(
            url + "/api/chat", json=chat_body("hi"), headers={"X-Forwarded-For": "203.0.113.9"}
        )
        forwarded = await client.post(
            url + "/v1/chat/completions",
            json=chat_body("hi"),
            headers={"Forwarded": "for=203.0.113.9"},
        )
        health = await client.get(url + "/healthz")
    assert local.status_code == 200
    assert_json_error(proxied, 403, "local_only")
    assert_json_error(forwarded, 403, "local_only")
    assert health.status_code == 200
    assert len(hostile.requests) == 1  # only the loopback caller reached the upstream
    async with asgi(create_app(upstream=base, api_key=KEY), ("203.0.113.9", 4000)) as remote:
        assert_json_error(await remote.post("/api/chat", json=chat_body("hi")), 403, "local_only")
    opened = create_app(upstream=base, api_key=KEY, allow_anonymous=True)
    async with asgi(opened, ("203.0.113.9", 4000)) as remote:
        assert (await remote.post("/api/chat", json=chat_body("hi"))).status_code == 200


ROUTES = [
    ("POST", "/api/chat"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/api/chat/some-stream-id"),
    ("DELETE", "/api/chat/some-stream-id"),
    ("GET", "/api/chat/some-chat/stream"),
]


def _sync_auth(request: Request) -> Principal | None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ")
    return Principal(id=TOKENS[token]) if token in TOKENS else None


def _raising_auth(request: Request) -> Principal | None:
    raise RuntimeError("the identity provider is down")


@pytest.mark.parametrize(
    "auth", [by_token, _sync_auth, _raising_auth], ids=["async", "sync", "raises"]
)
async def test_f1_authenticate_guards_every_route_but_healthz(auth: Any) -> None:
    app = create_app(demo_tokens_per_second=0, authenticate=auth)
    async with asgi(app) as client:
        for method, path in ROUTES:
            response = await client.request(method, path, json=chat_body("hi"))
            assert_json_error(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/healthz")).status_code == 200
        if auth is not _raising_auth:
            ok = await client.post("/api/chat", json=chat_body("hi"), headers=bearer(ALICE))
            assert ok.status_code == 200


async def test_f1_api_keys_each_key_is_a_principal_whose_id_is_not_the_key() -> None:
    seen: list[str] = []
    app = create_app(demo_tokens_per_second=0, api_keys=[ALICE, BOB])
    async with asgi(app) as client:
        assert (await client.post("/api/chat", json=chat_body("x"))).status_code == 401
        wrong = await client.post("/api/chat", json=chat_body("x"), headers=bearer("nope-0000"))
        assert wrong.status_code == 401
        for token in (ALICE, BOB):
            response = await client.post("/api/chat", json=chat_body("x"), headers=bearer(token))
            assert response.status_code == 200
            seen.append(native_events(response.content)[0].stream_id)  # type: ignore[union-attr]
    store = app.state.aistream.store
    owners = {await store.owner(sid) for sid in seen}
    assert len(owners) == 2
    assert all(o and o.startswith("key-") and ALICE not in o and BOB not in o for o in owners)
    with pytest.raises(ValueError, match="not both"):
        create_app(api_keys=[ALICE], authenticate=by_token)
    with pytest.raises(ValueError, match="empty"):
        create_app(api_keys=[])


async def test_f1_authenticate_applies_when_mounted_in_fastapi() -> None:
    fastapi = pytest.importorskip("fastapi")
    outer = fastapi.FastAPI()
    outer.mount("/ai", create_app(demo_tokens_per_second=0, authenticate=by_token))
    async with asgi(outer) as client:
        assert_json_error(
            await client.post("/ai/api/chat", json=chat_body("x")), 401, "unauthenticated"
        )
        ok = await client.post("/ai/api/chat", json=chat_body("x"), headers=bearer(ALICE))
        assert ok.status_code == 200
        assert (await client.get("/ai/healthz")).status_code == 200
        openai = await client.post("/ai/v1/chat/completions", json=chat_body("x"))
        assert_json_error(openai, 401, "unauthenticated")  # OpenAI's shape on /v1


# --- F4: ownership ------------------------------------------------------------------------------


async def test_f4_another_principal_cannot_read_resume_or_cancel_a_stream(serve_app: Serve) -> None:
    backend = ScriptedBackend()
    url = await serve_app(
        create_app(backend=backend, authenticate=by_token, heartbeat_interval=None)
    )
    async with httpx.AsyncClient(timeout=5) as alice, httpx.AsyncClient(timeout=5) as bob:
        async with alice.stream(
            "POST", url + "/api/chat", json=chat_body("secret"), headers=bearer(ALICE)
        ) as response:
            reader = EventReader(response.aiter_bytes())
            sid = json.loads((await reader.next()).data)["id"]
            backend.put("one")
            await reader.next()
            theirs = [
                await bob.get(f"{url}/api/chat/{sid}", headers=bearer(BOB)),
                await bob.delete(f"{url}/api/chat/{sid}", headers=bearer(BOB)),
                await bob.post(
                    url + "/api/chat",
                    json=chat_body("x"),
                    headers={**bearer(BOB), "Last-Event-ID": f"{sid}:0"},
                ),
                await bob.get(
                    f"{url}/api/chat/{sid}", headers={**bearer(BOB), "Last-Event-ID": f"{sid}:0"}
                ),
            ]
            forged = await bob.get(f"{url}/api/chat/{sid[:-1]}x", headers=bearer(BOB))
            for answer in theirs:
                body = assert_json_error(answer, 404, "unknown_stream")
                assert body == forged.json() | {"error": body["error"]}  # as if it did not exist
            backend.put("two", None)
            rest = await reader.rest()
        async with alice.stream("GET", f"{url}/api/chat/{sid}", headers=bearer(ALICE)) as own:
            assert own.status_code == 200
            replay = b"".join([chunk async for chunk in own.aiter_bytes()])
    tokens = [e.text for e in native_events(replay) if isinstance(e, TextDelta)]
    assert tokens == ["one", "two"]  # alice's own stream: untouched by bob, replayable by her
    assert [e.event for e in rest][-1] == "done"


# --- F6: content types, CORS, hosts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/chat", "text/plain;charset=UTF-8"),
        ("/api/chat", "application/x-www-form-urlencoded"),
        ("/api/chat", "multipart/form-data; boundary=x"),
        ("/v1/chat/completions", "application/x-www-form-urlencoded"),
        ("/v1/chat/completions", None),
    ],
)
async def test_f6_non_json_posts_are_415_and_reach_no_upstream(
    upstream: tuple[HostileUpstream, str], path: str, content_type: str | None
) -> None:
    hostile, base = upstream
    headers = {"Origin": "https://evil.example"}
    if content_type:
        headers["Content-Type"] = content_type
    body = json.dumps(chat_body("form csrf", pad="=")).encode()
    async with asgi(create_app(upstream=base, api_key=KEY)) as client:
        response = await client.post(path, content=body, headers=headers)
    assert_json_error(response, 415, "unsupported_media_type")
    assert "access-control-allow-origin" not in response.headers
    assert hostile.requests == []


async def test_f6_cors_only_for_allowed_origins_and_preflight_before_authenticate() -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    good, evil = "https://app.example.com", "https://evil.example"
    closed = create_app(demo_tokens_per_second=0, authenticate=by_token)
    opened = create_app(demo_tokens_per_second=0, authenticate=by_token, allow_origins=[good])
    async with asgi(closed) as client:
        assert_json_error(
            await client.options("/api/chat", headers={"Origin": good, **preflight}),
            403,
            "origin_not_allowed",
        )
        response = await client.post(
            "/api/chat", json=chat_body("x"), headers={"Origin": good, **bearer(ALICE)}
        )
        assert response.status_code == 200
        assert not [h for h in response.headers if h.startswith("access-control-")]
    async with asgi(opened) as client:
        allowed = await client.options("/api/chat", headers={"Origin": good, **preflight})
        assert allowed.status_code == 204  # no credentials needed: before authenticate
        assert allowed.headers["access-control-allow-origin"] == good
        assert set(allowed.headers["access-control-allow-methods"].split(", ")) == {
            "GET",
            "POST",
            "DELETE",
        }
        assert {
            h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
        } == {
            "authorization",
            "content-type",
            "last-event-id",
            "x-vercel-ai-ui-message-stream",
        }
        assert_json_error(
            await client.options("/api/chat", headers={"Origin": evil, **preflight}),
            403,
            "origin_not_allowed",
        )
        real = await client.post(
            "/api/chat", json=chat_body("x"), headers={"Origin": good, **bearer(ALICE)}
        )
        assert real.headers["access-control-allow-origin"] == good
        refused = await client.post("/api/chat", json=chat_body("x"), headers={"Origin": good})
        assert refused.status_code == 401  # the CORS header lets the page read why
        assert refused.headers["access-control-allow-origin"] == good
        foreign = await client.post(
            "/api/chat", json=chat_body("x"), headers={"Origin": evil, **bearer(ALICE)}
        )
        assert "access-control-allow-origin" not in foreign.headers


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8000", 200),
        ("localhost:9999", 200),
        ("localhost", 200),
        ("LOCALHOST.:80", 200),
        ("[::1]:8000", 200),
        ("rebind.attacker.example:8000", 400),
        ("127.0.0.1.nip.io", 400),
        ("", 400),
    ],
)
async def test_f6_allowed_hosts_compares_host_names_not_ports(host: str, status: int) -> None:
    app = create_app(demo_tokens_per_second=0, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    async with asgi(app) as client:
        response = await client.post("/api/chat", json=chat_body("x"), headers={"Host": host})
    if status == 200:
        assert response.status_code == 200
    else:
        assert_json_error(response, 400, "host_not_allowed")


# --- F4: stream ids kept out of the logs ----------------------------------------------------


async def test_f4_no_stream_id_in_aistream_logs_at_info_or_above(
    serve_app: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(ScriptedBackend):
        async def stream(self, request: Any) -> AsyncIterator[Any]:
            if request.messages[-1].content == "fail":
                raise RuntimeError("backend bug")
            async for event in super().stream(request):
                yield event

    backend = Failing()
    url = await serve_app(create_app(backend=backend, resume_grace=0, heartbeat_interval=None))
    ids: list[str] = []
    caplog.set_level(logging.DEBUG, logger="aistream")
    async with httpx.AsyncClient(timeout=5) as client:
        for text in ("fail", "cancel me", "leave me"):
            async with client.stream("POST", url + "/api/chat", json=chat_body(text)) as response:
                reader = EventReader(response.aiter_bytes())
                ids.append(json.loads((await reader.next()).data)["id"])
                if text == "cancel me":
                    await guard(backend.started.wait())
                    assert (await client.delete(f"{url}/api/chat/{ids[-1]}")).status_code == 204
                    backend.closed.clear()
                await reader.rest() if text != "leave me" else None
            backend.started.clear()
        await guard(backend.closed.wait())  # the one left behind was cancelled (grace 0)
        completion = await client.post(url + "/v1/chat/completions", json=chat_body("fail"))
        assert completion.status_code == 200
    loud = [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("aistream")
    ]
    assert len(loud) >= 3  # the failure, the DELETE, the grace expiry: logged, by tag
    text = "\n".join(r.getMessage() for r in loud)
    for sid in ids:
        assert sid not in text
