"""A FastAPI app that serves a browser chat page and mounts aistream.server under /ai.

The page POSTs the conversation to ``/ai/api/chat`` and reads the native event stream with
fetch(); if the connection drops it POSTs again with ``Last-Event-ID`` and the server replays
only what was missed. Send is disabled while a reply streams; Stop sends
``DELETE /ai/api/chat/<stream-id>`` and the partial reply stays. With no upstream it is the
built-in demo model (no key, no network).

Who may chat: `authenticate=` (it runs inside the mounted app, so it protects it; FastAPI
dependencies on the outer app would not). A browser gets a session cookie from the page
(HttpOnly, SameSite=Strict); a program sends one of the keys in ``$CHAT_API_KEYS`` as
``Authorization: Bearer <key>``. Each session or key is its own principal: its streams are its
own, and the limits and policy below count per principal.

    pip install 'aistream[server]' fastapi
    cd examples && uvicorn fastapi_relay:app --port 8000      # then open http://127.0.0.1:8000
    python examples/fastapi_relay.py                          # the same, without the uvicorn CLI
    AISTREAM_UPSTREAM=https://api.openai.com/v1 AISTREAM_MODEL=gpt-4o-mini OPENAI_API_KEY=... \\
        uvicorn fastapi_relay:app                             # relay a real model
    python examples/fastapi_relay.py --check                  # one request, then exit
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from aistream import AIStream
from aistream.server import Limits, Policy, Principal, create_app

SESSION_COOKIE = "aistream_session"

PAGE = """<!doctype html>
<meta charset="utf-8"><title>aistream</title><link rel="icon" href="data:,">
<style>body{font:16px system-ui;max-width:40em;margin:2em auto} .usage{color:#888}</style>
<div id="log"></div>
<form id="form"><input id="text" size="50" autofocus>
<button id="send">Send</button> <button id="stop" type="button" disabled>Stop</button></form>
<script>
const messages = [];
const log = document.getElementById("log");
const [input, send, stop] = ["text", "send", "stop"].map((id) => document.getElementById(id));
let streamId = null, stopped = false, aborter = null;
stop.onclick = async () => {  // DELETE cancels the generation; its stream then ends "stopped"
  stopped = true;
  stop.disabled = true;
  if (streamId) await fetch("/ai/api/chat/" + encodeURIComponent(streamId), {method: "DELETE"});
  else if (aborter) aborter.abort();  // no stream id yet: just leave
};
document.getElementById("form").onsubmit = async (event) => {
  event.preventDefault();
  if (send.disabled || !input.value.trim()) return;  // one reply at a time
  send.disabled = true; stop.disabled = false; streamId = null; stopped = false;
  messages.push({role: "user", content: input.value});
  log.insertAdjacentHTML("beforeend", "<p><b>you:</b> </p><p></p><p class=usage></p>");
  const [you, reply, usage] = [...log.querySelectorAll("p")].slice(-3);
  you.append(input.value);  // model and user text go in as text, never as HTML
  input.value = "";
  let lastId = null, text = "", done = false;
  for (let attempt = 0; !done && !stopped && attempt < 5; attempt++) {
    if (attempt) await new Promise((wake) => setTimeout(wake, 500 * attempt));
    const headers = {"Content-Type": "application/json"};
    if (lastId) headers["Last-Event-ID"] = lastId;  // resume: the server replays the rest
    try {
      aborter = new AbortController();
      const response = await fetch("/ai/api/chat", {method: "POST", headers,
        body: JSON.stringify({messages, stream: true}), signal: aborter.signal});
      if (!response.ok) { usage.textContent = await response.text(); break; }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done: end} = await reader.read();
        if (end) break;
        buffer += value.replace(/\\r\\n?/g, "\\n");
        let cut;
        while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
          const event = {name: "message", data: ""};
          for (const line of buffer.slice(0, cut).split("\\n")) {
            const [key, ...rest] = line.split(":");
            const value = rest.join(":").replace(/^ /, "");
            if (key === "event") event.name = value;
            else if (key === "data") event.data += value;
            else if (key === "id") event.id = value;
          }
          buffer = buffer.slice(cut + 2);
          if (!event.data) continue;
          const data = JSON.parse(event.data);
          if (event.name === "start") streamId = data.id;
          if (event.name === "token") { text += data.token; reply.textContent = text; }
          if (event.name === "usage") usage.textContent = JSON.stringify(data.usage);
          if (event.name === "error") { usage.textContent = "error: " + data.error; done = true; }
          if (event.name === "done") {
            done = true;
            if (data.finishReason === "stopped") usage.textContent += " (stopped)";
          }
          if (event.id) lastId = event.id;
        }
      }
    } catch (error) {
      usage.textContent = stopped ? "(stopped)" : "reconnecting…";
    }
  }
  messages.push({role: "assistant", content: text});  // a stopped reply keeps its part
  send.disabled = false; stop.disabled = true;
  input.focus();
};
</script>
"""


class Sessions:
    """Who may chat: browser sessions this app handed out, and the keys of $CHAT_API_KEYS."""

    def __init__(self, api_keys: list[str]) -> None:
        self.sessions: set[str] = set()
        self.api_keys = set(api_keys)

    def new(self) -> str:
        session = secrets.token_urlsafe(24)
        self.sessions.add(session)
        return session

    def authenticate(self, request: Request) -> Principal | None:
        """The `authenticate=` hook: a Starlette Request in, a Principal (or None: 401) out."""
        session = request.cookies.get(SESSION_COOKIE, "")
        if session in self.sessions:
            return Principal(id="session-" + hashlib.sha256(session.encode()).hexdigest()[:16])
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.api_keys:
            return Principal(id="key-" + hashlib.sha256(token.encode()).hexdigest()[:16])
        return None


def build_app(
    upstream: str | None = None, model: str | None = None, api_keys: list[str] | None = None
) -> tuple[FastAPI, Sessions]:
    """The page at ``/`` and the streaming endpoint at ``/ai/api/chat``."""
    sessions = Sessions(api_keys or [])
    chat_app = create_app(
        upstream=upstream,
        api_key=os.environ.get("OPENAI_API_KEY"),
        model=model,
        authenticate=sessions.authenticate,
        allowed_hosts=["127.0.0.1", "localhost"],
        limits=Limits(requests_per_minute=60, concurrent_streams=2),
        policy=Policy(max_tokens=1024),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A mounted app's own lifespan does not run: enter it here so that shutdown cancels
        # the generations still running.
        async with chat_app.router.lifespan_context(chat_app):
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/ai", chat_app)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        response = HTMLResponse(PAGE)
        response.set_cookie(SESSION_COOKIE, sessions.new(), httponly=True, samesite="strict")
        return response

    return app, sessions


def _api_keys() -> list[str]:
    return [k for k in os.environ.get("CHAT_API_KEYS", "").split(",") if k]


#: What ``uvicorn fastapi_relay:app`` serves: the demo model, or $AISTREAM_UPSTREAM; callers
#: are the page's own sessions and the bearer keys in $CHAT_API_KEYS.
app, _sessions = build_app(
    os.environ.get("AISTREAM_UPSTREAM") or None, os.environ.get("AISTREAM_MODEL"), _api_keys()
)


def check(app: FastAPI) -> None:
    """Serve `app` briefly and send one message through the mounted endpoint."""
    from _embedded import serve_in_thread

    with serve_in_thread(app) as url:
        anonymous = httpx.post(f"{url}/ai/api/chat", json={"messages": []})
        print(f"without credentials: {anonymous.status_code} {anonymous.json()['code']}")
        key = os.environ["CHAT_API_KEYS"].split(",")[0]
        chat = AIStream(f"{url}/ai/api/chat", headers={"Authorization": f"Bearer {key}"})
        reply = chat.send_sync("Hello from the FastAPI example!")
        print(reply.content)
        print(f"ok: {reply.finish_reason}, {reply.usage}")


def main() -> None:
    parser = argparse.ArgumentParser(description="FastAPI + aistream.server for a browser")
    parser.add_argument(
        "--upstream",
        default=os.environ.get("AISTREAM_UPSTREAM"),
        help="OpenAI-compatible base URL (default: $AISTREAM_UPSTREAM, else the demo model)",
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("AISTREAM_MODEL"),
        help="upstream model name (default: $AISTREAM_MODEL)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--check", action="store_true", help="send one message, then exit")
    args = parser.parse_args()
    if args.check:
        os.environ.setdefault("CHAT_API_KEYS", secrets.token_urlsafe(24))
    served, _ = build_app(args.upstream or None, args.model, _api_keys())
    if args.check:
        check(served)
    else:
        print(f"open http://127.0.0.1:{args.port}")
        uvicorn.run(served, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
