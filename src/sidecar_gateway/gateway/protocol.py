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
* A limit breached in a parser callback raises ``_HeadRejected``; httptools turns it into
  ``HttpParserCallbackError`` (with ours as ``__context__``), which ``data_received`` maps to the answer.
  When a previous (pipelined) response is still being written nothing is written in the middle of it: the
  connection is closed once that response is complete.
"""

from __future__ import annotations

import asyncio
import http
import re
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = [
    "HEADER_TIMEOUT_S",
    "MAX_FIELD_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_HEAD_BYTES",
    "MAX_URL_BYTES",
    "LimitedHttpToolsProtocol",
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

_CONTENT_TYPE = b"content-type: text/plain; charset=utf-8\r\n"


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


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request-head size, count and time limits (see module docstring)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # Per-connection state
        self._header_timer: asyncio.TimerHandle | None = None
        self._rejected = False  # a limit answer was given: nothing more is parsed on this connection
        # Per-request state
        self._in_head = False  # between on_message_begin and on_headers_complete
        self._begins_in_read = 0  # requests that began during the current data_received
        self._header_bytes = 0  # names + values of the complete fields so far
        self._head_bytes = 0  # raw bytes of reads that ended inside this head (guard, lower bound)
        self._host_fields = 0  # Host header fields seen
        self._host = b""  # the (last) Host value

    # -- connection ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._on_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._unset_keepalive_if_required()
        # Between messages at the start of this read: a request beginning in it begins at its first byte.
        idle = not self._in_head and (self.cycle is None or not self.cycle.more_body)
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

    # -- parser callbacks ----------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
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
        # uvicorn's on_header, inlined (one call per field on the hot path)
        name = name.lower()
        if name == b"host":
            self._host_fields += 1
            self._host = value
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_header_timer()
        if self._host_fields != 1 or self.url[:1] != b"/" or _HOST.fullmatch(self._host) is None:
            self._settle_host()
        super().on_headers_complete()

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
