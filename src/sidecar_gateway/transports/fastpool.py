"""The pooled keep-alive HTTP/1.1 client on ``httptools``: ``HttpClient.request`` → ``HttpResponse``.

Same interface as the aiohttp-backed client in ``pool.py`` (which selects this one by default), several times
cheaper per request (performance issue: the upstream client was the gateway's bottleneck).

Rules of this file (httpcore ``connection_pool.py``):

* Deciding is separate from doing.  ``OriginPool`` is pure bookkeeping for one (scheme, host, port): its methods
  decide reuse / create / evict / wait and return the connections to close; ``HttpClient`` does the I/O
  (connecting, closing) outside it.  Closing is synchronous (``transport.abort``), so it cannot be interrupted
  by a cancellation half-way.
* A connection goes back to the pool only when its response was read to the end and both sides agreed to
  keep it (``Http11Connection.is_reusable``); ``close()``, an abandoned body, an error or a cancellation
  closes it.  Every acquired slot is returned exactly once, by ``HttpClient._settle``.
* One retry, for one case only: a *reused* idle connection broke before a single response byte arrived (the
  server closed it while we were picking it: the stale keep-alive race), the method is idempotent (RFC 9110
  §9.2.2) and the body is bytes or absent (a consumed stream cannot be replayed).  The retry uses a fresh
  connection.  Nothing else is ever retried.

Timeouts are the caller's (``asyncio.timeout`` around ``request`` or a read) except ``CONNECT_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from types import TracebackType

from .http11 import (
    KEEPALIVE_TIMEOUT_S,
    ConnectError,
    Http11Connection,
    Origin,
    ReadError,
    RequestHead,
    TransportError,
    connect,
    encode_request_head,
    split_url,
)

__all__ = ["ConnectError", "Decision", "HttpClient", "HttpResponse", "OriginPool", "ReadError", "TransportError"]

# Bounds (style rule 12).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})  # RFC 9110 §9.2.2
_BYTES_TYPES = (bytes, bytearray, memoryview)
SWEEP_INTERVAL_S = KEEPALIVE_TIMEOUT_S / 2  # expired idle connections linger at most 1.5× the keep-alive timeout


class Decision(enum.Enum):
    """What ``OriginPool.assign`` decided for a request."""

    REUSE = "reuse"  # an idle connection was checked out
    CREATE = "create"  # a slot was reserved: open a new connection
    WAIT = "wait"  # the origin is at ``max_connections``: queue until a slot or a connection is released


# Enum member access costs ~0.2 µs on CPython 3.11: the per-request code reads these aliases (same objects).
_REUSE = Decision.REUSE
_WAIT = Decision.WAIT


class OriginPool:
    """Bookkeeping for one origin.  Pure: no I/O, no awaiting; methods return what the caller must do."""

    __slots__ = ("active", "idle", "max_connections", "origin", "requests", "waiters")

    def __init__(self, origin: Origin, max_connections: int = 0) -> None:
        self.origin = origin
        self.max_connections = max_connections  # 0: no cap (the caller's deadline bounds waiting)
        self.idle: list[Http11Connection] = []  # a stack: the most recently used on top (LIFO)
        self.active = 0  # checked out or being opened
        self.waiters: deque[asyncio.Future[Http11Connection | None]] = deque()
        self.requests = 0

    def assign(self, now: float, fresh: bool = False) -> tuple[Decision, Http11Connection | None,
                                                               list[Http11Connection]]:
        """Decide for one request.  Cases, in this order:

        1. reuse: the most recently used idle connection that has not expired (LIFO keeps a warm few busy and
           lets the rest reach the keep-alive timeout); expired or closed ones met on the way are evicted;
        2. create: below the cap (or no cap), reserve a slot for a new connection;
        3. evict-then-create: at the cap but a connection is idle (only when ``fresh`` skipped reuse), close
           the oldest idle one and take its slot;
        4. wait: at the cap with nothing idle.
        Returns (decision, connection for REUSE, connections to close).
        """
        to_close: list[Http11Connection] = []
        idle = self.idle
        if not fresh:
            while idle:
                conn = idle.pop()
                if conn.has_expired(now):
                    to_close.append(conn)
                    continue
                self.active += 1
                return _REUSE, conn, to_close
        cap = self.max_connections
        if not cap or self.active + len(idle) < cap:
            self.active += 1
            return Decision.CREATE, None, to_close
        if idle:
            to_close.append(idle.pop(0))
            self.active += 1
            return Decision.CREATE, None, to_close
        return Decision.WAIT, None, to_close

    def give_back(self, conn: Http11Connection) -> asyncio.Future[Http11Connection | None] | None:
        """A reusable connection was released.  Returns the waiter to hand it to, or None (it went idle)."""
        waiter = self._next_waiter()
        if waiter is None:
            self.active -= 1
            self.idle.append(conn)
        return waiter  # the slot passes to the waiter: ``active`` unchanged

    def drop(self) -> asyncio.Future[Http11Connection | None] | None:
        """A slot was freed (connection closed, connect failed).  Returns a waiter that may now create."""
        waiter = self._next_waiter()
        if waiter is None:
            self.active -= 1
        return waiter

    def forget(self, conn: Http11Connection) -> None:
        """The server closed an idle connection: it no longer counts (``Http11Connection.on_lost``)."""
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, now: float) -> list[Http11Connection]:
        """Evict expired idle connections; returns them for closing."""
        expired = [c for c in self.idle if c.has_expired(now)]
        if expired:
            self.idle = [c for c in self.idle if not c.has_expired(now)]
        return expired

    @property
    def unused(self) -> bool:
        return not self.idle and not self.active and not self.waiters

    def _next_waiter(self) -> asyncio.Future[Http11Connection | None] | None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def __repr__(self) -> str:
        return f"{self.origin} active={self.active} idle={len(self.idle)} queued={len(self.waiters)}"


class HttpResponse:
    """A response whose head has arrived.  Read the body with ``read`` or ``iter_chunks``, then ``release``."""

    __slots__ = ("_client", "_conn", "_pool", "_writer", "headers", "status")

    def __init__(self, client: HttpClient, pool: OriginPool, conn: Http11Connection,
                 writer: asyncio.Task[None] | None) -> None:
        self._client = client
        self._pool = pool
        self._conn: Http11Connection | None = conn
        self._writer = writer
        self.status: int = conn.status
        self.headers: list[tuple[bytes, bytes]] = conn.headers  # names lower-cased, values raw

    async def read(self) -> bytes:
        """The whole body; the connection is released (pooled if reusable) afterwards."""
        conn = self._conn
        if conn is None:
            raise ReadError("the response was already released")
        try:
            first = await conn.read_body_chunk()
            if not first:
                body = b""
            else:
                chunks = [first]
                while chunk := await conn.read_body_chunk():
                    chunks.append(chunk)
                body = first if len(chunks) == 1 else b"".join(chunks)
        except BaseException:
            self.close()
            raise
        self.release()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (at most ``READ_HIGH_WATER`` plus one socket read per chunk)."""
        conn = self._conn
        if conn is None:
            return
        try:
            while chunk := await conn.read_body_chunk():
                yield chunk
        except BaseException:  # includes GeneratorExit (abandoned) and CancelledError
            self.close()
            raise
        self.release()

    async def read_chunk(self) -> bytes:
        """The next piece of the body (everything buffered so far); ``b""`` at its end.  The caller releases
        the response once it has the end (``body_complete`` or ``b""``), or closes it."""
        conn = self._conn
        if conn is None:
            return b""
        return await conn.read_body_chunk()

    @property
    def body_complete(self) -> bool:
        """The whole body has been handed out: the next ``read_chunk`` would return ``b""``."""
        conn = self._conn
        return conn is not None and conn.body_drained

    def release(self) -> None:
        """Back to the pool if the body was read to the end and the connection is reusable; else closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._client._settle(self._pool, conn, self._writer, reuse=True)

    def close(self) -> None:
        """Drop the connection (used when the body is abandoned half-way)."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._client._settle(self._pool, conn, self._writer, reuse=False)

    def __del__(self) -> None:
        if self._conn is not None:  # dropped without release/close: never leak the slot
            with contextlib.suppress(Exception):
                self.close()

    async def __aenter__(self) -> HttpResponse:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if e is not None:
            self.close()
        else:
            self.release()

    def __repr__(self) -> str:
        return f"<HttpResponse status={self.status} conn={self._conn!r}>"


class HttpClient:
    """One pool of keep-alive connections per origin for the whole process (bound to the first loop used)."""

    def __init__(self, *, limit: int = 0, max_connections: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        # ``limit`` is ``pool.AiohttpClient``'s keyword; here both mean a cap per origin (0 = none)
        self._max_connections = max_connections or limit
        self._ssl_context = ssl_context  # None: ``ssl.create_default_context()`` on first https use
        self._pools: dict[Origin, OriginPool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.requests = 0

    async def request(self, method: str, url: str, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes | AsyncIterable[bytes] | None = None) -> HttpResponse:
        """Send a request; return when the response head has arrived.  ``url`` is absolute and already
        percent-encoded (it is sent as-is).  Redirects are never followed."""
        if self._closed:
            raise ConnectError("the client is closed")
        origin, target, host = split_url(url)
        streamed = body is not None and not isinstance(body, _BYTES_TYPES)
        head = encode_request_head(method, target, headers, host,
                                   None if streamed else body, streamed)  # type: ignore[arg-type]
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = OriginPool(origin, self._max_connections)
        self.requests += 1
        pool.requests += 1
        is_head = method == "HEAD"
        conn, reused = await self._acquire(pool, fresh=False)
        try:
            return await self._exchange(pool, conn, head, body, streamed, is_head)
        except ReadError:
            if not (reused and not conn.response_started and not streamed and method in IDEMPOTENT_METHODS):
                raise
        # the stale keep-alive race: once, on a fresh connection
        conn, _ = await self._acquire(pool, fresh=True)
        return await self._exchange(pool, conn, head, body, streamed, is_head)

    async def _exchange(self, pool: OriginPool, conn: Http11Connection, head: RequestHead,
                        body: bytes | AsyncIterable[bytes] | None, streamed: bool, is_head: bool) -> HttpResponse:
        writer: asyncio.Task[None] | None = None
        try:
            if streamed:
                conn.start_streamed_request(head, is_head)
                writer = conn.loop.create_task(conn.send_body_stream(body, head))  # type: ignore[arg-type]
            else:
                conn.start_request(head, body, is_head)  # type: ignore[arg-type]
            await conn.receive_head()
        except BaseException:
            self._settle(pool, conn, writer, reuse=False)
            raise
        return HttpResponse(self, pool, conn, writer)

    async def _acquire(self, pool: OriginPool, fresh: bool) -> tuple[Http11Connection, bool]:
        """A connection for one request and whether it was reused."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        decision, conn, to_close = pool.assign(loop.time(), fresh)
        for stale in to_close:
            stale.close()
        if decision is _REUSE:
            assert conn is not None
            return conn, True
        if decision is _WAIT:
            waiter: asyncio.Future[Http11Connection | None] = loop.create_future()
            pool.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed a slot as we were cancelled: pass it on
                    got = waiter.result()
                    if got is not None and not got.is_closed:
                        self._give_back(pool, got)
                    elif got is not None:
                        got.close()
                        self._free_slot(pool)
                    else:
                        self._free_slot(pool)
                elif waiter in pool.waiters:
                    pool.waiters.remove(waiter)
                raise
            if handed is not None:
                return handed, True
        try:
            conn = await connect(loop, pool.origin, self._tls_context() if pool.origin.scheme == "https" else None)
        except BaseException:
            self._free_slot(pool)
            raise
        conn.on_lost = pool.forget
        return conn, False

    def _settle(self, pool: OriginPool, conn: Http11Connection, writer: asyncio.Task[None] | None,
                reuse: bool) -> None:
        """The one place a checked-out connection comes back: pooled if reusable, else closed."""
        if writer is not None and not writer.done():
            writer.cancel()
        if reuse and conn.is_reusable and not self._closed:
            conn.finish()
            self._give_back(pool, conn)
            return
        conn.close()
        self._free_slot(pool)

    def _give_back(self, pool: OriginPool, conn: Http11Connection) -> None:
        waiter = pool.give_back(conn)
        if waiter is not None:
            waiter.set_result(conn)
        elif self._sweeper is None and self._loop is not None:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _free_slot(self, pool: OriginPool) -> None:
        waiter = pool.drop()
        if waiter is not None:
            waiter.set_result(None)  # the waiter may open a connection in the freed slot

    def _sweep(self) -> None:
        self._sweeper = None
        assert self._loop is not None
        now = self._loop.time()
        keep = False
        for origin, pool in list(self._pools.items()):
            for conn in pool.sweep(now):
                conn.close()
            if pool.unused:
                del self._pools[origin]
            keep = keep or bool(pool.idle)
        if keep and not self._closed:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # verifies certificates and host names
        return self._ssl_context

    async def aclose(self) -> None:
        """Close idle connections now; connections in use close when released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self._pools.values():
            idle, pool.idle = pool.idle, []
            for conn in idle:
                conn.close()
            while pool.waiters:
                waiter = pool.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(ConnectError("the client was closed"))

    def __repr__(self) -> str:
        pools = self._pools.values()
        active = sum(p.active for p in pools)
        idle = sum(len(p.idle) for p in pools)
        queued = sum(len(p.waiters) for p in pools)
        detail = "".join(f" [{p!r}]" for p in pools)
        return f"<HttpClient requests={self.requests} active={active} idle={idle} queued={queued}{detail}>"
