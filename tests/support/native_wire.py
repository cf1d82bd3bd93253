"""Raw HTTP/1.1 on the wire for the native lane's tests (tests/integration/test_native_lane_differential.py,
tests/support/native_sigv4_wire.py): exact bytes in both directions, nothing normalised.

* ``RawServer``: an asyncio TCP server on ``listeners`` loopback ports in a daemon thread.  It records every request
  exactly as received (``Received``: head bytes, body bytes, connection serial number) *before* answering it (by
  ``_answer``, for subclasses to write), so a request is recorded by the time the client's answer arrives.
  ``take()`` returns and clears the records.
* ``read_request_body``: a raw asyncio server's side: the body of a request whose head it has read (Content-Length
  or chunked framing, kept raw with its framing).
* ``Answer``: one answer as the client received it (head, raw body, whether the connection was closed after it, any
  1xx heads before it, stray bytes before it, bytes between it and EOF).
* ``RawConnection``: one keep-alive client connection; ``exchange`` writes one request in one ``sendall`` and reads
  exactly its answer (Content-Length, chunked or close-delimited framing; none for HEAD, 204, 304), tracking EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import Self

__all__ = ["IO_TIMEOUT_S", "Answer", "RawConnection", "RawServer", "Received", "read_request_body"]

IO_TIMEOUT_S = 10.0


@dataclass
class Received:
    head: bytes
    body: bytes
    conn: int = 0  # the server's serial number of the connection it arrived on (1, 2, ...)


class RawServer:
    """An asyncio TCP server (``listeners`` loopback ports) in a daemon thread: records each request head and body
    exactly as received, and answers it by ``_answer``."""

    thread_name = "raw-server"

    def __init__(self, listeners: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self.records: list[Received] = []
        self.lock = threading.Lock()
        self.listeners = listeners
        self.ports: list[int] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._conns = 0
        self._thread = threading.Thread(target=self.loop.run_forever, name=self.thread_name, daemon=True)

    @property
    def port(self) -> int:
        return self.ports[0]

    def start(self) -> Self:
        self._thread.start()
        for _ in range(self.listeners):
            server = asyncio.run_coroutine_threadsafe(
                asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(5)
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def url(self, path: str = "", listener: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[listener]}{path}"

    def take(self) -> list[Received]:
        """The requests recorded since the last call."""
        with self.lock:
            out, self.records = self.records, []
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns += 1
        conn = self._conns
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                body = await read_request_body(reader, head)
                with self.lock:
                    self.records.append(Received(head, body, conn))
                if not await self._answer(head, reader, writer):
                    return
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Write the answer; False when the connection is to be closed."""
        raise NotImplementedError


async def read_request_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body of the request whose head was just read: Content-Length bytes, or a chunked body kept raw (framing
    included); empty without either."""
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:  # kept raw, framing included
        out = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            out += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    out += trailer
                return out + b"\r\n"
            out += await reader.readexactly(size + 2)
    return await reader.readexactly(length) if length else b""


@dataclass
class Answer:
    head: bytes  # status line and header lines, up to and including the blank line
    body: bytes  # raw, chunk framing included
    closed: bool  # the gateway closed the connection after this answer
    interim: bytes = b""  # any 1xx heads before it (e.g. 100 Continue)
    stray: bytes = b""  # bytes already waiting before the request was sent (the previous answer overran)
    after_close: bytes = b""  # bytes after an answer that closed the connection, before EOF

    @property
    def status(self) -> int:
        parts = self.head.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    def header_lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")[1:-2]

    def header(self, name: bytes) -> list[bytes]:
        """The values of the header ``name`` (lower case), in order."""
        out = []
        for line in self.header_lines():
            k, _, v = line.partition(b":")
            if k.strip().lower() == name:
                out.append(v.strip())
        return out


class RawConnection:
    """One keep-alive client connection: writes each request in one ``sendall`` and reads the exact answer.

    Bytes already waiting when a request is to be sent (the previous answer overran) are recorded in
    ``Answer.stray``, or fail an assertion when ``keep_stray`` is False."""

    keep_stray = True

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take_until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            if not self._fill():
                raise ConnectionError(f"EOF before {marker!r}; got {self.buf[:200]!r}")
        out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker):]
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _take_rest(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def exchange(self, request: bytes, method: str) -> Answer:
        assert self.keep_stray or self.buf == b"", f"bytes before the request was sent: {self.buf[:200]!r}"
        stray, self.buf = self.buf, b""
        self.sock.sendall(request)
        interim = b""
        head = self._take_until(b"\r\n\r\n")
        while 100 <= Answer(head, b"", False).status < 200:
            interim += head
            head = self._take_until(b"\r\n\r\n")
        answer = Answer(head, b"", False, interim, stray)
        status = answer.status
        te = b",".join(answer.header(b"transfer-encoding")).lower()
        lengths = answer.header(b"content-length")
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif b"chunked" in te:
            body = b""
            while True:
                size_line = self._take_until(b"\r\n")
                body += size_line
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    while (trailer := self._take_until(b"\r\n")) != b"\r\n":
                        body += trailer
                    body += b"\r\n"
                    break
                body += self._take(size + 2)
        elif lengths:
            body = self._take(int(lengths[0]))
        else:
            body = self._take_rest()
        answer.body = body
        version = head.split(b" ", 1)[0]
        connection = b",".join(answer.header(b"connection")).lower()
        if b"close" in connection or (version == b"HTTP/1.0" and b"keep-alive" not in connection) or self.eof:
            # the gateway announced it closes: whatever comes before EOF is recorded (it must be nothing)
            answer.after_close = self._take_rest()
            answer.closed = True
        return answer

    def finish(self) -> bytes:
        """Half-close and read to EOF: the bytes the gateway sent after the last answer (must be none)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        try:
            return self._take_rest()
        except OSError as exc:  # a reset after the last answer is no extra byte
            return self.buf + f"<{type(exc).__name__}>".encode()
