"""A tool loop: the model calls two Python functions, AIStream runs them and streams the answer.

python examples/tools.py                  # the built-in demo model (it calls the tools you name)
python examples/tools.py --endpoint https://api.openai.com/v1/chat/completions --model gpt-4o-mini
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Literal

from _embedded import endpoint_or_demo

from aistream import AIStream, AIStreamError


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, object]:
    """Current weather for a city.

    Args:
        city: The city's name.
        unit: The temperature unit.
    """
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


async def get_time(city: str) -> str:
    """The local time in a city (a coroutine tool: it runs on the event loop).

    Args:
        city: The city's name.
    """
    await asyncio.sleep(0)
    return f"It is 12:00 in {city}."


async def conversation(endpoint: str, model: str | None) -> None:
    headers = {}
    if os.environ.get("OPENAI_API_KEY") and "openai.com" in endpoint:
        headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
    async with AIStream(
        endpoint, model=model, headers=headers, tools=[get_weather, get_time], max_steps=4
    ) as chat:
        chat.on("tool-call", lambda c: print(f"  -> {c.name}({c.arguments})"))
        chat.on("tool-result", lambda r: print(f"  <- {r.name}: {r.content}"))
        chat.on("token", lambda t: print(t, end="", flush=True))

        question = "Use get_weather and get_time for Paris, then tell me what to wear."
        print(f"you> {question}")
        reply = await chat.send(question)
        print(f"\n  finish_reason={reply.finish_reason}, usage totals={chat.usage}\n")

        for message in chat.messages:  # the history you own: user, assistant(calls), tool, ...
            calls = ", ".join(c.name for c in message.tool_calls)
            extra = f" calls={calls}" if calls else ""
            extra += f" answers={message.tool_call_id}" if message.tool_call_id else ""
            print(f"  [{message.role}]{extra} {message.content[:60]!r}")
        print(f"\n  saved history: {len(json.dumps(chat.dump()))} bytes of JSON")


def main() -> int:
    parser = argparse.ArgumentParser(description="a two-tool loop")
    parser.add_argument("--endpoint", help="a streaming chat endpoint (default: the demo model)")
    parser.add_argument("--model", help="model name (for a real provider)")
    args = parser.parse_args()
    with endpoint_or_demo(args.endpoint) as endpoint:
        try:
            asyncio.run(conversation(endpoint, args.model))
        except AIStreamError as exc:
            print(f"error: {exc}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
