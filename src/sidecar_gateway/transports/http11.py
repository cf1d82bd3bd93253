"""One HTTP/1.1 client connection on ``httptools``: request encoding, response parsing, flow control.

Rules of this file (h11 ``_state.py`` style):

* It knows one connection and one exchange at a time; it never decides whether a connection is reused.  That is
  the pool's job (``fastpool.py``), which asks the predicates ``is_idle``, ``has_expired``, ``is_closed`` and
  ``is_reusable`` and calls ``close``.
* Everything that can be computed without a socket is a pure function here (``split_url``,
  ``encode_request_head``, ``encode_chunk``) and is tested with literal byte strings.
* The exchange state is one enum, ``ExchangeState``; body framing is another, ``Framing``.  No loose booleans
  stand in for either.
* Errors leave this file as ``ConnectError`` (nothing was exchanged: refused, DNS, TLS handshake) or
  ``ReadError`` (the exchange broke after the request was possibly sent: reset, premature EOF, malformed or
  oversized answer), the two families of httpcore ``_exceptions.py``.  ``PeerClosedError`` is the ``ReadError``
  of a connection the server closed (FIN) or reset during an exchange, as opposed to a malformed answer or a
  failure on our side (the request body's source): only it is evidence of the stale keep-alive race.  Misuse by
  our own code (a header with CR/LF, a body that contradicts its Content-Length header) is a ``ValueError``
  raised before any byte is written.

Theory of operation.  ``connect`` opens a transport with ``loop.create_connection`` and an ``Http11Connection``
protocol (no streams: one less layer of buffering and futures).  ``start_request`` writes the whole request head
(and a bytes body) in one ``transport.write``; a streamed body is written by ``send_body_stream``, which the
client runs as a task next to ``receive_head`` so that a server answering (or echoing) before it has read the
whole body cannot deadlock us.  Each response gets a fresh ``httptools.HttpResponseParser`` whose callbacks
collect the head and queue body chunks; reading pauses above ``READ_HIGH_WATER`` buffered bytes and resumes
when the reader drains the queue (Envoy ``ChunkQueue`` watermarks).  Writing honours ``pause_writing`` /
``resume_writing`` (uvicorn ``flow_control.py``).

Idle time.  A pooled connection is worth a request while it has been idle less than ``idle_limit``: our own
``KEEPALIVE_TIMEOUT_S``, or less when a response announced the server's (``Keep-Alive: timeout=N``, RFC 2068
§19.7.1.1, sent by Apache, Node.js, Jetty): then ``N - KEEPALIVE_MARGIN_S``, so that we stop reusing the
connection before the server is entitled to close it (a request crossing that close in flight fails).  The
header is looked at only when present (its name is in the set ``on_header`` already tests), so its absence costs
nothing per request; the last announcement on a connection holds for it.
"""

from __future__ import annotations

import asyncio
import enum
import re
import ssl
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable
from typing import NamedTuple

import httptools

__all__ = [
    "CONNECT_TIMEOUT_S",
    "KEEPALIVE_MARGIN_S",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_HEADER_COUNT",
    "MAX_HEAD_BYTES",
    "READ_HIGH_WATER",
    "ConnectError",
    "ExchangeState",
    "Framing",
    "Http11Connection",
    "Origin",
    "PeerClosedError",
    "ReadError",
    "RequestHead",
    "TransportError",
    "connect",
    "encode_chunk",
    "encode_request_head",
    "split_url",
]

# Bounds (style rule 12).
CONNECT_TIMEOUT_S = 10.0  # a TCP/TLS connect never waits longer, whatever the caller's deadline (curl: 300, Envoy: 5)
KEEPALIVE_TIMEOUT_S = 30.0  # idle pooled connections are closed after this (nginx keepalive_timeout 60, Envoy 1h)
KEEPALIVE_MARGIN_S = 1.0  # ``Keep-Alive: timeout=N``: no reuse after N - this idle (RTT and the server's timer slack)
MAX_HEAD_BYTES = 64 * 1024  # status line + headers of one response (Envoy max_response_headers_kb 60; h11 16 KiB)
MAX_HEADER_COUNT = 100  # response header lines (Envoy max_headers_count 100; Apache LimitRequestFields 100)
READ_HIGH_WATER = 256 * 1024  # buffered body bytes before pause_reading (Envoy ChunkQueue: resume below half)
READ_LOW_WATER = READ_HIGH_WATER // 2
COALESCE_BODY_MAX = 64 * 1024  # bytes bodies up to this go out in the head's write (one syscall; copy is cheap)
URL_CACHE_SIZE = 1024  # parsed authorities, and split URLs, kept (backend origins come from configuration)
NAME_CACHE_SIZE = 1024  # request header names known to be valid (``_known_names``)
URL_CACHED_MAX_CHARS = 2048  # longer URLs are split every time (bounds the URL cache to a few MiB)

# uvicorn httptools_impl HEADER_RE / HEADER_VALUE_RE: names are RFC 9110 tokens; values carry no control
# characters but HTAB (RFC 9110 §5.5: CR, LF and NUL are never allowed).
_HEADER_NAME_BAD = re.compile(rb'[\x00-\x20\x7f-\xff()<>@,;:\[\]={}\\"/?]').search
_HEADER_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search
_TOKEN_BAD = _HEADER_NAME_BAD  # a method is a token too
# Both checks above as one pattern over the encoded header lines (one regex call per request, not two per field):
# a name is a non-empty run of allowed characters (so no ':' and no space), a value has no control character but
# HTAB, every line ends with the CRLF we add.  A value carrying CRLF + "name: value" would still match as two
# lines, so the caller also checks that the block has exactly one LF per field written.
_HEADER_LINES = re.compile(
    rb'(?:[^\x00-\x20\x7f-\xff()<>@,;:\[\]={}\\"/?]+: [^\x00-\x08\x0a-\x1f\x7f]*\r\n)*').fullmatch
_FRAMING_NAMES = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})
# Header names known to be tokens and not in _FRAMING_NAMES in any case (names repeat from request to request):
# membership replaces both ``name.lower()`` and the name check.  Bounded: cleared when it reaches NAME_CACHE_SIZE
# (names come from clients; an attacker inventing names costs one clear per NAME_CACHE_SIZE of them).
_known_names: set[bytes] = set()
# The value check as one translate and one count over the encoded lines: every byte a value must not carry
# (_HEADER_VALUE_BAD: controls but HTAB, and DEL) becomes LF.  Token names and ": " carry none of them, each line
# ends with the CR LF we add, so the block has exactly 2 LF per field after translation iff no value has one.
_VALUE_BAD_TO_LF = bytes(10 if _HEADER_VALUE_BAD(bytes([i])) else i for i in range(256))
_SEQUENCES = (list, tuple)
# Response fields ``on_header`` looks at (framing and connection management); any other costs one set lookup.
_RESPONSE_FRAMING_NAMES = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})
_KEEPALIVE_TIMEOUT = re.compile(rb'(?:^|[\s,;])timeout\s*=\s*"?(\d{1,9})', re.I).search  # RFC 2068 §19.7.1.1
_TARGET_BAD = re.compile(r"[\x00-\x20\x7f-\U0010ffff]").search  # the URL arrives percent-encoded: ASCII only
_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)", re.S)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # aiohttp/requests send Content-Length: 0 when bodiless
_LINE_END = b"\r\n"
_CHUNKED_END = b"0\r\n\r\n"
_TE_CHUNKED = b"transfer-encoding: chunked\r\n"
_CL_ZERO = b"content-length: 0\r\n"


class TransportError(Exception):
    """Base of the errors this client raises."""


class ConnectError(TransportError):
    """No connection could be made (refused, DNS, TLS handshake): the request never reached the server."""


class ReadError(TransportError):
    """The connection broke or the answer was malformed after the request was (possibly) sent."""


class PeerClosedError(ReadError):
    """The server closed (FIN) or reset the connection in the middle of an exchange."""


def _read_error(message: str, cause: BaseException | None = None) -> ReadError:
    err = ReadError(message)
    err.__cause__ = cause
    return err


class Origin(NamedTuple):
    """The pool key: connections are shared only between requests to the same scheme, host and port."""

    scheme: str
    host: str  # IPv6 literals without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class ExchangeState(enum.Enum):
    """Where the connection's current exchange is."""

    IDLE = "idle"  # no request in flight: fresh, or pooled between requests
    AWAIT_HEAD = "await-head"  # the request head was written; the response status line and headers are awaited
    BODY = "body"  # the response head was delivered; body bytes are arriving
    COMPLETE = "complete"  # the response ended; the connection waits to be released or closed
    CLOSED = "closed"  # the exchange broke (``error`` says why) or the connection was closed; never reused


class Framing(enum.Enum):
    """How the response body is delimited (RFC 9112 §6.3)."""

    NONE = "none"  # HEAD, 1xx, 204, 304: no body whatever the headers say
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    UNTIL_CLOSE = "until-close"  # neither: the body ends when the server closes; never reusable


# Enum member access costs ~0.2 µs on CPython 3.11 (a descriptor call through the metaclass): the per-request code
# below reads these module-level aliases instead (same objects, so ``is`` comparisons are unchanged).
_IDLE = ExchangeState.IDLE
_AWAIT_HEAD = ExchangeState.AWAIT_HEAD
_BODY = ExchangeState.BODY
_COMPLETE = ExchangeState.COMPLETE
_CLOSED = ExchangeState.CLOSED
_NO_BODY = Framing.NONE
_LENGTH = Framing.LENGTH
_CHUNKED = Framing.CHUNKED
_UNTIL_CLOSE = Framing.UNTIL_CLOSE


# --------------------------------------------------------------------------------------------- pure functions

_authorities: dict[tuple[str, str], tuple[Origin, bytes]] = {}
# Whole URLs already split (function URLs always repeat, backend paths often): one dict lookup instead of ~2 µs of
# regex and checks.  Only successes are stored, so a bad URL raises its ValueError every time; the entries are
# immutable tuples of immutable values.  Bounded like ``_authorities``: cleared when full (a workload of unique URLs
# pays one insert per request and a clear per ``URL_CACHE_SIZE`` of them).
_urls: dict[str, tuple[Origin, bytes, bytes]] = {}


def split_url(url: str) -> tuple[Origin, bytes, bytes]:
    """``url`` (absolute, already percent-encoded) → (origin, request target, default Host header value)."""
    split = _urls.get(url)
    if split is None:
        split = _split_url(url)
        if len(url) <= URL_CACHED_MAX_CHARS:
            if len(_urls) >= URL_CACHE_SIZE:
                _urls.clear()
            _urls[url] = split
    return split


def _split_url(url: str) -> tuple[Origin, bytes, bytes]:
    m = _URL_RE.match(url)
    if m is None:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    scheme, authority, target = m.groups()
    key = (scheme, authority)
    cached = _authorities.get(key)
    if cached is None:
        cached = _parse_authority(scheme.lower(), authority)
        if len(_authorities) >= URL_CACHE_SIZE:
            _authorities.clear()
        _authorities[key] = cached
    if not target:
        target = "/"
    elif target[0] == "?":
        target = "/" + target
    if _TARGET_BAD(target):
        raise ValueError(f"request target has characters that must be percent-encoded: {target!r}")
    return cached[0], target.encode("ascii"), cached[1]


def _parse_authority(scheme: str, authority: str) -> tuple[Origin, bytes]:
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {scheme!r}")
    if "@" in authority:
        raise ValueError("credentials in the URL are not supported")
    host, port_text = authority, ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"bad IPv6 literal in {authority!r}")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest:
            if rest[0] != ":":
                raise ValueError(f"bad authority {authority!r}")
            port_text = rest[1:]
    elif ":" in authority:
        host, _, port_text = authority.rpartition(":")
    if not host or _TARGET_BAD(host) or any(c in host for c in "/?#[]"):
        raise ValueError(f"bad host in {authority!r}")
    default = _DEFAULT_PORTS[scheme]
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port in {authority!r}")
        port = int(port_text)
    else:
        port = default
    host = host.lower()
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port), host_header.encode("ascii")


class RequestHead(NamedTuple):
    """An encoded request head and the framing the body must follow."""

    data: bytes
    content_length: int | None  # a streamed body must be exactly this long; None with ``chunked``
    chunked: bool
    keep_alive: bool  # False when the caller sent ``Connection: close``


_methods: dict[str, bytes] = {}
_new_tuple = tuple.__new__


def encode_request_head(method: str, target: bytes, headers: Iterable[tuple[bytes, bytes]], host: bytes,
                        body: bytes | None, streamed: bool) -> RequestHead:
    """Validate and encode the request line and headers.

    The caller's ``Host`` is kept (one is added from the URL if absent).  Framing: a bytes body gets
    ``Content-Length`` (the caller's must agree); a streamed body keeps the caller's ``Content-Length`` (the
    writer enforces it) or is sent ``chunked``; no body gets ``Content-Length: 0`` for POST/PUT/PATCH.
    Raises ``ValueError`` on control characters or contradictory framing: nothing has been written then.
    """
    line = _methods.get(method)
    if line is None:
        raw = method.encode("ascii")
        if not raw or _TOKEN_BAD(raw):
            raise ValueError(f"bad method {method!r}")
        line = _methods.setdefault(method, raw + b" ")
    if not isinstance(headers, _SEQUENCES):
        headers = list(headers)  # iterated twice when a field is invalid
    fields: list[bytes] = []
    extend = fields.extend
    known = _known_names
    unknown_name = False
    has_host = False
    content_length: bytes | None = None
    transfer_encoding: bytes | None = None
    keep_alive = True
    for name, value in headers:
        if name not in known:  # a framing field, a name not seen yet or not a token (``_known_names``)
            lname = name.lower()
            if lname in _FRAMING_NAMES:
                if lname == b"host":
                    has_host = True
                elif lname == b"content-length":
                    _check_header(name, value)
                    if content_length is not None:
                        _check_headers_before_second_length(headers)  # an invalid field before it is reported first
                        raise ValueError("more than one Content-Length header")
                    content_length = value
                    continue  # written below, once, after validation
                elif lname == b"transfer-encoding":
                    _check_header(name, value)
                    transfer_encoding = value
                    continue
                elif b"close" in value.lower():  # connection
                    keep_alive = False
            elif name and _HEADER_NAME_BAD(name) is None:
                if len(known) >= NAME_CACHE_SIZE:
                    known.clear()
                known.add(name)
            else:
                unknown_name = True  # not a token: ``_HEADER_LINES`` decides below
        extend((name, b": ", value, b"\r\n"))
    block = b"".join(fields)
    count = len(fields) >> 2
    # Plainly valid (every name a token, no value with a control character but HTAB, see _VALUE_BAD_TO_LF) is
    # accepted by ``_HEADER_LINES`` too; anything else gets exactly that rule, then the per-field errors.
    if (unknown_name or block.translate(_VALUE_BAD_TO_LF).count(b"\n") != 2 * count) and (
            _HEADER_LINES(block) is None or block.count(b"\n") != count):  # see _HEADER_LINES
        for name, value in headers:
            _check_header(name, value)
    parts = [line, target, b" HTTP/1.1\r\n", block]
    append = parts.append
    if not has_host:
        append(b"host: %b\r\n" % host)

    length: int | None = None
    chunked = False
    if content_length is not None:
        text = content_length.strip()
        if not text.isdigit():
            raise ValueError(f"invalid Content-Length {content_length!r}")
        length = int(text)
    if streamed:
        if length is not None:
            if transfer_encoding is not None:
                raise ValueError("both Content-Length and Transfer-Encoding given")
            append(b"content-length: %d\r\n" % length)
        else:
            if transfer_encoding is not None and transfer_encoding.strip().lower() != b"chunked":
                raise ValueError(f"unsupported Transfer-Encoding {transfer_encoding!r}")
            chunked = True
            append(_TE_CHUNKED)
    else:
        if transfer_encoding is not None:
            raise ValueError("Transfer-Encoding given with a bytes body")
        size = len(body) if body else 0
        if length is not None and length != size:
            raise ValueError(f"Content-Length {length} disagrees with a {size}-byte body")
        if size or length is not None:
            append(b"content-length: %d\r\n" % size)
        elif method in _BODY_METHODS:
            append(_CL_ZERO)
        length = size
    append(_LINE_END)
    # ``RequestHead(...)`` without the Python-level ``__new__`` that NamedTuple generates (0.3 µs)
    return _new_tuple(RequestHead, (b"".join(parts), length, chunked, keep_alive))


def _check_header(name: bytes, value: bytes) -> None:
    if _HEADER_NAME_BAD(name) or not name:
        raise ValueError(f"invalid header name {name!r}")
    if _HEADER_VALUE_BAD(value):
        raise ValueError(f"invalid value for header {name!r}")


def _check_headers_before_second_length(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Validate the fields before the second ``Content-Length`` (the per-field order of errors)."""
    seen = False
    for name, value in headers:
        if name.lower() == b"content-length":
            if seen:
                return
            seen = True
        _check_header(name, value)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1); empty data would end the body, so the caller skips it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---------------------------------------------------------------------------------------------- the protocol


class _ParseAbort(Exception):
    """Raised inside a parser callback to stop parsing; ``_pending_error`` holds the ReadError to report."""


class Http11Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, driven by the pool: one exchange at a time."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_conn_header_close",
        "_conn_header_keep_alive",
        "_drain_waiter",
        "_error",
        "_framing_hint",
        "_head_bytes",
        "_head_is_head",
        "_head_raw",
        "_interim",
        "_lost",
        "_parser",
        "_pending_error",
        "_read_paused",
        "_request_keep_alive",
        "_transport",
        "_waiter",
        "_write_paused",
        "framing",
        "headers",
        "idle_limit",
        "idle_since",
        "keep_alive",
        "loop",
        "on_lost",
        "origin",
        "request_sent",
        "requests",
        "response_started",
        "state",
        "status",
    )

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        # per connection
        self.origin = origin
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self.requests = 0
        self.idle_since = loop.time()
        self.idle_limit = KEEPALIVE_TIMEOUT_S  # lowered by ``Keep-Alive: timeout=N`` (see the module docstring)
        self.on_lost: Callable[[Http11Connection], None] | None = None  # the pool's hook for idle losses
        self._lost = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._read_paused = False
        # per exchange
        self.state = _IDLE
        self._parser: httptools.HttpResponseParser | None = None
        self._error: ReadError | None = None
        self._pending_error: ReadError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._reset_exchange(False, True)

    def _reset_exchange(self, is_head: bool, request_keep_alive: bool) -> None:
        self._head_is_head = is_head
        self._request_keep_alive = request_keep_alive
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.framing = _NO_BODY
        self.keep_alive = False
        self.request_sent = False
        self.response_started = False
        self._interim = False
        self._head_bytes = 0
        self._head_raw = 0
        self._framing_hint = _UNTIL_CLOSE
        self._conn_header_close = False
        self._conn_header_keep_alive = False

    # ------------------------------------------------------------------------------------------ predicates

    @property
    def is_closed(self) -> bool:
        return self._lost or self.state is _CLOSED

    @property
    def is_idle(self) -> bool:
        return self.state is _IDLE and not self._lost

    def has_expired(self, now: float) -> bool:
        """Idle for ``idle_limit`` (``KEEPALIVE_TIMEOUT_S`` or the server's announced timeout less a margin) or
        longer, or already closed: not worth a request."""
        state = self.state  # ``is_closed`` inline: asked for every pooled connection handed out
        return self._lost or state is _CLOSED or (state is _IDLE and now - self.idle_since >= self.idle_limit)

    @property
    def body_drained(self) -> bool:
        """The response ended and every body byte was handed to the reader."""
        return self.state is _COMPLETE and not self._buffer

    @property
    def is_reusable(self) -> bool:
        """The response ended cleanly, both sides agreed to keep the connection, the request went out whole."""
        return (self.state is _COMPLETE and self.keep_alive and self.request_sent
                and not self._lost and self._transport is not None and not self._transport.is_closing())

    # ---------------------------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        state = self.state
        if state is _BODY and self.framing is _UNTIL_CLOSE and exc is None:
            self.state = _COMPLETE  # a read-until-close body ends here (RFC 9112 §6.3 rule 8)
            self.keep_alive = False
        elif state is _AWAIT_HEAD or state is _BODY:
            what = "before the response head" if state is _AWAIT_HEAD else "mid-body"
            detail = f": {exc}" if exc else ""
            err = PeerClosedError(f"connection to {self.origin} closed {what}{detail}")
            err.__cause__ = exc
            self._fail(err)
        elif state is _IDLE:
            self.state = _CLOSED
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self)

    def eof_received(self) -> None:
        return None  # let the transport close; connection_lost decides what the EOF meant

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is _AWAIT_HEAD or state is _BODY:
            self.response_started = True
            try:
                self._parser.feed_data(data)  # type: ignore[union-attr]
            except httptools.HttpParserCallbackError as exc:
                self._fail(self._pending_error or _read_error(f"malformed response from {self.origin}", exc))
                return
            except httptools.HttpParserUpgrade as exc:
                self._fail(_read_error(f"{self.origin} switched protocols; upgrades are not supported", exc))
                return
            except httptools.HttpParserError as exc:
                self._fail(_read_error(f"malformed response from {self.origin}: {exc}", exc))
                return
            if self.state is _AWAIT_HEAD:
                self._head_raw += len(data)  # bounds an unfinished head, whose lines httptools accumulates
                if self._head_raw > MAX_HEAD_BYTES:
                    self._fail(_read_error(f"response head from {self.origin} exceeds {MAX_HEAD_BYTES} bytes"))
        elif state is _COMPLETE:
            self.keep_alive = False  # bytes after the end of the response: the framing is not to be trusted
        elif state is _IDLE:
            self.close()  # unsolicited bytes on an idle connection (RFC 9112 §9.3.2): never reuse it

    # ---------------------------------------------------------------------------------- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state is not _AWAIT_HEAD:
            return  # a second message after the response: data_received marks the connection unusable
        headers = self.headers  # this head's fields so far: its length counts them
        size = self._head_bytes = self._head_bytes + len(name) + len(value) + 4
        if len(headers) >= MAX_HEADER_COUNT or size > MAX_HEAD_BYTES:
            if len(headers) >= MAX_HEADER_COUNT:
                self._pending_error = _read_error(
                    f"response from {self.origin} has more than {MAX_HEADER_COUNT} headers")
            else:
                self._pending_error = _read_error(f"response head from {self.origin} exceeds {MAX_HEAD_BYTES} bytes")
            raise _ParseAbort
        lname = name.lower()
        headers.append((lname, value))
        if lname not in _RESPONSE_FRAMING_NAMES:
            return
        if lname == b"content-length":
            self._framing_hint = _LENGTH
        elif lname == b"transfer-encoding":
            if value.lower().rstrip().endswith(b"chunked"):
                self._framing_hint = _CHUNKED
        elif lname == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                self._conn_header_close = True
            elif b"keep-alive" in tokens:
                self._conn_header_keep_alive = True
        else:  # keep-alive
            match = _KEEPALIVE_TIMEOUT(value)
            if match is not None:
                self.idle_limit = max(0.0, min(KEEPALIVE_TIMEOUT_S, int(match.group(1)) - KEEPALIVE_MARGIN_S))

    def on_headers_complete(self) -> None:
        if self.state is not _AWAIT_HEAD:
            self.keep_alive = False
            return
        parser = self._parser
        status = parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:
            if status == 101:
                self._pending_error = _read_error(f"{self.origin} answered 101; upgrades are not supported")
                raise _ParseAbort
            self._interim = True  # 1xx (RFC 9110 §15.2): skip it, the final response follows
            self.headers = []
            self._framing_hint = _UNTIL_CLOSE
            self._conn_header_close = self._conn_header_keep_alive = False
            return
        self.status = status
        # HTTP/1.0 keeps the connection only with a ``keep-alive`` token, later versions unless ``close``.  The
        # version string costs 0.5 µs (a str.format in httptools), so it is asked only when nothing else decides:
        # llhttp's own verdict is True only for a minor version > 0 or with a keep-alive token (llhttp
        # ``llhttp_should_keep_alive``), and either way the answer is not a bare HTTP/1.0 one.
        if self._conn_header_close:
            keep_alive = False
        elif self._conn_header_keep_alive or parser.should_keep_alive():  # type: ignore[union-attr]
            keep_alive = True
        else:
            keep_alive = parser.get_http_version() != "1.0"  # type: ignore[union-attr]
        if self._head_is_head or status == 204 or status == 304:
            framing = _NO_BODY
        else:
            framing = self._framing_hint
            if framing is _UNTIL_CLOSE:
                keep_alive = False
        self.framing = framing
        self.keep_alive = keep_alive and self._request_keep_alive
        self.state = _COMPLETE if framing is _NO_BODY else _BODY
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.state is not _BODY:
            self.keep_alive = False  # e.g. a HEAD answer with a body: do not trust this connection again
            return
        self._buffer.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.state is _BODY:
            self.state = _COMPLETE
            self._wake()

    # --------------------------------------------------------------------------------------- the exchange

    def start_request(self, head: RequestHead, body: bytes | None, is_head: bool) -> None:
        """Write the request head (and a bytes body) and expect a response."""
        self._reset_exchange(is_head, head.keep_alive)
        self._parser = httptools.HttpResponseParser(self)
        self._error = self._pending_error = None
        self._buffer.clear()
        self._buffered = 0
        self.requests += 1
        self.state = _AWAIT_HEAD
        transport = self._transport
        assert transport is not None  # the pool only hands out connected connections
        if body:
            if len(body) <= COALESCE_BODY_MAX:
                transport.write(head.data + body)
            else:
                transport.write(head.data)
                transport.write(body)
        else:
            transport.write(head.data)
        self.request_sent = True

    def start_streamed_request(self, head: RequestHead, is_head: bool) -> None:
        """Write the request head only; ``send_body_stream`` follows."""
        self.start_request(head, None, is_head)
        self.request_sent = False

    async def send_body_stream(self, body: AsyncIterable[bytes], head: RequestHead) -> None:
        """Write a streamed body (chunked, or exactly ``head.content_length`` bytes).  Never raises but
        ``CancelledError``: a failure (including one from the body iterator) breaks the exchange, which the
        reader sees as ``ReadError``."""
        transport = self._transport
        assert transport is not None
        expected = head.content_length
        sent = 0
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if self._lost or self.state is _CLOSED:
                    raise _read_error(f"connection to {self.origin} closed while sending the request body")
                if head.chunked:
                    transport.write(encode_chunk(chunk))
                else:
                    sent += len(chunk)
                    if expected is not None and sent > expected:
                        raise _read_error(f"request body longer than its Content-Length {expected}")
                    transport.write(chunk)
                if self._write_paused:
                    await self._drain()
            if head.chunked:
                transport.write(_CHUNKED_END)
            elif expected is not None and sent != expected:
                raise _read_error(f"request body ended after {sent} of its Content-Length {expected} bytes")
            self.request_sent = True
        except asyncio.CancelledError:
            raise
        except ReadError as exc:
            self._fail(exc)
        except Exception as exc:  # the body iterator failed (client gone, body too large): the exchange is broken
            self._fail(_read_error(f"request body failed: {exc!r}", exc))

    async def _drain(self) -> None:
        while self._write_paused and not self._lost:
            waiter = self._drain_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._drain_waiter = None

    async def receive_head(self) -> None:
        """Wait for the final response head; ``status`` and ``headers`` are then set."""
        while self.status == 0:
            if self._error is not None:
                raise self._error
            if self.state is not _AWAIT_HEAD:
                raise _read_error(f"connection to {self.origin} is closed")
            waiter = self._waiter = self.loop.create_future()  # set by _wake (one coroutine level less than a helper)
            try:
                await waiter
            finally:
                self._waiter = None

    def read_body_ready(self) -> bytes | None:
        """What ``read_body_chunk`` returns when it need not wait (everything buffered so far, or ``b""`` at the
        end of the body), else None.  A plain call: the reader's fast path, no coroutine."""
        buffer = self._buffer
        if buffer:
            data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
            buffer.clear()
            self._buffered = 0
            if self._read_paused:
                self._read_paused = False
                if self._transport is not None:
                    self._transport.resume_reading()
            return data
        if self.state is _COMPLETE:
            return b""
        return None

    def read_whole_ready(self) -> bytes | None:
        """The whole body when all of it has arrived (the usual small body that comes with its head), handed out at
        once; None, with nothing consumed, while some of it is still to come."""
        return self.read_body_ready() if self.state is _COMPLETE else None

    async def read_body_chunk(self) -> bytes:
        """The next piece of the body (everything buffered so far); ``b""`` at its end."""
        while True:
            data = self.read_body_ready()
            if data is not None:
                return data
            state = self.state
            error = self._error
            if error is not None:  # a new instance of the same class: each reader gets its own traceback
                fresh = type(error)(str(error))
                fresh.__cause__ = error.__cause__
                raise fresh
            if state is not _BODY:
                raise _read_error(f"no response body in progress on {self.origin}")
            waiter = self._waiter = self.loop.create_future()  # set by on_body and _wake
            try:
                await waiter
            finally:
                self._waiter = None

    def finish(self) -> None:
        """The response was consumed and the pool keeps the connection: back to idle."""
        self.state = _IDLE
        self._parser = None
        self.idle_since = self.loop.time()

    def close(self) -> None:
        """Drop the connection now (abort: unsent and unread bytes are discarded)."""
        if self.state is not _COMPLETE:
            if self.state is not _CLOSED and self._error is None:
                self._error = _read_error(f"connection to {self.origin} was closed")
            self.state = _CLOSED
        self.keep_alive = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        self._wake()

    # -------------------------------------------------------------------------------------------- helpers

    def _fail(self, error: ReadError) -> None:
        if self.state is _COMPLETE or self._error is not None:
            if self.state is _COMPLETE:
                self.keep_alive = False
            return
        self._error = error
        self.state = _CLOSED
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __repr__(self) -> str:
        return (f"<Http11Connection {self.origin} state={self.state.name} requests={self.requests}"
                f"{' lost' if self._lost else ''}>")


async def connect(loop: asyncio.AbstractEventLoop, origin: Origin, ssl_context: ssl.SSLContext | None,
                  timeout_s: float = CONNECT_TIMEOUT_S) -> Http11Connection:
    """Open a connection to ``origin``; TLS (SNI = host, certificates verified by ``ssl_context``) for https."""
    conn = Http11Connection(origin, loop)
    tls = ssl_context if origin.scheme == "https" else None
    try:
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(lambda: conn, origin.host, origin.port, ssl=tls,
                                         server_hostname=origin.host if tls is not None else None)
    except TimeoutError as exc:
        raise ConnectError(f"connect to {origin} timed out after {timeout_s:g}s") from exc
    except (OSError, ssl.SSLError, ssl.CertificateError) as exc:  # refused, DNS (gaierror), TLS handshake
        raise ConnectError(f"cannot connect to {origin}: {exc}") from exc
    return conn
