"""A fake OpenAI-compatible upstream that records every request and can misbehave on purpose.

The scenario is picked by ``MODE:<name>`` in the last user message (as in the security
review's ``fake_upstream.py``): ``echo401`` / ``echo429`` / ``echo400`` echo the caller's key in
their error, ``echo500u`` echoes it as JSON ``\\u`` escapes, ``instream`` and ``skipped`` put it in
the stream, ``gate`` stops after its first token until the test opens `gate`. Anything else
streams ``Hello from upstream`` with usage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

REPLY = ("Hello", " from", " upstream")


def chunk(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def delta(text: str) -> bytes:
    return chunk(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
    )


FINISH = chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE = chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"


class HostileUpstream:
    """The upstream: `requests` holds (headers, body) of each request it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gated = asyncio.Event()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self.completions, methods=["POST"])])

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.requests]

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        last = body["messages"][-1]["content"]
        mode = last.split("MODE:", 1)[1].split()[0] if "MODE:" in last else "normal"
        if mode == "echo401":
            error = {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}
            return JSONResponse({"error": error}, status_code=401)
        if mode == "echo429":
            error = {"message": f"Rate limit reached for key {key} (header was '{auth}')"}
            return JSONResponse({"error": error}, 429, headers={"retry-after": "0"})
        if mode == "echo400":
            return JSONResponse({"error": {"message": f"bad request from key {key}"}}, 400)
        if mode == "echo500u":
            escaped = "".join(f"\\u{ord(c):04x}" for c in key)
            text = '{"error": {"message": "upstream saw key ' + escaped + '"}}'
            return Response(text, status_code=500, media_type="application/json")
        return StreamingResponse(self._stream(mode, auth), media_type="text/event-stream")

    async def _stream(self, mode: str, auth: str) -> AsyncIterator[bytes]:
        if mode == "instream":
            yield delta("Hello ")
            error = {"message": f"internal: request by {auth} failed", "code": "boom"}
            yield chunk({"error": error})
            return
        if mode == "skipped":
            yield delta("Hi")
            yield f"data: {{not json, auth={auth}}}\n\n".encode()
            yield FINISH + DONE
            return
        for i, text in enumerate(REPLY):
            yield delta(text)
            if mode == "gate" and i == 0:
                self.gated.set()
                await self.gate.wait()
        yield FINISH + USAGE + DONE
