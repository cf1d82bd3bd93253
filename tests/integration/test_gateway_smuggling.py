"""Request framing on raw sockets (RFC 9112 §6, RFC 9110 §7.6.1): chunked bodies are forwarded whole,
pipelined requests are answered in order, and ambiguous framing (Content-Length with Transfer-Encoding,
conflicting Content-Length, whitespace before a header colon) never reaches the backend as a desynchronised
request."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

from support.backend import MIB, pattern_bytes, pattern_sha256
from support.gateway_proc import config, endpoint, service


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    cfg = config(service("svc-smug", endpoint("ep-s", "/s", backend.url("/be/s"), key_required=False)))
    return module_gateway_factory.start(cfg)


def exchange(port: int, data: bytes, idle: float = 1.5, total: float = 10.0) -> bytes:
    """Send ``data`` on one connection; read until the peer closes or is idle for ``idle`` seconds."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=idle) as s:
        s.sendall(data)
        deadline = time.monotonic() + total
        while time.monotonic() < deadline:
            try:
                piece = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
    return bytes(out)


def statuses(raw: bytes) -> list[int]:
    """Status codes of the responses in ``raw`` (a status line may follow the previous body directly)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_chunked_request_body_is_forwarded_whole(gw, backend):
    """A chunked request body reaches the backend complete, byte for byte."""
    token = uuid.uuid4().hex
    body = b"".join(pattern_bytes(MIB + 123))
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 100_000]), body[i : i + 100_000]) for i in range(0, len(body), 100_000)
    )
    head = f"POST /s/{token} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    exchange(gw.port, head.encode() + chunks + b"0\r\n\r\n")
    got = backend.wait_for(token, timeout=5)
    assert [(r.body_length, r.body_sha256) for r in got] == [(MIB + 123, pattern_sha256(MIB + 123))]


def test_pipelined_requests_are_answered_in_order(gw):
    """Two requests written at once on one connection get two answers, in order."""
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    raw = exchange(
        gw.port,
        (f"GET /s/{a} HTTP/1.1\r\nHost: x\r\n\r\nGET /s/{b} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode(),
    )
    assert statuses(raw) == [200, 200] and raw.index(a.encode()) < raw.index(b.encode()), raw[:300]


@pytest.fixture(scope="module")
def cl_te(gw, backend):
    """A request with both Content-Length and Transfer-Encoding whose chunked body ends early, followed by a
    'smuggled' request that a Content-Length reading would swallow; returns (raw answer, tokens)."""
    first, smuggled = uuid.uuid4().hex, uuid.uuid4().hex
    tail = f"GET /s/{smuggled} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    body = b"0\r\n\r\n" + tail
    req = (
        f"POST /s/{first} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + body
    raw = exchange(gw.port, req)
    time.sleep(0.3)
    return raw, first, smuggled


def test_content_length_with_chunked_never_reaches_backend_with_both(cl_te, backend):
    """The backend never receives a request framed by both Content-Length and Transfer-Encoding."""
    _, first, _ = cl_te
    both = [
        r for r in backend.matching(first) if r.header_values("content-length") and r.header_values("transfer-encoding")
    ]
    assert both == []


def test_request_after_content_length_with_chunked_is_not_served(cl_te, backend):
    """After a Content-Length + Transfer-Encoding request the connection is closed (RFC 9112 §6.1): the
    request following it on that connection is not served."""
    _, _, smuggled = cl_te
    assert backend.matching(smuggled) == []


def test_conflicting_content_lengths_answer_400(gw, backend):
    """Two different Content-Length values answer 400 (RFC 9112 §6.3) and nothing is forwarded."""
    token = uuid.uuid4().hex
    raw = exchange(
        gw.port,
        (
            f"POST /s/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            f"Content-Length: 5\r\nConnection: close\r\n\r\nabcde"
        ).encode(),
    )
    assert (statuses(raw)[:1], backend.matching(token)) == ([400], [])


def test_whitespace_before_header_colon_answers_400(gw, backend):
    """A header with whitespace between name and colon answers 400 (RFC 9112 §5.1) and nothing is forwarded."""
    token = uuid.uuid4().hex
    raw = exchange(
        gw.port,
        (f"POST /s/{token} HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\nConnection: close\r\n\r\nabcde").encode(),
    )
    assert (statuses(raw)[:1], backend.matching(token)) == ([400], [])
