"""send_sync in a plain script: a blocking call per turn, no asyncio in sight.

python examples/script.py                 # starts the built-in demo model in-process
python examples/script.py --endpoint http://127.0.0.1:8000/api/chat
"""

from __future__ import annotations

import argparse

from _embedded import endpoint_or_demo

from aistream import AIStream, AIStreamError


def main() -> int:
    parser = argparse.ArgumentParser(description="send_sync in a plain script")
    parser.add_argument("--endpoint", help="a streaming chat endpoint (default: the demo model)")
    args = parser.parse_args()

    with endpoint_or_demo(args.endpoint) as endpoint:
        chat = AIStream(endpoint, system_prompt="You are a concise assistant.")
        try:
            reply = chat.send_sync("Hello! What can you do?")  # blocks until the reply is done
            print(reply.content)
            print(f"  finish_reason={reply.finish_reason}, usage={reply.usage}\n")

            reply = chat.send_sync("And what happens when the connection drops?")
            print(reply.content)
            print(f"  finish_reason={reply.finish_reason}, usage={reply.usage}\n")
        except AIStreamError as exc:  # every aistream failure, with a message saying what to do
            print(f"error: {exc}")
            return 1

        print(f"{len(chat.messages)} messages; conversation usage: {chat.usage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
