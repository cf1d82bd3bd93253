"""Raw-socket servers and client for tests/integration/test_native_lane_sigv4.py (the native lane's signed Lambda
Invoke).

* ``RawServer``: an asyncio TCP server on a loopback port in a daemon thread.  It records every request exactly as
  received (``Received``: head bytes, body bytes, connection serial number) *before* answering it, so a request is
  recorded by the time the gateway's client answer arrives.  ``take()`` returns and clears the records.
* ``LambdaStub``: answers a Lambda Invoke by the function name in its path (``/2015-03-31/functions/<percent-encoded
  ARN>/invocations``): the name without qualifier, looked up in ``LAMBDA_ANSWERS``.
* ``PlainBackend``: answers every request ``200`` with a fixed body.
* ``RawConnection``: one keep-alive client connection; ``exchange`` writes one request in one ``sendall`` and reads
  exactly its answer (Content-Length or chunked framing; none for HEAD).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["LAMBDA_ANSWERS", "Answer", "LambdaStub", "PlainBackend", "RawConnection", "RawServer", "Received",
           "function_name"]

IO_TIMEOUT_S = 10.0


def http_answer(status_line: bytes, headers: list[bytes], body: bytes) -> bytes:
    head = status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


_JSON = b"Content-Type: application/json"
FN_ERROR_BODY = b'{"errorMessage":"boom","errorType":"ValueError","stackTrace":["at x"]}'
# function name (without qualifier) -> the whole Invoke answer
LAMBDA_ANSWERS: dict[str, bytes] = {
    "allow": http_answer(b"HTTP/1.1 200 OK", [_JSON, b"X-Amzn-RequestId: 11111111-2222-3333-4444-555555555555"],
                         b"{}"),
    "terminate": http_answer(b"HTTP/1.1 200 OK", [_JSON],
                             b'{"terminate": {"code": 403, "message": "Denied by the function",'
                             b' "addHeaders": {"X-Denied-By": "lambda"}}}'),
    "modify": http_answer(b"HTTP/1.1 200 OK", [_JSON],
                          b'{"modify": {"addHeaders": {"X-Added": "by-lambda"}, "dropHeaders": ["x-drop-me"]}}'),
    "fn-error": http_answer(b"HTTP/1.1 200 OK", [_JSON, b"X-Amz-Function-Error: Unhandled"], FN_ERROR_BODY),
    "aws-500": http_answer(b"HTTP/1.1 500 Internal Server Error", [_JSON], b'{"message": "boom"}'),
    "empty": http_answer(b"HTTP/1.1 200 OK", [_JSON], b""),
}
BACKEND_ANSWER = http_answer(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain", b"X-Backend: plain"],
                             b"backend answer\n")


@dataclass
class Received:
    head: bytes
    body: bytes
    conn: int  # the server's serial number of the connection it arrived on (1, 2, ...)


class RawServer:
    """An asyncio TCP server on a loopback port, in a daemon thread; records each request and answers by
    ``answer(head, body)``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.records: list[Received] = []
        self.lock = threading.Lock()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns = 0
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> RawServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def take(self) -> list[Received]:
        with self.lock:
            out, self.records = self.records, []
        return out

    def answer(self, head: bytes, body: bytes) -> bytes:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns += 1
        conn = self._conns
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                body = await reader.readexactly(_content_length(head))
                with self.lock:
                    self.records.append(Received(head, body, conn))
                writer.write(self.answer(head, body))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def function_name(head: bytes) -> str:
    """The Invoke's FunctionName without its qualifier (``arn:...:function:NAME[:QUALIFIER]`` -> ``NAME``)."""
    target = head.split(b" ", 2)[1].decode("latin-1")
    encoded = target.split("/functions/", 1)[1].split("/", 1)[0]
    return unquote(encoded).split(":function:", 1)[1].split(":", 1)[0]


class LambdaStub(RawServer):
    def __init__(self) -> None:
        super().__init__("lambda-stub")

    def answer(self, head: bytes, body: bytes) -> bytes:
        try:
            return LAMBDA_ANSWERS[function_name(head)]
        except (IndexError, KeyError):
            return http_answer(b"HTTP/1.1 404 Not Found", [_JSON], b'{"message": "Function not found"}')


class PlainBackend(RawServer):
    def __init__(self) -> None:
        super().__init__("plain-backend")

    def answer(self, head: bytes, body: bytes) -> bytes:
        if head.startswith(b"HEAD "):
            return BACKEND_ANSWER[: BACKEND_ANSWER.index(b"\r\n\r\n") + 4]
        return BACKEND_ANSWER


@dataclass
class Answer:
    head: bytes  # status line and header lines, up to and including the blank line
    body: bytes  # raw, chunk framing included

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: bytes) -> list[bytes]:
        out = []
        for line in self.head.split(b"\r\n")[1:-2]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name:
                out.append(v.strip())
        return out


class RawConnection:
    """One keep-alive client connection to the gateway."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"EOF from the gateway; got {self.buf[:200]!r}")
        self.buf += data

    def _take_until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self._fill()
        out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker):]
        return out

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def exchange(self, request: bytes, method: str) -> Answer:
        assert self.buf == b"", f"bytes before the request was sent: {self.buf[:200]!r}"
        self.sock.sendall(request)
        answer = Answer(self._take_until(b"\r\n\r\n"), b"")
        lengths = answer.header(b"content-length")
        if method == "HEAD" or answer.status in (204, 304):
            return answer
        if b"chunked" in b",".join(answer.header(b"transfer-encoding")).lower():
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
            answer.body = body
        elif lengths:
            answer.body = self._take(int(lengths[0]))
        return answer
