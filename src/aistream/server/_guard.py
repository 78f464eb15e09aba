"""Who may call the app: hosts, origins, authentication, loopback-only, content types, rates.

Imports starlette (requests, headers, JSON responses) and `_limits`. `Guard` is the app's own
ASGI middleware, so it applies however the app is served: by uvicorn, or mounted inside a
FastAPI app (whose dependencies do not reach a mounted app). In request order:

0. ``GET /healthz`` is answered as is: load balancers and probes may use any Host.
1. ``allowed_hosts``: a ``Host`` not on the list is 400 (DNS rebinding: a page on an attacker's
   name that resolves to 127.0.0.1 must not reach a local server holding a key).
2. CORS: preflights are answered here, before authentication; an origin in ``allow_origins``
   gets the ``Access-Control-Allow-*`` headers, any other gets none (a preflight: 403).
3. Every route but ``/healthz`` (open, for probes) calls ``authenticate`` (None or a raise: 401).
   With no authenticator and an upstream, only loopback callers are served (403 otherwise);
   a request carrying ``Forwarded`` / ``X-Forwarded-For`` is never loopback.
4. ``Limits.requests_per_minute`` per principal (429 with ``Retry-After``).

(A POST body must be ``application/json``: the app checks that where it reads a body.)
The principal is left in the ASGI scope (`principal_of` reads it) for ownership and limits.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._limits import RateLimiter

__all__ = [
    "ANONYMOUS",
    "Authenticate",
    "Guard",
    "Principal",
    "error_response",
    "key_authenticator",
    "principal_of",
    "route_path",
]

log = logging.getLogger("aistream.server")

_SCOPE_KEY: Final = "aistream.principal"
_CORS_METHODS: Final = "GET, POST, DELETE"
_CORS_HEADERS: Final = "Authorization, Content-Type, Last-Event-ID, x-vercel-ai-ui-message-stream"
_CORS_MAX_AGE: Final = "600"
_PROXY_HEADERS: Final = ("forwarded", "x-forwarded-for", "x-real-ip")
_OPENAI_TYPES: Final = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: streams belong to it, and limits count per principal.

    Attributes:
        id: A stable identifier (a user id, a key's hash); never a secret, it may be logged.
        scopes: What your own backend may check; aistream does not read them.

    ```py
    Principal(id="user-42", scopes=frozenset({"chat"}))
    ```
    """

    id: str
    scopes: frozenset[str] = frozenset()


#: The principal of a caller an app without authentication serves (loopback or allowed).
ANONYMOUS: Final = Principal(id="")

#: `authenticate=`: gets the Starlette Request, returns the caller's Principal or None (401).
Authenticate = Callable[[Request], Principal | Awaitable[Principal | None] | None]


def key_authenticator(api_keys: Iterable[str]) -> Callable[[Request], Principal | None]:
    """`authenticate` for ``api_keys=``: ``Authorization: Bearer <key>``, one principal per key.

    A principal's id is ``key-`` and 16 hex digits of the key's SHA-256: stable, loggable, and
    not the key. Keys are looked up by their digest, so no comparison leaks a key's prefix.

    Raises:
        ValueError: no keys, or a key that is empty or holds whitespace.
    """
    principals: dict[bytes, Principal] = {}
    for key in api_keys:
        if not isinstance(key, str) or not key or key != key.strip() or " " in key:
            raise ValueError(
                "each api_keys entry must be a non-empty string without spaces "
                "(the token callers send as 'Authorization: Bearer <key>')"
            )
        digest = hashlib.sha256(key.encode()).digest()
        principals[digest] = Principal(id=f"key-{digest.hex()[:16]}")
    if not principals:
        raise ValueError("api_keys is empty: nobody could call the app; give at least one key")

    def authenticate(request: Request) -> Principal | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return principals.get(hashlib.sha256(token.strip().encode()).digest())

    return authenticate


def principal_of(request: Request) -> Principal:
    """The principal `Guard` admitted this request as (`ANONYMOUS` outside a Guard)."""
    principal = request.scope.get(_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def route_path(scope: Scope) -> str:
    """The path inside this app (a mounted app's scope also holds its mount prefix)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retryable: bool = False,
    headers: Mapping[str, str] | None = None,
    openai: bool = False,
) -> JSONResponse:
    """An HTTP error in the project's shape; OpenAI's shape for ``/v1/...``."""
    body: dict[str, Any]
    if openai:
        kind = _OPENAI_TYPES.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "code": code, "retryable": retryable}}
    else:
        body = {"error": message, "code": code, "retryable": retryable}
    return JSONResponse(body, status_code=status, headers=headers)


def _host_name(host: str) -> str:
    """The name of a Host header value, without its port (``[::1]:80`` → ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _host_allowed(name: str, allowed: Sequence[str]) -> bool:
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _is_loopback(scope: Scope, headers: Headers) -> bool:
    if any(name in headers for name in _PROXY_HEADERS):
        return False  # a proxy on this host relays someone else: not a local caller
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0]).partition("%")[0]).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware that admits a request or answers it with a JSON error (module doc).

    Args:
        app: The routes.
        authenticate: Request → Principal or None (sync or async); None: no authentication.
        local_only: Without `authenticate`, serve loopback callers only.
        allowed_hosts: Host names accepted (``*.example.com``, ``*``); None: any.
        allow_origins: Origins granted CORS (``*``: any, without credentials); None: none.
        rate: Per-principal request rate limiter, or None.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate | None,
        local_only: bool,
        allowed_hosts: Sequence[str] | None,
        allow_origins: Sequence[str] | None,
        rate: RateLimiter | None,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.local_only = local_only
        self.allowed_hosts = (
            None if allowed_hosts is None else [_host_name(h) for h in allowed_hosts]
        )
        self.allow_origins = None if allow_origins is None else list(allow_origins)
        self.rate = rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = route_path(scope)
        openai = path.startswith("/v1/")

        def refuse(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
            return error_response(status, code, message, openai=openai, **extra)

        if path == "/healthz" and scope["method"] in ("GET", "HEAD"):
            # open to load balancers and probes, which may use any address as Host; it
            # tells nobody anything but "ok" and a count
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = _host_name(headers.get("host", ""))
            if not host or not _host_allowed(host, self.allowed_hosts):
                await refuse(
                    400,
                    "host_not_allowed",
                    f"the Host header {host[:100]!r} is not one this server answers to "
                    "(allowed_hosts); use the server's own address",
                )(scope, receive, send)
                return
        origin = headers.get("origin")
        granted = origin is not None and self._origin_allowed(origin)
        if (
            origin is not None
            and scope["method"] == "OPTIONS"
            and "access-control-request-method" in headers
        ):
            await self._preflight(origin, granted, openai)(scope, receive, send)
            return
        if granted:
            assert origin is not None
            send = self._with_cors(send, origin)
        principal, refusal = await self._admit(scope, headers, refuse)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if self.rate is not None:
            wait = self.rate.hit(principal.id)
            if wait is not None:
                await refuse(
                    429,
                    "rate_limited",
                    f"too many requests: the limit is {self.rate.per_minute} a minute "
                    f"(requests_per_minute); retry in {wait} s",
                    retryable=True,
                    headers={"Retry-After": str(wait)},
                )(scope, receive, send)
                return
        scope[_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    async def _admit(
        self, scope: Scope, headers: Headers, refuse: Callable[..., JSONResponse]
    ) -> tuple[Principal, JSONResponse | None]:
        if self.authenticate is None:
            if self.local_only and not _is_loopback(scope, headers):
                return ANONYMOUS, refuse(
                    403,
                    "local_only",
                    "this server relays to a model with its operator's key and, having no "
                    "authentication configured, serves callers on this machine only; the "
                    "operator can pass authenticate= or api_keys= to create_app "
                    "(or --api-key-file to aistream serve)",
                )
            return ANONYMOUS, None
        try:
            result = self.authenticate(Request(scope))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.warning("authenticate raised %s; answering 401", type(exc).__name__)
            result = None
        if not isinstance(result, Principal):
            return ANONYMOUS, refuse(
                401,
                "unauthenticated",
                "this server needs credentials: send 'Authorization: Bearer <your key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return result, None

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.allow_origins
        return allowed is not None and ("*" in allowed or origin in allowed)

    def _cors_headers(self, origin: str) -> dict[str, str]:
        if self.allow_origins is not None and "*" in self.allow_origins:
            return {"Access-Control-Allow-Origin": "*"}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    def _preflight(self, origin: str, granted: bool, openai: bool) -> Response:
        if not granted:
            return error_response(
                403,
                "origin_not_allowed",
                f"cross-origin requests from {origin[:100]!r} are not allowed "
                "(allow_origins); serve the page from this server's origin, or ask its "
                "operator to allow yours",
                openai=openai,
            )
        headers = {
            **self._cors_headers(origin),
            "Access-Control-Allow-Methods": _CORS_METHODS,
            "Access-Control-Allow-Headers": _CORS_HEADERS,
            "Access-Control-Max-Age": _CORS_MAX_AGE,
        }
        return Response(status_code=204, headers=headers)

    def _with_cors(self, send: Send, origin: str) -> Send:
        extra = {
            **self._cors_headers(origin),
            "Access-Control-Expose-Headers": "Retry-After",
        }

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if name == "Vary":
                        headers.add_vary_header(value)
                    else:
                        headers[name] = value
            await send(message)

        return send_with_cors
