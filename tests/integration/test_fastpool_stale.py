"""``transports/fastpool.py`` against servers that close keep-alive connections without notice (real sockets).

The stale keep-alive race: a server answers with keep-alive framing (no ``Connection: close``) and closes the
connection a moment later.  A request that cannot be resent (a POST: every function invocation) and that the
pool sends on such a connection fails; the pool must never resend it.  What the pool does instead is learn, per
origin, that the server closes idle connections, and from then on open a fresh connection for such requests.
These tests pin the user-visible behaviour: at most the first reuse of an origin's closed connection fails, every
later POST succeeds and reaches the server exactly once, idempotent requests keep reusing (and are resent on a
stale connection), and an announced ``Keep-Alive: timeout=N`` is honoured.

The server is raw asyncio on loopback.  The path of each request picks the server's behaviour:

==================  ==========================================================================================
``/keep``           answer, keep the connection
``/close-now``      answer (keep-alive framing), then close at once (FIN right behind the answer)
``/close-late``     answer, then close ``LATE_S`` later without reading anything more: a request the client sends
                    on the connection meanwhile is never answered (deterministic race, the unread bytes make
                    the close a reset)
``/gate``           wait until the test opens the gate, then answer, keep the connection
``/ka-<N>``         answer with ``Keep-Alive: timeout=N``, keep the connection
==================  ==========================================================================================
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from sidecar_gateway.transports import fastpool, http11
from sidecar_gateway.transports.fastpool import HttpClient
from sidecar_gateway.transports.http11 import PeerClosedError, ReadError

LATE_S = 0.2  # ``/close-late``: far longer than a loopback request takes, short enough for the suite


@dataclass
class Seen:
    method: str
    path: str
    conn_index: int  # which accepted connection (0-based)
    index_on_conn: int  # which request on that connection (0-based)


@dataclass
class ClosingServer:
    accepted: int = 0
    closed: int = 0
    seen: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> ClosingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, conn_index: int) -> list[str]:
        return [s.path for s in self.seen if s.conn_index == conn_index]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        self._writers.append(writer)
        try:
            for n in range(1_000_000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = next((int(v) for k, _, v in (line.partition(": ") for line in lines[1:])
                               if k.lower() == "content-length"), 0)
                await reader.readexactly(length)
                self.seen.append(Seen(method, path, index, n))
                extra = b""
                if path == "/gate":
                    await self.gate.wait()
                elif path.startswith("/ka-"):
                    extra = b"Keep-Alive: timeout=%b\r\n" % path[4:].encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b"
                             % (len(path), extra, path.encode()))
                await writer.drain()
                if path == "/close-now":
                    return
                if path == "/close-late":
                    await asyncio.sleep(LATE_S)
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()
            self.closed += 1

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.sleep(0)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ClosingServer]:
    s = await ClosingServer().start()
    yield s
    await s.stop()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.aclose()


async def _call(client: HttpClient, method: str, url: str) -> bytes | ReadError:
    """The body, or the ReadError the caller would see."""
    try:
        resp = await client.request(method, url, [], b"{}" if method == "POST" else None)
        assert resp.status == 200
        return await resp.read()
    except ReadError as exc:
        return exc


async def _eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


# -------------------------------------------------------------------------------------------------- tests


@pytest.mark.asyncio
async def test_server_closing_after_each_answer_costs_at_most_the_first_post(server: ClosingServer,
                                                                              client: HttpClient) -> None:
    """The race forced: POST 2 goes out on the connection the server is about to close.  It fails and is not
    resent; from then on every POST opens a fresh connection and succeeds, each reaching the server once."""
    url = server.url("/close-late")
    results = [await _call(client, "POST", url) for _ in range(20)]
    assert results[0] == b"/close-late"
    assert isinstance(results[1], PeerClosedError), results[1]
    assert results[2:] == [b"/close-late"] * 18
    assert len(server.seen) == 19 and all(s.index_on_conn == 0 for s in server.seen)  # POST 2 never arrived
    assert server.accepted == 19
    assert "closes-idle-until=" in repr(client)


@pytest.mark.asyncio
async def test_idempotent_requests_to_such_a_server_always_succeed(server: ClosingServer,
                                                                   client: HttpClient) -> None:
    """GETs mixed with POSTs: a GET sent on a connection being closed is resent once on a fresh one; the POSTs
    never meet a stale connection once the origin has shown it closes them (here: from the first GET)."""
    url = server.url("/close-late")
    results = []
    for i in range(12):
        method = "GET" if i % 3 == 1 else "POST"
        results.append((method, await _call(client, method, url)))
    assert all(body == b"/close-late" for _, body in results), results
    # each GET after a POST met the POST's closing connection and was resent: the server saw it once
    assert [s.method for s in server.seen] == [m for m, _ in results]


@pytest.mark.asyncio
async def test_idle_connection_closed_right_after_its_answer_marks_the_origin(server: ClosingServer,
                                                                             client: HttpClient) -> None:
    """Evidence (a), as in a backend and functions on one host:port: a GET to the backend closes the pooled
    connection right after its answer.  From then on a POST does not take an idle connection (a function's,
    which the server would keep), while a GET still does."""
    assert await _call(client, "POST", server.url("/keep")) == b"/keep"  # conn 0, then idle
    assert await _call(client, "GET", server.url("/close-now")) == b"/close-now"  # reuses conn 0, FIN follows
    await _eventually(lambda: "idle=0" in repr(client))
    assert "closes-idle-until=" in repr(client)
    assert await _call(client, "POST", server.url("/keep")) == b"/keep"  # conn 1, then idle
    assert await _call(client, "POST", server.url("/keep")) == b"/keep"  # not conn 1: conn 2
    assert server.accepted == 3 and server.on(1) == ["/keep"] and server.on(2) == ["/keep"]
    assert await _call(client, "GET", server.url("/keep")) == b"/keep"  # an idempotent request reuses
    assert server.accepted == 3


@pytest.mark.asyncio
async def test_the_mark_lapses_without_new_evidence(server: ClosingServer, client: HttpClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpool, "CLOSES_IDLE_MEMORY_S", 0.2)
    await _call(client, "POST", server.url("/keep"))
    await _call(client, "GET", server.url("/close-now"))
    await _eventually(lambda: "closes-idle-until=" in repr(client))
    await _call(client, "POST", server.url("/keep"))  # fresh connection 1, then idle
    await asyncio.sleep(0.25)
    assert await _call(client, "POST", server.url("/keep")) == b"/keep"
    assert server.accepted == 2 and server.on(1) == ["/keep", "/keep"]  # reused again


@pytest.mark.asyncio
async def test_a_slow_idle_timeout_is_not_taken_for_closing_without_notice(server: ClosingServer,
                                                                          client: HttpClient,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection closed later than QUICK_CLOSE_S after its answer is an ordinary idle timeout: POSTs keep
    reusing connections."""
    monkeypatch.setattr(fastpool, "QUICK_CLOSE_S", LATE_S / 4)
    await _call(client, "POST", server.url("/close-late"))
    await _eventually(lambda: server.closed == 1 and "idle=0" in repr(client))
    assert "closes-idle" not in repr(client)
    for _ in range(3):
        assert await _call(client, "POST", server.url("/keep")) == b"/keep"
    assert server.accepted == 2


@pytest.mark.asyncio
async def test_a_post_waiting_for_a_slot_at_a_marked_origin_opens_a_fresh_connection(server: ClosingServer,
                                                                                     ) -> None:
    """With a connection cap, a queued POST handed a connection straight from its previous response (whose
    server may be closing it) closes it and opens a new one in its slot."""
    client = HttpClient(max_connections=1)
    try:
        await _call(client, "POST", server.url("/close-late"))
        assert isinstance(await _call(client, "POST", server.url("/close-late")), PeerClosedError)  # marked
        first = asyncio.ensure_future(_call(client, "POST", server.url("/gate")))
        await _eventually(lambda: any(s.path == "/gate" for s in server.seen))
        second = asyncio.ensure_future(_call(client, "POST", server.url("/keep")))
        await _eventually(lambda: "queued=1" in repr(client))
        server.gate.set()
        assert await first == b"/gate" and await second == b"/keep"
        assert server.on(1) == ["/gate"] and server.on(2) == ["/keep"]
        assert "active=0 idle=1 queued=0" in repr(client)
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_announced_keep_alive_timeout_is_honoured(server: ClosingServer, client: HttpClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``Keep-Alive: timeout=2`` with a margin of 1.9 s: reused within 0.1 s of idle, replaced after."""
    monkeypatch.setattr(http11, "KEEPALIVE_MARGIN_S", 1.9)
    await _call(client, "GET", server.url("/ka-2"))
    await _call(client, "GET", server.url("/ka-2"))
    assert server.accepted == 1
    await asyncio.sleep(0.15)
    await _call(client, "GET", server.url("/ka-2"))
    assert server.accepted == 2 and server.on(1) == ["/ka-2"]
    await _eventually(lambda: server.closed == 1)  # the expired one was closed by the pool


@pytest.mark.asyncio
async def test_keep_alive_timeout_within_the_margin_means_no_reuse(server: ClosingServer,
                                                                   client: HttpClient) -> None:
    """``Keep-Alive: timeout=1``: the server may close after one second, the margin is one second."""
    for _ in range(3):
        assert await _call(client, "POST", server.url("/ka-1")) == b"/ka-1"
    assert server.accepted == 3
    assert "closes-idle" not in repr(client)  # the pool closed them itself: no evidence against the server
