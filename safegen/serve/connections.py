"""uvicorn's HTTP protocol with read deadlines and a connection cap, against slow or stalled clients.

uvicorn times out idle keep-alive connections only: a client that sends half its headers,
or announces a body and never sends it, holds its connection (and a request task) forever,
and enough of them exhaust the server. Here each connection has a deadline for its headers
(from the moment it opened, or its previous answer ended) and one for its body (from the
moment its headers were in); past either it gets a 408 and is closed. Connections beyond
the cap get a 503 and are closed at once, before any byte is read.

Closing while a client is still sending would make the kernel answer its next bytes with a
reset, which throws away the answer not yet read (the client sees "connection reset", not
the 413 or 408). So a connection closed with body bytes still to come first half-closes
(FIN after the answer) and drops what still arrives for a short while ("lingering close",
as nginx and Apache do), bounded in seconds and bytes.

The protocol subclasses the one uvicorn picked (h11 or httptools) and reads only what both
share: ``self.cycle`` (the request in progress) with its ``more_body`` and
``response_complete`` flags, ``self.connections`` and ``self.transport``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from safegen.serve.guard import SECURITY_HEADERS

_logger = logging.getLogger(__name__)

LINGER_S = 2.0  # how long a closing connection drops what its client still sends
LINGER_BYTES = 4 * 1024 * 1024  # ... and how much of it, at most


def raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 answer in OpenAI's error shape that closes the connection."""
    body = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}}).encode()
    lines = [f"HTTP/1.1 {status} {reason}".encode(), b"content-type: application/json"]
    lines += [f"content-length: {len(body)}".encode(), b"connection: close"]
    lines += [name + b": " + value for name, value in SECURITY_HEADERS]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _Deadlines:
    """Mixed in before uvicorn's protocol class; see the module docstring."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 128
    _tick: asyncio.TimerHandle | None = None
    _linger: asyncio.TimerHandle | None = None
    _lingering = False
    _linger_left = LINGER_BYTES

    def connection_made(self, transport: Any) -> None:
        self._real = transport
        super().connection_made(_SoftClosingTransport(transport, self))  # type: ignore[misc]
        if len(self.connections) > self.max_connections:  # type: ignore[attr-defined]
            _logger.warning("refused a connection: %d open (--max-connections)", len(self.connections) - 1)
            transport.write(raw_response(503, "Service Unavailable", "too many connections; retry shortly", "busy"))
            self.close_softly(force=True)  # its request may already be on the way
            return
        self._phase: tuple[str, Any] | None = None
        self._since = 0.0
        self._tick = self.loop.call_later(self._interval(), self._check)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._tick, self._linger):
            if timer is not None:
                timer.cancel()
        self._tick = self._linger = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._lingering:  # the answer is out: drop the rest, within the budget
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self._real.close()
            return
        super().data_received(data)  # type: ignore[misc]

    def close_softly(self, force: bool = False) -> None:
        """Close; if the client may still be sending (``force``, or a body not read), linger first."""
        if self._lingering:
            return
        cycle = self.cycle  # type: ignore[attr-defined]
        body_pending = cycle is not None and cycle.more_body and not getattr(cycle, "disconnected", False)
        if not (force or body_pending) or not self._real.can_write_eof():
            self._real.close()
            return
        self._lingering = True
        self._real.write_eof()  # sent after the buffered answer: the client reads it, then EOF
        self._real.resume_reading()  # flow control may have paused reading a large body
        self._linger = self.loop.call_later(LINGER_S, self._real.close)  # type: ignore[attr-defined]

    def _interval(self) -> float:
        # Checked a few times per deadline; a timer per connection costs nothing at these rates.
        return min(1.0, max(0.05, min(self.header_timeout, self.body_timeout) / 4))

    def _current_phase(self) -> tuple[str, Any]:
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete:
            return ("headers", cycle)  # waiting for (the rest of) the next request's headers
        if cycle.more_body:
            return ("body", cycle)
        return ("answer", cycle)  # the app has the request; --timeout bounds it

    def _check(self) -> None:
        self._tick = None
        transport = self.transport  # type: ignore[attr-defined]
        if transport is None or transport.is_closing():
            return
        now = self.loop.time()  # type: ignore[attr-defined]
        phase = self._current_phase()
        if self._phase is None or phase[0] != self._phase[0] or phase[1] is not self._phase[1]:
            self._phase, self._since = phase, now
        limit = {"headers": self.header_timeout, "body": self.body_timeout}.get(phase[0])
        if limit is not None and now - self._since > limit:
            self._expire(phase)
            return
        self._tick = self.loop.call_later(self._interval(), self._check)  # type: ignore[attr-defined]

    def _expire(self, phase: tuple[str, Any]) -> None:
        name, cycle = phase
        limit = self.header_timeout if name == "headers" else self.body_timeout
        _logger.warning("closed a connection that sent no complete request %s in %g s", name, limit)
        if cycle is None or cycle.response_complete or not getattr(cycle, "response_started", False):
            message = f"the request {name} did not arrive within {limit:g} s"
            self._real.write(raw_response(408, "Request Timeout", message, "request_timeout"))
        self.close_softly(force=True)


class _SoftClosingTransport:
    """The transport uvicorn is given: the same, except that ``close`` lingers (see the module docstring)."""

    def __init__(self, transport: Any, protocol: _Deadlines):
        self._transport, self._protocol = transport, protocol

    def close(self) -> None:
        self._protocol.close_softly()

    def is_closing(self) -> bool:
        return self._protocol._lingering or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocol_class(header_timeout: float, body_timeout: float, max_connections: int, base: type | None = None) -> type:
    """uvicorn's HTTP protocol class (``base``; default: the one uvicorn would pick) with deadlines and a cap."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol  # the serve extra: imported when a server starts

        base = AutoHTTPProtocol
    attrs = {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections}
    return type(f"Safegen{base.__name__}", (_Deadlines, base), attrs)
