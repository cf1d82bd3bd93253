"""The admin listener: ``/healthz``, ``/readyz``, ``/metrics`` (loopback by default).

A deliberately tiny HTTP/1.1 server on ``asyncio.start_server``: GET only, one request per connection, no
body.  It is off the traffic path and must keep answering while the traffic listener is saturated, so it
shares nothing with uvicorn.  When ``admin.token`` is set every request must carry
``Authorization: Bearer <token>`` (compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from ..observability.metrics import collect, render_metrics

__all__ = ["AdminServer"]

MAX_REQUEST_HEAD = 8 * 1024  # an admin request is a request line and a few headers
READ_TIMEOUT_S = 5.0  # slow clients are dropped (slowloris on the admin port)


class AdminServer:
    def __init__(self, host: str, port: int, *, ready: Callable[[], bool], token: Callable[[], str | None],
                 multiprocess: bool = False) -> None:
        """``token`` is read per request, so a reload that changes ``admin.token`` applies at once."""
        self.host = host
        self.port = port
        self._ready = ready
        self._token = token
        self._multiprocess = multiprocess
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        status, ctype, body = self._route(head[:MAX_REQUEST_HEAD])
        if body is _RENDER_METRICS:
            # Rendering can take tens of ms with many endpoints: never on the loop that serves traffic.
            values = collect(self._multiprocess)  # this process's values, copied on the loop's thread
            body = await asyncio.get_running_loop().run_in_executor(None, render_metrics, self._multiprocess, values)
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (status, _REASONS[status], ctype, len(body)) + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def _route(self, head: bytes) -> tuple[int, bytes, bytes]:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return 400, b"text/plain", b"bad request\n"
        method, target, _ = parts
        token = self._token()
        if token:
            presented = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"authorization":
                    presented = value.strip()
            if not hmac.compare_digest(presented, b"Bearer " + token.encode()):
                return 401, b"text/plain", b"unauthorized\n"
        if method not in (b"GET", b"HEAD"):
            return 405, b"text/plain", b"method not allowed\n"
        path = target.split(b"?", 1)[0]
        if path == b"/healthz":
            return 200, b"text/plain", b"ok\n"
        if path == b"/readyz":
            return (200, b"text/plain", b"ready\n") if self._ready() else (503, b"text/plain", b"not ready\n")
        if path == b"/metrics":
            return 200, b"text/plain; version=0.0.4; charset=utf-8", _RENDER_METRICS
        return 404, b"text/plain", b"not found\n"


_RENDER_METRICS = b"<render>"  # sentinel: _handle renders the metrics off the event loop

_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed",
            503: b"Service Unavailable"}
