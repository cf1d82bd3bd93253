"""Hostile clients against a real gateway (issue 5 "Hostile input", docs/security.md).

Every test sends exact bytes on a raw socket (or ``raw_request``) and asserts two things: what the client is
answered, and what did (or did not) reach the backend or the function.  Extends
``tests/integration/test_gateway_smuggling.py`` and ``test_gateway_paths.py`` without repeating them.

Decisions where the specifications are silent (recorded in docs/security.md):

* request-head limits are answered by the HTTP layer (``gateway/protocol.py``): 414, 431, 408, 400 for a
  missing / repeated / invalid Host, always with ``Connection: close``;
* an absolute-form request-target's authority replaces the Host header (RFC 9112 §3.2.2);
* a double-encoded dot (``%252e``) is not a dot segment: it passes through verbatim and the backend sees
  the literal text ``%252e`` under the target's base path;
* package keys: the first occurrence of the key parameter decides; surrounding whitespace is trimmed; the
  value is form-decoded but the parameter name is compared as sent; a fragment never carries a key.
"""

from __future__ import annotations

import posixpath
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest

from sidecar_gateway.gateway.protocol import (
    HEADER_TIMEOUT_S,
    MAX_FIELD_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    MAX_URL_BYTES,
)
from support.backend import BackendServer
from support.function_server import Behavior, FunctionServer
from support.gateway_proc import ACTIVE_KEY, GatewayProcess, config, endpoint, raw_request, service

MAX_REQUEST_BODY = 2 * 1024 * 1024  # the gateway's max_request_body in this module
PUBLIC_HOST = "api.acme.com"


@pytest.fixture(scope="module")
def functions() -> Iterator[FunctionServer]:
    server = FunctionServer({"/fn-payload": Behavior({})}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(module_gateway_factory: Any, backend: BackendServer, functions: FunctionServer) -> GatewayProcess:
    b = backend.url
    payload_pre = (f"stack: http\nurl: {functions.url('/fn-payload')}\n"
                   "expand-input: requestPayload\nmax-payload-size: 1kb")
    cfg = config(
        service(
            "svc-hostile",
            endpoint("ep-s", "/s", b("/be/s"), key_required=False),
            endpoint("ep-t", "/t", b("/be/base"), key_required=False),
            endpoint("ep-h", "/h", b("/be/h"), key_required=False, public_host=PUBLIC_HOST),
            endpoint("ep-k", "/k", b("/be/k")),
            endpoint("ep-kh", "/kh", b("/be/kh"), api_key={"in": "header"}),
            endpoint("ep-payload", "/payload", b("/be/payload"), key_required=False, pre_processing=payload_pre),
        ),
        max_request_body=MAX_REQUEST_BODY,
    )
    return module_gateway_factory.start(cfg)


# --------------------------------------------------------------------------------------------------------------
# Raw-socket helpers
# --------------------------------------------------------------------------------------------------------------


def exchange(port: int, data: bytes, idle: float = 1.5, total: float = 10.0) -> bytes:
    """Send ``data`` on one connection; read until the peer closes or is idle for ``idle`` seconds."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=idle) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # the gateway answered and closed early
            pass
        deadline = time.monotonic() + total
        while time.monotonic() < deadline:
            try:
                piece = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not piece:
                break
            out += piece
    return bytes(out)


def statuses(raw: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def closes(raw: bytes) -> bool:
    return b"\r\nconnection: close\r\n" in raw.lower()


def token() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------------------------------
# Request smuggling (RFC 9112 §6): ambiguous framing never desynchronises the backend
# --------------------------------------------------------------------------------------------------------------

# (id, framing header lines) — each is followed by a body that *also* holds a complete smuggled request.
AMBIGUOUS_FRAMING = [
    ("te-obfuscated-xchunked", ["Transfer-Encoding: xchunked", "Content-Length: {n}"]),
    ("te-chunked-then-identity", ["Transfer-Encoding: chunked, identity", "Content-Length: {n}"]),
    ("te-duplicated", ["Transfer-Encoding: chunked", "Transfer-Encoding: identity", "Content-Length: {n}"]),
    ("te-tab-before-value", ["Transfer-Encoding:\tchunked", "Content-Length: {n}"]),
    ("te-vertical-tab", ["Transfer-Encoding:\x0bchunked", "Content-Length: {n}"]),
    ("te-obs-fold", ["Transfer-Encoding:", " chunked", "Content-Length: {n}"]),
    ("cl-duplicated-same-value", ["Content-Length: {n}", "Content-Length: {n}"]),
    ("cl-list-value", ["Content-Length: {n}, {n}"]),
    ("cl-plus-sign", ["Content-Length: +{n}"]),
    ("cl-hex", ["Content-Length: 0x{n:x}"]),
    ("cl-obs-fold", ["Content-Length:", " {n}"]),
    ("cl-nul-in-value", ["Content-Length: {n}\x00"]),
]


@dataclass
class SmuggleResult:
    raw: bytes
    first: str
    smuggled: str


def smuggle(gw: GatewayProcess, lines: list[str], *, line_end: str = "\r\n") -> SmuggleResult:
    first, smuggled = token(), token()
    inner = f"GET /s/{smuggled} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    body = b"0\r\n\r\n" + inner
    head_lines = [f"POST /s/{first} HTTP/1.1", "Host: x", *[ln.format(n=len(body)) for ln in lines]]
    head = line_end.join(head_lines) + line_end + line_end
    raw = exchange(gw.port, head.encode("latin-1") + body)
    return SmuggleResult(raw, first, smuggled)


@pytest.mark.parametrize("lines", [pytest.param(lines, id=name) for name, lines in AMBIGUOUS_FRAMING])
def test_ambiguous_framing_never_serves_a_smuggled_request(gw: GatewayProcess, backend: BackendServer,
                                                           lines: list[str]) -> None:
    """A request whose body hides a second request (under any framing trick) never gets that second request
    to the backend: it is either refused (400) or its body is forwarded as one opaque body."""
    result = smuggle(gw, lines)
    time.sleep(0.2)
    assert backend.matching(result.smuggled) == [], result.raw[:300]


@pytest.mark.parametrize("lines", [pytest.param(lines, id=name) for name, lines in AMBIGUOUS_FRAMING])
def test_ambiguous_framing_never_reaches_backend_with_two_framings(gw: GatewayProcess, backend: BackendServer,
                                                                   lines: list[str]) -> None:
    """The backend never receives a request framed by both Content-Length and Transfer-Encoding, nor two
    Content-Length fields."""
    result = smuggle(gw, lines)
    for r in backend.matching(result.first):
        cl, te = r.header_values("content-length"), r.header_values("transfer-encoding")
        assert not (cl and te) and len(cl) <= 1, (r.headers, result.raw[:300])


@pytest.mark.parametrize("lines", [pytest.param(lines, id=name) for name, lines in AMBIGUOUS_FRAMING])
def test_ambiguous_framing_is_refused_with_400(gw: GatewayProcess, lines: list[str]) -> None:
    """Every framing trick of the table answers 400 and closes the connection (llhttp strict mode)."""
    result = smuggle(gw, lines)
    assert statuses(result.raw)[:1] == [400] and closes(result.raw), result.raw[:300]


@pytest.mark.parametrize("line_end", [pytest.param("\n", id="bare-lf"), pytest.param("\r", id="bare-cr")])
def test_bare_line_ends_answer_400_and_forward_nothing(gw: GatewayProcess, backend: BackendServer,
                                                        line_end: str) -> None:
    """A head whose lines end with a bare LF or a bare CR is refused (RFC 9112 §2.2) and nothing is forwarded."""
    result = smuggle(gw, ["Content-Length: {n}"], line_end=line_end)
    time.sleep(0.2)
    assert statuses(result.raw)[:1] == [400]
    assert backend.matching(result.first) == [] and backend.matching(result.smuggled) == []


def test_obs_fold_in_ordinary_header_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """A folded header line (obs-fold, RFC 9112 §5.2) is refused rather than unfolded."""
    t = token()
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nConnection: close\r\n\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([400], [])


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x7fb", b"a\rb"])
def test_control_character_in_header_value_answers_400(gw: GatewayProcess, backend: BackendServer,
                                                       value: bytes) -> None:
    """NUL, DEL or a lone CR inside a header value is refused (RFC 9110 §5.5) and nothing is forwarded."""
    t = token()
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\nX-A: ".encode() + value + b"\r\n\r\n")
    assert (statuses(raw), backend.matching(t)) == ([400], [])


def test_chunk_size_overflow_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """A chunk size beyond 64 bits answers 400 (not wrapped around), even though the head was already
    forwarded: the backend never receives a complete body."""
    t = token()
    raw = exchange(gw.port, f"POST /s/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            f"{'f' * 20}\r\nabc\r\n0\r\n\r\n".encode())
    assert statuses(raw)[:1] == [400], raw[:200]
    assert all(r.body_length is None for r in backend.matching(t))  # the backend never got a whole body


def test_request_after_a_refused_request_on_the_same_connection_is_not_served(gw: GatewayProcess,
                                                                               backend: BackendServer) -> None:
    """After a 400 the connection is closed: a request pipelined behind the bad one never runs."""
    after = token()
    raw = exchange(gw.port, b"GET /s/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"
                            + f"GET /s/{after} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.2)
    assert (statuses(raw), backend.matching(after)) == ([400], [])


# --------------------------------------------------------------------------------------------------------------
# Request-head limits (gateway/protocol.py): 414 / 431
# --------------------------------------------------------------------------------------------------------------


def test_url_at_8000_bytes_is_served(gw: GatewayProcess, backend: BackendServer) -> None:
    """A long but reasonable request-target (8000 bytes) is forwarded."""
    t = token()
    target = f"/s/{t}/" + "a" * (8000 - len(t) - 4)
    assert raw_request(gw.port, "GET", target).status == 200
    assert len(backend.wait_for(t)) == 1


def test_url_over_limit_answers_414_without_forwarding(gw: GatewayProcess, backend: BackendServer) -> None:
    """A request-target longer than MAX_URL_BYTES answers 414 with Connection: close; nothing is forwarded."""
    t = token()
    target = f"/s/{t}/" + "a" * (MAX_URL_BYTES - len(t) - 3)
    assert len(target) == MAX_URL_BYTES + 1
    raw = exchange(gw.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (statuses(raw), closes(raw), backend.matching(t)) == ([414], True, [])


def test_huge_url_sent_in_pieces_answers_414_early(gw: GatewayProcess) -> None:
    """A 1 MiB request-target is cut off at the limit: the gateway answers 414 before the client finishes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /s/")
        answer = b""
        for _ in range(256):
            try:
                s.sendall(b"a" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                break
            s.settimeout(0.005)
            try:
                answer = s.recv(4096)
            except TimeoutError:
                continue
            break
        s.settimeout(5)
        answer += s.recv(4096) if not answer else b""
    assert statuses(answer) == [414]


def test_header_field_just_under_backend_limits_is_served(gw: GatewayProcess, backend: BackendServer) -> None:
    """A 7 KiB header (a large JWT or cookie) is forwarded unchanged."""
    t = token()
    r = raw_request(gw.port, "GET", f"/s/{t}", [("X-Big", "b" * 7 * 1024)])
    assert r.status == 200
    assert backend.wait_for(t)[0].header_values("x-big") == ["b" * 7 * 1024]


def test_single_header_field_over_limit_answers_431(gw: GatewayProcess, backend: BackendServer) -> None:
    """One header field (name + value) over MAX_FIELD_BYTES answers 431; nothing is forwarded."""
    t = token()
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * MAX_FIELD_BYTES}\r\n\r\n".encode())
    assert (statuses(raw), closes(raw), backend.matching(t)) == ([431], True, [])


def test_total_header_bytes_over_limit_answers_431(gw: GatewayProcess, backend: BackendServer) -> None:
    """Many fields each under the per-field limit but together over MAX_HEADER_BYTES answer 431."""
    t = token()
    per_field = 7 * 1024
    n = MAX_HEADER_BYTES // per_field + 1
    fields = "".join(f"X-F{i}: {'v' * per_field}\r\n" for i in range(n))
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([431], [])


def test_header_fields_at_count_limit_are_served(gw: GatewayProcess, backend: BackendServer) -> None:
    """Exactly MAX_HEADER_FIELDS fields (Host included) are accepted."""
    t = token()
    fields = "".join(f"X-F{i}: v\r\n" for i in range(MAX_HEADER_FIELDS - 2))
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n".encode())
    assert statuses(raw) == [200] and len(backend.wait_for(t)) == 1


def test_too_many_header_fields_answer_431(gw: GatewayProcess, backend: BackendServer) -> None:
    """MAX_HEADER_FIELDS + 1 fields answer 431; nothing is forwarded."""
    t = token()
    fields = "".join(f"X-F{i}: v\r\n" for i in range(MAX_HEADER_FIELDS))
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([431], [])


def test_endless_header_field_answers_431_without_waiting_for_its_end(gw: GatewayProcess) -> None:
    """A header field that never ends (sent in many reads) is cut off by the raw head guard: 431 before
    the header timeout, and the connection is closed."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /s/x HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(200):  # up to 800 KiB, far beyond every limit
            try:
                s.sendall(b"e" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.002)  # separate reads on the gateway side
        s.settimeout(5)
        try:
            while piece := s.recv(4096):
                answer += piece
        except ConnectionResetError:
            pass
    assert statuses(answer) == [431] and time.monotonic() - started < HEADER_TIMEOUT_S


def test_gateway_serves_normally_after_limit_answers(gw: GatewayProcess) -> None:
    """Limit answers close only their own connection: a normal request right after is served."""
    exchange(gw.port, b"GET /s/" + b"a" * (MAX_URL_BYTES + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw_request(gw.port, "GET", "/s/after").status == 200


# --------------------------------------------------------------------------------------------------------------
# Slowloris: the header timeout (gateway/protocol.py HEADER_TIMEOUT_S)
# --------------------------------------------------------------------------------------------------------------

SLOW_CLIENTS = 20


@dataclass
class SlowClient:
    kind: str
    closed_after: float | None = None  # seconds from connect (or from the start of the slow request)
    answer: bytes = b""


@dataclass
class SlowlorisRun:
    clients: list[SlowClient] = field(default_factory=list)
    normal_latencies: list[float] = field(default_factory=list)
    normal_statuses: list[int] = field(default_factory=list)


def _slow_headers(port: int, out: SlowClient) -> None:
    """Sends a request head one byte per second, forever (until the gateway closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S * 3) as s:
        start = time.monotonic()
        s.sendall(b"GET /s/slow HTTP/1.1\r\nHost: x\r\n")
        _drip(s, start, out)


def _silent(port: int, out: SlowClient) -> None:
    """Connects and never sends a byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S * 3) as s:
        start = time.monotonic()
        try:
            out.answer = s.recv(4096)
        except (TimeoutError, ConnectionResetError):
            return
        out.closed_after = time.monotonic() - start


def _slow_second_request(port: int, out: SlowClient) -> None:
    """One normal request, then the next one on the same connection dripped one byte per second."""
    with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S * 3) as s:
        s.sendall(b"GET /s/first HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        length = int(re.search(rb"content-length: (\d+)", got, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        while len(got.split(b"\r\n\r\n", 1)[1]) < length:
            got += s.recv(65536)
        start = time.monotonic()
        _drip(s, start, out, b"GET /s/second HTTP/1.1\r\nHost: x\r\nX-Drip: ")


def _drip(s: socket.socket, start: float, out: SlowClient, text: bytes = b"") -> None:
    """Send ``text`` then 'x' one byte per second until the gateway answers or closes."""
    s.settimeout(1.0)
    for i in range(int(HEADER_TIMEOUT_S * 3)):
        try:
            s.sendall(text[i : i + 1] or b"x")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            piece = s.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        out.answer += piece
        if not piece:
            break
        try:
            while more := s.recv(4096):
                out.answer += more
        except (TimeoutError, ConnectionResetError):
            pass
        break
    out.closed_after = time.monotonic() - start


@pytest.fixture(scope="module")
def slowloris(gw: GatewayProcess) -> SlowlorisRun:
    """SLOW_CLIENTS slow-header connections, a silent connection and a slow second keep-alive request run
    while a normal client keeps calling the gateway every 0.2 s."""
    run = SlowlorisRun()
    threads: list[threading.Thread] = []
    for kind, target in [("slow-headers", _slow_headers)] * SLOW_CLIENTS + [("silent", _silent),
                                                                              ("slow-second", _slow_second_request)]:
        client = SlowClient(kind)
        run.clients.append(client)
        threads.append(threading.Thread(target=target, args=(gw.port, client), daemon=True))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        run.normal_statuses.append(raw_request(gw.port, "GET", "/s/normal", timeout=5).status)
        run.normal_latencies.append(time.monotonic() - t0)
        time.sleep(0.2)
        if time.monotonic() - t0 > HEADER_TIMEOUT_S * 4:
            break
    for t in threads:
        t.join(HEADER_TIMEOUT_S)
    return run


def test_slow_header_clients_are_disconnected_within_header_timeout(slowloris: SlowlorisRun) -> None:
    """Clients sending their head one byte per second are closed after HEADER_TIMEOUT_S (+ 2 s slack)."""
    slow = [c for c in slowloris.clients if c.kind == "slow-headers"]
    assert all(c.closed_after is not None and c.closed_after < HEADER_TIMEOUT_S + 2 for c in slow), \
        [c.closed_after for c in slow]


def test_slow_header_clients_are_answered_408(slowloris: SlowlorisRun) -> None:
    """A client whose request had begun gets 408 Request Timeout with Connection: close before the close."""
    slow = [c for c in slowloris.clients if c.kind in ("slow-headers", "slow-second")]
    assert all(statuses(c.answer) == [408] and closes(c.answer) for c in slow), [c.answer[:60] for c in slow]


def test_silent_connection_is_closed_without_answer(slowloris: SlowlorisRun) -> None:
    """A connection that never sends a byte is closed after HEADER_TIMEOUT_S with no answer at all."""
    (silent,) = [c for c in slowloris.clients if c.kind == "silent"]
    assert silent.answer == b"" and silent.closed_after is not None
    assert HEADER_TIMEOUT_S - 1 < silent.closed_after < HEADER_TIMEOUT_S + 2


def test_slow_second_request_on_keep_alive_connection_times_out(slowloris: SlowlorisRun) -> None:
    """The header timeout also covers a later request on a kept-alive connection, counted from its first byte."""
    (second,) = [c for c in slowloris.clients if c.kind == "slow-second"]
    assert second.closed_after is not None and HEADER_TIMEOUT_S - 1 < second.closed_after < HEADER_TIMEOUT_S + 2


def test_other_clients_are_served_normally_during_slowloris(slowloris: SlowlorisRun) -> None:
    """While the slow clients hold their connections, normal requests keep being answered 200 and fast."""
    assert len(slowloris.normal_statuses) >= 10
    assert set(slowloris.normal_statuses) == {200}
    assert max(slowloris.normal_latencies) < 1.0, max(slowloris.normal_latencies)


# --------------------------------------------------------------------------------------------------------------
# Bodies: max-payload-size (contract §5.1 P7) and max_request_body (gateway-config.md)
# --------------------------------------------------------------------------------------------------------------


def test_body_over_max_payload_size_answers_413_without_calling_function(gw: GatewayProcess,
                                                                         backend: BackendServer,
                                                                         functions: FunctionServer) -> None:
    """A 2 KiB body against max-payload-size 1kb (requestPayload expanded) → 413 MaxPayloadConditionFailure;
    neither the function nor the backend is called."""
    t = token()
    before = len(functions.calls_to("/fn-payload"))
    r = raw_request(gw.port, "POST", f"/payload/{t}", [("Content-Type", "text/plain")], b"p" * 2048)
    assert (r.status, r.header("X-Error-Detail-Header")) == (413, "Payload length is more than max allowed payload")
    assert len(functions.calls_to("/fn-payload")) == before and backend.matching(t) == []


def test_body_within_max_payload_size_calls_function(gw: GatewayProcess, functions: FunctionServer) -> None:
    """Control: a 1000-byte body passes, the function receives it whole."""
    t = token()
    r = raw_request(gw.port, "POST", f"/payload/{t}", [("Content-Type", "text/plain")], b"q" * 1000)
    assert r.status == 200
    inputs = [c.input for c in functions.calls_to("/fn-payload")]
    assert any(i["request"]["payloadLength"] == 1000 for i in inputs if "request" in i)


@pytest.mark.parametrize("path", ["/payload", "/s"])
def test_declared_body_over_max_request_body_answers_413_at_once(gw: GatewayProcess, backend: BackendServer,
                                                                 functions: FunctionServer, path: str) -> None:
    """A Content-Length over max_request_body answers 413 PayloadTooLarge before any byte of the body is read;
    nothing is forwarded, no function is called."""
    t = token()
    before = len(functions.calls_to("/fn-payload"))
    raw = exchange(gw.port, f"POST {path}/{t} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_REQUEST_BODY + 1}\r\n"
                            "\r\n".encode() + b"x" * 1024)
    assert statuses(raw) == [413], raw[:200]
    assert backend.matching(t) == [] and len(functions.calls_to("/fn-payload")) == before


def test_declared_absurd_content_length_answers_413(gw: GatewayProcess) -> None:
    """A 20-digit Content-Length is not an overflow: 413 (or 400 from the parser), never a 5xx."""
    raw = exchange(gw.port, b"POST /s/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nabc")
    assert statuses(raw)[:1] in ([413], [400]), raw[:200]


def _chunked(total: int, piece: int = 64 * 1024) -> bytes:
    out = bytearray()
    left = total
    while left > 0:
        n = min(piece, left)
        out += b"%x\r\n" % n + b"c" * n + b"\r\n"
        left -= n
    return bytes(out + b"0\r\n\r\n")


def test_chunked_body_over_max_request_body_to_function_answers_413(gw: GatewayProcess,
                                                                    functions: FunctionServer) -> None:
    """A chunked body (no declared size) that grows past max_request_body while being buffered for the
    pre-processor answers 413; the function is never called."""
    t = token()
    before = len(functions.calls_to("/fn-payload"))
    head = f"POST /payload/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    raw = exchange(gw.port, head + _chunked(MAX_REQUEST_BODY + 64 * 1024))
    assert statuses(raw)[:1] == [413] and len(functions.calls_to("/fn-payload")) == before


def test_chunked_body_over_max_request_body_streamed_to_backend_answers_413(gw: GatewayProcess) -> None:
    """A chunked body streamed to the backend is cut at max_request_body: the client gets 413, not a 2xx."""
    t = token()
    head = f"POST /s/{t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    raw = exchange(gw.port, head + _chunked(MAX_REQUEST_BODY + 64 * 1024))
    assert statuses(raw)[:1] == [413], raw[:200]


# --------------------------------------------------------------------------------------------------------------
# Paths: invalid percent-encoding and traversal never escape the target's base path
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("remainder", ["/%zz", "/a%", "/a%2", "/%G0", "/%u002e%u002e/x", "/a%%32e"])
def test_invalid_percent_encoding_in_path_answers_400(gw: GatewayProcess, backend: BackendServer,
                                                       remainder: str) -> None:
    """A broken percent escape in the remainder answers 400 BadRequest; nothing is forwarded."""
    t = token()
    r = raw_request(gw.port, "GET", f"/t/{t}{remainder}")
    assert (r.status, backend.matching(t)) == (400, [])


def test_invalid_percent_encoding_in_query_is_passed_on_verbatim(gw: GatewayProcess, backend: BackendServer) -> None:
    """The query is not the gateway's to judge: a broken escape there reaches the backend byte for byte."""
    t = token()
    assert raw_request(gw.port, "GET", f"/t/{t}?q=%zz&r=%").status == 200
    assert backend.wait_for(t)[0].query == "q=%zz&r=%"


def test_encoded_nul_in_path_is_forwarded_still_encoded(gw: GatewayProcess, backend: BackendServer) -> None:
    """%00 is not decoded by the gateway: the backend receives the three characters, under the base path."""
    t = token()
    assert raw_request(gw.port, "GET", f"/t/{t}/a%00b").status == 200
    assert backend.wait_for(t)[0].path == f"/be/base/{t}/a%00b"


def test_raw_non_ascii_bytes_in_path_answer_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """Raw (unencoded) non-ASCII bytes in the request-target are refused, never forwarded."""
    t = token()
    raw = exchange(gw.port, f"GET /t/{t}/".encode() + b"\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (statuses(raw), backend.matching(t)) == ([400], [])


TRAVERSALS = [
    "/t/{t}/../../x",
    "/t/{t}/%2e%2e/%2e%2e/x",
    "/t/{t}/%2E./%2E./x",
    "/t/{t}/.%2E/x",
    "/t/{t}/..%2f..%2fx",
    "/t/{t}/..%2F..%2Fx",
    "/t/{t}/..%5c..%5cx",
    "/t/{t}/%252e%252e/%252e%252e/x",
    "/t/{t}/%25%32%65%25%32%65/x",
    "/t/{t}/..;/..;/x",
    "/t/{t}/.../x",
    "/t/{t}//../../x",
    "/t/{t}/..\\..\\x",
    "/t/{t}/%c0%ae%c0%ae/x",
    "/t/{t}/x/..",
    "/t/{t}/./x",
]


def _stays_under_base(path: str) -> bool:
    """The path, decoded once and normalised as a backend would, is still inside /be/base."""
    normal = posixpath.normpath(unquote(path).replace("\\", "/"))
    return path.startswith("/be/base/") and (normal == "/be/base" or normal.startswith("/be/base/"))


@pytest.mark.parametrize("template", TRAVERSALS)
def test_traversal_never_escapes_target_base_path(gw: GatewayProcess, backend: BackendServer,
                                                  template: str) -> None:
    """Whatever the spelling of '..', a request either answers 400 or reaches the backend under the target's
    base path, even after the backend decodes it once and normalises it."""
    t = token()
    target = template.format(t=t)
    raw = exchange(gw.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    time.sleep(0.05)
    reached = backend.matching(t)
    assert statuses(raw)[:1] in ([200], [400])
    assert all(_stays_under_base(r.path) for r in reached), [r.path for r in reached]


def test_raw_backslash_in_remainder_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """A raw backslash (not a valid URI character, RFC 3986 §3.3) is refused like its encoded form %5c."""
    t = token()
    raw = exchange(gw.port, f"GET /t/{t}/..\\..\\x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([400], [])


@pytest.mark.parametrize("template", ["/t/{t}/%252e%252e/x", "/t/{t}/%252f/x"])
def test_double_encoded_dot_or_slash_passes_through_as_literal_text(gw: GatewayProcess, backend: BackendServer,
                                                                    template: str) -> None:
    """Decision: %252e / %252f are an escaped '%' followed by text, not a dot or a slash; they reach the
    backend verbatim (one decode yields the literal text '%2e' / '%2f', never '..' or '/')."""
    t = token()
    target = template.format(t=t)
    assert raw_request(gw.port, "GET", target).status == 200
    assert backend.wait_for(t)[0].path == "/be/base" + target[len("/t"):]


@pytest.mark.parametrize("template", ["/t/{t}/../../x", "/t/{t}/%2e%2e/x", "/t/{t}/%2E./x", "/t/{t}/..%2fx"])
def test_dot_segment_variants_answer_400(gw: GatewayProcess, backend: BackendServer, template: str) -> None:
    """The brief's spellings of '..' in the remainder are refused outright (gateway-config.md "Paths")."""
    t = token()
    r = raw_request(gw.port, "GET", template.format(t=t))
    assert (r.status, backend.matching(t)) == (400, [])


def test_absolute_form_target_with_dot_segments_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """An absolute-form request-target gets the same path rules as origin-form."""
    t = token()
    r = raw_request(gw.port, "GET", f"http://x/t/{t}/../../x")
    assert (r.status, backend.matching(t)) == (400, [])


# --------------------------------------------------------------------------------------------------------------
# Host spoofing against public_host
# --------------------------------------------------------------------------------------------------------------


def test_public_host_endpoint_is_reached_with_its_host(gw: GatewayProcess, backend: BackendServer) -> None:
    """Control: Host api.acme.com (any case, any port) reaches the public_host endpoint."""
    t = token()
    assert raw_request(gw.port, "GET", f"/h/{t}", host="API.Acme.com:8443").status == 200
    assert len(backend.wait_for(t)) == 1


@pytest.mark.parametrize("host", ["other.example", "api.acme.com.evil.example", "api.acme.com.",
                                  "evil.example#api.acme.com", "xapi.acme.com"])
def test_other_host_never_reaches_public_host_endpoint(gw: GatewayProcess, backend: BackendServer,
                                                       host: str) -> None:
    """Any other Host answers 404 (or 400 when the Host is malformed); nothing is forwarded."""
    t = token()
    r = raw_request(gw.port, "GET", f"/h/{t}", host=host)
    assert r.status in (400, 404) and backend.matching(t) == []


def test_host_with_userinfo_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """'other@api.acme.com' is not a host (RFC 9110 §7.2): 400, nothing forwarded."""
    t = token()
    r = raw_request(gw.port, "GET", f"/h/{t}", host=f"other.example@{PUBLIC_HOST}")
    assert (r.status, backend.matching(t)) == (400, [])


@pytest.mark.parametrize("hosts", [(PUBLIC_HOST, "other.example"), ("other.example", PUBLIC_HOST)])
def test_two_host_headers_answer_400(gw: GatewayProcess, backend: BackendServer, hosts: tuple[str, str]) -> None:
    """Two Host fields (in either order) answer 400 (RFC 9112 §3.2); nothing is forwarded."""
    t = token()
    raw = exchange(gw.port, f"GET /h/{t} HTTP/1.1\r\nHost: {hosts[0]}\r\nHost: {hosts[1]}\r\n\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([400], [])


def test_missing_host_on_http11_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """An HTTP/1.1 request without Host answers 400 (RFC 9112 §3.2)."""
    t = token()
    raw = exchange(gw.port, f"GET /s/{t} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    assert (statuses(raw), backend.matching(t)) == ([400], [])


def test_http10_without_host_never_matches_public_host(gw: GatewayProcess, backend: BackendServer) -> None:
    """HTTP/1.0 may omit Host; such a request cannot match a public_host endpoint."""
    t = token()
    raw = exchange(gw.port, f"GET /h/{t} HTTP/1.0\r\n\r\n".encode())
    assert statuses(raw) == [404] and backend.matching(t) == []


def test_absolute_form_other_host_never_reaches_public_host_endpoint(gw: GatewayProcess,
                                                                     backend: BackendServer) -> None:
    """GET http://other.example/h/... with Host: api.acme.com is routed by the target's authority
    (RFC 9112 §3.2.2): 404, nothing forwarded."""
    t = token()
    r = raw_request(gw.port, "GET", f"http://other.example/h/{t}", host=PUBLIC_HOST)
    assert (r.status, backend.matching(t)) == (404, [])


def test_absolute_form_authority_replaces_host(gw: GatewayProcess, backend: BackendServer) -> None:
    """GET http://api.acme.com/h/... with Host: other.example reaches the endpoint, and the backend sees
    api.acme.com as the forwarded host (one host, never two)."""
    t = token()
    r = raw_request(gw.port, "GET", f"http://{PUBLIC_HOST}/h/{t}", host="other.example")
    assert r.status == 200
    assert backend.wait_for(t)[0].header_values("x-forwarded-host") == [PUBLIC_HOST]


def test_absolute_form_with_userinfo_answers_400(gw: GatewayProcess, backend: BackendServer) -> None:
    """An absolute-form target carrying user-info is refused."""
    t = token()
    r = raw_request(gw.port, "GET", f"http://user@{PUBLIC_HOST}/h/{t}")
    assert (r.status, backend.matching(t)) == (400, [])


def test_x_forwarded_host_is_not_used_for_routing(gw: GatewayProcess, backend: BackendServer) -> None:
    """X-Forwarded-Host from an untrusted client does not make Host other.example match public_host."""
    t = token()
    r = raw_request(gw.port, "GET", f"/h/{t}", [("X-Forwarded-Host", PUBLIC_HOST)], host="other.example")
    assert (r.status, backend.matching(t)) == (404, [])


# --------------------------------------------------------------------------------------------------------------
# Package keys in odd places (gateway-config.md "Keys")
# --------------------------------------------------------------------------------------------------------------

KEY_QUERIES = [
    # (query, expected status, reason)
    (f"api_key={ACTIVE_KEY}&api_key=bogus", 200, "first occurrence decides"),
    (f"api_key=bogus&api_key={ACTIVE_KEY}", 403, "first occurrence decides"),
    (f"api_key=&api_key={ACTIVE_KEY}", 403, "a blank first occurrence is a missing key"),
    (f"api_key={ACTIVE_KEY}&apikey=bogus", 200, "the configured name before the alias"),
    (f"api_key=bogus&apikey={ACTIVE_KEY}", 403, "the configured name before the alias"),
    (f"api_key=%20{ACTIVE_KEY}%20", 200, "surrounding whitespace is trimmed"),
    (f"api_key=+{ACTIVE_KEY}+", 200, "form-encoded spaces are whitespace too"),
    (f"api_key={ACTIVE_KEY[:4]}%20{ACTIVE_KEY[4:]}", 403, "inner whitespace is part of the key"),
    ("api_key=" + "".join(f"%{ord(c):02x}" for c in ACTIVE_KEY), 200, "the value is percent-decoded"),
    (f"api%5Fkey={ACTIVE_KEY}", 403, "the parameter name is compared as sent"),
    (f"API_KEY={ACTIVE_KEY}", 403, "parameter names are case-sensitive"),
    (f"x=1;api_key={ACTIVE_KEY}", 403, "';' is not a parameter separator"),
    (f"api_key={ACTIVE_KEY}%00", 403, "a trailing NUL makes another key"),
]


@pytest.mark.parametrize(("query", "status", "reason"), KEY_QUERIES, ids=[q[2] + ":" + q[0][:24] for q in KEY_QUERIES])
def test_query_key_in_odd_shapes(gw: GatewayProcess, backend: BackendServer, query: str, status: int,
                                 reason: str) -> None:
    """Each odd query shape authenticates (200) or not (403) as decided; a refused call forwards nothing."""
    t = token()
    r = raw_request(gw.port, "GET", f"/k/{t}?{query}")
    assert r.status == status, reason
    assert (len(backend.matching(t)) == 1) == (status == 200)


def test_backend_receives_the_query_unchanged_with_repeated_keys(gw: GatewayProcess, backend: BackendServer) -> None:
    """With repeated key parameters the backend gets the query exactly as sent (it is the client's)."""
    t = token()
    query = f"api_key={ACTIVE_KEY}&api_key=bogus"
    assert raw_request(gw.port, "GET", f"/k/{t}?{query}").status == 200
    assert backend.wait_for(t)[0].query == query


@pytest.mark.parametrize("target", [
    "/k/{t}#api_key={key}",
    "/k/{t}?x=1#&api_key={key}",
    "/k/{t}#?api_key={key}",
    "/k/{t}/api_key={key}",
])
def test_key_outside_the_query_is_not_a_key(gw: GatewayProcess, backend: BackendServer, target: str) -> None:
    """A key in the fragment or in the path is not read: 403 Package Key Not Specified, nothing forwarded.
    (In the path the key's first letter is escaped: the access log records paths in full, and the session's
    secrets scan must not flag a key the client itself put in the path.)"""
    t = token()
    key = ACTIVE_KEY if "#" in target else f"%{ord(ACTIVE_KEY[0]):02x}{ACTIVE_KEY[1:]}"
    r = raw_request(gw.port, "GET", target.format(t=t, key=key))
    assert (r.status, r.header("X-Error-Detail-Header")) == (403, "Package Key Not Specified")
    assert backend.matching(t) == []


def test_fragment_is_never_forwarded(gw: GatewayProcess, backend: BackendServer) -> None:
    """A fragment sent by a client (they should not) is dropped, never forwarded to the backend."""
    t = token()
    assert raw_request(gw.port, "GET", f"/s/{t}?a=1#frag").status == 200
    assert "#" not in backend.wait_for(t)[0].raw_path


def test_query_endpoint_ignores_a_header_key_even_with_a_valid_query_key(gw: GatewayProcess,
                                                                        backend: BackendServer) -> None:
    """Key in both places, query endpoint: the query decides; a bogus X-Api-Key does not invalidate it."""
    t = token()
    r = raw_request(gw.port, "GET", f"/k/{t}?api_key={ACTIVE_KEY}", [("X-Api-Key", "bogus")])
    assert r.status == 200


def test_header_endpoint_ignores_a_query_key(gw: GatewayProcess, backend: BackendServer) -> None:
    """Key in both places, header endpoint: a bogus header key is refused whatever the query says."""
    t = token()
    r = raw_request(gw.port, "GET", f"/kh/{t}?api_key={ACTIVE_KEY}", [("X-Api-Key", "bogus")])
    assert (r.status, backend.matching(t)) == (403, [])


def test_header_key_with_surrounding_whitespace_is_accepted(gw: GatewayProcess) -> None:
    """Optional whitespace around a header value is not part of it (RFC 9110 §5.5)."""
    raw = exchange(gw.port, f"GET /kh/x HTTP/1.1\r\nHost: x\r\nX-Api-Key: \t {ACTIVE_KEY} \t\r\n"
                            "Connection: close\r\n\r\n".encode())
    assert statuses(raw) == [200]


def test_repeated_header_key_first_decides(gw: GatewayProcess, backend: BackendServer) -> None:
    """Two X-Api-Key fields: the first non-blank one decides (here a bogus one: 403)."""
    t = token()
    r = raw_request(gw.port, "GET", f"/kh/{t}", [("X-Api-Key", "bogus"), ("X-Api-Key", ACTIVE_KEY)])
    assert (r.status, backend.matching(t)) == (403, [])
