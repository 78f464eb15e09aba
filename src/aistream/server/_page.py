"""The chat page of ``aistream serve``: one self-contained HTML file, served at ``/``.

The page (``chat.html`` beside this module) has no build step and loads nothing from elsewhere.
It streams from ``api/chat`` beside it, resumes with ``Last-Event-ID``, stops with ``DELETE``
and renders model text as text nodes (see the page's own comments).

`with_chat_page` puts it in front of an app made by `create_app`, *outside* that app's guard:
the page is the same static bytes for everyone and carries no data, so it needs no
credentials; every request it makes goes to the guarded app, and on a 401 the page asks for a
key. A Content-Security-Policy with the hashes of the page's one script and one style lets
nothing else run or load, even if a renderer bug let model text become markup.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["chat_page", "with_chat_page"]


@cache
def chat_page() -> tuple[bytes, str]:
    """The page's bytes and the Content-Security-Policy that admits exactly its code."""
    html = resources.files(__package__).joinpath("chat.html").read_text(encoding="utf-8")
    hashes = {
        tag: [
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        ]
        for tag in ("script", "style")
    }
    policy = (
        "default-src 'none'; "
        f"script-src {' '.join(hashes['script'])}; "
        f"style-src {' '.join(hashes['style'])}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode(), policy


def with_chat_page(app: ASGIApp) -> ASGIApp:
    """`app` with the chat page answering ``GET /`` (and ``HEAD /``) in front of it."""
    page, policy = chat_page()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(page)).encode()),
        (b"content-security-policy", policy.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/"
            or scope["method"] not in ("GET", "HEAD")
        ):
            await app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else page
        await send({"type": "http.response.body", "body": body})

    return serve
