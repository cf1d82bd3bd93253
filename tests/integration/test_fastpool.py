"""``transports/fastpool.py``: the httptools pool against a scripted asyncio server on loopback.

The server parses each request and hands it to the test's script, which writes whatever bytes the case needs
(well-formed, truncated, malformed, nothing at all) and says whether to keep the connection.  It counts accepted
and closed connections, so reuse is asserted on both sides: the server's accept count and the client's
``__repr__`` (httpcore ``test_connection_pool.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import ipaddress
import socket
import ssl
import struct
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from sidecar_gateway.transports import http11, pool
from sidecar_gateway.transports.fastpool import HttpClient
from sidecar_gateway.transports.http11 import READ_HIGH_WATER, ConnectError, ReadError


@dataclass
class Req:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn_index: int  # which accepted connection (0-based)
    index_on_conn: int  # which request on that connection (0-based)
    reader: asyncio.StreamReader | None = field(default=None, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


Script = Callable[[Req, asyncio.StreamWriter], Awaitable[bool]]  # returns whether to keep the connection


def reply(status: int = 200, body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%b\r\n%b" % (status, len(body), extra, body)


async def answer_ok(req: Req, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(body=b"ok:" + req.target.encode()))
    await writer.drain()
    return True


@dataclass
class ScriptedServer:
    script: Script = answer_ok
    accepted: int = 0
    closed: int = 0
    requests: list[Req] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        self.writers.append(writer)
        n = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
                req = Req(method, target, headers, b"", index, n, reader)  # type: ignore[arg-type]
                if req.header("content-length") is not None:
                    req.body = await reader.readexactly(int(req.header("content-length") or 0))
                elif req.header("transfer-encoding") == "chunked":
                    body = bytearray()
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += await reader.readexactly(size)
                        await reader.readexactly(2)
                    await reader.readexactly(2)
                    req.body = bytes(body)
                self.requests.append(req)
                n += 1
                if not await self.script(req, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed += 1

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.sleep(0)  # let the handlers see the aborts


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.aclose()


Serve = Callable[..., Awaitable[ScriptedServer]]


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start scripted servers; all are stopped (listener and open connections) at teardown."""
    servers: list[ScriptedServer] = []

    async def start(script: Script = answer_ok, ssl_context: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(await ScriptedServer(script).start(ssl_context))
        return servers[-1]

    yield start
    for server in servers:
        await server.stop()


async def _eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ------------------------------------------------------------------------------------------ reuse & framing

@pytest.mark.asyncio
async def test_sequential_requests_share_one_connection(serve: Serve, client: HttpClient) -> None:
    """N sequential requests to one origin use one TCP connection, idle in the pool between them."""
    server = await serve()
    for i in range(10):
        resp = await client.request("GET", server.url(f"/{i}"), [(b"host", b"backend")])
        assert (resp.status, await resp.read()) == (200, f"ok:/{i}".encode())
    assert server.accepted == 1 and len(server.requests) == 10
    assert repr(client).startswith("<HttpClient requests=10 active=0 idle=1 queued=0")
    assert f"[http://127.0.0.1:{server.port} active=0 idle=1 queued=0]" in repr(client)
    assert server.requests[0].header("host") == "backend"


@pytest.mark.asyncio
async def test_host_header_added_from_url_when_absent(serve: Serve, client: HttpClient) -> None:
    """Without a caller Host, the URL's authority is sent."""
    server = await serve()
    await (await client.request("GET", server.url("/"), [])).read()
    assert server.requests[0].header("host") == f"127.0.0.1:{server.port}"


@pytest.mark.asyncio
async def test_connection_close_response_is_not_reused(serve: Serve, client: HttpClient) -> None:
    """``Connection: close`` from the server: every request opens a new connection, none stays idle."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(extra=b"connection: close\r\n"))
        return False

    server = await serve(script)
    for _ in range(3):
        assert await (await client.request("GET", server.url(), [])).read() == b"ok"
    assert server.accepted == 3
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_http10_response_without_keep_alive_is_not_reused(serve: Serve, client: HttpClient) -> None:
    """HTTP/1.0 semantics: no ``keep-alive`` token, no reuse."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return False

    server = await serve(script)
    for _ in range(2):
        assert await (await client.request("GET", server.url(), [])).read() == b"ok"
    assert server.accepted == 2 and "idle=0" in repr(client)


@pytest.mark.asyncio
async def test_chunked_response_streams_in_pieces(serve: Serve, client: HttpClient) -> None:
    """A chunked body arrives piece by piece through ``iter_chunks`` and the connection is reused."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(5):
            writer.write(http11.encode_chunk(b"piece%d;" % i))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    server = await serve(script)
    resp = await client.request("GET", server.url(), [])
    pieces = [chunk async for chunk in resp.iter_chunks()]
    assert b"".join(pieces) == b"piece0;piece1;piece2;piece3;piece4;" and len(pieces) >= 3
    assert await (await client.request("GET", server.url(), [])).read() == b"".join(pieces)
    assert server.accepted == 1


@pytest.mark.asyncio
async def test_read_until_close_body(serve: Serve, client: HttpClient) -> None:
    """Neither length nor chunked: the body ends at EOF and the connection is not pooled."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await writer.drain()
        writer.write(b"the end")
        return False

    server = await serve(script)
    resp = await client.request("GET", server.url(), [])
    assert await resp.read() == b"until the end"
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_bodiless_responses_keep_the_connection(serve: Serve, client: HttpClient) -> None:
    """HEAD (with a Content-Length), 204 and 304 have no body and the connection stays usable."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        if req.method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        elif req.target == "/204":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        elif req.target == "/304":
            writer.write(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1000\r\n\r\n")
        else:
            writer.write(reply())
        return True

    server = await serve(script)
    for method, path, status in [("HEAD", "/", 200), ("GET", "/204", 204), ("GET", "/304", 304),
                                 ("HEAD", "/", 200), ("GET", "/", 200)]:
        resp = await client.request(method, server.url(path), [])
        body = await resp.read()
        assert resp.status == status and body == (b"ok" if status == 200 and method == "GET" else b"")
    assert server.accepted == 1 and "active=0 idle=1" in repr(client)
    assert dict(resp.headers)[b"content-length"] == b"2"


@pytest.mark.asyncio
async def test_large_body_streams_with_bounded_memory(serve: Serve, client: HttpClient) -> None:
    """100 MB pass through a counting consumer while memory stays near the read high-water mark."""
    total = 100 * 1024 * 1024
    block = memoryview(bytes(1024 * 1024))

    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        for _ in range(total // len(block)):
            writer.write(block)
            await writer.drain()
        return True

    server = await serve(script)
    tracemalloc.start()
    try:
        resp = await client.request("GET", server.url(), [])
        count = largest = 0
        async for chunk in resp.iter_chunks():
            count += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == total
    assert largest <= READ_HIGH_WATER + 1024 * 1024
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: the body was buffered"
    assert "active=0 idle=1" in repr(client)


# ------------------------------------------------------------------------------------ streamed request body

async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


@pytest.mark.asyncio
async def test_streamed_request_body_without_length_is_chunked(serve: Serve, client: HttpClient) -> None:
    """A stream without Content-Length goes out chunked; the connection is reused afterwards."""
    server = await serve()
    for _ in range(2):
        resp = await client.request("POST", server.url("/up"), [], _stream(b"hello ", b"", b"world"))
        assert await resp.read() == b"ok:/up"
    assert [r.body for r in server.requests] == [b"hello world"] * 2
    assert server.requests[0].header("transfer-encoding") == "chunked"
    assert server.requests[0].header("content-length") is None
    assert server.accepted == 1


@pytest.mark.asyncio
async def test_streamed_request_body_with_length_is_sent_raw(serve: Serve, client: HttpClient) -> None:
    """The caller's Content-Length is used for a stream, no chunking."""
    server = await serve()
    resp = await client.request("PUT", server.url(), [(b"Content-Length", b"11")], _stream(b"hello ", b"world"))
    assert await resp.read() == b"ok:/"
    assert server.requests[0].body == b"hello world"
    assert server.requests[0].header("transfer-encoding") is None
    assert "active=0 idle=1" in repr(client)


@pytest.mark.asyncio
async def test_streamed_body_shorter_than_length_closes_and_raises(serve: Serve, client: HttpClient) -> None:
    """Fewer bytes than announced: ReadError, the connection is closed, nothing leaks."""
    server = await serve()
    with pytest.raises(ReadError):
        await client.request("POST", server.url(), [(b"content-length", b"100")], _stream(b"short"))
    assert "active=0 idle=0" in repr(client)
    await _eventually(lambda: server.closed == 1)
    assert server.requests == []


@pytest.mark.asyncio
async def test_bytes_body_gets_content_length(serve: Serve, client: HttpClient) -> None:
    """A bytes body is sent with its Content-Length."""
    server = await serve()
    await (await client.request("POST", server.url(), [], b"payload")).read()
    assert server.requests[0].header("content-length") == "7" and server.requests[0].body == b"payload"


@pytest.mark.asyncio
async def test_invalid_header_is_refused_before_connecting(serve: Serve, client: HttpClient) -> None:
    """CR/LF in a header value: ValueError, no connection is even opened."""
    server = await serve()
    with pytest.raises(ValueError):
        await client.request("GET", server.url(), [(b"x-a", b"1\r\nx-injected: 1")])
    assert server.accepted == 0 and "active=0" in repr(client)


# ---------------------------------------------------------------------------------------------- failures

@pytest.mark.asyncio
@pytest.mark.parametrize("raw", [
    b"HTTX/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"x-a: 1\r\n" * 101 + b"\r\n",
], ids=["bad status line", "oversized headers", "too many headers"])
async def test_malformed_head_is_read_error(serve: Serve, client: HttpClient, raw: bytes) -> None:
    """A malformed or oversized response head: ReadError from request(), connection dropped."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        return True

    server = await serve(script)
    with pytest.raises(ReadError):
        await client.request("GET", server.url(), [])
    assert "active=0 idle=0" in repr(client)
    await _eventually(lambda: server.closed == 1)


@pytest.mark.asyncio
async def test_bad_chunk_size_is_read_error_on_read(serve: Serve, client: HttpClient) -> None:
    """A bad chunk size after a valid head fails the body read and drops the connection."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n")
        return True

    server = await serve(script)
    resp = await client.request("GET", server.url(), [])
    with pytest.raises(ReadError):
        await resp.read()
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_reset_mid_body_is_read_error(serve: Serve, client: HttpClient) -> None:
    """A TCP reset in the middle of the body: ReadError, nothing pooled."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        _abort_with_rst(writer)
        return False

    server = await serve(script)
    resp = await client.request("GET", server.url(), [])
    with pytest.raises(ReadError):
        await resp.read()
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_premature_eof_is_read_error(serve: Serve, client: HttpClient) -> None:
    """The server closes before Content-Length bytes were sent: ReadError."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
        return False

    server = await serve(script)
    resp = await client.request("GET", server.url(), [])
    with pytest.raises(ReadError):
        await resp.read()
    assert "active=0 idle=0" in repr(client)


def _close_second_request_on_first_connection(answer_after: bool = True) -> Script:
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        if req.conn_index == 0 and req.index_on_conn == 1:
            return False  # read the request, close without a byte: the stale keep-alive race
        if req.conn_index > 0 and not answer_after:
            return False
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" if req.method == "HEAD" else reply())
        return True
    return script


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
async def test_stale_idle_connection_is_retried_once_for_idempotent(serve: Serve, client: HttpClient,
                                                                    method: str) -> None:
    """A reused connection closed before any response byte: an idempotent request is resent once, fresh."""
    server = await serve(_close_second_request_on_first_connection())
    await (await client.request(method, server.url(), [], b"x" if method == "PUT" else None)).read()
    resp = await client.request(method, server.url(), [], b"x" if method == "PUT" else None)
    assert resp.status == 200
    await resp.read()
    assert server.accepted == 2 and len(server.requests) == 3
    assert "requests=2 active=0 idle=1" in repr(client)


@pytest.mark.asyncio
async def test_stale_idle_connection_is_not_retried_for_post(serve: Serve, client: HttpClient) -> None:
    """POST is not idempotent: the same race is a ReadError, nothing is resent."""
    server = await serve(_close_second_request_on_first_connection())
    await (await client.request("POST", server.url(), [], b"x")).read()
    with pytest.raises(ReadError):
        await client.request("POST", server.url(), [], b"x")
    assert server.accepted == 1 and len(server.requests) == 2
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_stale_connection_not_retried_with_streamed_body(serve: Serve, client: HttpClient) -> None:
    """A consumed stream cannot be replayed: PUT with a streamed body is not retried."""
    server = await serve(_close_second_request_on_first_connection())
    await (await client.request("PUT", server.url(), [], _stream(b"a"))).read()
    with pytest.raises(ReadError):
        await client.request("PUT", server.url(), [], _stream(b"b"))
    assert server.accepted == 1


@pytest.mark.asyncio
async def test_retry_happens_at_most_once(serve: Serve, client: HttpClient) -> None:
    """If the fresh connection fails too, the ReadError surfaces: one retry, never more."""
    server = await serve(_close_second_request_on_first_connection(answer_after=False))
    await (await client.request("GET", server.url(), [])).read()
    with pytest.raises(ReadError):
        await client.request("GET", server.url(), [])
    assert server.accepted == 2 and len(server.requests) == 3


@pytest.mark.asyncio
async def test_no_retry_once_response_bytes_arrived(serve: Serve, client: HttpClient) -> None:
    """A partial status line then close on a reused connection: the server answered, so no retry."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        if req.index_on_conn == 1:
            writer.write(b"HTTP/1.1 20")
            await writer.drain()
            return False
        writer.write(reply())
        return True

    server = await serve(script)
    await (await client.request("GET", server.url(), [])).read()
    with pytest.raises(ReadError):
        await client.request("GET", server.url(), [])
    assert server.accepted == 1


@pytest.mark.asyncio
async def test_first_use_connection_failure_is_not_retried(serve: Serve, client: HttpClient) -> None:
    """A brand-new connection that fails is a real failure, not the stale race."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        return False

    server = await serve(script)
    with pytest.raises(ReadError):
        await client.request("GET", server.url(), [])
    assert server.accepted == 1


@pytest.mark.asyncio
async def test_idle_connection_closed_by_server_is_dropped_from_pool(serve: Serve, client: HttpClient) -> None:
    """A FIN on an idle pooled connection removes it; the next request opens a new one without error."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply())
        await writer.drain()
        return False  # close after answering, without announcing it

    server = await serve(script)
    await (await client.request("GET", server.url(), [])).read()
    await _eventually(lambda: "idle=0" in repr(client))
    await (await client.request("GET", server.url(), [])).read()
    assert server.accepted == 2 and len(server.requests) == 2


@pytest.mark.asyncio
async def test_expired_idle_connection_is_replaced(serve: Serve, client: HttpClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle connection older than the keep-alive timeout is closed, not reused."""
    monkeypatch.setattr(http11, "KEEPALIVE_TIMEOUT_S", 0.05)
    server = await serve()
    await (await client.request("GET", server.url(), [])).read()
    await asyncio.sleep(0.1)
    await (await client.request("GET", server.url(), [])).read()
    assert server.accepted == 2
    await _eventually(lambda: server.closed == 1)


@pytest.mark.asyncio
async def test_connect_refused_is_connect_error(client: HttpClient) -> None:
    """Nobody listening: ConnectError, and the reserved slot is given back."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        with pytest.raises(ConnectError):
            await client.request("GET", f"http://127.0.0.1:{port}/", [])
    finally:
        sock.close()
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_unknown_host_is_connect_error(client: HttpClient) -> None:
    """DNS failure: ConnectError."""
    with pytest.raises(ConnectError):
        await client.request("GET", "http://no-such-host.invalid/", [])


# ------------------------------------------------------------------------------------------- cancellation

async def _hang(req: Req, writer: asyncio.StreamWriter) -> bool:
    if req.target == "/partial":
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        await writer.drain()
    assert req.reader is not None
    await req.reader.read()  # until the client closes
    return False


@pytest.mark.asyncio
async def test_cancellation_mid_read_closes_the_connection(serve: Serve, client: HttpClient) -> None:
    """A timeout around read() closes the connection: 0 active, 0 idle, the server sees the close."""
    server = await serve(_hang)
    resp = await client.request("GET", server.url("/partial"), [])
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await resp.read()
    assert "active=0 idle=0" in repr(client)
    await _eventually(lambda: server.closed == 1)


@pytest.mark.asyncio
async def test_cancellation_before_the_head_closes_the_connection(serve: Serve, client: HttpClient) -> None:
    """A timeout around request() while waiting for the head leaks nothing."""
    server = await serve(_hang)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.request("GET", server.url("/silent"), [])
    assert "active=0 idle=0" in repr(client)
    await _eventually(lambda: server.closed == 1)


@pytest.mark.asyncio
async def test_cancelled_iter_chunks_and_close_do_not_pool(serve: Serve, client: HttpClient) -> None:
    """An abandoned body (aclose of the iterator, or close()) drops the connection."""
    server = await serve(_hang)
    resp = await client.request("GET", server.url("/partial"), [])
    async with contextlib.aclosing(resp.iter_chunks()) as chunks:
        async for chunk in chunks:
            assert chunk == b"0123456789"
            break
    assert "active=0 idle=0" in repr(client)
    resp = await client.request("GET", server.url("/partial"), [])
    resp.close()
    resp.release()  # idempotent, no effect after close
    assert "active=0 idle=0" in repr(client)
    await _eventually(lambda: server.closed == 2)


@pytest.mark.asyncio
async def test_release_of_unread_body_closes_instead_of_pooling(serve: Serve, client: HttpClient) -> None:
    """release() before the body ended: the connection cannot be reused, so it is closed."""
    server = await serve(_hang)
    resp = await client.request("GET", server.url("/partial"), [])
    resp.release()
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_dropped_response_does_not_leak(serve: Serve, client: HttpClient) -> None:
    """A response object dropped without release/close gives its slot back when collected."""
    server = await serve(_hang)
    resp = await client.request("GET", server.url("/partial"), [])
    del resp
    gc.collect()
    assert "active=0 idle=0" in repr(client)


@pytest.mark.asyncio
async def test_async_context_manager_releases(serve: Serve, client: HttpClient) -> None:
    """``async with`` releases a fully read response to the pool."""
    server = await serve()
    async with await client.request("GET", server.url(), []) as resp:
        assert await resp.read() == b"ok:/"
    assert "active=0 idle=1" in repr(client)


# ----------------------------------------------------------------------------------------- concurrency & cap

@pytest.mark.asyncio
async def test_concurrent_requests_open_parallel_connections(serve: Serve, client: HttpClient) -> None:
    """No cap by default: 50 concurrent requests all complete; every connection ends idle."""
    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        writer.write(reply(body=req.target.encode()))
        return True

    server = await serve(script)

    async def one(i: int) -> bytes:
        return await (await client.request("GET", server.url(f"/{i}"), [])).read()

    bodies = await asyncio.gather(*(one(i) for i in range(50)))
    assert bodies == [f"/{i}".encode() for i in range(50)]
    assert f"active=0 idle={server.accepted}" in repr(client) and 1 < server.accepted <= 50


@pytest.mark.asyncio
async def test_max_connections_queues_requests(serve: Serve) -> None:
    """With max_connections=1 a second request waits (queued=1) and then reuses the same connection."""
    gate = asyncio.Event()

    async def script(req: Req, writer: asyncio.StreamWriter) -> bool:
        await gate.wait()
        writer.write(reply())
        return True

    server = await serve(script)
    client = HttpClient(max_connections=1)
    try:
        first = asyncio.ensure_future(client.request("GET", server.url(), []))
        second = asyncio.ensure_future(client.request("GET", server.url(), []))
        third = asyncio.ensure_future(client.request("GET", server.url(), []))
        await _eventually(lambda: "active=1 idle=0 queued=2" in repr(client))
        third.cancel()
        await _eventually(lambda: "queued=1" in repr(client))
        gate.set()
        for task in (first, second):
            await (await task).read()
        assert server.accepted == 1 and "active=0 idle=1 queued=0" in repr(client)
    finally:
        await client.aclose()


# -------------------------------------------------------------------------------------------------- TLS

def _self_signed(tmp: Path) -> tuple[Path, Path, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, pem


@pytest_asyncio.fixture
async def tls_server(tmp_path: Path, serve: Serve) -> AsyncIterator[tuple[ScriptedServer, bytes, list[str | None]]]:
    cert_file, key_file, pem = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    ctx.sni_callback = lambda sslobj, name, ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    server = await serve(ssl_context=ctx)
    yield server, pem, names


@pytest.mark.asyncio
async def test_tls_with_trusted_self_signed_certificate(
        tls_server: tuple[ScriptedServer, bytes, list[str | None]]) -> None:
    """https with a context trusting the test certificate: SNI is the host, the connection is reused."""
    server, pem, names = tls_server
    client = HttpClient(ssl_context=ssl.create_default_context(cadata=pem.decode()))
    try:
        for _ in range(3):
            resp = await client.request("GET", server.url("/tls", scheme="https", host="localhost"), [])
            assert await resp.read() == b"ok:/tls"
        assert server.accepted == 1 and names == ["localhost"]
        assert f"[https://localhost:{server.port} active=0 idle=1 queued=0]" in repr(client)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_tls_untrusted_certificate_is_connect_error(
        tls_server: tuple[ScriptedServer, bytes, list[str | None]]) -> None:
    """The default context verifies certificates: a self-signed one is a ConnectError."""
    server, _, _ = tls_server
    client = HttpClient()
    try:
        with pytest.raises(ConnectError, match=r"(?i)certificate"):
            await client.request("GET", server.url(scheme="https", host="localhost"), [])
        assert "active=0 idle=0" in repr(client)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_tls_host_name_mismatch_is_connect_error(
        tls_server: tuple[ScriptedServer, bytes, list[str | None]]) -> None:
    """The certificate must name the host we dialled."""
    server, pem, _ = tls_server
    client = HttpClient(ssl_context=ssl.create_default_context(cadata=pem.decode()))
    try:
        with pytest.raises(ConnectError):
            await client.request("GET", server.url(scheme="https", host="127.0.0.2"), [])
    finally:
        await client.aclose()


# --------------------------------------------------------------------------------------------- selection

def test_pool_module_selects_the_httptools_client_by_default() -> None:
    """``pool.HttpClient`` is this client unless SIDECAR_GATEWAY_HTTP_CLIENT=aiohttp; errors are shared."""
    import os

    expected = pool.AiohttpClient if os.environ.get(pool.CLIENT_ENV) == "aiohttp" else HttpClient
    assert pool.HttpClient is expected
    assert pool.ConnectError is ConnectError and pool.ReadError is ReadError


@pytest.mark.asyncio
async def test_closed_client_refuses_requests() -> None:
    """After aclose() a request is a ConnectError."""
    client = HttpClient()
    await client.aclose()
    with pytest.raises(ConnectError):
        await client.request("GET", "http://127.0.0.1:1/", [])
