"""HTTP/1.1 request-head limits on top of uvicorn's httptools protocol (style rules 10 and 12).

uvicorn's ``HttpToolsProtocol`` bounds neither the request line, nor the header block, nor the time a client
may take to send them: a client can make the gateway buffer an unbounded header (httptools accumulates a
field until it is complete) or hold a connection forever by sending one byte a second (slowloris).
``LimitedHttpToolsProtocol`` adds those bounds and answers them itself, before any application code runs:

==============================================  ==========================================================
condition                                       answer
==============================================  ==========================================================
request-target longer than ``MAX_URL_BYTES``    414 URI Too Long, connection closed
a header field over ``MAX_FIELD_BYTES``         431 Request Header Fields Too Large, connection closed
header fields over ``MAX_HEADER_BYTES`` total   431, connection closed
more than ``MAX_HEADER_FIELDS`` fields          431, connection closed
head not complete ``HEADER_TIMEOUT_S`` after    408 Request Timeout (when a request had begun and nothing
the connection opened / the request began       else is being answered on the connection), then close
HTTP/1.1 without Host, several Host fields, or  400 Bad Request, connection closed (RFC 9112 §3.2)
an invalid Host value
==============================================  ==========================================================

An absolute-form request-target (``GET http://h/p HTTP/1.1``) is served as addressed: its authority replaces
the Host header (RFC 9112 §3.2.2), so ``public_host`` matching and the backend see one host, never two.

Theory of operation (hot-path cost: a few integer comparisons per callback, no timer per request):

* ``on_url`` fires once per received piece of the request-target: the length of the accumulated URL is
  checked there.  ``on_header`` fires once per complete field: its size, the running total and the field
  count are checked there.
* httptools keeps a field that is not complete yet in its own buffer, invisible to us.  ``data_received``
  therefore also counts the raw bytes of a head that is still incomplete after a whole read (``_head_bytes``),
  and rejects past ``MAX_HEAD_BYTES``: memory per connection stays bounded by that plus one socket read.
  A read in which a request begins counts whole only when the parser was between messages at its start
  (the request starts at its first byte); otherwise (the end of a pipelined body precedes it) it is not
  counted: the guard is a lower bound, never a false positive.
* One header timer per connection, armed at ``connection_made`` (a connection that never sends anything is
  dropped too) and, for later requests, only when a read ends with an incomplete head (the usual head
  arrives in one read and never arms a timer).  It is cancelled when the head is complete.
* The keep-alive timer is lazy: uvicorn arms a fresh ``call_later`` after every response and cancels it on the
  next read; here a response only moves a deadline (``_keepalive_deadline``), a read clears it, and at most one
  timer per connection is pending.  When it fires it closes the connection if the deadline has passed, re-arms
  for a later deadline, or does nothing while a request is in progress.  Same observable rule as uvicorn: a
  connection is closed ``timeout_keep_alive`` seconds after its last response unless a byte arrived since.
* A limit breached in a parser callback raises ``_HeadRejected``; httptools turns it into
  ``HttpParserCallbackError`` (with ours as ``__context__``), which ``data_received`` maps to the answer.
  When a previous (pipelined) response is still being written nothing is written in the middle of it: the
  connection is closed once that response is complete.

Graceful shutdown (``shutdown()``, called for every connection when SIGTERM drains the worker, see server.py):

* a request in progress is finished and answered with ``Connection: close`` (uvicorn);
* a request whose head is still arriving was already sent by the client: it is answered too, with
  ``Connection: close``; the header timeout still bounds a client that stalls;
* a connection on which no request has begun yet (just accepted, or drained from the accept backlog by the
  server, its request possibly still unread in the socket buffer) is given ``FIRST_REQUEST_GRACE_S`` for its first
  request to begin; that request is answered with ``Connection: close``, and a connection that sends nothing in
  that time is closed without an answer (it asked nothing);
* an idle keep-alive connection (its last response complete) is closed at once (uvicorn).

The request/response cycle (``_Cycle``) is uvicorn's ``RequestResponseCycle`` made cheaper, with three changes:

* **One write per small response.**  ``http.response.start`` builds the head but holds it back; the first body
  message is written together with it (one ``transport.write``, one syscall: on loopback a write costs as much
  as a page of Python).  If the application awaits something before its first body message, a ``call_soon``
  callback registered with the head writes it at the end of the current event-loop step, so a slow body never
  delays the head by more than that step.  The gateway's own app skips the messages for a response whose body it
  already has (``respond``, found through ``direct_respond(send)``): head and body in one call, no deferred flush.
* **Headers validated in one regular-expression pass** (``_HEAD_LINES``, the same character classes as uvicorn's
  ``HEADER_RE`` / ``HEADER_VALUE_RE``) over the encoded header block instead of two searches per field.
* **Client disconnects cancel the application.**  When the connection is lost before the response is complete,
  the ASGI task is cancelled with the message ``CLIENT_DISCONNECTED`` (uvicorn only flags the cycle and lets
  ``receive`` answer ``http.disconnect``).  The scope advertises this in ``extensions`` (``DISCONNECT_EXTENSION``)
  so the application needs no watcher task of its own; ``receive`` still answers ``http.disconnect`` as before.
"""

from __future__ import annotations

import asyncio
import http
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ..native import lane as native_lane
from ..native.lane import serve as native_serve
from ..transports.http import inject

__all__ = [
    "CLIENT_DISCONNECTED",
    "DISCONNECT_EXTENSION",
    "FIRST_REQUEST_GRACE_S",
    "HEADER_TIMEOUT_S",
    "MAX_FIELD_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_BYTES",
    "MAX_URL_BYTES",
    "MESSAGE_ID_EXTENSION",
    "LimitedHttpToolsProtocol",
    "direct_respond",
]

MAX_URL_BYTES = 8 * 1024
"""Longest request-target (414 beyond).  nginx ``large_client_header_buffers 4 8k`` (a request line must fit
one 8 KiB buffer), Apache ``LimitRequestLine 8190``, RFC 9112 §3 recommends supporting at least 8000 octets."""

MAX_FIELD_BYTES = 16 * 1024
"""Longest single header field, name + value (431 beyond).  Apache ``LimitRequestFieldSize 8190`` and nginx
8 KiB are stricter; Node's whole-head default ``--max-http-header-size`` is 16 KiB.  Large JWTs and cookies
fit."""

MAX_HEADER_BYTES = 32 * 1024
"""All header fields together, names + values (431 beyond).  nginx 4 × 8 KiB buffers; Envoy's
``max_request_headers_kb`` defaults to 60 KiB, Node to 16 KiB: we sit between them."""

MAX_HEADER_FIELDS = 100
"""Most header fields (431 beyond).  Apache ``LimitRequestFields 100``; Envoy ``max_headers_count`` 100."""

MAX_HEAD_BYTES = MAX_URL_BYTES + MAX_HEADER_BYTES + MAX_HEADER_FIELDS * 4 + 1024
"""Raw bytes of an incomplete head (431 beyond): the limits above plus the ``: `` and CRLF of every field and
room for the method, the version and the blank line.  Bounds what httptools may buffer for a field that never
ends."""

HEADER_TIMEOUT_S = 10.0
"""Time allowed from the connection being opened (first request) or a request's first byte (later requests)
to the end of its head (slowloris).  nginx ``client_header_timeout`` 60 s and Apache ``mod_reqtimeout``
``header=20-40`` are laxer; HAProxy's documented ``timeout http-request 10s`` is our figure: a real client
sends its head in one round trip."""

FIRST_REQUEST_GRACE_S = 2.0
"""At graceful shutdown, time left to a connection on which no request has begun for its first request to begin
(then it is closed without an answer).  A client writes its request right after its connect completes (its first
bytes follow the handshake's last ACK); this covers a client that is briefly descheduled, while keeping a
connection that is opened ahead of use (preconnect) from holding the shutdown for the whole header timeout."""

CLIENT_DISCONNECTED = "client disconnected"
"""The message of the ``CancelledError`` the ASGI task receives when its client goes away mid-call."""

DISCONNECT_EXTENSION = "sidecar_gateway.cancel_on_disconnect"
"""Scope extension present when the server cancels the ASGI task on a client disconnect (see above)."""

MESSAGE_ID_EXTENSION = "sidecar_gateway.message_id"
"""Scope extension carrying the message id of a call the native lane handed over (its function already saw it)."""

_EXTENSIONS: dict[str, Any] = {DISCONNECT_EXTENSION: {}}  # shared by every scope: never mutated
_ASGI = {"version": "3.0", "spec_version": "2.3"}  # shared by every scope: never mutated

_CONTENT_TYPE = b"content-type: text/plain; charset=utf-8\r\n"

# uvicorn ``HEADER_RE`` (name) and ``HEADER_VALUE_RE`` (value) as one pattern over the encoded header lines: a
# name has none of uvicorn's forbidden characters (so no ':' and no space), a value no control character but
# HTAB; each line ends with the CRLF we add.  A value carrying CRLF + "name: value" would match as two lines, so
# the block must also have exactly one LF per field.
_HEAD_LINES = re.compile(rb'(?:[^\x00-\x1f\x7f()<>@,;:\[\]={} \t\\"]*: [^\x00-\x08\x0a-\x1f\x7f]*\r\n)*')
_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_METHODS: dict[bytes, str] = {}  # request method bytes → str, filled on first use (a handful of entries)
_MAX_METHODS = 64  # methods are tokens a client may invent: bound the cache


def _plain_response(status: int, text: str) -> bytes:
    """A complete response written by the protocol itself: short plain body, ``Connection: close``."""
    body = text.encode("ascii") + b"\n"
    phrase = http.HTTPStatus(status).phrase.encode("ascii")
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, phrase), _CONTENT_TYPE,
        b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body,
    ])


# Pre-encoded once at import (uvicorn ``STATUS_LINE``).
RESPONSE_URI_TOO_LONG = _plain_response(414, "Request-target too long")
RESPONSE_HEADERS_TOO_LARGE = _plain_response(431, "Request header fields too large")
RESPONSE_TOO_MANY_HEADERS = _plain_response(431, "Too many request header fields")
RESPONSE_HEADER_TIMEOUT = _plain_response(408, "Request header timeout")
RESPONSE_BAD_HOST = _plain_response(400, "Missing, repeated or invalid Host")

_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{1,5})?")
"""RFC 9112 §3.2 / RFC 3986 §3.2.2: ``uri-host [":" port]`` (IP-literal or reg-name; no userinfo, no path)."""


class _HeadRejected(Exception):
    """Raised inside a parser callback to stop parsing; carries the complete response to write."""

    def __init__(self, response: bytes) -> None:
        super().__init__()
        self.response = response


class _MessageEvent:
    """``asyncio.Event`` for the one waiter a cycle has (``receive``); the future is made only when waited on."""

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> None:
        while not self._flag:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None


class _Cycle:
    """One request and its response: uvicorn's ``RequestResponseCycle`` (same ASGI behaviour, same errors) with
    the head held back until the first body message, one-pass header validation and a cancellable task (module
    docstring)."""

    __slots__ = (  # per connection (copied in): default_headers, flow, logger, loop, on_response, transport
        "body",
        "chunked_encoding",
        "default_headers",
        "disconnected",
        "expected_content_length",
        "flow",
        "is_head",
        "keep_alive",
        "logger",
        "loop",
        "message_event",
        "more_body",
        "on_response",
        "pending_head",
        "response_complete",
        "response_started",
        "scope",
        "task",
        "transport",
        "waiting_for_100_continue",
    )

    def __init__(self, protocol: LimitedHttpToolsProtocol, scope: dict[str, Any], keep_alive: bool) -> None:
        self.scope = scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.loop = protocol.loop
        self.logger = protocol.logger
        self.default_headers = protocol.server_state.default_headers
        self.message_event = _MessageEvent(protocol.loop)
        self.on_response: Callable[[], None] = protocol.on_response_complete
        self.task: asyncio.Task[None] | None = None
        self.is_head = scope["method"] == "HEAD"
        # connection state
        self.disconnected = False
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = protocol.expect_100_continue
        # request state
        self.body = bytearray()
        self.more_body = True
        # response state
        self.response_started = False
        self.response_complete = False
        self.chunked_encoding: bool | None = None
        self.expected_content_length = 0
        self.pending_head: bytes | None = None  # encoded head not yet written (module docstring)

    # ASGI exception wrapper (uvicorn ``run_asgi``)
    async def run_asgi(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self.logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self._send_500_response()
            else:
                self._flush_head()
                self.transport.close()
        else:
            if result is not None:
                self.logger.error("ASGI callable should return None, but returned '%s'.", result)
                self._flush_head()
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                self.logger.error("ASGI callable returned without starting response.")
                await self._send_500_response()
            elif not self.response_complete and not self.disconnected:
                self.logger.error("ASGI callable returned without completing response.")
                self._flush_head()
                self.transport.close()
        finally:
            self.on_response = _nothing

    async def _send_500_response(self) -> None:
        await self.send({
            "type": "http.response.start", "status": 500,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
                        (b"connection", b"close")],
        })
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    def _flush_head(self) -> None:
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            if not self.transport.is_closing():
                self.transport.write(head)

    # ASGI interface
    async def send(self, message: dict[str, Any]) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
            self._start(message)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{message['type']}'.")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"Unexpected ASGI message '{message['type']}' sent, after response already completed.")

    def respond(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """A whole response in one step, for the gateway's own app (``direct_respond``): exactly what ``send`` of
        ``http.response.start`` and one last ``http.response.body`` does — same framing, validation and errors —
        without two message dicts, their dispatch and the deferred head flush (−2.5 % of a plain proxied call's
        instructions, bench/instructions.py).  False when it cannot act synchronously (the response already
        started, or writes are paused and ``send`` would wait for the drain): the caller then uses ``send``."""
        if self.response_started or (self.flow.write_paused and not self.disconnected):
            return False
        if not self.disconnected:  # as ``send``: nothing is written for a client that has gone
            self._encode_head(status_code, headers)
            self._body(body, False)
        return True

    def _start(self, message: dict[str, Any]) -> None:
        self._encode_head(message["status"], message.get("headers", ()))
        self.loop.call_soon(self._flush_head)

    def _encode_head(self, status_code: int, headers: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        if self.default_headers:
            headers = self.default_headers + list(headers)
        lines: list[bytes] = []
        append = lines.append
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING_NAMES:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    has_connection_close = True
            append(name + b": " + value + b"\r\n")
        block = b"".join(lines)
        if _HEAD_LINES.fullmatch(block) is None or block.count(b"\n") != len(lines):
            # uvicorn's own per-field checks, errors and order (a search in one field: a value "a\r\nx: b", two
            # valid lines to _HEAD_LINES, is no valid value); the block is never written whatever they say
            for name, value in headers:
                if HEADER_RE.search(name):
                    raise RuntimeError("Invalid HTTP header name.")
                if HEADER_VALUE_RE.search(value):
                    raise RuntimeError("Invalid HTTP header value.")
            raise RuntimeError("Invalid HTTP header.")
        tail = b"\r\n"
        if not self.keep_alive and not has_connection_close:
            tail = b"connection: close\r\n\r\n"
        if self.chunked_encoding is None and not self.is_head and status_code not in (204, 304):
            self.chunked_encoding = True  # neither content-length nor transfer-encoding specified
            tail = b"transfer-encoding: chunked\r\n" + tail
        self.pending_head = STATUS_LINE[status_code] + block + tail

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.is_head:
            self.expected_content_length = 0
            data = b""
        elif self.chunked_encoding:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            data = body
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            data = head + data
        if data:
            self.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body = bytearray()
        return message


def _nothing() -> None:
    return None


def direct_respond(send: Callable[..., Any]) -> Callable[[int, list[tuple[bytes, bytes]], bytes], bool] | None:
    """``_Cycle.respond`` of the cycle behind ``send`` when this protocol serves the app, else None (another ASGI
    server: the app sends messages)."""
    cycle = getattr(send, "__self__", None)
    return cycle.respond if type(cycle) is _Cycle else None


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request-head size, count and time limits and a cheaper request cycle
    (see module docstring).  The per-request parser callbacks are ours; connection management is uvicorn's."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Per-connection state
        self._header_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_deadline = 0.0  # loop time to close an idle connection at; 0: not idle (a read came)
        self._rejected = False  # a limit answer was given: nothing more is parsed on this connection
        self._shutting_down = False  # graceful shutdown began before this connection's request was complete
        # Per-request state
        self._in_head = False  # between on_message_begin and on_headers_complete
        self._begins_in_read = 0  # requests that began during the current data_received
        self._header_bytes = 0  # names + values of the complete fields so far
        self._head_bytes = 0  # raw bytes of reads that ended inside this head (guard, lower bound)
        self._host_fields = 0  # Host header fields seen
        self._host = b""  # the (last) Host value
        self.url = b""
        # The native lane (native/lane.py): the gateway app when it may serve calls here, the call in progress,
        # bytes that arrived during it (served after it, in order), and whether to close once it ends.
        app = config.app
        self._gateway = app if native_lane.enabled() and getattr(app, "serves_native", False) else None
        self._native: Any = None
        self._native_pending = b""
        self._native_close = False
        self._peer = b""
        self._scheme_b = b"http"
        self._next_message_id: str | None = None  # a handed-over call keeps the id its function saw

    # -- connection ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._on_header_timeout)
        if self._gateway is not None:
            self._peer = (self.client[0] if self.client else "").encode("latin-1")
            self._scheme_b = self.scheme.encode("latin-1")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self.connections.discard(self)
        if self._native is not None:
            self._native.client_lost()  # the call ends (499) through _native_done
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.pending_head = None
                task = cycle.task
                if task is not None and not task.done():
                    task.cancel(CLIENT_DISCONNECTED)
            cycle.message_event.set()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def shutdown(self) -> None:
        """Graceful shutdown (SIGTERM; module docstring).  uvicorn closes a connection with no request in progress
        at once.  Here a request whose head is arriving is answered (``Connection: close``) instead of being cut
        (the header timeout still bounds a client that stalls), and a connection on which no request has begun
        yet gets ``FIRST_REQUEST_GRACE_S`` for its first one: its client connected successfully and may have sent
        its request already (still unread in the socket buffer: closing now would reset it).  Idempotent: the
        server calls it when it creates the protocol of a connection drained from the accept backlog (before
        ``connection_made``: this case touches no transport), then again for every connection."""
        if self._native is not None:  # a native call in progress: answered with Connection: close, then closed
            self._native.close_after()
            self._native_close = True
            return
        cycle = self.cycle
        if cycle is None and not self._rejected:
            if not self._shutting_down:
                self._shutting_down = True
                if not self._in_head:
                    self.loop.call_later(FIRST_REQUEST_GRACE_S, self._on_first_request_grace)
            return
        if self._in_head and cycle.response_complete:  # a later request's head is arriving
            self._shutting_down = True
            return
        super().shutdown()

    def _on_first_request_grace(self) -> None:
        """Shutdown: no request began within ``FIRST_REQUEST_GRACE_S``; close (a head that has begun is left to the
        header timeout, a request in progress to its response)."""
        if self.cycle is None and not self._in_head and self._native is None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._keepalive_deadline = 0.0  # a byte arrived: not idle (uvicorn cancels its keep-alive timer here)
        if self._native is not None:  # pipelined behind a native call: parsed once it has ended
            self._native_hold(data)
            return
        app = self._gateway
        cycle = self.cycle
        # Only between messages: a request whose answer is complete may still be sending its body (its bytes are
        # that body, whatever they look like), so the parser must have seen its end (``more_body`` False).
        if app is not None and not self._in_head and not self._shutting_down and (
                cycle is None or (cycle.response_complete and not cycle.more_body)) and not self.pipeline:
            runtime = app.holder._current
            routes = runtime.native if runtime is not None else None
            if routes is not None and app.inflight < runtime.plan.max_inflight:
                taken = native_serve(self, self.transport, data, routes, self._peer, self._scheme_b)
                if taken is not None:
                    self._native = taken
                    app.inflight += 1
                    if self._header_timer is not None:
                        self._cancel_header_timer()
                    return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """The Python lane: ``data`` through httptools and the parser callbacks below."""
        # Between messages at the start of this read: a request beginning in it begins at its first byte.
        cycle = self.cycle
        idle = not self._in_head and (cycle is None or not cycle.more_body)
        self._begins_in_read = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadRejected):
                self._reject(exc.__context__.response)
                return
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        if self._in_head:
            if self._begins_in_read == 0:  # the whole read belongs to this head
                self._head_bytes += len(data)
            elif self._begins_in_read == 1 and idle:  # the head began at the first byte of this read
                self._head_bytes = len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._reject(RESPONSE_HEADERS_TOO_LARGE)
                return
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._on_header_timeout)

    # -- the native lane (native/lane.py, _lane.c) ----------------------------------------------------------

    def _native_hold(self, data: bytes) -> None:
        self._native_pending += data
        if len(self._native_pending) > MAX_HEAD_BYTES:
            self.flow.pause_reading()  # bounded: resumed when the call ends

    def _native_end(self) -> bytes:
        self._native = None
        self._gateway.inflight -= 1  # type: ignore[union-attr]
        pending = self._native_pending
        if pending:
            self._native_pending = b""
            self.flow.resume_reading()
        return pending

    def _native_done(self, endpoint: tuple[Any, ...], method: str, path: str, message_id: str, status: int,
                     elapsed: float, upstream_elapsed: float | None, error: int,
                     function_elapsed: float | None) -> None:
        """A native call ended (``_lane.c`` ``finish``): its metrics and access record, then the connection goes
        on as after any response (``on_response_complete``)."""
        endpoint[12].done(self._gateway.access_log, method, path, message_id, status, elapsed,  # type: ignore[union-attr]
                          upstream_elapsed, error, function_elapsed)
        self._native_next(error == native_lane.E_INVALID)

    def _native_next(self, close: bool = False) -> None:
        """A native call ended and is recorded (by ``_native_done``, or by ``_lane.c`` itself for a plain
        outcome): the connection goes on as after any response (``on_response_complete``), or closes."""
        pending = self._native_end()
        self.server_state.total_requests += 1
        transport = self.transport
        if close or self._native_close:
            transport.close()
            return
        if transport.is_closing():
            return
        if pending:
            self.data_received(pending)
            return
        deadline = self._keepalive_deadline = self.loop.time() + self.timeout_keep_alive
        if self._keepalive_timer is None:
            self._keepalive_timer = self.loop.call_at(deadline, self._on_keepalive_timer)

    def _native_handover(self, request: bytes, message_id: str, result: tuple[Any, ...]) -> None:
        """The native lane called the pre-processor, but the answer is not a plain allow (or the call failed, or no
        backend connection was pooled): the Python lane serves the request with that answer (``http.inject``) and
        the same message id — the function is never called twice."""
        pending = self._native_end()
        inject(message_id, result)
        self._next_message_id = message_id
        if self._native_close:  # shutdown began during the native part: the Python lane answers with close
            self._native_close = False
            self._shutting_down = True
        if not self.transport.is_closing():
            self._feed(request + pending)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._native is not None:
            self._native.resume()

    # -- parser callbacks (uvicorn's, with the limits; the scope is built once the head is complete) ---------

    def on_message_begin(self) -> None:
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._in_head = True
        self._begins_in_read += 1
        self._header_bytes = 0
        self._head_bytes = 0
        self._host_fields = 0
        self._host = b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL_BYTES:
            raise _HeadRejected(RESPONSE_URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._header_bytes += size
        if size > MAX_FIELD_BYTES or self._header_bytes > MAX_HEADER_BYTES:
            raise _HeadRejected(RESPONSE_HEADERS_TOO_LARGE)
        if len(self.headers) >= MAX_HEADER_FIELDS:
            raise _HeadRejected(RESPONSE_TOO_MANY_HEADERS)
        name = name.lower()
        if name == b"host":
            self._host_fields += 1
            self._host = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._header_timer is not None:
            self._cancel_header_timer()
        url = self.url
        if self._host_fields != 1 or url[:1] != b"/" or _HOST.fullmatch(self._host) is None:
            self._settle_host()
            url = self.url
        parser = self.parser
        http_version = parser.get_http_version()
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
            if len(_METHODS) < _MAX_METHODS:
                _METHODS[raw_method] = method
        scope: dict[str, Any] = {
            "type": "http", "asgi": _ASGI, "http_version": http_version, "server": self.server,
            "client": self.client, "scheme": self.scheme, "root_path": self.root_path, "headers": self.headers,
            "state": self.app_state.copy(), "method": method, "extensions": _EXTENSIONS,
        }
        if self._next_message_id is not None:
            scope["extensions"] = {**_EXTENSIONS, MESSAGE_ID_EXTENSION: self._next_message_id}
            self._next_message_id = None
        self.scope = scope  # type: ignore[assignment]
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self.root_path
        if root_path:
            scope["path"] = root_path + path
            scope["raw_path"] = root_path.encode("ascii") + raw_path
        else:
            scope["path"] = path
            scope["raw_path"] = raw_path
        scope["query_string"] = parsed_url.query or b""

        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        existing = self.cycle
        keep_alive = http_version != "1.0" and parser.should_keep_alive() and not self._shutting_down
        self.cycle = cycle = _Cycle(self, scope, keep_alive)
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)  # the standard case
        else:  # pipelined requests queue up
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))  # type: ignore[arg-type]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        task = cycle.task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        # Lazy keep-alive timer (module docstring): move the deadline, arm only if none is pending.
        deadline = self._keepalive_deadline = self.loop.time() + self.timeout_keep_alive
        if self._keepalive_timer is None:
            self._keepalive_timer = self.loop.call_at(deadline, self._on_keepalive_timer)

    def _on_keepalive_timer(self) -> None:
        self._keepalive_timer = None
        deadline = self._keepalive_deadline
        if deadline == 0.0 or self.transport.is_closing():
            return  # a read came since the last response: the next response re-arms
        if self.loop.time() >= deadline:
            self.transport.close()
        else:
            self._keepalive_timer = self.loop.call_at(deadline, self._on_keepalive_timer)

    def _settle_host(self) -> None:
        """RFC 9112 §3.2: exactly one valid ``Host`` (HTTP/1.1), and for an absolute-form request-target the
        target's authority replaces it (§3.2.2) so routing on ``public_host`` sees what the client addressed."""
        if self._host_fields > 1:
            raise _HeadRejected(RESPONSE_BAD_HOST)
        if self.url[:1] not in (b"/", b"*"):  # absolute-form
            try:
                parsed = httptools.parse_url(self.url)
            except httptools.HttpParserInvalidURLError:
                raise _HeadRejected(RESPONSE_BAD_HOST) from None
            host = parsed.host or b""
            if parsed.schema not in (b"http", b"https") or not host or parsed.userinfo:
                raise _HeadRejected(RESPONSE_BAD_HOST)
            authority = b"[" + host + b"]" if b":" in host else host
            if parsed.port is not None:
                authority += b":%d" % parsed.port
            headers = [(k, v) for k, v in self.headers if k != b"host"]
            headers.append((b"host", authority))
            self.headers[:] = headers  # the scope holds this very list
            return
        if self._host_fields == 0:
            if self.parser.get_http_version() == "1.1":
                raise _HeadRejected(RESPONSE_BAD_HOST)
            return
        if _HOST.fullmatch(self._host) is None:
            raise _HeadRejected(RESPONSE_BAD_HOST)

    # -- limit answers -------------------------------------------------------------------------------------

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _response_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _reject(self, response: bytes | None) -> None:
        """Answer ``response`` (if nothing else is being answered) and close; parse nothing more."""
        self._rejected = True
        self._cancel_header_timer()
        if self.transport.is_closing():
            return
        if self._response_in_progress():
            # A pipelined earlier response is still being written: never write into the middle of it.  The
            # connection closes when it is complete (uvicorn closes after a response without keep-alive).
            self.cycle.keep_alive = False
            return
        if response is not None:
            self.transport.write(response)
        self.transport.close()

    def _bad_request(self) -> None:
        """uvicorn's answer to a malformed request, but never written into the middle of a response."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if self._in_head or not cycle.more_body:  # a later, pipelined request is malformed
                self._reject(None)
                return
            if cycle.response_started:  # this request's body is malformed and its answer already started
                self._rejected = True
                self.transport.close()
                return
        self.logger.warning("Invalid HTTP request received.")
        self._rejected = True
        self._cancel_header_timer()
        self.send_400_response("Invalid HTTP request received.")

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._rejected or self.transport.is_closing():
            return
        # 408 only when a request had begun; a connection that sent nothing is closed silently (nginx).
        self._reject(RESPONSE_HEADER_TIMEOUT if self._in_head else None)
