"""``transports/http11.py``: the pure encoders in tables, the connection protocol driven by literal bytes.

No sockets here: a ``MockTransport`` records what is written and whether reading/the connection was paused or
aborted (uvicorn ``tests/protocols/test_http.py``).  The pool and real sockets are in
``tests/integration/test_fastpool.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sidecar_gateway.transports import http11
from sidecar_gateway.transports.http11 import (
    MAX_HEAD_BYTES,
    MAX_HEADER_COUNT,
    READ_HIGH_WATER,
    ExchangeState,
    Framing,
    Http11Connection,
    Origin,
    ReadError,
    encode_chunk,
    encode_request_head,
    split_url,
)
from support.sansio import RecordingTransport as MockTransport

# ------------------------------------------------------------------------------------------------ split_url

URL_ROWS = [
    ("http://example.com/a?b=1", Origin("http", "example.com", 80), b"/a?b=1", b"example.com"),
    ("http://example.com", Origin("http", "example.com", 80), b"/", b"example.com"),
    ("http://example.com?x=1", Origin("http", "example.com", 80), b"/?x=1", b"example.com"),
    ("https://Example.COM/p", Origin("https", "example.com", 443), b"/p", b"example.com"),
    ("http://127.0.0.1:8080/p%20q", Origin("http", "127.0.0.1", 8080), b"/p%20q", b"127.0.0.1:8080"),
    ("https://h:443/", Origin("https", "h", 443), b"/", b"h"),
    ("http://[::1]:9000/x", Origin("http", "::1", 9000), b"/x", b"[::1]:9000"),
    ("http://h/x#frag", Origin("http", "h", 80), b"/x", b"h"),
]


@pytest.mark.parametrize(("url", "origin", "target", "host"), URL_ROWS)
def test_split_url_gives_origin_target_and_host(url: str, origin: Origin, target: bytes, host: bytes) -> None:
    """An absolute URL splits into the pool key, the request target sent as-is, and a default Host."""
    assert split_url(url) == (origin, target, host)


@pytest.mark.parametrize("url", [
    "ftp://h/", "/relative", "http://user:pw@h/", "http://h:99999/", "http://h:x/", "http:///p",
    "http://h/a b", "http://h/a\r\nX: y", "http://h/\x00", "http://h/é",
])
def test_split_url_rejects_what_cannot_be_sent(url: str) -> None:
    """Unsupported schemes, credentials, bad ports and unencoded characters are a ValueError."""
    with pytest.raises(ValueError):
        split_url(url)


def test_origin_str_brackets_ipv6() -> None:
    """An origin renders like a URL prefix (used in repr and errors)."""
    assert str(Origin("http", "::1", 80)) == "http://[::1]:80"
    assert str(Origin("https", "h", 443)) == "https://h:443"


# ------------------------------------------------------------------------------------- encode_request_head

def _head(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None,
          streamed: bool = False) -> http11.RequestHead:
    return encode_request_head(method, b"/p", headers or [], b"h:1", body, streamed)


def test_head_is_request_line_headers_and_blank_line() -> None:
    """The head is written in one piece: request line, caller headers in order, Host added, blank line."""
    head = _head(headers=[(b"X-A", b"1"), (b"x-b", b"two words")])
    assert head.data == b"GET /p HTTP/1.1\r\nX-A: 1\r\nx-b: two words\r\nhost: h:1\r\n\r\n"
    assert head.keep_alive and not head.chunked and head.content_length == 0


def test_caller_host_header_is_kept_and_not_duplicated() -> None:
    """A Host given by the caller wins; none is added from the URL."""
    head = _head(headers=[(b"Host", b"public.example")])
    assert head.data.count(b"ost:") == 1 and b"Host: public.example\r\n" in head.data


HEAD_FRAMING_ROWS: list[tuple[str, list[tuple[bytes, bytes]], bytes | None, bool, bytes | None, int | None, bool]] = [
    # method, headers, body, streamed, framing header expected (None: neither), content_length, chunked
    ("POST", [], b"abc", False, b"content-length: 3", 3, False),
    ("POST", [(b"Content-Length", b"3")], b"abc", False, b"content-length: 3", 3, False),
    ("POST", [], None, False, b"content-length: 0", 0, False),
    ("PUT", [], b"", False, b"content-length: 0", 0, False),
    ("GET", [], None, False, None, 0, False),
    ("DELETE", [], None, False, None, 0, False),
    ("POST", [], None, True, b"transfer-encoding: chunked", None, True),
    ("POST", [(b"transfer-encoding", b"chunked")], None, True, b"transfer-encoding: chunked", None, True),
    ("POST", [(b"content-length", b"10")], None, True, b"content-length: 10", 10, False),
]


@pytest.mark.parametrize(("method", "headers", "body", "streamed", "framing", "length", "chunked"),
                         HEAD_FRAMING_ROWS)
def test_body_framing(method: str, headers: list[tuple[bytes, bytes]], body: bytes | None, streamed: bool,
                      framing: bytes | None, length: int | None, chunked: bool) -> None:
    """Bytes bodies get Content-Length; streams keep the caller's or go chunked; exactly one framing header."""
    head = _head(method, headers, body, streamed)
    lower = head.data.lower()
    if framing is None:
        assert b"content-length" not in lower and b"transfer-encoding" not in lower
    else:
        assert lower.count(framing) == 1
        assert lower.count(b"content-length") + lower.count(b"transfer-encoding") == 1
    assert (head.content_length, head.chunked) == (length, chunked)


@pytest.mark.parametrize(("headers", "body", "streamed"), [
    ([(b"X-Evil", b"a\r\nInjected: 1")], None, False),
    ([(b"X-Evil", b"a\nb")], None, False),
    ([(b"X-Evil", b"a\x00b")], None, False),
    ([(b"X-Evil\r\nInjected", b"1")], None, False),
    ([(b"X Evil", b"1")], None, False),
    ([(b"X:Evil", b"1")], None, False),
    ([(b"", b"1")], None, False),
    ([(b"content-length", b"5")], b"abc", False),
    ([(b"content-length", b"-1")], None, True),
    ([(b"content-length", b"1"), (b"Content-Length", b"1")], b"a", False),
    ([(b"transfer-encoding", b"chunked")], b"abc", False),
    ([(b"transfer-encoding", b"gzip")], None, True),
    ([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")], None, True),
])
def test_invalid_headers_are_refused_before_writing(headers: list[tuple[bytes, bytes]], body: bytes | None,
                                                    streamed: bool) -> None:
    """CR/LF/NUL, non-token names and contradictory framing are a ValueError (defense in depth)."""
    with pytest.raises(ValueError):
        _head("POST", headers, body, streamed)


def test_tab_and_obs_text_are_allowed_in_values() -> None:
    """HTAB and bytes ≥ 0x80 are legal field content (RFC 9110 §5.5)."""
    assert b"X-A: a\tb\xe9\r\n" in _head(headers=[(b"X-A", b"a\tb\xe9")]).data


@pytest.mark.parametrize("method", ["GE T", "GET\r\n", "", "GÉT"])
def test_bad_method_is_refused(method: str) -> None:
    """A method must be a token."""
    with pytest.raises((ValueError, UnicodeEncodeError)):
        _head(method)


def test_connection_close_from_caller_disables_keep_alive() -> None:
    """A caller's ``Connection: close`` is sent and the connection will not be reused."""
    assert not _head(headers=[(b"Connection", b"close")]).keep_alive


def test_encode_chunk() -> None:
    """A chunk is hex size, CRLF, data, CRLF."""
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


# ----------------------------------------------------------------------------------- the protocol, sans I/O

def _connection(method: str = "GET", streamed: bool = False) -> tuple[Http11Connection, MockTransport]:
    conn = Http11Connection(Origin("http", "h", 80), asyncio.get_running_loop())
    transport = MockTransport()
    conn.connection_made(transport)
    if streamed:
        conn.start_streamed_request(_head(method, streamed=True), method == "HEAD")
    else:
        conn.start_request(_head(method), None, method == "HEAD")
    return conn, transport


async def _exchange(data: list[bytes], method: str = "GET", eof: bool = False,
                    ) -> tuple[Http11Connection, MockTransport, bytes]:
    conn, transport = _connection(method)
    for piece in data:
        conn.data_received(piece)
    if eof:
        conn.connection_lost(None)
    await conn.receive_head()
    body = b""
    while chunk := await conn.read_body_chunk():
        body += chunk
    return conn, transport, body


RESPONSE_ROWS = [
    # name, raw response pieces, method, eof, status, body, framing, reusable
    ("content-length", [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], "GET", False,
     200, b"hello", Framing.LENGTH, True),
    ("split everywhere", [b"HTTP/1.1 2", b"00 OK\r\nConte", b"nt-Length: 5\r", b"\n\r\nhel", b"lo"], "GET", False,
     200, b"hello", Framing.LENGTH, True),
    ("chunked", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"],
     "GET", False, 200, b"hello world", Framing.CHUNKED, True),
    ("chunked with trailers", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n"],
     "GET", False, 200, b"hi", Framing.CHUNKED, True),
    ("read until close", [b"HTTP/1.1 200 OK\r\n\r\nstream", b"ed"], "GET", True,
     200, b"streamed", Framing.UNTIL_CLOSE, False),
    ("HEAD ignores content-length", [b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], "HEAD", False,
     200, b"", Framing.NONE, True),
    ("204 has no body", [b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"], "GET", False,
     204, b"", Framing.NONE, True),
    ("304 has no body", [b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"], "GET", False,
     304, b"", Framing.NONE, True),
    ("1xx interim is skipped", [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
                                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"], "GET", False,
     201, b"ok", Framing.LENGTH, True),
    ("connection close", [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"], "GET", False,
     200, b"ok", Framing.LENGTH, False),
    ("http/1.0 closes by default", [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"], "GET", False,
     200, b"ok", Framing.LENGTH, False),
    ("http/1.0 keep-alive", [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"], "GET",
     False, 200, b"ok", Framing.LENGTH, True),
    ("empty content-length", [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], "GET", False,
     200, b"", Framing.LENGTH, True),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "data", "method", "eof", "status", "body", "framing", "reusable"), RESPONSE_ROWS,
                         ids=[r[0] for r in RESPONSE_ROWS])
async def test_response_framing(name: str, data: list[bytes], method: str, eof: bool, status: int, body: bytes,
                                framing: Framing, reusable: bool) -> None:
    """Each framing delivers exactly the body; only a cleanly ended keep-alive exchange is reusable."""
    conn, _, got = await _exchange(data, method, eof)
    assert (conn.status, got, conn.framing, conn.is_reusable) == (status, body, framing, reusable)
    assert conn.state is ExchangeState.COMPLETE


@pytest.mark.asyncio
async def test_header_names_lower_cased_values_raw() -> None:
    """Response header names are lower-cased bytes, values untouched, order and duplicates kept."""
    conn, _, _ = await _exchange([b"HTTP/1.1 200 OK\r\nX-Mixed: AbC\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                                  b"Content-Length: 0\r\n\r\n"])
    assert conn.headers == [(b"x-mixed", b"AbC"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                            (b"content-length", b"0")]


MALFORMED_ROWS = [
    ("bad status line", [b"HTTX/1.1 200 OK\r\n\r\n"]),
    ("garbage", [b"\x00\x01\x02 not http\r\n\r\n"]),
    ("bad chunk size", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"]),
    ("duplicate content-length", [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"]),
    ("content-length and chunked", [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"]),
    ("control char in header", [b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\n\r\n"]),
    ("bare LF", [b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"]),
    ("oversized header line", [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"]),
    ("oversized head, unfinished", [b"HTTP/1.1 200 OK\r\n"] + [b"X-A: " + b"a" * 1000 + b"\r\n"] * 70),
    ("oversized head in small lines", [b"HTTP/1.1 200 OK\r\n" + b"".join(
        b"X-%d: %b\r\n" % (i, b"v" * 1000) for i in range(70)) + b"\r\n"]),
    ("too many headers", [b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (MAX_HEADER_COUNT + 1) + b"\r\n"]),
    ("switching protocols", [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: upgrade\r\n\r\n"]),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("name", "data"), MALFORMED_ROWS, ids=[r[0] for r in MALFORMED_ROWS])
async def test_malformed_response_is_read_error_and_aborts(name: str, data: list[bytes]) -> None:
    """A malformed or oversized head is a ReadError; the transport is aborted, never reused."""
    conn, transport = _connection()
    for piece in data:
        conn.data_received(piece)
    with pytest.raises(ReadError):
        await conn.receive_head()
        await conn.read_body_chunk()  # a bad chunk size fails the body, after the head was delivered
    assert transport.closing and conn.is_closed and not conn.is_reusable


@pytest.mark.asyncio
async def test_exactly_max_headers_is_accepted() -> None:
    """The header-count bound is inclusive."""
    data = b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (MAX_HEADER_COUNT - 1) + b"Content-Length: 0\r\n\r\n"
    conn, _, _ = await _exchange([data])
    assert len(conn.headers) == MAX_HEADER_COUNT


@pytest.mark.asyncio
async def test_malformed_chunk_mid_body_fails_the_read() -> None:
    """A head that parsed is delivered; a bad chunk later fails the body read."""
    conn, transport = _connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
    await conn.receive_head()
    assert await conn.read_body_chunk() == b"ok"
    conn.data_received(b"xyz\r\n")
    with pytest.raises(ReadError):
        await conn.read_body_chunk()
    assert transport.closing


@pytest.mark.asyncio
@pytest.mark.parametrize("exc", [None, ConnectionResetError(104, "reset")])
async def test_premature_eof_or_reset_mid_body_is_read_error(exc: Exception | None) -> None:
    """What arrived is delivered, then the truncation is a ReadError."""
    conn, _ = _connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    conn.connection_lost(exc)
    await conn.receive_head()
    assert await conn.read_body_chunk() == b"abc"
    with pytest.raises(ReadError):
        await conn.read_body_chunk()


@pytest.mark.asyncio
async def test_eof_before_head_is_read_error_without_response_bytes() -> None:
    """A connection closed before any byte is a ReadError and ``response_started`` stays False (retry rule)."""
    conn, _ = _connection()
    conn.connection_lost(None)
    with pytest.raises(ReadError):
        await conn.receive_head()
    assert not conn.response_started


@pytest.mark.asyncio
async def test_eof_after_partial_head_marks_response_started() -> None:
    """Any response byte counts: such a failure is never retried."""
    conn, _ = _connection()
    conn.data_received(b"HTTP/1.1 2")
    conn.connection_lost(None)
    with pytest.raises(ReadError):
        await conn.receive_head()
    assert conn.response_started


@pytest.mark.asyncio
async def test_bytes_after_complete_response_prevent_reuse() -> None:
    """Extra bytes after the body mean the framing cannot be trusted."""
    conn, _, _ = await _exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"])
    assert not conn.is_reusable


@pytest.mark.asyncio
async def test_head_response_with_body_prevents_reuse() -> None:
    """A body after a HEAD answer is a protocol violation: the connection is not reused."""
    conn, _, body = await _exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], method="HEAD")
    assert body == b"" and not conn.is_reusable


@pytest.mark.asyncio
async def test_unsolicited_bytes_on_idle_connection_close_it() -> None:
    """Bytes arriving between exchanges close the connection (RFC 9112 §9.3.2)."""
    conn, transport, _ = await _exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    conn.finish()
    assert conn.is_idle
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closing and conn.is_closed


@pytest.mark.asyncio
async def test_reading_pauses_above_high_water_and_resumes_when_drained() -> None:
    """Body bytes beyond READ_HIGH_WATER pause the transport; reading the buffer resumes it."""
    conn, transport = _connection()
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (READ_HIGH_WATER * 4))
    await conn.receive_head()
    piece = b"x" * (64 * 1024)
    fed = 0
    while transport.reading:
        conn.data_received(piece)
        fed += len(piece)
    assert READ_HIGH_WATER < fed <= READ_HIGH_WATER + len(piece)
    assert len(await conn.read_body_chunk()) == fed
    assert transport.reading and transport.pauses == 1


@pytest.mark.asyncio
async def test_request_written_in_one_write_with_small_body() -> None:
    """Head and a small bytes body leave in a single write."""
    conn = Http11Connection(Origin("http", "h", 80), asyncio.get_running_loop())
    writes: list[bytes] = []
    transport = MockTransport()
    transport.write = writes.append  # type: ignore[method-assign]
    conn.connection_made(transport)
    conn.start_request(_head("POST", body=b"abc"), b"abc", False)
    assert writes == [b"POST /p HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\n\r\nabc"]
    assert conn.request_sent


async def _body(*chunks: bytes, gate: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if gate is not None:
            await gate.wait()
        yield chunk


@pytest.mark.asyncio
async def test_streamed_body_is_chunked_without_content_length() -> None:
    """A stream without Content-Length is sent chunked, empty pieces skipped, with the terminating chunk."""
    conn, transport = _connection("POST", streamed=True)
    head = _head("POST", streamed=True)
    await conn.send_body_stream(_body(b"ab", b"", b"cde"), head)
    assert bytes(transport.written).endswith(b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    assert conn.request_sent


@pytest.mark.asyncio
async def test_streamed_body_with_content_length_is_sent_raw() -> None:
    """A stream with the caller's Content-Length is sent as is."""
    conn, transport = _connection("POST", streamed=True)
    head = _head("POST", [(b"content-length", b"5")], streamed=True)
    await conn.send_body_stream(_body(b"ab", b"cde"), head)
    assert bytes(transport.written).endswith(b"\r\n\r\nabcde") and conn.request_sent


@pytest.mark.asyncio
@pytest.mark.parametrize("chunks", [(b"ab",), (b"abc", b"def")])
async def test_streamed_body_not_matching_content_length_breaks_the_exchange(chunks: tuple[bytes, ...]) -> None:
    """Too few or too many bytes for the announced length: the connection is aborted and reads fail."""
    conn, transport = _connection("POST", streamed=True)
    head = _head("POST", [(b"content-length", b"5")], streamed=True)
    await conn.send_body_stream(_body(*chunks), head)
    assert not conn.request_sent and transport.closing
    assert not bytes(transport.written).endswith(b"abcdef")  # the excess was never written
    with pytest.raises(ReadError):
        await conn.receive_head()


@pytest.mark.asyncio
async def test_failing_body_iterator_becomes_read_error_with_cause() -> None:
    """An exception from the caller's body iterator breaks the exchange; the reader sees ReadError from it."""

    class Boom(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"a"
        raise Boom

    conn, _ = _connection("POST", streamed=True)
    await conn.send_body_stream(body(), _head("POST", streamed=True))
    with pytest.raises(ReadError) as info:
        await conn.receive_head()
    assert isinstance(info.value.__cause__, Boom)


@pytest.mark.asyncio
async def test_streamed_writes_wait_while_transport_is_paused() -> None:
    """Write back-pressure: after pause_writing no further chunk is taken until resume_writing."""
    conn, _ = _connection("POST", streamed=True)
    taken: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for piece in (b"1", b"2", b"3"):
            taken.append(piece)
            yield piece

    conn.pause_writing()
    task = asyncio.ensure_future(conn.send_body_stream(body(), _head("POST", streamed=True)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert taken == [b"1"]
    conn.resume_writing()
    await task
    assert taken == [b"1", b"2", b"3"] and conn.request_sent


@pytest.mark.asyncio
async def test_connection_lost_releases_a_paused_writer() -> None:
    """A writer waiting for resume_writing ends when the connection is lost."""
    conn, _ = _connection("POST", streamed=True)
    conn.pause_writing()
    task = asyncio.ensure_future(conn.send_body_stream(_body(b"a", b"b"), _head("POST", streamed=True)))
    await asyncio.sleep(0)
    conn.connection_lost(ConnectionResetError())
    await asyncio.wait_for(task, 1)
    assert not conn.request_sent


@pytest.mark.asyncio
async def test_predicates_follow_the_exchange() -> None:
    """is_idle / has_expired / is_reusable / is_closed over one exchange."""
    conn, _ = _connection()
    assert not conn.is_idle and not conn.is_reusable
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await conn.receive_head()
    assert conn.is_reusable
    conn.finish()
    now = conn.loop.time()
    assert conn.is_idle and not conn.has_expired(now)
    assert conn.has_expired(now + http11.KEEPALIVE_TIMEOUT_S + 1)
    conn.connection_lost(None)
    assert conn.is_closed and conn.has_expired(now)
    assert "state=CLOSED" in repr(conn) and "requests=1" in repr(conn)
