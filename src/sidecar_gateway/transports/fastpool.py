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
* Idle connections follow the recent load, not its history (``OriginPool.sweep``, every ``SWEEP_INTERVAL_S``): a
  pool keeps at most as many connections as were in use at once since the previous sweep (but ``IDLE_KEPT_MIN``
  idle ones at least), closing the oldest idle ones beyond that, besides those idle for ``KEEPALIVE_TIMEOUT_S``.
  Reuse is most-recent-first, so without this a burst (a slow backend, a stalled loop) would leave hundreds of
  connections that the next burst touches again before they expire: descriptors would follow the largest burst
  of the last half minute.  nginx caps the same thing with a fixed ``keepalive N``; here the cap is the measured
  need, so a steady load never churns.
* One retry, for one case only: a *reused* idle connection broke before a single response byte arrived (the
  server closed it while we were picking it: the stale keep-alive race), the method is idempotent (RFC 9110
  §9.2.2) and the body is bytes or absent (a consumed stream cannot be replayed).  The retry uses a fresh
  connection.  Nothing else is ever retried (nginx, Envoy and Go's net/http draw the same line): in particular
  a function invocation, always a POST, is never sent twice (sidecar contract §5.3).

Origins that close idle connections without notice.  Some servers answer with keep-alive framing (no
``Connection: close``) and close the connection (FIN) a moment later: every answer, or whenever their idle timer
is short.  Until that FIN has arrived the connection looks idle and healthy, and no check before reuse can tell
(peeking at the socket sees nothing yet), so a request sent on it meets a closed connection.  For a request
that cannot be resent that is a failure, so the pool learns per origin (``OriginPool.forget`` and
``note_stale_reuse``) from two kinds of evidence:

  (a) a pooled idle connection is lost (FIN, reset) at most ``QUICK_CLOSE_S`` after its response was read
      (``Http11Connection.on_lost``, called from ``connection_lost`` on the loop iteration after the FIN is
      read: the timing is the loop's, good to a few milliseconds unless the loop stalls, and a stall only
      makes the evidence look older: a missed lesson, never a false one);
  (b) a reused connection is closed (FIN or reset: ``PeerClosedError``) before a single response byte, whatever
      the method (an idempotent request is then resent once, see above).

Either marks the origin as closing idle connections for ``CLOSES_IDLE_MEMORY_S`` after the *latest* such
event.  While marked, a request that cannot be resent (not idempotent, or a streamed body) never takes an idle
connection: it opens a fresh one, which cannot be stale.  Idempotent requests still reuse (a stale connection is
retried for them), so the idle connections keep being used and keep supplying evidence (a) while the server
behaves so; and the fresh connections opened for POSTs go idle afterwards like any other (evidence (a) again,
and reuse by idempotent requests).  As POSTs then open connections without consuming idle ones, a marked origin
keeps at most ``MARKED_IDLE_MAX`` idle connections: a fresh POST connection closes the oldest beyond that.

The mark is bounded in time, not kept for the client's lifetime, because the evidence also has transient
causes: a server restarting or being redeployed closes its idle connections at once, and a load balancer may
move the address to a well-behaved server.  Forgetting costs at most one failed call (the evidence (b) that
re-marks the origin) after ``CLOSES_IDLE_MEMORY_S`` without any event, and only if evidence (a) did not re-mark
it first; remembering forever would cost a connect per call to that origin forever.  While the server keeps
closing, evidence keeps coming and the mark never lapses.  A marked origin's pool is kept while it is
marked (the sweeper does not drop it as unused).

The remaining limitation: the *first* stale connection of an origin (before any evidence) may still fail one
call that cannot be resent, and so may a connection closed by a server that normally keeps connections but closes
this one at exactly the wrong moment (no pool can tell that from the outside).  ``Keep-Alive: timeout=N``
announced by a server is honoured (``http11.py``), which removes the common case of idle timers.

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
    ConnectError,
    Http11Connection,
    Origin,
    PeerClosedError,
    ReadError,
    TransportError,
    connect,
    encode_request_head,
    split_url,
)

__all__ = ["ConnectError", "Decision", "HttpClient", "HttpResponse", "OriginPool", "PeerClosedError", "ReadError",
           "TransportError"]

# Bounds (style rule 12).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})  # RFC 9110 §9.2.2
_BYTES_TYPES = (bytes, bytearray, memoryview)
SWEEP_INTERVAL_S = 5.0  # idle connections beyond the recent need close 5–10 s after a burst; expired ones ≤ 5 s late
QUICK_CLOSE_S = 1.0  # an idle connection lost this soon after its response was closed without notice (evidence a)
CLOSES_IDLE_MEMORY_S = 300.0  # an origin stays marked this long after its latest evidence of closing without notice
IDLE_KEPT_MIN = 4  # idle connections an origin may keep to their keep-alive expiry whatever the recent need
MARKED_IDLE_MAX = 8  # idle connections a marked origin keeps (requests that cannot be resent do not consume them)


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

    __slots__ = ("active", "closes_idle_until", "idle", "max_connections", "origin", "peak", "requests", "waiters")

    def __init__(self, origin: Origin, max_connections: int = 0) -> None:
        self.origin = origin
        self.max_connections = max_connections  # 0: no cap (the caller's deadline bounds waiting)
        self.idle: list[Http11Connection] = []  # a stack: the most recently used on top (LIFO)
        self.active = 0  # checked out or being opened
        self.peak = 0  # the largest ``active`` since the last sweep: how many connections the recent load needed
        self.waiters: deque[asyncio.Future[Http11Connection | None]] = deque()
        self.requests = 0
        # Loop time until which the origin counts as closing idle connections without notice (module docstring);
        # 0.0: never seen doing so.  One float compare per request that cannot be resent; none for the others.
        self.closes_idle_until = 0.0

    def assign(self, now: float, fresh: bool = False, replayable: bool = True) -> tuple[
            Decision, Http11Connection | None, list[Http11Connection]]:
        """Decide for one request (``replayable``: idempotent with a bytes or no body).  Cases, in this order:

        1. reuse: the most recently used idle connection that has not expired (LIFO keeps a warm few busy and
           lets the rest reach the keep-alive timeout); expired or closed ones met on the way are evicted.
           Skipped when ``fresh``, and for a request that cannot be replayed while the origin is marked as
           closing idle connections (``avoids_reuse``; then, beyond ``MARKED_IDLE_MAX`` idle, the oldest is
           evicted);
        2. create: below the cap (or no cap), reserve a slot for a new connection;
        3. evict-then-create: at the cap but a connection is idle (only when reuse was skipped), close
           the oldest idle one and take its slot;
        4. wait: at the cap with nothing idle.
        Returns (decision, connection for REUSE, connections to close).
        """
        to_close: list[Http11Connection] = []
        idle = self.idle
        if fresh:
            pass
        elif not replayable and now < self.closes_idle_until:
            if len(idle) >= MARKED_IDLE_MAX:
                to_close.append(idle.pop(0))
        else:
            while idle:
                conn = idle.pop()
                if conn.has_expired(now):
                    to_close.append(conn)
                    continue
                active = self.active = self.active + 1
                if active > self.peak:
                    self.peak = active
                return _REUSE, conn, to_close
        cap = self.max_connections
        if not cap or self.active + len(idle) < cap:
            pass
        elif idle:
            to_close.append(idle.pop(0))
        else:
            return Decision.WAIT, None, to_close
        active = self.active = self.active + 1
        if active > self.peak:
            self.peak = active
        return Decision.CREATE, None, to_close

    def give_back(self, conn: Http11Connection) -> asyncio.Future[Http11Connection | None] | None:
        """A reusable connection was released.  Returns the waiter to hand it to, or None (it went idle)."""
        if self.waiters:
            waiter = self._next_waiter()
            if waiter is not None:
                return waiter  # the slot passes to the waiter: ``active`` unchanged
        self.active -= 1
        self.idle.append(conn)
        return None

    def drop(self) -> asyncio.Future[Http11Connection | None] | None:
        """A slot was freed (connection closed, connect failed).  Returns a waiter that may now create."""
        waiter = self._next_waiter()
        if waiter is None:
            self.active -= 1
        return waiter

    def avoids_reuse(self, now: float, replayable: bool) -> bool:
        """Whether a request must not go out on a connection that has been idle: it cannot be replayed and the
        origin is marked as closing idle connections without notice."""
        return not replayable and now < self.closes_idle_until

    def forget(self, conn: Http11Connection, now: float) -> None:
        """A connection was lost (``Http11Connection.on_lost``).  If it was idle here the server closed it: it no
        longer counts, and if that came within ``QUICK_CLOSE_S`` of its response (and before the server's
        announced keep-alive timeout) the origin closes idle connections without notice (evidence a)."""
        if conn in self.idle:
            self.idle.remove(conn)
            if now - conn.idle_since <= min(QUICK_CLOSE_S, conn.idle_limit):
                self.closes_idle_until = now + CLOSES_IDLE_MEMORY_S

    def note_stale_reuse(self, now: float) -> None:
        """A reused connection was closed by the server before any response byte (evidence b)."""
        self.closes_idle_until = now + CLOSES_IDLE_MEMORY_S

    def sweep(self, now: float) -> list[Http11Connection]:
        """Evict expired idle connections, and the oldest idle ones beyond what the last interval needed: at most
        ``peak`` connections (the most in use at once since the previous sweep) are kept in all, so a burst's
        connections are closed one or two intervals after it — but up to ``IDLE_KEPT_MIN`` idle ones always stay
        to their keep-alive expiry, so sparse traffic (a call every 20 s) still reuses its connection.  Returns
        them for closing."""
        idle = self.idle
        expired = [c for c in idle if c.has_expired(now)]
        if expired:
            idle = self.idle = [c for c in idle if not c.has_expired(now)]
        excess = len(idle) - max(IDLE_KEPT_MIN, self.peak - self.active)
        if excess > 0:
            expired.extend(idle[:excess])
            del idle[:excess]
        self.peak = self.active
        return expired

    def is_unused(self, now: float) -> bool:
        """Nothing pooled, in use or queued, and nothing learnt worth keeping: the pool may be dropped."""
        return not self.idle and not self.active and not self.waiters and now >= self.closes_idle_until

    def _next_waiter(self) -> asyncio.Future[Http11Connection | None] | None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def __repr__(self) -> str:
        marked = f" closes-idle-until={self.closes_idle_until:.1f}" if self.closes_idle_until else ""
        return f"{self.origin} active={self.active} idle={len(self.idle)} queued={len(self.waiters)}{marked}"


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
        data = conn.read_body_ready()  # without a coroutine when the bytes (or the end) are there already
        if data is None:
            data = await conn.read_body_chunk()
        return data

    def read_whole_ready(self) -> bytes | None:
        """The whole body if all of it is here already (then ``body_complete``), without a coroutine; None, with
        nothing consumed, while some of it is still to come (use ``read_chunk``)."""
        conn = self._conn
        return conn.read_whole_ready() if conn is not None else None

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
            self._client._settle(self._pool, conn, self._writer, True)

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
        replayable = not streamed and method in IDEMPOTENT_METHODS
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        # At most two attempts: the second (``fresh``) only after the stale keep-alive race.  Acquiring and the
        # exchange are inline, not helper coroutines: each coroutine level costs its creation and a pass on every
        # resumption, per request.
        fresh = False
        while True:
            decision, conn, to_close = pool.assign(loop.time(), fresh, replayable)
            for stale in to_close:
                stale.close()
            if decision is _REUSE:
                reused = True
            else:
                conn, reused = await self._open(pool, decision, replayable)
            assert conn is not None
            writer: asyncio.Task[None] | None = None
            try:
                if streamed:
                    conn.start_streamed_request(head, is_head)
                    writer = conn.loop.create_task(conn.send_body_stream(body, head))  # type: ignore[arg-type]
                else:
                    conn.start_request(head, body, is_head)  # type: ignore[arg-type]
                await conn.receive_head()
            except BaseException as exc:
                self._settle(pool, conn, writer, False)
                if fresh or not reused or conn.response_started or not isinstance(exc, PeerClosedError):
                    raise
                # the stale keep-alive race: the origin closes idle connections without notice (evidence b)
                pool.note_stale_reuse(conn.loop.time())
                if not replayable:
                    raise
                fresh = True  # resent once, on a fresh connection
                continue
            return HttpResponse(self, pool, conn, writer)

    async def _open(self, pool: OriginPool, decision: Decision,
                    replayable: bool) -> tuple[Http11Connection, bool]:
        """``request``'s slow path: a slot was reserved (CREATE) or must be waited for (WAIT).  Returns a
        connection for one request and whether it was reused (a waiter may be handed a released one)."""
        loop = self._loop
        assert loop is not None
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
                # lost between its release and this task's resumption (the server closed it): never write to it
                if not handed.is_closed and not pool.avoids_reuse(loop.time(), replayable):
                    return handed, True
                handed.close()  # it may be closing already (the server's FIN not yet read): open one in its slot
        try:
            conn = await connect(loop, pool.origin, self._tls_context() if pool.origin.scheme == "https" else None)
        except BaseException:
            self._free_slot(pool)
            raise
        conn.on_lost = self._on_lost
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

    def _on_lost(self, conn: Http11Connection) -> None:
        """``Http11Connection.on_lost``: tell the pool of the connection's origin, with the time of the loss.  A
        pool is dropped only when nothing is idle or in use, so the current one is the connection's."""
        pool = self._pools.get(conn.origin)
        if pool is not None:
            pool.forget(conn, conn.loop.time())

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
            if pool.is_unused(now):
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
