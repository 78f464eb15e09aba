"""Hostile requests to an app with authentication, limits, policy, CORS and a host list (API.md §6).

One real uvicorn serves every case (module-scoped). For each case, alice's legitimate native
stream is started with `AIStream` and held half-way; the hostile request is sent (no
credentials, another principal, forged ids, over a limit, bad options, cross-origin form
posts, a foreign Host); it must get the table's status and a JSON error body; then alice's
stream is released and must complete with exactly the demo's reply, without a retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.requests import Request

from aistream import AIStream, RetryConfig, RetryEvent
from aistream._wire._dialect import ChatMessage, ChatRequest
from aistream._wire._events import FinishReason, StreamEvent, TextDelta, UsageReport
from aistream.server import DemoModel, Limits, Policy, Principal, create_app
from tests.servers import running

from .helpers import FakeClock

GUARD = 5.0
TOKENS = {"alice-token": "alice", "bob-token": "bob", "flood-token": "flood"}
RPM = 5
VALID = {"messages": [{"role": "user", "content": "hello"}]}
EVIL = "https://evil.example"


def authenticate(request: Request) -> Principal | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    user = TOKENS.get(token) if scheme == "Bearer" else None
    return None if user is None else Principal(id=user)


class GatedDemo:
    """The demo model; a reply to "in flight ..." stops half-way until `gate` is set."""

    def __init__(self) -> None:
        self.demo = DemoModel(tokens_per_second=None)
        self.halfway = asyncio.Event()
        self.gate = asyncio.Event()

    def arm(self) -> None:
        self.halfway, self.gate = asyncio.Event(), asyncio.Event()

    def model_for(self, request: ChatRequest) -> str:
        return "gated"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        tokens = self.demo.tokens(request)
        gated = request.messages[-1].content.startswith("in flight")
        for i, token in enumerate(tokens):
            if gated and i == len(tokens) // 2:
                self.halfway.set()
                await self.gate.wait()
            yield TextDelta(token)
        yield UsageReport(1, len(tokens), 1 + len(tokens))
        yield FinishReason("stop")


@dataclass
class Server:
    url: str
    backend: GatedDemo
    app: Any
    clock: FakeClock


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Server]:
    backend, clock = GatedDemo(), FakeClock()
    app = create_app(
        backend=backend,
        heartbeat_interval=None,
        authenticate=authenticate,
        allowed_hosts=["127.0.0.1", "localhost"],
        allow_origins=["https://app.example.com"],
        limits=Limits(
            requests_per_minute=RPM,
            concurrent_streams=1,
            max_messages=20,
            max_chars=2000,
        ),
        policy=Policy(model="gated", max_tokens=100),
        clock=clock,
    )
    async with running(app) as url:
        yield Server(url, backend, app, clock)


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    code: str
    token: str | None = "mallory-token"
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = "application/json"
    repeat: int = 1  # sent this many times; the last answer is checked


SID = "{sid}"  # replaced by alice's live stream id
JSON_PATHS = ("/api/chat", "/v1/chat/completions", "/v1/responses")
RESPONSES_BODY = {"input": "hello"}

CASES: list[Case] = [
    # no credentials, or wrong ones: 401 on every route but /healthz
    *(
        Case(f"no-auth/{m}{p}", m, p, 401, "unauthenticated", token=None, body=b)
        for m, p, b in [
            ("POST", "/api/chat", VALID),
            ("POST", "/v1/chat/completions", VALID),
            ("POST", "/v1/responses", RESPONSES_BODY),
            ("GET", "/v1/models", None),
            ("GET", f"/api/chat/{SID}", None),
            ("DELETE", f"/api/chat/{SID}", None),
            ("GET", "/api/chat/chat-1/stream", None),
        ]
    ),
    Case("bad-token", "POST", "/api/chat", 401, "unauthenticated", body=VALID),
    Case(
        "basic-scheme",
        "POST",
        "/api/chat",
        401,
        "unauthenticated",
        token=None,
        body=VALID,
        headers={"Authorization": "Basic YWxpY2U6YWxpY2UtdG9rZW4="},
    ),
    Case(
        "empty-bearer",
        "POST",
        "/api/chat",
        401,
        "unauthenticated",
        token=None,
        body=VALID,
        headers={"Authorization": "Bearer"},
    ),
    Case(
        "token-prefix", "POST", "/api/chat", 401, "unauthenticated", token="alice-tok", body=VALID
    ),
    Case(
        "token-in-query",
        "POST",
        "/api/chat?token=alice-token",
        401,
        "unauthenticated",
        token=None,
        body=VALID,
    ),
    # another principal's stream: 404, as if it did not exist
    Case("bob-get", "GET", f"/api/chat/{SID}", 404, "unknown_stream", token="bob-token"),
    Case("bob-delete", "DELETE", f"/api/chat/{SID}", 404, "unknown_stream", token="bob-token"),
    Case(
        "bob-resume-post",
        "POST",
        "/api/chat",
        404,
        "unknown_stream",
        token="bob-token",
        body=VALID,
        headers={"Last-Event-ID": f"{SID}:0"},
    ),
    Case(
        "bob-resume-get",
        "GET",
        f"/api/chat/{SID}",
        404,
        "unknown_stream",
        token="bob-token",
        headers={"Last-Event-ID": f"{SID}:1"},
    ),
    # forged ids
    Case(
        "forged-get",
        "GET",
        "/api/chat/AAAAAAAAAAAAAAAA",
        404,
        "unknown_stream",
        token="alice-token",
    ),
    Case(
        "forged-delete", "DELETE", f"/api/chat/{SID}x", 404, "unknown_stream", token="alice-token"
    ),
    Case(
        "forged-resume",
        "POST",
        "/api/chat",
        404,
        "unknown_stream",
        token="alice-token",
        body=VALID,
        headers={"Last-Event-ID": "AAAAAAAAAAAAAAAA:3"},
    ),
    Case(
        "malformed-last-event-id",
        "POST",
        "/api/chat",
        400,
        "invalid_last_event_id",
        token="alice-token",
        body=VALID,
        headers={"Last-Event-ID": f"{SID}"},
    ),
    Case(
        "resume-openai-format",
        "POST",
        "/v1/chat/completions",
        400,
        "resume_unsupported",
        token="bob-token",
        body=VALID,
        headers={"Last-Event-ID": f"{SID}:0"},
    ),
    # over a limit
    Case("flood", "GET", "/v1/models", 429, "rate_limited", token="flood-token", repeat=RPM + 1),
    Case(
        "second-stream-native",
        "POST",
        "/api/chat",
        429,
        "too_many_streams",
        token="alice-token",
        body=VALID,
    ),
    Case(
        "second-stream-openai",
        "POST",
        "/v1/chat/completions",
        429,
        "too_many_streams",
        token="alice-token",
        body={**VALID, "stream": True},
    ),
    Case(
        "second-stream-vercel",
        "POST",
        "/api/chat?format=vercel",
        429,
        "too_many_streams",
        token="alice-token",
        body=VALID,
    ),
    Case(
        "too-many-messages",
        "POST",
        "/api/chat",
        413,
        "request_too_large",
        token="bob-token",
        body={"messages": [{"role": "user", "content": "x"}] * 21},
    ),
    Case(
        "too-many-chars",
        "POST",
        "/v1/chat/completions",
        413,
        "request_too_large",
        token="bob-token",
        body={"messages": [{"role": "user", "content": "x" * 2001}]},
    ),
    Case(
        "too-many-chars-system",
        "POST",
        "/api/chat",
        413,
        "request_too_large",
        token="bob-token",
        body={**VALID, "systemPrompt": "s" * 2000},
    ),
    # bad options
    *(
        Case(
            f"option/{p.strip('/').replace('/', '-')}/{k}={v!r}",
            "POST",
            p,
            s,
            c,
            token="bob-token",
            body={**VALID, k: v},
        )
        for p, k, v, s, c in [
            ("/api/chat", "temperature", 9, 400, "invalid_option"),
            ("/api/chat", "top_p", -1, 400, "invalid_option"),
            ("/api/chat", "presence_penalty", 2.5, 400, "invalid_option"),
            ("/api/chat", "max_tokens", 10**12, 400, "invalid_option"),
            ("/api/chat", "temperature", {"$gt": "x"}, 422, "invalid_request"),
            ("/v1/chat/completions", "temperature", -1, 400, "invalid_option"),
            ("/v1/chat/completions", "frequency_penalty", 3, 400, "invalid_option"),
            ("/v1/chat/completions", "max_completion_tokens", -5, 400, "invalid_request"),
            ("/v1/chat/completions", "top_p", "NaN-string", 400, "invalid_request"),
        ]
    ),
    # cross-origin form posts and other bodies a browser sends without a preflight
    *(
        Case(
            f"form/{p}/{t}",
            "POST",
            p,
            415,
            "unsupported_media_type",
            token="bob-token",
            body=VALID,
            content_type=t,
            headers={"Origin": EVIL},
        )
        for p in ("/api/chat", "/v1/chat/completions")
        for t in (
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        )
    ),
    Case(
        "form/no-content-type",
        "POST",
        "/api/chat",
        415,
        "unsupported_media_type",
        token="bob-token",
        body=VALID,
        content_type=None,
    ),
    Case(
        "preflight-evil",
        "OPTIONS",
        "/api/chat",
        403,
        "origin_not_allowed",
        token=None,
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    ),
    Case(
        "preflight-evil-delete",
        "OPTIONS",
        f"/api/chat/{SID}",
        403,
        "origin_not_allowed",
        token=None,
        headers={"Origin": EVIL, "Access-Control-Request-Method": "DELETE"},
    ),
    # a foreign Host (DNS rebinding)
    *(
        Case(
            f"host/{h}",
            "POST",
            "/api/chat",
            400,
            "host_not_allowed",
            token="alice-token",
            body=VALID,
            headers={"Host": h},
        )
        for h in (
            "rebind.attacker.example",
            "rebind.attacker.example:8000",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "[::2]:80",
        )
    ),
]


def test_the_table_has_over_40_distinct_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


async def send(server: Server, case: Case, sid: str) -> httpx.Response:
    def fill(text: str) -> str:
        return text.replace(SID, sid)

    headers = {k: fill(v) for k, v in case.headers.items()}
    if case.token is not None:
        headers.setdefault("Authorization", f"Bearer {case.token}")
    content = None
    if case.body is not None:
        content = json.dumps(case.body).encode()
        if case.content_type is not None:
            headers["Content-Type"] = case.content_type
    response = None
    async with httpx.AsyncClient(timeout=GUARD) as client:
        for _ in range(case.repeat):
            response = await client.request(
                case.method, server.url + fill(case.path), headers=headers, content=content
            )
    assert response is not None
    return response


def assert_refused(case: Case, response: httpx.Response) -> None:
    assert response.status_code == case.status, (case.id, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), case.id
    payload = response.json()
    error = payload["error"]
    if isinstance(error, dict):  # OpenAI's shape on /v1/...
        assert error["code"] == case.code and error["message"], payload
    else:
        assert payload["code"] == case.code and error and "Traceback" not in error, payload
        assert isinstance(payload["retryable"], bool), payload
    if case.status == 429:
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_request_is_refused_and_the_stream_in_flight_completes_exactly(
    server: Server, case: Case
) -> None:
    server.clock.advance(120.0)  # every principal's request budget back
    backend = server.backend
    backend.arm()
    content = f"in flight during {case.id}"
    expected = "".join(backend.demo.tokens(ChatRequest((ChatMessage("user", content),))))
    retries: list[RetryEvent] = []
    async with AIStream(
        server.url + "/api/chat",
        protocol="native",
        headers={"Authorization": "Bearer alice-token"},
        timeout=GUARD,
        retry=RetryConfig(max_retries=0),
    ) as chat:
        chat.on("retry", retries.append)
        turn = asyncio.create_task(chat.send(content))
        try:
            await asyncio.wait_for(backend.halfway.wait(), GUARD)
            (sid,) = list(server.app.state.aistream.live)
            response = await send(server, case, sid)
        finally:
            backend.gate.set()
            reply = await asyncio.wait_for(turn, GUARD)
    assert reply.content == expected
    assert reply.finish_reason == "stop"
    assert retries == []
    assert_refused(case, response)
