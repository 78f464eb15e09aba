"""Event listeners: token, usage, retry and message (plus streaming-start / streaming-end).

Plain functions run at once, in order; coroutine functions run as tasks that finish before
``send()`` returns. A listener that raises is logged and never breaks the stream. `retry`
fires when an attempt fails and will be retried; run ``aistream demo`` to watch a dropped
connection resume without repeating a token.

    python examples/on_token.py                   # starts the built-in demo model in-process
    python examples/on_token.py --endpoint http://127.0.0.1:8000/api/chat
"""

from __future__ import annotations

import argparse
import asyncio

from _embedded import endpoint_or_demo

from aistream import AIStream, Message, RetryConfig, RetryEvent, Usage


async def converse(endpoint: str) -> None:
    chat = AIStream(endpoint, retry=RetryConfig(max_retries=5, initial_delay=0.5))
    saved: list[Message] = []

    @chat.on("message")
    def on_message(message: Message) -> None:  # the user's message, then the complete reply
        if message.role == "user":
            print(f"you: {message.content}")
        else:
            print(f"  [message] {len(message.content)} characters, {message.finish_reason}")

    @chat.on("streaming-start")
    def on_start() -> None:
        print("assistant: ", end="", flush=True)

    @chat.on("token")
    def on_token(token: str) -> None:
        print(token, end="", flush=True)

    @chat.on("usage")
    def on_usage(usage: Usage) -> None:  # the conversation's totals, whenever they change
        print(f"\n  [usage] conversation so far: {usage.total_tokens} tokens")

    @chat.on("retry")
    def on_retry(event: RetryEvent) -> None:
        how = "resuming" if event.resume else "restarting the reply"
        print(f"\n  [retry {event.attempt} in {event.delay:.2f} s, {how}] {event.error}")

    @chat.on("streaming-end")
    def on_end() -> None:
        print("  [streaming-end]\n")

    @chat.on("message")
    async def save(message: Message) -> None:  # a coroutine listener, e.g. writing to a store
        await asyncio.sleep(0)
        saved.append(message)

    for question in ("Hello! What can you do?", "How does resuming a stream work?"):
        await chat.send(question)
    print(f"totals: {chat.usage}; the async listener saved {len(saved)} messages")
    await chat.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description="aistream event listeners")
    parser.add_argument("--endpoint", help="a streaming chat endpoint (default: the demo model)")
    args = parser.parse_args()
    with endpoint_or_demo(args.endpoint) as endpoint:
        asyncio.run(converse(endpoint))


if __name__ == "__main__":
    main()
