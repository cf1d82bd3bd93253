"""``transports/http11.py``: what one connection reports for the pool's keep-alive learning, sans I/O.

* ``Keep-Alive: timeout=N`` in a response lowers the connection's ``idle_limit`` to ``N - KEEPALIVE_MARGIN_S``
  (never above ``KEEPALIVE_TIMEOUT_S``), so the pool stops reusing it before the server may close it.
* A connection the server closes or resets mid-exchange fails with ``PeerClosedError`` (evidence of the stale
  keep-alive race); a malformed answer or a failing request body is a plain ``ReadError``.

Driven by literal bytes through a recording transport, as in ``test_http11.py``; real sockets are in
``tests/integration/test_fastpool_stale.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sidecar_gateway.transports import http11
from sidecar_gateway.transports.http11 import (
    KEEPALIVE_MARGIN_S,
    KEEPALIVE_TIMEOUT_S,
    Http11Connection,
    Origin,
    PeerClosedError,
    ReadError,
    encode_request_head,
)
from support.sansio import RecordingTransport


def _connection(streamed: bool = False) -> Http11Connection:
    conn = Http11Connection(Origin("http", "h", 80), asyncio.get_running_loop())
    conn.connection_made(RecordingTransport())
    head = encode_request_head("POST", b"/p", [], b"h", None if streamed else b"{}", streamed)
    if streamed:
        conn.start_streamed_request(head, False)
    else:
        conn.start_request(head, b"{}", False)
    return conn


async def _answer(conn: Http11Connection, raw: bytes) -> None:
    conn.data_received(raw)
    await conn.receive_head()
    while await conn.read_body_chunk():
        pass


# ------------------------------------------------------------------------------------- Keep-Alive: timeout


@pytest.mark.asyncio
@pytest.mark.parametrize(("header", "limit"), [
    (None, KEEPALIVE_TIMEOUT_S),  # absent: our own timeout
    (b"timeout=5", 5 - KEEPALIVE_MARGIN_S),  # Node.js, Apache
    (b"timeout=5, max=100", 5 - KEEPALIVE_MARGIN_S),
    (b"max=100, timeout=20", 20 - KEEPALIVE_MARGIN_S),
    (b"Timeout = 10", 10 - KEEPALIVE_MARGIN_S),
    (b'timeout="7"', 7 - KEEPALIVE_MARGIN_S),
    (b"timeout=600", KEEPALIVE_TIMEOUT_S),  # never longer than our own
    (b"timeout=1", 0.0),  # within the margin: not worth reusing
    (b"timeout=0", 0.0),
    (b"max=100", KEEPALIVE_TIMEOUT_S),  # no timeout parameter
    (b"timeout=soon", KEEPALIVE_TIMEOUT_S),  # unparseable: ignored
    (b"xtimeout=5", KEEPALIVE_TIMEOUT_S),  # another parameter's name
])
async def test_keep_alive_timeout_sets_the_idle_limit(header: bytes | None, limit: float) -> None:
    conn = _connection()
    extra = b"Keep-Alive: %b\r\n" % header if header is not None else b""
    await _answer(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n%b\r\n{}" % extra)
    assert conn.is_reusable
    conn.finish()
    assert conn.idle_limit == limit
    now = conn.idle_since
    assert not conn.has_expired(now + limit - 0.01) or limit == 0.0
    assert conn.has_expired(now + limit)


@pytest.mark.asyncio
async def test_the_last_announced_timeout_holds_for_the_connection() -> None:
    conn = _connection()
    await _answer(conn, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n")
    conn.finish()
    conn.start_request(encode_request_head("GET", b"/", [], b"h", None, False), None, False)
    await _answer(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # no header: the announcement stands
    assert conn.idle_limit == 5 - KEEPALIVE_MARGIN_S
    conn.finish()
    conn.start_request(encode_request_head("GET", b"/", [], b"h", None, False), None, False)
    await _answer(conn, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=9\r\nContent-Length: 0\r\n\r\n")
    assert conn.idle_limit == 9 - KEEPALIVE_MARGIN_S


@pytest.mark.asyncio
async def test_the_default_idle_limit_follows_the_module_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http11, "KEEPALIVE_TIMEOUT_S", 0.05)
    conn = _connection()
    await _answer(conn, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n")
    assert conn.idle_limit == 0.05


# ------------------------------------------------------------------------------------------ PeerClosedError


@pytest.mark.asyncio
@pytest.mark.parametrize("exc", [None, ConnectionResetError(104, "Connection reset by peer")])
async def test_server_closing_before_the_head_is_peer_closed(exc: Exception | None) -> None:
    conn = _connection()
    conn.connection_lost(exc)
    with pytest.raises(PeerClosedError, match="closed before the response head"):
        await conn.receive_head()
    assert not conn.response_started


@pytest.mark.asyncio
async def test_server_closing_mid_body_is_peer_closed() -> None:
    conn = _connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await conn.receive_head()
    assert await conn.read_body_chunk() == b"abc"
    conn.connection_lost(None)
    with pytest.raises(PeerClosedError, match="mid-body"):
        await conn.read_body_chunk()


@pytest.mark.asyncio
async def test_malformed_answer_is_a_read_error_but_not_peer_closed() -> None:
    conn = _connection()
    conn.data_received(b"HTTP/1.1 2x0 OK\r\n\r\n")
    with pytest.raises(ReadError) as info:
        await conn.receive_head()
    assert not isinstance(info.value, PeerClosedError)


@pytest.mark.asyncio
async def test_failing_request_body_is_a_read_error_but_not_peer_closed() -> None:
    """Our side failing (the client's body stream broke) is no evidence against the server."""
    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        raise RuntimeError("client went away")

    conn = _connection(streamed=True)
    head = encode_request_head("POST", b"/p", [], b"h", None, True)
    await conn.send_body_stream(body(), head)
    conn.connection_lost(None)  # the abort that follows
    with pytest.raises(ReadError) as info:
        await conn.receive_head()
    assert not isinstance(info.value, PeerClosedError) and not conn.response_started
