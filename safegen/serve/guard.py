"""The ASGI guard in front of every route: framing, body limits, API keys, security headers, metrics.

Why plain ASGI and not a ``@app.middleware("http")`` function: the body limit has to count
bytes as the route reads them (a declared Content-Length says nothing about a chunked body),
which needs the ``receive`` channel itself; and an exception escaping a route has to become
an answer in OpenAI's shape that the metrics see, not Starlette's plain-text 500.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.datastructures import Headers

from safegen.serve.config import ServeConfig
from safegen.serve.errors import ApiError
from safegen.serve.metrics import Metrics

_logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 1024 * 1024  # a JSON body is a prompt and a few numbers
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around an upload
# The page loads its script, style and settings from this server only, shows images as data:
# URLs, posts its form nowhere else, and may not be framed (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
#: Paths that need the key (when keys are configured) besides /v1/*: the schema tells what the API takes.
KEYED_PATHS = ("/openapi.json", "/docs", "/redoc")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _BodyTooLarge(Exception):
    """Raised inside ``receive`` once a body passes its limit; the guard answers 413."""


class Guard:
    """Wraps the app: refuses bad framing and oversized bodies, checks keys, adds headers, counts answers.

    Args:
        app: the ASGI app (FastAPI's middleware stack below this one).
        config: the server's limits and keys.
        metrics: where answers of ``/v1/*`` are counted, by ``endpoint`` (others: ``other``).
        open_paths: ``/v1/*`` paths that stay open without a key (the page's settings).
        endpoints: the ``/v1/*`` paths metrics name one by one.
    """

    def __init__(
        self, app: Any, *, config: ServeConfig, metrics: Metrics, open_paths: Sequence[str], endpoints: Sequence[str]
    ):
        self.app, self.config, self.metrics = app, config, metrics
        self.open_paths, self.endpoints = tuple(open_paths), tuple(endpoints)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        exchange = _Exchange(scope, send)
        try:
            limit = self.body_limit(scope["path"])
            headers = Headers(scope=scope)
            check_framing(headers, limit)
            if self.needs_key(scope["path"]):
                check_key(headers, self.config.api_keys)
        except ApiError as exc:
            # Refused before the body was read: close, so the client cannot make us read (and drop) it.
            await exchange.answer(exc, close=True)
        else:
            await self._run(scope, receive, exchange, limit)
        path = scope["path"]
        if path.startswith("/v1/") and exchange.status is not None:
            endpoint = path if path in self.endpoints else "other"
            self.metrics.observe_request(endpoint, exchange.status, time.perf_counter() - start)

    async def _run(self, scope: dict[str, Any], receive: Receive, exchange: _Exchange, limit: int) -> None:
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not exchange.started:
                    exchange.too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, exchange.send)
        except _BodyTooLarge:
            pass
        except Exception as exc:
            if not exchange.too_large:
                _logger.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
                if not exchange.started:
                    await exchange.answer(ApiError(500, f"internal error ({type(exc).__name__})", type="server_error"))
        if exchange.too_large:
            # The route saw the error raised in receive() and may have answered 400; that answer was held back.
            await exchange.answer(
                ApiError(413, f"the request body exceeds the limit of {limit} bytes", code="body_too_large"),
                close=True,
            )

    def body_limit(self, path: str) -> int:
        return self.config.max_upload_bytes + MULTIPART_SLACK if path == "/v1/captions" else MAX_JSON_BYTES

    def needs_key(self, path: str) -> bool:
        if not self.config.api_keys:
            return False
        return (path.startswith("/v1/") and path not in self.open_paths) or path in KEYED_PATHS


class _Exchange:
    """One request's answer as it passes the guard: adds the security headers, remembers the status."""

    def __init__(self, scope: dict[str, Any], send: Send):
        self.scope, self._send = scope, send
        self.status: int | None = None
        self.started = False  # the app's answer has begun (or ours)
        self.too_large = False  # the body passed its limit: the app's own answer is dropped

    async def send(self, message: dict[str, Any]) -> None:
        if self.too_large and not self.started:
            return
        if message["type"] == "http.response.start":
            self.started, self.status = True, int(message["status"])
            message = {**message, "headers": with_security_headers(message.get("headers", []))}
        await self._send(message)

    async def answer(self, error: ApiError, *, close: bool = False) -> None:
        response = error.response()
        if close:
            response.headers["connection"] = "close"
        self.too_large, self.started = False, False  # let this answer through

        async def no_body() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        await response(self.scope, no_body, self.send)


def with_security_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the security headers a route did not set itself."""
    out = list(headers)
    present = {name.lower() for name, _ in out}
    out += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
    return out


def check_framing(headers: Headers, limit: int) -> None:
    """Refuse ambiguous framing (RFC 9112 6.3: a request smuggling vector) and declared oversize bodies.

    A body without Content-Length (chunked) is allowed: the limit is enforced while reading.
    """
    lengths = headers.getlist("content-length")
    if lengths and headers.getlist("transfer-encoding"):
        raise ApiError(400, "the request has both Content-Length and Transfer-Encoding; send only one")
    if not lengths:
        return
    try:
        size = int(lengths[0])
    except ValueError:
        raise ApiError(400, "Content-Length is not a number") from None
    if size > limit:
        message = f"the request body ({size} bytes) exceeds the limit of {limit} bytes"
        raise ApiError(413, message, code="body_too_large")


def check_key(headers: Headers, keys: Sequence[str]) -> None:
    header = headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    # Compare against every key in constant time, so timing tells nothing about a key.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8", "surrogateescape"))
    if not ok:
        raise ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer KEY'",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
