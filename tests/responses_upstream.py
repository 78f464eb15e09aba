"""A loopback OpenAI Responses API with background streams: the upstream for resume tests.

`POST /v1/responses` streams a reply (the events of `responses_events`); when the body says
``"background": true`` the response is kept, and ``GET /v1/responses/<id>?stream=true&
starting_after=<n>`` streams it again from sequence number n + 1, as the real API does
(PROVIDERS.md §1.8). A GET for a response that was not a background one is a 400 with the
API's message; an unknown id is a 404.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.loopback import Reply, Request


def responses_events(
    response_id: str,
    tokens: list[str],
    *,
    background: bool = False,
    usage: tuple[int, int] = (5, 0),
    model: str = "m",
) -> list[bytes]:
    """The Responses stream for a text reply made of `tokens`, one bytes item per event."""
    text = "".join(tokens)
    item_id = "msg_" + response_id.removeprefix("resp_")
    prompt = usage[0]

    def response(status: str, output: list[Any], with_usage: bool) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": 1765553684,
            "status": status,
            "background": background,
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(tokens),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + len(tokens),
            }
            if with_usage
            else None,
        }

    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant"}
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], False)},
        {"type": "response.in_progress", "response": response("in_progress", [], False)},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *(
            {"type": "response.output_text.delta", **where, "delta": token, "logprobs": []}
            for token in tokens
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {**item, "content": [part]},
        },
        {
            "type": "response.completed",
            "response": response("completed", [{**item, "content": [part]}], True),
        },
    ]
    return [
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode()
        for n, e in enumerate(events)
    ]


class BackgroundResponses:
    """The handler: replies are ``reply(request body)`` (a list of tokens), ids count up.

    `posts` and `gets` count the requests of each kind; `starting_after` lists the cursor of
    every GET in order.
    """

    def __init__(self, reply: Callable[[dict[str, Any]], list[str]]) -> None:
        self.reply = reply
        self.streams: dict[str, list[bytes]] = {}
        self.posts = 0
        self.gets = 0
        self.starting_after: list[int] = []
        self.cancelled: list[str] = []

    async def __call__(self, request: Request, reply: Reply) -> None:
        url = urlsplit(request.path)
        if request.method == "POST" and url.path == "/v1/responses":
            self.posts += 1
            body = request.json()
            response_id = f"resp_{self.posts:04d}"
            background = body.get("background") is True
            events = responses_events(response_id, self.reply(body), background=background)
            if background:
                self.streams[response_id] = events
            await self._stream(reply, events)
            return
        response_id = url.path.removeprefix("/v1/responses/")
        if request.method == "POST" and response_id.endswith("/cancel"):
            self.cancelled.append(response_id.removesuffix("/cancel"))
            await reply.body(
                200, {"id": response_id.removesuffix("/cancel"), "status": "cancelled"}
            )
            return
        if request.method == "GET" and response_id != url.path:
            self.gets += 1
            query = parse_qs(url.query)
            events = self.streams.get(response_id)
            if events is None:
                await reply.body(404, {"error": {"message": "No response found", "code": None}})
                return
            after = int(query.get("starting_after", ["-1"])[0])
            self.starting_after.append(after)
            await self._stream(reply, events[after + 1 :])
            return
        await reply.body(404, {"error": {"message": f"no route {url.path}"}})

    @staticmethod
    async def _stream(reply: Reply, events: list[bytes]) -> None:
        await reply.start()
        for event in events:
            await reply.send(event)
        await reply.end()
