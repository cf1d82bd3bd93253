"""The floor: a featureless Python proxy on the gateway's own stack (uvloop + httptools), measured in the same run.

Not product code and not a peer: a reference row that answers "what does *any* CPython request cycle cost on this
machine?".  It does the least a proxy can do and still be correct for the benchmark's traffic: parse the client's
request with httptools; for ``/pre…`` (S2) and ``/deny…`` (S6) POST a small JSON input to the sidecar function
(``/allow``, ``/terminate``) over a keep-alive connection and read its answer with ``orjson`` (a ``terminate``
member: answer 403 without calling the backend); then send the request to the backend over a keep-alive connection
and copy the answer back.  Every other path is the plain proxy (S1).  No routing table, keys, header validation,
forwarded headers, message ids, logs, metrics, deadlines, request bodies, chunked framing or error handling —
everything the gateway does on top is the difference between this row and the gateway's.

    python bench/floor_proxy.py --port P --backend HOST:PORT/path --function HOST:PORT [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

import httptools
import orjson
import uvloop


class _Upstream(asyncio.Protocol):
    """One keep-alive connection to an origin; one exchange at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes]] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        answer = (self.parser.get_status_code(), self.headers, b"".join(self.body))
        self.headers, self.body = [], []
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))


class _Origin:
    def __init__(self, spec: str) -> None:
        hostport, _, path = spec.partition("/")
        host, _, port = hostport.rpartition(":")
        self.host, self.port, self.path = host, int(port), ("/" + path).encode()
        self.idle: list[_Upstream] = []

    async def exchange(self, head: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        loop = asyncio.get_running_loop()
        if self.idle:
            up = self.idle.pop()
        else:
            _, up = await loop.create_connection(_Upstream, self.host, self.port)
        up.waiter = loop.create_future()
        up.transport.write(head)  # type: ignore[union-attr]
        answer = await up.waiter
        self.idle.append(up)
        return answer


HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding"))
FUNCTION_PATH = {b"/pre": b"/allow", b"/den": b"/terminate"}  # first four bytes of the URL → function path
FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"


def pre_call_head(function: _Origin, path: bytes, method: bytes, url: bytes) -> bytes:
    """The pre-call: a small JSON input POSTed to the function's ``path``."""
    payload = orjson.dumps({"request": {"method": method.decode(), "uri": url.decode()}})
    return (b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (path, function.host.encode(), function.port, len(payload), payload))


def allows(answer: bytes) -> bool:
    """The function's answer lets the call through: a JSON object without ``terminate``."""
    verdict = orjson.loads(answer)
    return isinstance(verdict, dict) and "terminate" not in verdict


def backend_head(backend: _Origin, method: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nhost: %s:%d\r\n\r\n" % (method, backend.path, backend.host.encode(), backend.port)


def response_bytes(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The backend's answer for the client, hop-by-hop fields dropped (the body is whole: Content-Length stays)."""
    out = [b"HTTP/1.1 %d OK\r\n" % status]
    for name, value in headers:
        if name.lower() not in HOP:
            out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    out.append(body)
    return b"".join(out)


class _Client(asyncio.Protocol):
    backend: _Origin
    function: _Origin

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.handle(self.parser.get_method(), self.url))

    async def handle(self, method: bytes, url: bytes) -> None:
        backend = self.backend
        function_path = FUNCTION_PATH.get(url[:4])
        if function_path is not None:
            _, _, answer = await self.function.exchange(pre_call_head(self.function, function_path, method, url))
            if not allows(answer):
                self.transport.write(FORBIDDEN)
                return
        status, headers, body = await backend.exchange(backend_head(backend, method))
        self.transport.write(response_bytes(status, headers, body))


async def serve_until_sigterm(sock: socket.socket, protocol: type[asyncio.Protocol]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, sock=sock, backlog=4096)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    await stop
    server.close()


def command_line(description: str, workers_help: str) -> tuple[argparse.Namespace, socket.socket]:
    """The arguments (``--port --backend --function --workers``, shared with ``floor_pieces.py``) and the listening
    socket (``SO_REUSEPORT``: several processes may serve one port); sets ``_Client``'s origins."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True, help="host:port/path")
    parser.add_argument("--function", required=True, help="host:port of the sidecar function (/allow, /terminate)")
    parser.add_argument("--workers", type=int, default=1, help=workers_help)
    args = parser.parse_args()
    _Client.backend = _Origin(args.backend)
    _Client.function = _Origin(args.function)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(4096)
    sock.setblocking(False)
    return args, sock


def main() -> None:
    args, sock = command_line(__doc__.split("\n\n")[0], "forked processes sharing the socket")
    if args.workers == 1:  # in-process (bench/instructions.py runs it under valgrind)
        uvloop.run(serve_until_sigterm(sock, _Client))
        return
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve_until_sigterm(sock, _Client))
            os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
