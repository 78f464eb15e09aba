"""create_app: validation, resume, replay, cancel, grace, shutdown — mostly over real uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aistream._wire._events import Done, FinishReason, ServerError, TextDelta, UsageReport
from aistream.server import MemoryReplayStore, create_app
from aistream.server._app import ChatService
from tests.servers import running

from .helpers import (
    GUARD,
    EventReader,
    FakeClock,
    FakePeer,
    ScriptedBackend,
    chat_body,
    chat_request,
    frames,
    guard,
    http_scope,
    native_events,
    tokens_of,
)

QUIET: dict[str, Any] = {"heartbeat_interval": None, "send_timeout": None}


def service_of(app: Any) -> ChatService:
    service: ChatService = app.state.aistream
    return service


def asgi_client(app: Any) -> httpx.AsyncClient:
    """For finite responses only (ASGITransport buffers the body, STYLE P19)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://app")


# --- validation -------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
OK_MESSAGE = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        pytest.param(b"{", 400, "invalid_json", "not valid UTF-8 JSON", id="truncated-json"),
        pytest.param(b"\xff\xfe{}", 400, "invalid_json", "not valid", id="not-utf8"),
        pytest.param(b"", 400, "invalid_json", "not valid", id="empty-body"),
        pytest.param(b"[1, 2]", 422, "invalid_request", "JSON object", id="array-body"),
        pytest.param(b"{}", 422, "invalid_request", '"messages" is missing', id="no-messages"),
        pytest.param(
            {"messages": "hi"}, 422, "invalid_request", "must be a list", id="messages-str"
        ),
        pytest.param({"messages": []}, 422, "invalid_request", "is empty", id="messages-empty"),
        pytest.param(
            {"messages": ["hi"]},
            422,
            "invalid_request",
            "messages[0] must be an object",
            id="message-str",
        ),
        pytest.param(
            {"messages": [{"content": "hi"}]},
            422,
            "invalid_request",
            "messages[0].role is missing",
            id="no-role",
        ),
        pytest.param(
            {"messages": [OK_MESSAGE, {"role": "robot", "content": "x"}]},
            422,
            "invalid_request",
            "messages[1].role is 'robot'",
            id="unknown-role",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": 5}]},
            422,
            "invalid_request",
            "content must be a string; got int",
            id="content-int",
        ),
        pytest.param(
            {"messages": [{"role": "user"}]},
            422,
            "invalid_request",
            "content must be a string; got null",
            id="no-content",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
            422,
            "invalid_request",
            "got list",
            id="content-parts",
        ),
        pytest.param(
            {"messages": [OK_MESSAGE], "model": 4},
            422,
            "invalid_request",
            '"model" must be a string',
            id="model-int",
        ),
        pytest.param(
            {"messages": [OK_MESSAGE], "systemPrompt": {}},
            422,
            "invalid_request",
            '"systemPrompt" must be a string',
            id="system-dict",
        ),
        pytest.param(
            {"messages": [OK_MESSAGE], "stream": False},
            422,
            "invalid_request",
            "only streams",
            id="stream-false",
        ),
        pytest.param(
            {"messages": [{"role": "user", "content": "x" * 300}]},
            413,
            "body_too_large",
            "max_body_bytes",
            id="too-large",
        ),
    ],
)
async def test_app_bad_body_gets_a_clear_json_error(
    body: Any, status: int, code: str, says: str
) -> None:
    app = create_app(max_body_bytes=200, demo_tokens_per_second=0)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with asgi_client(app) as client:
        response = await client.post("/api/chat", content=content, headers=JSON)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == code
    assert says in response.json()["error"]


async def test_app_oversized_body_is_413_by_content_length_or_while_streaming() -> None:
    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b"x" * 6
        yield b"x" * 6

    async with asgi_client(create_app(max_body_bytes=10)) as client:
        declared = await client.post("/api/chat", content=b"x" * 11, headers=JSON)
        streamed = await client.post("/api/chat", content=chunked(), headers=JSON)
    assert declared.status_code == streamed.status_code == 413
    assert streamed.json()["code"] == "body_too_large"


async def test_app_accepts_and_ignores_extra_fields_like_the_seed_client_sends() -> None:
    body = {
        "messages": [
            {"id": "1795279606824-to9vtfg59", "role": "user", "content": "t1", "timestamp": 1},
            {"id": "b", "role": "assistant", "content": "a", "timestamp": 2},
            {"id": "c", "role": "user", "content": "t2", "timestamp": 3},
        ],
        "model": "gpt-4",
        "systemPrompt": "Be brief",
        "stream": True,
        "temperature": 0.2,
    }
    async with asgi_client(create_app(demo_tokens_per_second=0)) as client:
        response = await client.post("/api/chat", json=body)
    assert response.status_code == 200
    assert native_events(response.content)[-1] == Done()


async def test_app_healthz_and_state_belong_to_each_app_instance() -> None:
    first, second = create_app(demo_tokens_per_second=0), create_app(demo_tokens_per_second=0)
    assert service_of(first) is not service_of(second)
    async with asgi_client(first) as one, asgi_client(second) as two:
        assert (await one.get("/healthz")).json() == {"status": "ok", "live_streams": 0}
        stream = await one.post("/api/chat", json=chat_body("hello"))
        stream_id = frames(stream.content)[0].id.split(":")[0]  # type: ignore[union-attr]
        assert (await one.get(f"/api/chat/{stream_id}")).status_code == 200
        assert (await two.get(f"/api/chat/{stream_id}")).status_code == 404


# --- streaming, resume, replay ----------------------------------------------------------------


async def test_app_demo_stream_round_trips_through_the_client_parser(serve_app: Any) -> None:
    url = await serve_app(create_app(demo_tokens_per_second=0))
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/api/chat", json=chat_body("Hello there"))
    assert response.headers["content-type"] == "text/event-stream"
    decoded = native_events(response.content)
    tokens = [e for e in decoded if isinstance(e, TextDelta)]
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert decoded[-3:] == [
        UsageReport(2, len(tokens), 2 + len(tokens)),
        FinishReason("stop"),
        Done(),
    ]
    ids = [f.id for f in frames(response.content)]
    stream_id = ids[0].split(":")[0]  # type: ignore[union-attr]
    assert ids == [f"{stream_id}:{n}" for n in range(len(ids))]


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_app_resume_after_a_cut_gives_exactly_the_missing_events(
    serve_app: Any, method: str
) -> None:
    backend = ScriptedBackend()
    url = await serve_app(create_app(backend=backend, **QUIET))
    async with httpx.AsyncClient(timeout=GUARD) as client:
        backend.put("a", " b", " c")
        async with client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response:
            seen = await EventReader(response.aiter_bytes()).take(4)  # start + 3 tokens
        last_id = seen[-1].id
        assert last_id is not None
        stream_id = last_id.split(":")[0]
        backend.put(" d", " e")  # generated while nobody is connected

        target = url + ("/api/chat" if method == "POST" else f"/api/chat/{stream_id}")
        headers = {"Last-Event-ID": last_id}
        body = chat_body("hi") if method == "POST" else None
        async with client.stream(method, target, headers=headers, json=body) as response:
            assert response.status_code == 200
            reader = EventReader(response.aiter_bytes())
            missed = await reader.take(2)
            backend.put(" f", UsageReport(1, 6), None)  # and live after the replay
            rest = await reader.rest()
    assert [f.id for f in missed] == [f"{stream_id}:4", f"{stream_id}:5"]
    assert tokens_of(reader.raw) == [(3, " d"), (4, " e"), (5, " f")]
    assert [f.event for f in rest] == ["token", "usage", "done"]
    assert len(backend.requests) == 1  # a resume never starts a new generation


async def test_app_finished_stream_replays_to_its_end(serve_app: Any) -> None:
    url = await serve_app(create_app(demo_tokens_per_second=0))
    async with httpx.AsyncClient() as client:
        original = (await client.post(url + "/api/chat", json=chat_body("replay me"))).content
        stream_id = frames(original)[0].id.split(":")[0]  # type: ignore[union-attr]
        whole = await client.get(f"{url}/api/chat/{stream_id}")
        after = await client.get(
            f"{url}/api/chat/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:5"}
        )
    assert whole.content == original  # an EventSource's first GET: everything, byte for byte
    assert frames(after.content) == frames(original)[6:]


async def test_app_unknown_or_expired_stream_is_a_clear_404(
    serve_app: Any, fake_clock: FakeClock
) -> None:
    app = create_app(demo_tokens_per_second=0, replay_ttl=10, clock=fake_clock, **QUIET)
    url = await serve_app(app)
    async with httpx.AsyncClient() as client:
        unknown = [
            await client.post(
                url + "/api/chat", json=chat_body("x"), headers={"Last-Event-ID": "nope:3"}
            ),
            await client.get(url + "/api/chat/nope"),
            await client.delete(url + "/api/chat/nope"),
        ]
        original = (await client.post(url + "/api/chat", json=chat_body("soon gone"))).content
        stream_id = frames(original)[0].id.split(":")[0]  # type: ignore[union-attr]
        fake_clock.advance(9)
        assert (await client.get(f"{url}/api/chat/{stream_id}")).status_code == 200
        fake_clock.advance(2)
        expired = await client.get(f"{url}/api/chat/{stream_id}")
    for response in [*unknown, expired]:
        assert response.status_code == 404
        assert response.json()["code"] == "unknown_stream"
        assert "without Last-Event-ID" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "header"),
    [("/api/chat", "garbage"), ("/api/chat/abc", "xyz:1"), ("/api/chat/abc", "abc:not-a-number")],
)
async def test_app_malformed_last_event_id_is_a_400(path: str, header: str) -> None:
    async with asgi_client(create_app()) as client:
        if path == "/api/chat":
            response = await client.post(
                path, json=chat_body("x"), headers={"Last-Event-ID": header}
            )
        else:
            response = await client.get(path, headers={"Last-Event-ID": header})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_last_event_id"


# --- cancel, grace, shutdown, limits ----------------------------------------------------------


async def test_app_delete_cancels_the_generation_at_once(serve_app: Any) -> None:
    backend = ScriptedBackend()
    url = await serve_app(create_app(backend=backend, **QUIET))
    async with httpx.AsyncClient(timeout=GUARD) as client:
        async with client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response:
            reader = EventReader(response.aiter_bytes())
            start = await reader.next()
            stream_id = json.loads(start.data)["id"]
            deleted = await client.delete(f"{url}/api/chat/{stream_id}")
            assert deleted.status_code == 204
            assert backend.closed.is_set()  # cancelled before the 204 was sent
            rest = await reader.rest()
        again = await client.delete(f"{url}/api/chat/{stream_id}")
    assert native_events(reader.raw)[-2:] == [FinishReason("stopped"), Done()]
    assert rest[-1].event == "done"
    assert again.status_code == 204  # known and finished: nothing left to cancel


async def test_app_disconnect_without_return_is_cancelled_after_the_grace(
    serve_app: Any, fake_clock: FakeClock
) -> None:
    backend = ScriptedBackend()
    app = create_app(
        backend=backend, resume_grace=5, sleep=fake_clock.sleep, clock=fake_clock, **QUIET
    )
    url = await serve_app(app)
    async with httpx.AsyncClient(timeout=GUARD) as client:
        backend.put("a")
        async with client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response:
            seen = await EventReader(response.aiter_bytes()).take(2)
        await fake_clock.sleeping(due=5.0)  # the client left: the grace period runs
        assert not backend.closed.is_set()  # a disconnect alone does not cancel
        fake_clock.advance(5)
        await guard(backend.closed.wait())
        stream_id = seen[0].id.split(":")[0]  # type: ignore[union-attr]
        replay = await client.get(f"{url}/api/chat/{stream_id}")
    assert native_events(replay.content)[-2:] == [FinishReason("stopped"), Done()]


async def test_app_client_back_within_the_grace_keeps_the_generation(
    serve_app: Any, fake_clock: FakeClock
) -> None:
    backend = ScriptedBackend()
    app = create_app(
        backend=backend, resume_grace=5, sleep=fake_clock.sleep, clock=fake_clock, **QUIET
    )
    url = await serve_app(app)
    async with httpx.AsyncClient(timeout=GUARD) as client:
        backend.put("a")
        async with client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response:
            seen = await EventReader(response.aiter_bytes()).take(2)
        await fake_clock.sleeping(due=5.0)
        fake_clock.advance(4)
        stream_id, last = seen[-1].id.split(":")  # type: ignore[union-attr]
        headers = {"Last-Event-ID": f"{stream_id}:{last}"}
        async with client.stream("GET", f"{url}/api/chat/{stream_id}", headers=headers) as response:
            reader = EventReader(response.aiter_bytes())
            backend.put(" b")
            await reader.next()
            assert fake_clock.dues() == []  # the grace timer was cancelled by the resume
            fake_clock.advance(60)
            backend.put(None)
            await reader.rest()
    assert tokens_of(reader.raw) == [(1, " b")]
    assert native_events(reader.raw)[-2:] == [FinishReason("stop"), Done()]


async def test_app_shutdown_cancels_running_generations() -> None:
    backend = ScriptedBackend()
    async with running(create_app(backend=backend, **QUIET)) as url:
        async with (
            httpx.AsyncClient(timeout=GUARD) as client,
            client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response,
        ):
            await EventReader(response.aiter_bytes()).take(1)
        assert not backend.closed.is_set()  # running on, within its grace period
    assert backend.closed.is_set()


async def test_app_refuses_new_streams_with_503_when_the_store_is_full(serve_app: Any) -> None:
    backend = ScriptedBackend()
    app = create_app(backend=backend, replay_store=MemoryReplayStore(max_streams=1), **QUIET)
    url = await serve_app(app)
    async with (
        httpx.AsyncClient(timeout=GUARD) as client,
        client.stream("POST", url + "/api/chat", json=chat_body("one")) as response,
    ):
        await EventReader(response.aiter_bytes()).take(1)
        busy = await client.post(url + "/api/chat", json=chat_body("two"))
        backend.put(None)
    assert busy.status_code == 503
    assert busy.json()["code"] == "server_busy"
    assert busy.headers["retry-after"] == "1"


async def test_app_frozen_client_does_not_hold_the_generation(fake_clock: FakeClock) -> None:
    app = create_app(
        demo_tokens_per_second=0,
        heartbeat_interval=None,
        send_timeout=5,
        sleep=fake_clock.sleep,
        clock=fake_clock,
    )
    service = service_of(app)
    peer = FakePeer(request_body=json.dumps(chat_body("freeze")).encode(), freeze_after=1)
    scope = http_scope("POST", "/api/chat", {"content-type": "application/json"})
    running_call = asyncio.ensure_future(guard(app(scope, peer.receive, peer.send)))
    await peer.changed.until(lambda: peer.frozen)
    stream_id = frames(peer.body)[0].id.split(":")[0]  # type: ignore[union-attr]
    replay = await service.store.read(stream_id, -1)
    assert replay is not None and replay.finished  # the reply is complete, client or not
    await fake_clock.sleeping(due=5.0)
    fake_clock.advance(5)
    await running_call
    assert not service.live
    await service.aclose()


async def test_app_backend_failure_becomes_an_internal_error_event(serve_app: Any) -> None:
    class Broken:
        def model_for(self, request: Any) -> str:
            return "broken"

        async def stream(self, request: Any) -> Any:
            yield TextDelta("partial")
            raise RuntimeError("boom")

    url = await serve_app(create_app(backend=Broken(), **QUIET))
    async with httpx.AsyncClient() as client:
        response = await client.post(url + "/api/chat", json=chat_body("hi"))
    error = native_events(response.content)[-1]
    assert isinstance(error, ServerError)
    assert (error.code, error.retryable) == ("internal_error", False)


async def test_app_generation_cancelled_before_its_first_step_is_still_closed() -> None:
    app = create_app(demo_tokens_per_second=0, **QUIET)
    service = service_of(app)
    stream_id = await service.generations.start(chat_request("x"))
    task = service.live[stream_id].task
    assert task is not None
    task.cancel()  # before the event loop ever ran it: its finally cannot run
    await asyncio.wait((task,))
    await service.aclose()
    assert not service.live
    replay = await service.store.read(stream_id, -1)
    assert replay is not None and replay.finished


def test_app_rejects_an_id_factory_that_makes_unsafe_ids() -> None:
    app = create_app(id_factory=lambda: "bad\nid")
    with pytest.raises(ValueError, match="control characters"):
        asyncio.run(service_of(app).generations.start(chat_request("x")))


async def test_app_zero_grace_cancels_on_disconnect_but_never_before_the_client_attached(
    serve_app: Any,
) -> None:
    backend = ScriptedBackend()
    url = await serve_app(create_app(backend=backend, resume_grace=0, **QUIET))
    async with httpx.AsyncClient(timeout=GUARD) as client:
        backend.put("a", None)
        whole = await client.post(url + "/api/chat", json=chat_body("hi"))
        assert native_events(whole.content)[-2:] == [FinishReason("stop"), Done()]
        backend.closed.clear()  # the first reply ran to its end; now a second one
        async with client.stream("POST", url + "/api/chat", json=chat_body("hi")) as response:
            await EventReader(response.aiter_bytes()).take(1)
        await guard(backend.closed.wait())  # cut: with no grace, cancelled at once
