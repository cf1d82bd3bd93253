"""Differential test of the native lane (``SIDECAR_GATEWAY_NATIVE``) against the pure-Python lane.

The gateway is started twice as a real subprocess with the same configuration: once with
``SIDECAR_GATEWAY_NATIVE=0`` (the Python lane) and once with ``SIDECAR_GATEWAY_NATIVE=1`` (the native lane when
the extension is built; until then the Python lane again, which validates the recorder and the normaliser).
Both talk to the same raw asyncio backend written here, which records the exact bytes of every request head it
receives and answers by a script chosen from the last segment of the path (``SCRIPTS``).  The same corpus of
raw requests (``CORPUS``) is sent to both gateways over raw keep-alive sockets, one request per write and each
answered before the next is sent (the native lane takes only a request that arrives whole in one read with
nothing pipelined after it).

Compared between the lanes, request by request:

* what the backend received: request line and header lines in order, names and values byte for byte, and any
  body (each ``x-mashery-message-id`` value replaced by a placeholder; the values themselves must be canonical
  lower-case v4 UUIDs, one per client call: different between calls, the same on a resend of one call);
* what the client received: status line, header lines in order, the body bytes with their framing (chunk sizes
  and terminator), and whether the gateway closed the connection after it (``x-mashery-message-id`` values
  replaced if any appear; the backend sends no ``Date``, and the gateway adds none).

Every corpus entry also states the status both lanes must answer, so two lanes broken the same way do not pass.
``NATIVE`` entries are those the native lane must serve (eligible request shape on an eligible endpoint),
``FALLBACK`` entries those it must leave to the Python lane, ``EITHER`` entries those the contract leaves open
(no endpoint, no method match, header values the lane may refuse as not plain).  The increase of
``sidecar_gateway_native_requests_total`` on /metrics is read after every request and checked against these
once the native lane exports it (xfail until then).

Pre-processor endpoints (``PRE_CORPUS``, ``PRE_ENDPOINTS``): http-stack pre-processors whose input depends on the
call only through the message id, so the native lane makes the function's call itself.  The function is a raw
asyncio server written here too (``RawFunction``): it records each invocation's bytes and the connection it came
on, and answers by a script chosen from the last segment of the function URL's path (``FN_SCRIPTS``: plain allows
of every shape, terminate, modify, 500, ``X-Amz-Function-Error``, malformed, hang-up, slower than the processor's
``timeout`` with and without ``failSafe``...).  Their backend is listener 1 of the raw backend, another origin, so
that the lane's backend pool for them is cold at a known point.  Compared besides: what the function received
(request line, header lines in order, body, the call's message id replaced), that it was called exactly once per
client call in each lane, that its X-Mashery-Message-ID is the input's ``masheryMessageId`` and the backend's, and
the sidecar metrics after the whole corpus (``SIDECAR_SAMPLES``).  ``TAKEN`` entries are calls the lane takes and
whose function it calls, but which it answers as a terminate or hands to the Python lane with the function's
answer; ``Req.counted`` states the counter's increase where it is fixed, and which lane called the function is
told by the connection its call came on.

Reproducing a failure by hand: ``RawBackend().start()``, ``RawFunction().start()`` and ``run_corpus`` work
outside pytest; ``client_view``, ``backend_view`` and ``function_view`` are what the tests compare.  The raw client
(``RawConnection``, ``Answer``) and the recording server the backend and the function build on (``RawServer``,
``Received``) are in tests/support/native_wire.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.gateway_proc import ACTIVE_KEY, GatewayProcess, config, endpoint, service, session
from support.native_wire import Answer, RawConnection, RawServer, Received

NATIVE_ENV = "SIDECAR_GATEWAY_NATIVE"
NATIVE_METRIC = "sidecar_gateway_native_requests_total"
# The name the gateway's own metric convention gives it (gateway_requests_total, ...): either is accepted.
NATIVE_METRICS = frozenset({NATIVE_METRIC, "gateway_native_requests_total"})
HOST = "api.example.test"  # the same Host in both runs (X-Forwarded-Host carries it to the backend)
UUID4 = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
MESSAGE_ID_LINE = re.compile(rb"(?im)^(x-mashery-message-id[ \t]*:[ \t]*)([^\r\n]*)")
PLACEHOLDER = b"<message-id>"

NATIVE, FALLBACK, EITHER = "native", "fallback", "either"
# The native lane takes the call and makes the pre-processor's call itself, but the answer is not a plain allow (or
# the call failed or timed out, or no backend connection was pooled): the lane answers the client itself (a terminate)
# or hands the call to the Python lane with the function's answer; ``Req.counted`` says which where it is fixed.
TAKEN = "taken"


# ---------------------------------------------------------------------------------------------------------------
# The raw backend: exact bytes in, scripted bytes out
# ---------------------------------------------------------------------------------------------------------------

BIG = bytes(range(256)) * 1200  # 300 KiB, sent in several writes
BIG_PIECE = 64 * 1024
CHUNK_GAP_S = 0.05  # between the chunks of /chunked: each arrives alone, so the gateway's chunking is deterministic


def _cl(status_line: bytes, headers: list[bytes], body: bytes) -> bytes:
    head = status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


# Last path segment → the whole answer, written at once (``reset``, ``slow``, ``chunked``, ``big``: see _answer;
# any other segment: DEFAULT).  No script sends a Date header.
SCRIPTS: dict[str, bytes] = {
    "cl": _cl(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain; charset=utf-8", b"X-Backend: cl",
                                   b"Set-Cookie: a=1; Path=/", b"Set-Cookie: b=2; Path=/", b"Cache-Control: no-store",
                                   b"X-Empty:", b"X-Spaces:   padded  value  "], b"hello from cl\n"),
    "empty204": b"HTTP/1.1 204 No Content\r\nX-Backend: empty204\r\n\r\n",
    "notmod": b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nCache-Control: max-age=60\r\nX-Backend: notmod\r\n\r\n',
    "hop": _cl(b"HTTP/1.1 200 OK", [b"Connection: x-drop", b"X-Drop: 1", b"Keep-Alive: timeout=5",
                                    b"Proxy-Connection: keep-alive", b"Proxy-Authenticate: Basic realm=x",
                                    b"X-Kept: yes"], b"hop\n"),
    "418": _cl(b"HTTP/1.1 418 I'm a teapot", [b"Content-Type: application/json"], b'{"teapot":true}'),
    "299": _cl(b"HTTP/1.1 299 Custom Reason", [b"Content-Type: text/plain"], b"unregistered status\n"),
    "close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Backend: close\r\nContent-Length: 4\r\n\r\nbye\n",
    "closedelim": b"HTTP/1.1 200 OK\r\nConnection: close\r\nX-Backend: closedelim\r\n\r\nuntil the end\n",
    "malformed": b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    # At the edge of the lane's own response reading (``fast_response``: a whole, strict, Content-Length-framed
    # answer in one read); on either side of it the answer must be the one httptools' reading gives.
    "http10": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nten!\n",
    "http10ka": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nka\n",
    "noreason": b"HTTP/1.1 200 \r\nContent-Length: 3\r\n\r\nnr\n",
    "tabs": _cl(b"HTTP/1.1 200 OK", [b"X-Tab: a\tb", b"X-Colon:a:b", b"X-Lead:\t \tlead"], b"tabs\n"),
    "obstext": _cl(b"HTTP/1.1 200 OK", [b"X-Obs: caf\xe9"], b"obs\n"),
    "lead0": b"HTTP/1.1 200 OK\r\nContent-Length: 0004\r\n\r\nl0!\n",
    "twocl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nab\n",
    "tecl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "upgrade200": _cl(b"HTTP/1.1 200 OK", [b"Connection: upgrade", b"Upgrade: h2c", b"X-Kept: yes"], b"up\n"),
    "fields100": _cl(b"HTTP/1.1 200 OK", [b"X-H%02d: v" % i for i in range(99)], b"100\n"),
    "fields101": _cl(b"HTTP/1.1 200 OK", [b"X-H%03d: v" % i for i in range(100)], b"101\n"),
    "ka1": _cl(b"HTTP/1.1 200 OK", [b"Keep-Alive: timeout=1, max=5"], b"ka1\n"),
}
DEFAULT = _cl(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain", b"X-Backend: default"], b"default answer\n")
CLOSES_AFTER = {"close", "closedelim", "malformed"}  # the backend closes the connection after these answers


def _script_name(head: bytes) -> str:
    """The last segment of the request target's path: it chooses the scripted answer."""
    target = head.split(b" ", 2)[1]
    return target.split(b"?", 1)[0].rsplit(b"/", 1)[-1].decode("latin-1")


class RawBackend(RawServer):
    """The backend.  Listener 0 serves the plain endpoints, listener 1 the pre-processor endpoints (another origin,
    so that the native lane's backend pool for them starts cold at a known point of the corpus)."""

    thread_name = "raw-backend"

    def __init__(self) -> None:
        super().__init__(listeners=2)

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Write the scripted answer; False when the connection is to be closed."""
        is_head = head.startswith(b"HEAD ")
        name = _script_name(head)
        if name == "reset":  # RST without a byte of answer
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if name == "slow":
            await asyncio.sleep(0.3)
            name = "cl"
        if name == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                         b"X-Backend: chunked\r\n\r\n")
            if not is_head:
                for piece in (b"5\r\nhello\r\n", b"7\r\n, world\r\n", b"0\r\n\r\n"):
                    await writer.drain()
                    await asyncio.sleep(CHUNK_GAP_S)
                    writer.write(piece)
            await writer.drain()
            return True
        if name == "splitbody":  # the head and the first body bytes, then the rest: no single read holds it all
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Backend: splitbody\r\n\r\n" +
                         (b"" if is_head else b"split"))
            if not is_head:
                await writer.drain()
                await asyncio.sleep(CHUNK_GAP_S)
                writer.write(b"body\n")
            await writer.drain()
            return True
        if name == "big":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"content-length: %d\r\n\r\n" % len(BIG))
            if not is_head:
                for i in range(0, len(BIG), BIG_PIECE):
                    await writer.drain()
                    await asyncio.sleep(0.01)
                    writer.write(BIG[i:i + BIG_PIECE])
            await writer.drain()
            return True
        data = SCRIPTS.get(name, DEFAULT)
        if is_head and name != "malformed":
            data = data[: data.index(b"\r\n\r\n") + 4]
        writer.write(data)
        await writer.drain()
        return name not in CLOSES_AFTER


# ---------------------------------------------------------------------------------------------------------------
# The raw function server (http stack, contract §8.1): exact bytes in, scripted bytes out
# ---------------------------------------------------------------------------------------------------------------

FN_SPLIT_GAP_S = 0.05
FN_SLOW_S = 1.0  # the "slow" function answers {} after this; the processors calling it have ``timeout: 300`` (ms)
FN_ERROR_BODY = b'{"errorMessage":"boom","errorType":"ValueError","stackTrace":["at x"]}'
_JSON = b"Content-Type: application/json"

# Last segment of the function URL's path → the whole answer (``hangup``: the connection is closed without a byte
# of answer; ``slow``: FN_SCRIPTS["allow"] after FN_SLOW_S; ``split``: FN_SCRIPTS["modify"], its head and its body
# in two writes FN_SPLIT_GAP_S apart).
FN_SCRIPTS: dict[str, bytes] = {
    "allow": _cl(b"HTTP/1.1 200 OK", [_JSON], b"{}"),
    "allow-ws": _cl(b"HTTP/1.1 200 OK", [_JSON], b" \r\n{}\t\n"),
    "allow-empty": _cl(b"HTTP/1.1 200 OK", [_JSON], b""),
    "allow-blank": _cl(b"HTTP/1.1 200 OK", [_JSON], b" \n\t "),
    "allow-chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\n{}\r\n0\r\n\r\n",
    "no-content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\n" + _cl(b"HTTP/1.1 200 OK", [_JSON], b"{}"),
    "allow-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 2\r\n\r\n{}",
    "spaced-braces": _cl(b"HTTP/1.1 200 OK", [_JSON], b"{ }"),
    "accepted": b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
    "terminate": _cl(b"HTTP/1.1 200 OK", [_JSON], b'{"terminate": {"code": 403, "message": "no"}}'),
    "modify": _cl(b"HTTP/1.1 200 OK", [_JSON],
                  b'{"modify": {"addHeaders": {"X-Added": "by-function"}, "dropHeaders": ["x-foo"]}}'),
    "status500": _cl(b"HTTP/1.1 500 Internal Server Error", [b"Content-Type: text/plain"], b"oops"),
    "fn-error": _cl(b"HTTP/1.1 200 OK", [_JSON, b"X-Amz-Function-Error: Unhandled"], FN_ERROR_BODY),
    "null": _cl(b"HTTP/1.1 200 OK", [_JSON], b"null"),
    "garbage": _cl(b"HTTP/1.1 200 OK", [b"Content-Type: text/html"], b"<html>not json"),
    "malformed": b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
}
FN_CLOSES_AFTER = {"allow-close", "malformed"}
ALLOW_SCRIPTS = {"allow", "allow-ws", "allow-empty", "allow-blank", "allow-chunked", "no-content", "allow-close",
                 "spaced-braces", "accepted", "interim"}  # answers that are the verdict allow (§4.1, §8.1)


class RawFunction(RawServer):
    """An http-stack sidecar function: records each invocation exactly as received (and the connection it came
    on), answers by the script named by the last segment of the function URL's path."""

    thread_name = "raw-function"

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        name = _script_name(head)
        if name == "hangup":
            return False
        if name == "slow":
            await asyncio.sleep(FN_SLOW_S)
            if reader.at_eof() or writer.is_closing():  # the gateway gave up at its deadline and closed
                return False
            name = "allow"
        if name == "split":
            answer = FN_SCRIPTS["modify"]
            cut = answer.index(b"\r\n\r\n") + 4
            writer.write(answer[:cut])
            await writer.drain()
            await asyncio.sleep(FN_SPLIT_GAP_S)
            writer.write(answer[cut:])
            await writer.drain()
            return True
        writer.write(FN_SCRIPTS[name])
        await writer.drain()
        return name not in FN_CLOSES_AFTER


# ---------------------------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    id: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    status: int = 200  # what both lanes must answer
    lane: str = NATIVE
    version: str = "HTTP/1.1"
    reaches_backend: int = 1  # request heads the backend receives for it
    pause_after: float = 0.0  # seconds to wait after the answer (lets the native lane warm its connection pool)
    fn_calls: int = 0  # invocations of the pre-processor's function it causes (in either lane)
    counted: int | None = None  # the native counter's increase once the lane is built; None: WARM_NATIVE's rule

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}", f"Host: {HOST}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.body is not None:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (self.body or b"")


TYPICAL = (("User-Agent", "differential/1.0"), ("Accept", "*/*"), ("X-Foo", "bar"), ("Connection", "keep-alive"))

# Each inner tuple is one client connection; requests are sent one after the other on it.
CORPUS: tuple[tuple[Req, ...], ...] = (
    (
        # The native lane leaves a call to the Python lane while it has no pooled backend connection, and warms
        # its pool then: this first call does that, so that the calls after it meet a warm pool.
        Req("warm-up", "GET", "/api/cl", TYPICAL, pause_after=0.3),
        Req("get-typical", "GET", "/api/cl", (*TYPICAL, ("X-Dup", "a"), ("x-dup", "b"), ("X-MiXeD-CaSe", "V a L"),
                                              ("X-Lead", "  \t lead and  inner"))),
        # trailing whitespace and an empty value: the native lane may leave these to the Python lane
        Req("get-odd-header-values", "GET", "/api/cl", (*TYPICAL, ("X-Ows", "  spaced  "), ("X-Empty", "")),
            lane=EITHER),
        Req("head", "HEAD", "/api/cl", TYPICAL),
        Req("get-query", "GET", "/api/cl?a=1&b=two+x&c&d=", TYPICAL),
        Req("get-hop-by-hop-request-headers", "GET", "/api/cl", (
            ("Connection", "keep-alive"), ("TE", "trailers"), ("Keep-Alive", "timeout=5, max=10"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNz"), ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "kept"))),
        Req("get-chunked-response", "GET", "/api/chunked", TYPICAL),
        Req("head-chunked-response", "HEAD", "/api/chunked", TYPICAL),
        Req("get-204", "GET", "/api/empty204", TYPICAL, status=204),
        Req("get-304", "GET", "/api/notmod", (*TYPICAL, ("If-None-Match", '"v1"')), status=304),
    ),
    (
        Req("get-hop-by-hop-response-headers", "GET", "/api/hop"),
        Req("get-big-response", "GET", "/api/big", TYPICAL),
        Req("get-status-418", "GET", "/api/status/418", TYPICAL, status=418),
        Req("get-unregistered-status", "GET", "/api/status/299", TYPICAL, status=299),
        Req("get-slow", "GET", "/api/slow", TYPICAL),
        Req("get-backend-closes", "GET", "/api/close", TYPICAL),
        Req("get-after-backend-close", "GET", "/api/cl", TYPICAL, pause_after=0.3),
        Req("get-close-delimited-response", "GET", "/api/closedelim", TYPICAL),
        Req("get-after-close-delimited", "GET", "/api/cl", TYPICAL),
    ),
    (
        Req("get-rewarm", "GET", "/api/cl", TYPICAL, pause_after=0.3),
        # A reused pooled connection reset before any byte: the Python lane resends the GET once, fresh.  The
        # native lane takes it, then hands it to the Python lane: counted as native or not, either is fine.
        Req("get-backend-reset", "GET", "/api/reset", TYPICAL, status=502, reaches_backend=2, lane=EITHER),
        Req("get-after-reset", "GET", "/api/cl", TYPICAL, pause_after=0.3),
        Req("get-backend-malformed", "GET", "/api/malformed", TYPICAL, status=502),
        # the same failure on HEAD: the 502 the lane writes itself must have no body either
        Req("get-rewarm-after-malformed", "GET", "/api/cl", TYPICAL, pause_after=0.3),
        Req("head-backend-malformed", "HEAD", "/api/malformed", TYPICAL, status=502),
        Req("get-unconfigured-path", "GET", "/nowhere/cl", TYPICAL, status=404, lane=EITHER, reaches_backend=0),
        Req("head-method-not-allowed", "HEAD", "/getonly/cl", TYPICAL, status=405, lane=EITHER, reaches_backend=0),
        Req("get-client-forwarding-headers-replaced", "GET", "/api/cl", (
            ("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.test"),
            ("X-Mashery-Message-ID", "client-chosen-id"), ("Forwarded", "for=203.0.113.9"))),
        Req("get-after-errors", "GET", "/api/cl", TYPICAL),
    ),
    (
        Req("get-connection-names-header", "GET", "/api/cl", (
            ("Connection", "keep-alive, x-secret"), ("X-Secret", "1"), ("X-Foo", "bar")), lane=FALLBACK),
        Req("post-small-body", "POST", "/api/cl", (("Content-Type", "text/plain"),), body=b"small body",
            lane=FALLBACK),
        Req("get-with-body", "GET", "/api/cl", TYPICAL, body=b"abcd", lane=FALLBACK),
        Req("get-unknown-api-key", "GET", "/api/cl?api_key=unknownkey0000", TYPICAL, status=403, lane=FALLBACK,
            reaches_backend=0),
        Req("get-unknown-apikey-alias", "GET", "/api/cl?x=1&apikey=unknownkey0000", TYPICAL, status=403,
            lane=FALLBACK, reaches_backend=0),
        Req("get-keyed-without-key", "GET", "/keyed/cl", TYPICAL, status=403, lane=FALLBACK, reaches_backend=0),
        Req("get-keyed-with-key", "GET", f"/keyed/cl?api_key={ACTIVE_KEY}", TYPICAL, lane=FALLBACK),
        Req("get-path-with-dot", "GET", "/api/file.txt", TYPICAL, lane=FALLBACK),
        Req("get-path-with-percent", "GET", "/api/sp%20ace", TYPICAL, lane=FALLBACK),
        Req("get-dot-segment", "GET", "/api/a/../cl", TYPICAL, status=400, lane=FALLBACK, reaches_backend=0),
        Req("get-expect", "GET", "/api/cl", (*TYPICAL, ("Expect", "100-continue")), lane=FALLBACK),
        Req("get-connection-close", "GET", "/api/cl", (("Connection", "close"),), lane=FALLBACK),
    ),
    (Req("get-http10", "GET", "/api/cl", (("X-Foo", "bar"),), lane=FALLBACK, version="HTTP/1.0"),),
    (
        # backend answers on either side of the lane's own response reading (SCRIPTS, "At the edge ...")
        Req("edge-warm-up", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-default", "GET", "/api/default", TYPICAL),
        Req("edge-head-default", "HEAD", "/api/default", TYPICAL),
        Req("edge-no-reason", "GET", "/api/noreason", TYPICAL),
        Req("edge-tabs-and-tight-colon", "GET", "/api/tabs", TYPICAL),
        Req("edge-obs-text-value", "GET", "/api/obstext", TYPICAL),
        Req("edge-leading-zero-length", "GET", "/api/lead0", TYPICAL),
        Req("edge-upgrade-on-200", "GET", "/api/upgrade200", TYPICAL),
        Req("edge-100-fields", "GET", "/api/fields100", TYPICAL),
        Req("edge-split-body", "GET", "/api/splitbody", TYPICAL),
        Req("edge-http10-keep-alive", "GET", "/api/http10ka", TYPICAL),
        # the ones below leave the pool empty (the connection is not reused): the call after each warms it again
        # Keep-Alive: timeout=1 leaves no time to reuse the connection (a second's margin)
        Req("edge-keep-alive-timeout", "GET", "/api/ka1", TYPICAL),
        Req("edge-after-keep-alive-timeout", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-http10", "GET", "/api/http10", TYPICAL),
        Req("edge-after-http10", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-101-fields", "GET", "/api/fields101", TYPICAL, status=502),
        Req("edge-after-101-fields", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-two-lengths", "GET", "/api/twocl", TYPICAL, status=502),
        Req("edge-after-two-lengths", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-chunked-and-length", "GET", "/api/tecl", TYPICAL, status=502),
        Req("edge-after-chunked-and-length", "GET", "/api/default", TYPICAL, pause_after=0.3),
        Req("edge-last", "GET", "/api/default", TYPICAL),
    ),
)

# ---------------------------------------------------------------------------------------------------------------
# The corpus for pre-processor endpoints (http stack, input depending on the call only through the message id)
# ---------------------------------------------------------------------------------------------------------------

# public path → (function script, extra processor configuration lines); the function URL is /fn/<script>
PRE_ENDPOINTS: dict[str, tuple[str, str]] = {
    "/pre-allow": ("allow", ""),
    "/pre-allow-ws": ("allow-ws", ""),
    "/pre-allow-empty": ("allow-empty", ""),
    "/pre-allow-blank": ("allow-blank", ""),
    "/pre-allow-chunked": ("allow-chunked", ""),
    "/pre-no-content": ("no-content", ""),
    "/pre-interim": ("interim", ""),
    "/pre-split": ("split", ""),
    "/pre-allow-close": ("allow-close", ""),
    "/pre-spaced-braces": ("spaced-braces", ""),
    "/pre-accepted": ("accepted", ""),
    "/pre-terminate": ("terminate", ""),
    "/pre-modify": ("modify", ""),
    "/pre-status500": ("status500", ""),
    "/pre-status500-failsafe": ("status500", "failSafe: true"),
    "/pre-fn-error": ("fn-error", ""),
    "/pre-null": ("null", ""),
    "/pre-garbage": ("garbage", ""),
    "/pre-malformed": ("malformed", ""),
    "/pre-hangup": ("hangup", ""),
    "/pre-slow": ("slow", "timeout: 300"),
    "/pre-slow-failsafe": ("slow", "timeout: 300\nfailSafe: true"),
    "/pre-params": ("allow", "sidecar-param-tier: gold\nsidecar-param-limit: 25\nheader.X-Fn-Key: static-secret"),
    "/pre-skip-auth": ("allow", "skip-request-headers: Authorization"),
    "/pre-include": ("allow", "include-request-headers: X-Tenant"),
}
BEARER = ("Authorization", "Bearer abc")


def _pre(rid: str, path: str, *, lane: str, counted: int | None, status: int = 200, reaches_backend: int = 1,
         method: str = "GET", headers: tuple[tuple[str, str], ...] = TYPICAL, pause_after: float = 0.0) -> Req:
    return Req(rid, method, path, headers, status=status, lane=lane, reaches_backend=reaches_backend,
               pause_after=pause_after, fn_calls=1, counted=counted)


WARM = 0.3  # seconds to leave a connection the lane opened for a call time to settle in its pool
# ``counted``: 1 = the lane must serve it natively (answer a plain allow; a pool with no idle connection opens one
# for the call); 0 = the counter must not move (a header the input would carry, or handed over); None = either.
PRE_CORPUS: tuple[tuple[Req, ...], ...] = (
    (
        # No function connection yet, and no backend connection (listener 1): the lane opens one to the function,
        # and after its allow one to the backend, for this call (``await_connection``), and serves it natively.
        _pre("pre-cold-function-pool", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-cold-backend-pool", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-braces", "/pre-allow/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-braces-whitespace", "/pre-allow-ws/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-empty-200", "/pre-allow-empty/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-blank-200", "/pre-allow-blank/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-chunked-200", "/pre-allow-chunked/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-204", "/pre-no-content/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-after-100-continue", "/pre-interim/cl", lane=NATIVE, counted=1),
        _pre("pre-allow-query", "/pre-allow/cl?a=1&b=two", lane=NATIVE, counted=1),
        _pre("pre-allow-params-and-static-header", "/pre-params/cl", lane=NATIVE, counted=1),
        # Authorization is not selected here: the input does not carry it, the lane may take the call
        _pre("pre-skip-auth-with-authorization", "/pre-skip-auth/cl", lane=NATIVE, counted=1,
             headers=(*TYPICAL, BEARER)),
        # the default selection is {authorization}: a call with one is the Python lane's (its input carries it)
        _pre("pre-with-authorization", "/pre-allow/cl", lane=FALLBACK, counted=0, headers=(*TYPICAL, BEARER)),
        _pre("pre-include-header-absent", "/pre-include/cl", lane=NATIVE, counted=1),
        _pre("pre-include-header-present", "/pre-include/cl", lane=FALLBACK, counted=0,
             headers=(*TYPICAL, ("X-Tenant", "t-1"))),
        # an allow, but not a *plain* one (`{ }`, 202): the lane may hand it over
        _pre("pre-allow-spaced-braces", "/pre-spaced-braces/cl", lane=EITHER, counted=None),
        _pre("pre-allow-202", "/pre-accepted/cl", lane=EITHER, counted=None),
        # a terminate: answered by the lane itself (rendered by Python, gateway/native_hooks.py) or handed over
        _pre("pre-terminate", "/pre-terminate/cl", lane=TAKEN, counted=None, status=403, reaches_backend=0),
        _pre("pre-modify", "/pre-modify/cl", lane=TAKEN, counted=0),
        _pre("pre-modify-head-and-body-apart", "/pre-split/cl", lane=TAKEN, counted=0),
        _pre("pre-function-500", "/pre-status500/cl", lane=TAKEN, counted=0, status=500, reaches_backend=0),
        _pre("pre-function-500-failsafe", "/pre-status500-failsafe/cl", lane=TAKEN, counted=0),
        _pre("pre-function-error", "/pre-fn-error/cl", lane=TAKEN, counted=0, status=502, reaches_backend=0),
        _pre("pre-function-null", "/pre-null/cl", lane=TAKEN, counted=0, status=500, reaches_backend=0),
        _pre("pre-function-garbage", "/pre-garbage/cl", lane=TAKEN, counted=0, status=500, reaches_backend=0),
        _pre("pre-allow-after-errors", "/pre-allow/cl", lane=NATIVE, counted=1),
    ),
    (
        # Answers that break the function connection: each empties the lane's function pool, so the next call
        # waits for a new connection the lane opens for it, and is still served natively.
        _pre("pre-function-malformed", "/pre-malformed/cl", lane=TAKEN, counted=0, status=500,
             reaches_backend=0),
        _pre("pre-after-malformed", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-rewarmed", "/pre-allow/cl", lane=NATIVE, counted=1),
        _pre("pre-function-hangup", "/pre-hangup/cl", lane=TAKEN, counted=0, status=500, reaches_backend=0),
        _pre("pre-after-hangup", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-after-hangup", "/pre-allow/cl", lane=NATIVE, counted=1),
        _pre("pre-function-timeout", "/pre-slow/cl", lane=TAKEN, counted=0, status=504, reaches_backend=0),
        _pre("pre-after-timeout", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-after-timeout", "/pre-allow/cl", lane=NATIVE, counted=1),
        _pre("pre-function-timeout-failsafe", "/pre-slow-failsafe/cl", lane=TAKEN, counted=0),
        _pre("pre-after-timeout-failsafe", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-after-timeout-failsafe", "/pre-allow/cl", lane=NATIVE, counted=1),
        # a plain allow whose answer closes the function connection: served natively, then the pool is empty
        _pre("pre-allow-connection-close", "/pre-allow-close/cl", lane=NATIVE, counted=1),
        _pre("pre-after-connection-close", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-allow-last", "/pre-allow/cl", lane=NATIVE, counted=1),
        # HEAD: the function is still POSTed and answers with a body, which decides as for a GET.  Each HEAD call
        # is followed by a GET on /pre-allow that must find the function connection still pooled, then a pause
        # (so that a lane losing its connection there does not spill over into the next case).
        _pre("pre-head-terminate", "/pre-terminate/cl", lane=TAKEN, counted=None, status=403, reaches_backend=0,
             method="HEAD"),
        _pre("pre-after-head-terminate", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-head-modify", "/pre-modify/cl", lane=TAKEN, counted=0, method="HEAD"),
        _pre("pre-after-head-modify", "/pre-allow/cl", lane=NATIVE, counted=1, pause_after=WARM),
        _pre("pre-head-allow", "/pre-allow/cl", lane=NATIVE, counted=1, method="HEAD"),
        _pre("pre-after-head-allow", "/pre-allow/cl", lane=NATIVE, counted=1),
    ),
)
CORPUS += PRE_CORPUS
PRE_REQS = [r for conn in PRE_CORPUS for r in conn]
ALL_REQS = [r for conn in CORPUS for r in conn]
PREVIOUS = {conn[i].id: conn[i - 1].id for conn in CORPUS for i in range(1, len(conn))}
# the lane's backend connection is closed after these answers (by the backend or by the lane)
POOL_EMPTYING = ("/close", "/closedelim", "/reset", "/malformed", "/http10", "/fields101", "/twocl", "/tecl", "/ka1")


def _warm_native() -> list[str]:
    """Eligible requests sent after a pause (the lane's pool warmed) and before the backend closed a connection
    again: the native lane must serve each of them."""
    out, warm = [], False
    for req in ALL_REQS:
        if req.counted is not None:  # stated explicitly (PRE_CORPUS)
            continue
        if warm and req.lane == NATIVE:
            out.append(req.id)
        if req.target.endswith(POOL_EMPTYING):
            warm = False
        if req.pause_after:
            warm = True
    return out


WARM_NATIVE = _warm_native()
assert len({r.id for r in ALL_REQS}) == len(ALL_REQS)


def gateway_config(backend: RawBackend, functions: RawFunction) -> dict:
    be = backend.url("/be")
    pre_be = backend.url("/be", listener=1)
    pre = [endpoint("ep" + path, path, pre_be, key_required=False,
                    pre_processing=f"stack: http\nurl: {functions.url('/fn/' + script)}\n{extra}".rstrip() + "\n")
           for path, (script, extra) in PRE_ENDPOINTS.items()]
    return config(service(
        "svc-diff",
        endpoint("ep-open", "/api", be, key_required=False),
        endpoint("ep-getonly", "/getonly", be, key_required=False, methods=["GET"]),
        endpoint("ep-keyed", "/keyed", be),
        *pre,
    ))


# ---------------------------------------------------------------------------------------------------------------
# Running one lane, normalising
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LaneRun:
    lane: str
    answers: dict[str, Answer] = field(default_factory=dict)
    received: dict[str, list[Received]] = field(default_factory=dict)
    trailing: list[bytes] = field(default_factory=list)  # per connection: bytes after its last answer
    native: dict[str, float | None] = field(default_factory=dict)  # NATIVE_METRIC increase per request (None: absent)
    functions: dict[str, list[Received]] = field(default_factory=dict)  # the function's invocations per request
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(default_factory=dict)  # after the corpus
    access: list[dict[str, Any]] = field(default_factory=list)  # the access log's records, in order


def run_corpus(gw: GatewayProcess, backend: RawBackend, functions: RawFunction, lane: str) -> LaneRun:
    run = LaneRun(lane)
    admin = session()
    backend.take()
    functions.take()
    count = native_count(admin, gw)
    for group in CORPUS:
        conn = RawConnection(gw.port)
        lost: str | None = None
        try:
            for req in group:
                if lost is None:
                    try:
                        run.answers[req.id] = conn.exchange(req.encode(), req.method)
                    except OSError as exc:  # recorded, so that the comparison names the request
                        lost = f"<connection lost: {exc!r}>"
                        run.answers[req.id] = Answer(lost.encode(), b"", True)
                else:
                    run.answers[req.id] = Answer(b"<not sent: " + lost.encode() + b">", b"", True)
                run.received[req.id] = backend.take()
                run.functions[req.id] = functions.take()
                time.sleep(req.pause_after)
                after = native_count(admin, gw)
                run.native[req.id] = None if after is None else after - (count or 0.0)
                count = after
            run.trailing.append(b"" if run.answers[group[-1].id].closed else conn.finish())
        finally:
            conn.close()
    run.metrics = sidecar_metrics(admin, gw)
    admin.close()
    return run


def native_count(admin: Any, gw: GatewayProcess) -> float | None:
    """The native lane's counter (``NATIVE_METRICS``) on the gateway's /metrics, summed over labels; None when
    absent."""
    r = admin.get(gw.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200
    values = [s.value for fam in text_string_to_metric_families(r.text) for s in fam.samples
              if s.name in NATIVE_METRICS]
    return sum(values) if values else None


SIDECAR_SAMPLES = ("sidecar_verdicts_total", "sidecar_output_cache_lookups_total", "sidecar_errors_total",
                   "sidecar_invocation_duration_seconds_count")
# the endpoint's own families: the native lane counts its plain outcomes in C and folds them in before a read
GATEWAY_SAMPLES = ("gateway_requests_total", "gateway_request_duration_seconds_count",
                   "gateway_upstream_duration_seconds_count")


def sidecar_metrics(admin: Any, gw: GatewayProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The non-zero samples of ``SIDECAR_SAMPLES`` on /metrics: name → sorted labels → value."""
    r = admin.get(gw.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {name: {} for name in SIDECAR_SAMPLES + GATEWAY_SAMPLES}
    for fam in text_string_to_metric_families(r.text):
        for sample in fam.samples:
            if sample.name in out and sample.value:
                out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def normalise(raw: bytes) -> bytes:
    return MESSAGE_ID_LINE.sub(lambda m: m.group(1) + PLACEHOLDER, raw)


def message_ids(raw: bytes) -> list[bytes]:
    return [m.group(2) for m in MESSAGE_ID_LINE.finditer(raw)]


def head_lines(raw_head: bytes) -> list[str]:
    """A head as its lines (repr-safe text for readable diffs), message ids replaced."""
    return normalise(raw_head).decode("latin-1").split("\r\n")


def body_view(body: bytes) -> tuple[int, str, bytes]:
    return len(body), hashlib.sha256(body).hexdigest()[:16], body[:120]


def backend_view(received: list[Received]) -> list[tuple[list[str], tuple[int, str, bytes]]]:
    return [(head_lines(r.head), body_view(r.body)) for r in received]


def function_call_id(rec: Received) -> bytes:
    """The message id of one function invocation (its X-Mashery-Message-ID header, exactly one)."""
    found = message_ids(rec.head)
    assert len(found) == 1, rec.head
    return found[0]


def function_view(received: list[Received]) -> list[tuple[list[str], int, bytes]]:
    """Each invocation as the function received it: head lines in order, then the whole body; the call's message
    id replaced wherever it appears (header and input JSON)."""
    out = []
    for rec in received:
        mid = function_call_id(rec)
        out.append((head_lines(rec.head), len(rec.body), rec.body.replace(mid, PLACEHOLDER)))
    return out


def client_view(answer: Answer) -> tuple[bytes, list[str], list[str], tuple[int, str, bytes], bool, bytes]:
    return (answer.stray, head_lines(answer.interim), head_lines(answer.head), body_view(normalise(answer.body)),
            answer.closed, answer.after_close)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_backend() -> Iterator[RawBackend]:
    server = RawBackend().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def raw_function() -> Iterator[RawFunction]:
    server = RawFunction().start()
    yield server
    server.stop()


def _run_lane(workdir: Path, backend: RawBackend, functions: RawFunction, env_value: str) -> LaneRun:
    gw = GatewayProcess(workdir, gateway_config(backend, functions), env={NATIVE_ENV: env_value})
    try:
        gw.wait_ready()
        run = run_corpus(gw, backend, functions, env_value)
    finally:
        gw.stop()
    run.access = [json.loads(line) for line in gw.stdout().splitlines() if line.startswith('{"method"')]
    return run


@pytest.fixture(scope="module")
def lanes(raw_backend: RawBackend, raw_function: RawFunction,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[LaneRun, LaneRun]:
    """(Python lane run, native lane run) of the whole corpus, against the same backend and function server."""
    workdir = tmp_path_factory.mktemp("native-differential")
    python_run = _run_lane(workdir, raw_backend, raw_function, "0")
    native_run = _run_lane(workdir, raw_backend, raw_function, "1")
    return python_run, native_run


def _ids(reqs: list[Req]) -> list[str]:
    return [r.id for r in reqs]


# ---------------------------------------------------------------------------------------------------------------
# The differential
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("req", ALL_REQS, ids=_ids(ALL_REQS))
def test_backend_receives_the_same_request_bytes_from_both_lanes(lanes, req: Req) -> None:
    """Request line, header lines (order, case, values) and body at the backend are identical in both lanes,
    message id aside, and the request reached the backend as often as the corpus says."""
    python_run, native_run = lanes
    assert len(python_run.received[req.id]) == req.reaches_backend, backend_view(python_run.received[req.id])
    assert backend_view(native_run.received[req.id]) == backend_view(python_run.received[req.id])


@pytest.mark.parametrize("req", ALL_REQS, ids=_ids(ALL_REQS))
def test_client_receives_the_same_answer_bytes_from_both_lanes(lanes, req: Req) -> None:
    """Status line, header lines in order, body bytes with their framing, and whether the connection was closed
    after the answer are identical in both lanes; the status is the one the corpus expects."""
    python_run, native_run = lanes
    reference = python_run.answers[req.id]
    assert reference.status == req.status and not reference.stray and not reference.after_close, \
        client_view(reference)
    overran = f"bytes before this answer overran the previous one on its connection ({PREVIOUS.get(req.id)})"
    assert client_view(native_run.answers[req.id]) == client_view(python_run.answers[req.id]), \
        overran if native_run.answers[req.id].stray else ""


ACCESS_VARYING = ("message_id", "duration_ms", "upstream_ms", "ts")  # per call: compared by presence and type


def _access_view(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (type(v).__name__ if k in ACCESS_VARYING else v) for k, v in record.items()}


def test_access_records_are_alike_in_both_lanes(lanes) -> None:
    """One access record per call, in call order, with the same members in the same order and the same values in
    both lanes (ids, durations and the timestamp compared by type): the native lane's records — written by
    ``_lane.c`` itself for plain outcomes and terminates — are the Python lane's."""
    python_run, native_run = lanes
    assert len(python_run.access) >= len(ALL_REQS) - 5
    assert [_access_view(r) for r in native_run.access] == [_access_view(r) for r in python_run.access]
    assert [list(r) for r in native_run.access] == [list(r) for r in python_run.access]
    assert all(UUID4.fullmatch(r["message_id"].encode()) for r in native_run.access if "message_id" in r)


def test_no_bytes_follow_the_last_answer_on_any_connection(lanes) -> None:
    """After the last answer of each connection the gateway sends nothing more (no stray body, no extra
    answer) before closing on the client's half-close."""
    python_run, native_run = lanes
    assert python_run.trailing == [b""] * len(CORPUS)
    assert native_run.trailing == python_run.trailing


def _call_ids(run: LaneRun, req: Req) -> list[bytes]:
    """The message ids of the backend requests one client request caused (exactly one per backend request)."""
    ids = []
    for rec in run.received[req.id]:
        found = message_ids(rec.head)
        assert len(found) == 1, (run.lane, req.id, rec.head)
        ids += found
    return ids


def test_message_id_is_a_fresh_lowercase_v4_uuid_per_backend_request(lanes) -> None:
    """Every backend request carries exactly one x-mashery-message-id, a canonical lower-case v4 UUID (never the
    client's value), and no two client requests share one, within a lane or across lanes."""
    per_call: list[set[bytes]] = []
    for run in lanes:
        for req in ALL_REQS:
            ids = _call_ids(run, req)
            for value in ids:
                assert UUID4.fullmatch(value), (run.lane, req.id, value)
            if ids:
                per_call.append(set(ids))
    assert len(per_call) == 2 * sum(r.reaches_backend > 0 for r in ALL_REQS)
    flat = [value for ids in per_call for value in ids]
    assert len(set(flat)) == len(flat)


def test_a_resent_backend_request_keeps_its_message_id_in_both_lanes(lanes) -> None:
    """One client call has one message id (configuration.md: "a fresh UUID v4 per call"): when the backend
    connection is reset before any byte of answer and the GET is sent again, the resend carries the same id."""
    resent = [r for r in ALL_REQS if r.reaches_backend > 1]
    assert resent
    for run in lanes:
        for req in resent:
            ids = _call_ids(run, req)
            assert len(ids) == req.reaches_backend and len(set(ids)) == 1, (run.lane, req.id, ids)


# Backend answers after which the connection must not carry another request (HTTP/1.0 without keep-alive, a
# keep-alive timeout within the reuse margin, rejected framing), and one after which it may.
NOT_REUSED = ("edge-http10", "edge-keep-alive-timeout", "edge-101-fields", "edge-two-lengths",
              "edge-chunked-and-length", "get-backend-closes")


def _later_conns(run: LaneRun, rid: str) -> set[int]:
    ids = [r.id for r in ALL_REQS]
    return {rec.conn for later in ids[ids.index(rid) + 1:] for rec in run.received.get(later, [])}


@pytest.mark.parametrize("rid", NOT_REUSED)
def test_a_backend_connection_is_not_reused_after_an_answer_that_forbids_it_in_both_lanes(lanes, rid: str) -> None:
    """The keep-alive decision on the backend connection is the same in both lanes: after these answers the
    connection that carried them carries nothing more."""
    for run in lanes:
        conns = {rec.conn for rec in run.received[rid]}
        assert conns and not conns & _later_conns(run, rid), (run.lane, rid, conns)


def test_a_backend_connection_is_reused_after_an_http10_keep_alive_answer_in_the_native_lane(lanes) -> None:
    """HTTP/1.0 with ``Connection: keep-alive`` keeps the connection: the native lane's next call on the same
    pool takes it again (the pool holds it alone after the calls before it)."""
    _, native_run = lanes
    conns = {rec.conn for rec in native_run.received["edge-http10-keep-alive"]}
    assert conns & _later_conns(native_run, "edge-http10-keep-alive")


def test_keep_alive_serves_every_request_of_a_connection_in_both_lanes(lanes) -> None:
    """Each corpus connection carried all its requests: the gateway kept it open after every answer but the
    last of a connection whose client asked to close (Connection: close, HTTP/1.0)."""
    for run in lanes:
        for group in CORPUS:
            closed = [run.answers[r.id].closed for r in group]
            client_closes = group[-1].version == "HTTP/1.0" or ("Connection", "close") in group[-1].headers
            assert closed == [False] * (len(group) - 1) + [client_closes], (run.lane, [r.id for r in group])
    assert max(len(group) for group in CORPUS) >= 8


def test_hop_by_hop_and_forwarding_headers_are_handled_in_the_python_lane(lanes) -> None:
    """Anchors for the differential (both lanes equal could still be both wrong): hop-by-hop headers are dropped
    both ways, forwarding headers are the gateway's, the Connection-named header does not reach the backend."""
    python_run, _ = lanes
    hop_req = b"\n".join(python_run.received["get-hop-by-hop-request-headers"][0].head.lower().split(b"\r\n"))
    for name in (b"te:", b"keep-alive:", b"proxy-authorization:", b"proxy-connection:", b"connection:"):
        assert b"\n" + name not in hop_req
    assert b"\nx-end-to-end: kept" in hop_req
    hop_resp = python_run.answers["get-hop-by-hop-response-headers"]
    assert hop_resp.header(b"x-drop") == [] and hop_resp.header(b"keep-alive") == []
    assert hop_resp.header(b"x-kept") == [b"yes"]
    fwd = python_run.received["get-client-forwarding-headers-replaced"][0].head.lower()
    assert fwd.count(b"\r\nx-forwarded-for:") == 1 and b"\r\nx-forwarded-for: 127.0.0.1\r\n" in fwd
    assert fwd.count(b"\r\nx-forwarded-proto:") == 1 and b"\r\nx-forwarded-proto: http\r\n" in fwd
    assert fwd.count(b"\r\nx-forwarded-host:") == 1 and b"\r\nx-forwarded-host: api.example.test\r\n" in fwd
    assert b"client-chosen-id" not in fwd
    assert b"x-secret" not in python_run.received["get-connection-names-header"][0].head.lower()


# ---------------------------------------------------------------------------------------------------------------
# The normaliser and comparison themselves
# ---------------------------------------------------------------------------------------------------------------


def test_comparison_detects_a_dropped_or_changed_header(lanes) -> None:
    """The views compared above differ when one header line is dropped, reordered or changed, or a body byte
    changes: normalisation replaces only the message id value."""
    python_run, _ = lanes
    rec = python_run.received["get-typical"][0]
    assert b"\r\nx-foo: bar\r\n" in rec.head
    lines = rec.head.split(b"\r\n")
    dropped = Received(b"\r\n".join(lines[:2] + lines[3:]), rec.body)
    swapped = Received(b"\r\n".join([lines[0], lines[2], lines[1], *lines[3:]]), rec.body)
    changed = Received(rec.head.replace(b"x-foo: bar", b"x-foo: baz"), rec.body)
    for mutant in (dropped, swapped, changed):
        assert backend_view([mutant]) != backend_view([rec])
    other_id = Received(MESSAGE_ID_LINE.sub(lambda m: m.group(1) + b"0" * 8, rec.head), rec.body)
    assert backend_view([other_id]) == backend_view([rec])
    answer = python_run.answers["get-big-response"]
    flipped = Answer(answer.head, answer.body[:-1] + bytes([answer.body[-1] ^ 1]), answer.closed)
    assert client_view(flipped) != client_view(answer)
    rechunked = python_run.answers["get-chunked-response"]
    assert rechunked.body == b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"


# ---------------------------------------------------------------------------------------------------------------
# The native lane's counter
# ---------------------------------------------------------------------------------------------------------------


def test_native_lane_serves_only_eligible_requests(lanes) -> None:
    """With SIDECAR_GATEWAY_NATIVE=0 nothing is served natively.  Otherwise no request the contract leaves to the
    Python lane is counted as native, a request is counted at most once, every eligible request on a warm pool is
    served natively, and so are at least half of all eligible ones (the lane may leave a call to the Python lane
    while its connection pool warms up: the first call, or after the backend closed its connections)."""
    python_run, native_run = lanes
    assert all(python_run.native[r.id] in (None, 0.0) for r in ALL_REQS), python_run.native
    if all(native_run.native[r.id] is None for r in ALL_REQS):
        assert importlib.util.find_spec("sidecar_gateway.native._lane") is None, \
            "the native extension is built, yet the gateway with SIDECAR_GATEWAY_NATIVE=1 served nothing natively"
        pytest.xfail(f"native lane not built yet (none of {sorted(NATIVE_METRICS)} on /metrics)")
    counted = {r.id: native_run.native[r.id] or 0.0 for r in ALL_REQS}
    assert all(v in (0.0, 1.0) for v in counted.values()), counted
    wrongly = [r.id for r in ALL_REQS if r.lane == FALLBACK and counted[r.id]]
    assert wrongly == [], f"served natively although they must fall back: {wrongly}"
    eligible = [r.id for r in ALL_REQS if r.lane == NATIVE]
    served = [i for i in eligible if counted[i]]
    assert len(served) * 2 >= len(eligible), f"native lane served only {served} of {eligible}"
    missed = [i for i in WARM_NATIVE if not counted[i]]
    assert missed == [], f"eligible, pool warm, yet not served natively: {missed}"
    stated = {r.id: (r.counted, counted[r.id]) for r in ALL_REQS
              if r.counted is not None and counted[r.id] != r.counted}
    assert stated == {}, f"(expected, actual) native counter increase: {stated}"


def _native_counted(run: LaneRun) -> dict[str, float]:
    return {r.id: run.native[r.id] or 0.0 for r in ALL_REQS}


def test_pre_processor_allows_are_served_natively_once_the_pools_are_warm(lanes) -> None:
    """The native counter grows by one for each plain allow (``{}``, whitespace around it, empty or blank 200,
    chunked ``{}``, 204, 200 after a 100) on warm function and backend pools, and by nothing for the calls the
    lane hands over."""
    _, native_run = lanes
    if all(native_run.native[r.id] is None for r in ALL_REQS):
        pytest.xfail(f"native lane not built yet (none of {sorted(NATIVE_METRICS)} on /metrics)")
    counted = _native_counted(native_run)
    allows = [r.id for r in PRE_REQS if r.counted == 1]
    assert len(allows) >= 15
    assert {i: counted[i] for i in allows} == dict.fromkeys(allows, 1.0)
    handed = [r.id for r in PRE_REQS if r.counted == 0]
    assert {i: counted[i] for i in handed} == dict.fromkeys(handed, 0.0)


def test_taken_calls_invoke_the_function_from_the_native_lane(lanes) -> None:
    """Who called the function, told by the connection its call came on (the lane's pooled function connections
    are never the Python lane's): a call the lane takes (TAKEN) was invoked on a connection that also carried a
    call the lane served natively; a call the Python lane serves from the start (cold function pool, a header the
    input would carry) on one that never did."""
    _, native_run = lanes
    if all(native_run.native[r.id] is None for r in ALL_REQS):
        pytest.xfail(f"native lane not built yet (none of {sorted(NATIVE_METRICS)} on /metrics)")
    counted = _native_counted(native_run)
    lane_conns = {rec.conn for r in PRE_REQS if counted[r.id] for rec in native_run.functions[r.id]}
    conn_of = {r.id: [rec.conn for rec in native_run.functions[r.id]] for r in PRE_REQS}
    taken = {r.id: conn_of[r.id] for r in PRE_REQS if r.lane == TAKEN}
    python = {r.id: conn_of[r.id] for r in PRE_REQS if r.lane == FALLBACK or (r.lane == NATIVE and r.counted == 0)}
    assert taken and python
    assert {i: c for i, c in taken.items() if len(c) != 1 or c[0] not in lane_conns} == {}, lane_conns
    assert {i: c for i, c in python.items() if len(c) != 1 or c[0] in lane_conns} == {}, lane_conns


# ---------------------------------------------------------------------------------------------------------------
# Pre-processor endpoints: what the function received, how often, and the sidecar metrics
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("req", PRE_REQS, ids=_ids(PRE_REQS))
def test_function_receives_the_same_invocation_bytes_once_per_call_in_both_lanes(lanes, req: Req) -> None:
    """The function is invoked exactly once per client call in each lane (never again by the Python lane after
    a handover), with the same request line, header lines in order and body bytes, message id aside."""
    python_run, native_run = lanes
    assert len(python_run.functions[req.id]) == req.fn_calls, function_view(python_run.functions[req.id])
    assert len(native_run.functions[req.id]) == req.fn_calls, function_view(native_run.functions[req.id])
    assert function_view(native_run.functions[req.id]) == function_view(python_run.functions[req.id])


def test_plain_endpoints_invoke_no_function(lanes) -> None:
    for run in lanes:
        assert {r.id: len(run.functions[r.id]) for r in ALL_REQS if r.fn_calls == 0 and run.functions[r.id]} == {}


def test_function_message_id_is_the_input_s_and_the_backend_s(lanes) -> None:
    """For each call, the function's X-Mashery-Message-ID header, the input's ``masheryMessageId`` and the
    backend's x-mashery-message-id are one canonical lower-case v4 UUID, fresh per call (§1, Q18)."""
    seen: list[bytes] = []
    for run in lanes:
        for req in PRE_REQS:
            for rec in run.functions[req.id]:
                mid = function_call_id(rec)
                assert UUID4.fullmatch(mid), (run.lane, req.id, mid)
                assert json.loads(rec.body)["masheryMessageId"].encode() == mid, (run.lane, req.id, rec.body)
                assert _call_ids(run, req) == [mid] * req.reaches_backend, (run.lane, req.id)
                seen.append(mid)
    assert len(seen) == len(set(seen)) == 2 * len(PRE_REQS)


def _input(run: LaneRun, rid: str) -> dict[str, Any]:
    (rec,) = run.functions[rid]
    return json.loads(rec.body)


def _pre_error(answer: Answer) -> tuple[int, list[bytes], list[bytes], bytes]:
    return answer.status, answer.header(b"content-type"), answer.header(b"x-error-detail-header"), answer.body


def test_pre_processor_outcomes_are_the_contract_s_in_the_python_lane(lanes) -> None:
    """Anchors for the pre-processor part of the differential (both lanes equal could still be both wrong): the
    input (§3), the invocation (§8.1), terminate and modify (§4.4), the §5.3 errors and failSafe (§5.4)."""
    python_run, _ = lanes
    ids = python_run.functions
    assert _input(python_run, "pre-allow-braces") == {
        "point": "PreProcessor", "synchronicity": "RequestResponse",
        "masheryMessageId": json.loads(ids["pre-allow-braces"][0].body)["masheryMessageId"],
        "serviceId": "svc-diff", "endpointId": "ep/pre-allow"}
    head = ids["pre-allow-braces"][0].head.lower()
    assert head.startswith(b"post /fn/allow http/1.1\r\n")
    for line in (b"content-type: application/json", b"accept: application/json",
                 b"x-sidecar-invocation-type: requestresponse"):
        assert b"\r\n" + line + b"\r\n" in head
    params = _input(python_run, "pre-allow-params-and-static-header")
    assert params["params"] == {"tier": "gold", "limit": 25}
    assert b"\r\nx-fn-key: static-secret\r\n" in ids["pre-allow-params-and-static-header"][0].head.lower()
    assert _input(python_run, "pre-with-authorization")["request"] == {"headers": {"authorization": "abc"}}
    assert "request" not in _input(python_run, "pre-skip-auth-with-authorization")
    assert _input(python_run, "pre-include-header-present")["request"] == {"headers": {"x-tenant": "t-1"}}
    assert "request" not in _input(python_run, "pre-include-header-absent")

    answers = python_run.answers
    assert _pre_error(answers["pre-terminate"]) == (403, [b"application/xml"], [], b"<h1>no</h1>")
    modified = python_run.received["pre-modify"][0].head.lower()
    assert b"\r\nx-added: by-function\r\n" in modified and b"\r\nx-foo:" not in modified
    assert normalise(python_run.received["pre-modify-head-and-body-apart"][0].head.lower()) == normalise(modified)
    assert _pre_error(answers["pre-function-error"]) == (
        502, [b"application/json"], [], b'{"code":502,"message":{"detail":"boom","title":"ValueError"}}')
    invalid = b"<h1>InvalidResponseFromAWSLambdaInPreProcess</h1>"
    for rid, detail in (("pre-function-500", b"Success Response not returned from AWS Lambda"),
                        ("pre-function-null", b"AWS Lambda Response is not returned"),
                        ("pre-function-garbage", b"Invalid output from AWS Lambda function"),
                        ("pre-function-malformed", b"Error while connecting to AWS lambda."),
                        ("pre-function-hangup", b"Error while connecting to AWS lambda.")):
        assert _pre_error(answers[rid]) == (500, [b"application/xml"], [detail], invalid), rid
    assert _pre_error(answers["pre-function-timeout"]) == (
        504, [b"application/xml"], [b"Timeout occured while connecting to AWS Service"], b"<h1>Gateway Timeout</h1>")
    for rid in ("pre-function-timeout-failsafe", "pre-function-500-failsafe", "pre-allow-202",
                "pre-allow-spaced-braces", "pre-cold-backend-pool"):
        assert answers[rid].body == b"hello from cl\n", rid


def _samples(run: LaneRun, name: str, label: str, value: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {k: v for k, v in run.metrics[name].items() if (label, value) in k}


def test_allow_verdicts_and_cache_misses_are_counted_alike_in_both_lanes(lanes) -> None:
    """``sidecar_verdicts_total{verdict="allow"}`` and ``sidecar_output_cache_lookups_total{result="miss"}``, per
    label set, are the same after the same corpus in both lanes (a natively served allow counts as one)."""
    python_run, native_run = lanes
    allow = _samples(python_run, "sidecar_verdicts_total", "verdict", "allow")
    miss = _samples(python_run, "sidecar_output_cache_lookups_total", "result", "miss")
    allows = sum(PRE_ENDPOINTS["/" + r.target.split("/")[1]][0] in ALLOW_SCRIPTS for r in PRE_REQS)
    assert sum(allow.values()) == allows, allow
    assert sum(miss.values()) == len(PRE_REQS), miss
    assert _samples(native_run, "sidecar_verdicts_total", "verdict", "allow") == allow
    assert _samples(native_run, "sidecar_output_cache_lookups_total", "result", "miss") == miss


def test_every_sidecar_metric_is_counted_alike_in_both_lanes(lanes) -> None:
    """All verdicts, errors, cache lookups and the invocation count, per label set, are the same in both lanes."""
    python_run, native_run = lanes
    assert python_run.metrics["sidecar_verdicts_total"]
    for name in SIDECAR_SAMPLES:
        assert native_run.metrics[name] == python_run.metrics[name], name


@pytest.mark.parametrize("name", GATEWAY_SAMPLES)
def test_endpoint_metrics_are_counted_alike_in_both_lanes(lanes, name: str) -> None:
    """Calls by endpoint and status, and the request and upstream duration counts, per label set, are the same in
    both lanes after the same corpus."""
    python_run, native_run = lanes
    assert sum(python_run.metrics[name].values()) >= len(PRE_REQS)
    assert native_run.metrics[name] == python_run.metrics[name]
