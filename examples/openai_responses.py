"""The official openai SDK's Responses API against aistream's server, unchanged.

`create_app()` answers ``POST /v1/responses`` in the Responses stream format (named events with
sequence numbers), so ``responses.create(stream=True)`` and the ``responses.stream(...)`` helper
read it as they read OpenAI's; AIStream reads it too, with protocol "responses" (picked by the
URL's path).

python examples/openai_responses.py                          # the built-in demo model
python examples/openai_responses.py --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio

import openai
from _embedded import endpoint_or_demo

from aistream import AIStream


async def run(base_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed-for-the-demo")
    async with client:
        stream = await client.responses.create(
            model="demo", input="Hello! What can you do?", instructions="Be brief.", stream=True
        )
        async for event in stream:  # response.created, …output_text.delta…, response.completed
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "response.completed" and event.response.usage is not None:
                print(f"\n  [{event.response.usage.total_tokens} tokens]\n")

        async with client.responses.stream(model="demo", input="And then?") as helper:
            final = await helper.get_final_response()  # the SDK assembles the Response
        print(final.output_text, f"\n  [status {final.status}]\n")

    chat = AIStream(f"{base_url}/responses", model="demo")  # auto: the responses protocol
    reply = await chat.send("What happens when the connection drops?")
    await chat.aclose()
    print(reply.content, f"\n  [finish_reason={reply.finish_reason}, usage={reply.usage}]")


def main() -> int:
    parser = argparse.ArgumentParser(description="the openai SDK's Responses API against aistream")
    parser.add_argument("--base-url", help="an aistream server's /v1 (default: the demo model)")
    args = parser.parse_args()
    with endpoint_or_demo(args.base_url) as url:  # the demo's is …/api/chat
        base_url = args.base_url or url.removesuffix("/api/chat") + "/v1"
        asyncio.run(run(base_url.rstrip("/")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
