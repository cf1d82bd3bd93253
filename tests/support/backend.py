"""A real HTTP backend on loopback for the gateway integration tests.

One aiohttp server runs on its own event loop in a daemon thread of the test process.  It records every
request it receives (method, raw path and query, raw headers, body length and sha256, peer) and answers
according to the **first segment of the path it receives** (the gateway appends the client's remainder to
the endpoint's target path, so a target of ``http://127.0.0.1:P/slow/2`` makes every call of that endpoint
slow, whatever the client's remainder):

=====================  =========================================================================================
first segment          answer
=====================  =========================================================================================
``status/<code>``      that status, body ``status <code>`` (text/plain)
``slow/<seconds>``     reads the body, sleeps, then answers like ``echo`` (notes when the caller hangs up first)
``stream/<MiB>``       200 with ``Content-Length`` = MiB * 2**20 of ``pattern_bytes`` sent in 64 KiB chunks
``reset``              reads the request, then resets the TCP connection (RST) without answering
``resetmid``           sends the head and 64 KiB of a 10 MiB body, then resets the connection
``close``              reads the request, then closes the connection (FIN) without answering
``hopresp``            like ``echo`` but adds response hop-by-hop headers (``Connection: X-Resp-Hop``, ...)
anything else          ``echo``: 200, JSON ``{"method", "path", "headers", "body_length", "body_sha256"}``
=====================  =========================================================================================

Query parameters the client may add (the gateway passes the query on): ``read_delay_ms`` makes ``echo``
read the request body slowly (that many milliseconds per MiB received), to apply back-pressure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

__all__ = [
    "MIB",
    "BackendServer",
    "PatternBody",
    "RecordedRequest",
    "bound_dead_port",
    "pattern_bytes",
    "pattern_sha256",
]

MIB = 1024 * 1024
CHUNK = 64 * 1024
# A deterministic, incompressible 64 KiB block; streamed bodies (both directions) repeat it.
_PATTERN = random.Random(20261125).randbytes(CHUNK)


def pattern_bytes(total: int) -> Iterator[bytes]:
    """Yield ``total`` bytes of the repeating test pattern in 64 KiB pieces (the last one may be shorter)."""
    left = total
    while left > 0:
        n = min(left, CHUNK)
        yield _PATTERN[:n]
        left -= n


def pattern_sha256(total: int) -> str:
    h = hashlib.sha256()
    for piece in pattern_bytes(total):
        h.update(piece)
    return h.hexdigest()


class PatternBody:
    """A file-like request body of ``total`` pattern bytes: ``requests`` sends it with Content-Length,
    reading it piece by piece (never holds the whole body in memory)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._pos = 0

    def __len__(self) -> int:
        return self.total

    def read(self, n: int = -1) -> bytes:
        left = self.total - self._pos
        if left <= 0:
            return b""
        if n is None or n < 0 or n > left:
            n = left
        out = bytearray()
        while len(out) < n:
            off = (self._pos + len(out)) % CHUNK
            take = min(n - len(out), CHUNK - off)
            out += _PATTERN[off : off + take]
        self._pos += n
        return bytes(out)


@dataclass
class RecordedRequest:
    """One request as the backend received it."""

    method: str
    raw_path: str  # path and query exactly as received on the request line
    headers: list[tuple[str, str]]  # raw names and values, in order
    peer: str
    started: float = field(default_factory=time.monotonic)
    body_length: int | None = None  # set once the body has been read (None: not read / aborted)
    body_sha256: str | None = None
    gone_after: float | None = None  # ``slow`` only: seconds after arrival at which the caller closed the connection

    @property
    def path(self) -> str:
        return urlsplit(self.raw_path).path

    @property
    def query(self) -> str:
        return urlsplit(self.raw_path).query

    @property
    def query_pairs(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query, keep_blank_values=True)

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), in arrival order."""
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


class BackendServer:
    """The loopback backend.  ``start()`` / ``stop()``; ``port``; ``url(path)``; ``requests`` (all recorded);
    ``matching(token)`` (recorded requests whose raw path contains ``token``); ``wait_for(token, n, timeout)``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> BackendServer:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL)
        self._thread = threading.Thread(target=self._run, name="test-backend", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test backend did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)  # type: ignore[union-attr]
        try:
            fut.result(5)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()

    # -- inspection ------------------------------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def matching(self, token: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if token in r.raw_path]

    def wait_for(self, token: str, n: int = 1, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests whose raw path contains ``token`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(token)
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    # -- behaviour -------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        rec = RecordedRequest(
            method=request.method,
            raw_path=request.raw_path,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            peer=str(peer[0]) if peer else "",
        )
        with self._lock:
            self.requests.append(rec)
        segments = request.raw_path.split("?", 1)[0].split("/")
        first = segments[1] if len(segments) > 1 else ""
        arg = segments[2] if len(segments) > 2 else ""
        query = dict(parse_qsl(request.query_string))

        if first == "stream":
            await self._read_body(request, rec, 0)
            return await self._stream(request, int(arg) * MIB)
        if first == "resetmid":
            await self._read_body(request, rec, 0)
            resp = web.StreamResponse(status=200)
            resp.content_length = 10 * MIB
            resp.content_type = "application/octet-stream"
            await resp.prepare(request)
            await resp.write(_PATTERN)
            await asyncio.sleep(0.2)
            self._reset(request)
            raise asyncio.CancelledError
        await self._read_body(request, rec, int(query.get("read_delay_ms", "0") or 0))
        if first == "status":
            code = int(arg)
            return web.Response(status=code, text=f"status {code}")
        if first == "slow" and await self._sleep_unless_gone(request, rec, float(arg)):
            raise asyncio.CancelledError
        if first == "reset":
            self._reset(request)
            raise asyncio.CancelledError
        if first == "close":
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        resp = web.Response(status=200, content_type="application/json", text=json.dumps(self._echo(rec)))
        if first == "hopresp":
            resp.headers["Connection"] = "X-Resp-Hop"
            resp.headers["X-Resp-Hop"] = "secret"
            resp.headers["Keep-Alive"] = "timeout=5"
            resp.headers["X-End-To-End"] = "kept"
        return resp

    @staticmethod
    async def _sleep_unless_gone(request: web.Request, rec: RecordedRequest, seconds: float) -> bool:
        """Sleep ``seconds`` in small steps; True (and ``rec.gone_after`` set) if the caller hung up."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                rec.gone_after = time.monotonic() - rec.started
                return True
            await asyncio.sleep(0.02)
        return False

    @staticmethod
    def _echo(rec: RecordedRequest) -> dict[str, object]:
        return {
            "method": rec.method,
            "path": rec.raw_path,
            "headers": rec.headers,
            "body_length": rec.body_length,
            "body_sha256": rec.body_sha256,
            "peer": rec.peer,
        }

    @staticmethod
    async def _read_body(request: web.Request, rec: RecordedRequest, delay_ms_per_mib: int) -> None:
        h = hashlib.sha256()
        n = 0
        next_pause = MIB
        async for piece in request.content.iter_chunked(CHUNK):
            h.update(piece)
            n += len(piece)
            if delay_ms_per_mib and n >= next_pause:
                next_pause += MIB
                await asyncio.sleep(delay_ms_per_mib / 1000)
        rec.body_length = n
        rec.body_sha256 = h.hexdigest()

    @staticmethod
    async def _stream(request: web.Request, total: int) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.content_length = total
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        for piece in pattern_bytes(total):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    @staticmethod
    def _reset(request: web.Request) -> None:
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def bound_dead_port() -> tuple[socket.socket, int]:
    """A loopback TCP port that is bound but not listening: connecting to it is refused (RST) on Linux.
    Keep the returned socket open for as long as the port must stay dead."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]
