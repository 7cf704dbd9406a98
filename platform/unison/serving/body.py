"""Request bodies at the HTTP edge: which content types are read (415 otherwise) and how many bytes (413).

Two pure ASGI middlewares (not `BaseHTTPMiddleware`: they see the body chunk by chunk, as it arrives):

- `BodyGuard`, in the ingress app: 415 for a body that is not JSON, 413 for one over `max_body_bytes`, from the
  headers before anything is read, else from the running count of the chunks received (a chunked upload has no
  Content-Length). Nothing here buffers the body; FastAPI then holds at most the limit.
- `ReadAhead`, in Serve's HTTP proxy. The proxy forwards a request to a replica at once, then reads the body as
  fast as the client sends it into an unbounded queue, which the replica empties into its own, all of it at each
  pull, without back-pressure (ray/serve/_private/proxy.py `proxy_asgi_receive`; http_util.py `MessageQueue`,
  `ASGIReceiveProxy`). A 256 MiB upload waiting for a busy ingress replica was read whole into the proxy, then
  pushed whole into the replica (both grew by 257-768 MiB) before the ingress counted a byte. `ReadAhead` stops
  reading a body after `limit` bytes, so TCP flow control holds the client; the ingress, whose own limit is at
  most that, answers 413; the request ends and the proxy's HTTP server (uvicorn) discards the rest of the body
  as it arrives.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON = "application/json"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Triton's binary tensor extension of the OIP: a JSON header of this many bytes, then raw tensor bytes.
OIP_BINARY_HEADER = "inference-header-content-length"
DEFAULT_MAX_BODY_BYTES = 4 << 20
# Serve's proxy callback and the proxy's read-ahead, both read from the proxy's environment (deploy/serve.yaml).
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "unison.serving.body:proxy_middlewares"
READ_AHEAD_ENV = "UNISON_PROXY_READ_AHEAD_BYTES"


def content_type_error(method: str, headers: Headers) -> str | None:
    """Why this request's body will not be read, or None. The one place that decides which bodies are accepted:
    JSON only, so that no browser can post here cross-site without a CORS preflight (text/plain, the form
    encodings and a Blob without a type need none)."""
    if method.upper() not in BODY_METHODS:
        return None
    declared = headers.get("content-type", "").strip()
    media = declared.split(";", 1)[0].strip().lower()
    if media == JSON or (media.startswith("application/") and media.endswith("+json")):
        return None
    if media == "application/octet-stream" and OIP_BINARY_HEADER in headers:
        # The OIP binary tensor extension is accepted here once it is implemented.
        return f"the OIP binary tensor extension is not supported: send Content-Type: {JSON}"
    if not media:
        return f"the request has no Content-Type: send Content-Type: {JSON}"
    return f"Content-Type {declared[:100]!r} is not accepted: send Content-Type: {JSON}"


def declared_length(headers: Headers) -> int | None:
    """Content-Length as a number; None when absent (chunked) or malformed (uvicorn refuses that with a 400
    before any app sees it)."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else None


def too_large(limit: int, length: int | None = None) -> str:
    size = "" if length is None else f" of {length} bytes"
    return f"request body{size} exceeds the limit of {limit} bytes"


class BodyTooLarge(Exception):
    """Raised into the app from `receive` once the body passed the limit. The 413 is already sent; the app only
    has to stop, and whatever it answers to the exception is dropped."""


class BodyGuard:
    """415 for a body that is not JSON, 413 for one over `limit()` bytes, each as early as it can be known."""

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit  # read per request: the replica sets its limits after the app is built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit()
        refusal, status = content_type_error(scope["method"], headers), 415
        length = declared_length(headers)
        if refusal is None and length is not None and length > limit:
            refusal, status = too_large(limit, length), 413
        if refusal is not None:  # before reading a byte
            await JSONResponse({"error": refusal}, status_code=status)(scope, receive, send)
            return

        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started and not refused:
                        refused = True
                        await JSONResponse({"error": too_large(limit)}, status_code=413)(scope, receive, send)
                    raise BodyTooLarge(too_large(limit))  # read no further (an app already answering is aborted)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not refused:
                raise


class ReadAhead:
    """Serve's proxy reads at most `limit` bytes of a request body (plus the chunk that crossed it), then stops
    reading until the request ends; see the module's docstring."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            if received > self.limit:
                await asyncio.get_running_loop().create_future()  # never set: cancelled when the request ends
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        await self.app(scope, bounded, send)


def read_ahead_bytes(env: dict[str, str]) -> int | None:
    """The proxy's read-ahead an environment configures; None when it does not install `ReadAhead`."""
    if env.get(PROXY_CALLBACK_ENV) != PROXY_CALLBACK:
        return None
    return int(env.get(READ_AHEAD_ENV, DEFAULT_MAX_BODY_BYTES))


def proxy_middlewares() -> list[Middleware]:
    """Serve's proxy callback (`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`), called once in each proxy. The
    variables come from deploy/serve.yaml's `controller_options`: the proxies inherit the controller's
    environment."""
    return [Middleware(ReadAhead, limit=int(os.environ.get(READ_AHEAD_ENV, DEFAULT_MAX_BODY_BYTES)))]
