"""The same conversation as in a notebook, where a cell can ``await`` directly.

In Jupyter or IPython the cells would read:

    # In [1]
    from aistream import AIStream
    chat = AIStream("http://127.0.0.1:8000/api/chat")
    chat.on("token", lambda token: print(token, end="", flush=True))

    # In [2]
    reply = await chat.send("Hello! What can you do?")

    # In [3]
    async for token in chat.tokens("Tell me more."):   # the same turn, as an async iterator
        ...

    # In [4]
    reply = chat.send_sync("Blocking works too.")    # safe inside the notebook's running loop

A notebook already runs an event loop; this script gives the cells one with asyncio.run().

    python examples/notebook_style.py             # starts the built-in demo model in-process
    python examples/notebook_style.py --endpoint http://127.0.0.1:8000/api/chat
"""

from __future__ import annotations

import argparse
import asyncio

from _embedded import endpoint_or_demo

from aistream import AIStream


async def cells(endpoint: str) -> None:
    # In [1]
    chat = AIStream(endpoint)
    chat.on("token", lambda token: print(token, end="", flush=True))

    # In [2]
    reply = await chat.send("Hello! What can you do?")
    print(f"\n  -> {reply.finish_reason}, {reply.usage}\n")

    # In [3]: tokens() yields the text deltas; the listener above prints them too, so collect.
    words = [token async for token in chat.tokens("Tell me more.")]
    print(f"\n  -> {len(words)} tokens\n")

    # In [4]: send_sync inside a running loop runs the turn on a worker thread's own loop.
    reply = chat.send_sync("Blocking works too.")
    print(f"\n  -> {reply.finish_reason}; conversation usage: {chat.usage}")

    await chat.aclose()  # a notebook would keep `chat` for the next cell


def main() -> None:
    parser = argparse.ArgumentParser(description="aistream the notebook way, with await")
    parser.add_argument("--endpoint", help="a streaming chat endpoint (default: the demo model)")
    args = parser.parse_args()
    with endpoint_or_demo(args.endpoint) as endpoint:
        asyncio.run(cells(endpoint))


if __name__ == "__main__":
    main()
