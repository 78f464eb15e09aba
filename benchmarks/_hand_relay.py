"""The relay people write by hand, as the relay mode measures it: FastAPI, the openai SDK's
AsyncOpenAI, a StreamingResponse of each chunk's JSON. (No ``from __future__ import
annotations``: FastAPI reads the handler's annotations at runtime.)"""

import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI

client = AsyncOpenAI(
    base_url=os.environ["BENCH_UPSTREAM"] + "/v1", api_key=os.environ["BENCH_UPSTREAM_KEY"]
)
app = FastAPI()


@app.post("/v1/chat/completions")
async def completions(request: Request) -> StreamingResponse:
    body = await request.json()
    stream = await client.chat.completions.create(
        model=body["model"],
        messages=body["messages"],
        stream=True,
        stream_options={"include_usage": True},
    )

    async def relay() -> AsyncIterator[str]:
        async for chunk in stream:
            yield f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(relay(), media_type="text/event-stream")
