"""``fastpool.OriginPool``: learning that an origin closes idle connections without notice, decisions only.

``OriginPool`` is pure bookkeeping (no I/O, no awaiting), so its decisions are tested here with stand-in
connections that carry only what the pool reads (``idle_since``, ``idle_limit``, ``has_expired``).  The same
behaviour against a real server closing its connections is in ``tests/integration/test_fastpool_stale.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pytest

from sidecar_gateway.transports.fastpool import (
    CLOSES_IDLE_MEMORY_S,
    IDLE_KEPT_MIN,
    MARKED_IDLE_MAX,
    QUICK_CLOSE_S,
    Decision,
    OriginPool,
)
from sidecar_gateway.transports.http11 import KEEPALIVE_TIMEOUT_S, Http11Connection, Origin

T0 = 1000.0  # loop time of the first response in each case
ORIGIN = Origin("http", "fn.example", 80)


@dataclass(eq=False)  # identity, like real connections (``in`` / ``remove`` on the idle list)
class Conn:
    idle_since: float = T0
    idle_limit: float = KEEPALIVE_TIMEOUT_S
    closed: bool = False

    def has_expired(self, now: float) -> bool:
        return self.closed or now - self.idle_since >= self.idle_limit


def _conn(**kw: float) -> Http11Connection:
    return cast(Http11Connection, Conn(**kw))


def _pool(*idle: Http11Connection, max_connections: int = 0) -> OriginPool:
    pool = OriginPool(ORIGIN, max_connections)
    pool.idle.extend(idle)
    return pool


def _marked_pool(*idle: Http11Connection, max_connections: int = 0) -> OriginPool:
    """An origin that has just shown it closes idle connections (an idle one lost right after its response)."""
    lost = _conn()
    pool = _pool(lost, *idle, max_connections=max_connections)
    pool.forget(lost, T0 + 0.01)
    assert pool.avoids_reuse(T0 + 0.01, replayable=False)
    return pool


# ------------------------------------------------------------------------------------------------ evidence


def test_a_fresh_origin_reuses_idle_connections_for_every_method() -> None:
    """No evidence: a POST takes the idle connection like a GET (the common, cheap path)."""
    conn = _conn()
    pool = _pool(conn)
    assert pool.assign(T0 + 5, replayable=False) == (Decision.REUSE, conn, [])
    assert not pool.avoids_reuse(T0 + 5, replayable=False)
    assert "closes-idle" not in repr(pool)


@pytest.mark.parametrize("after", [0.0, 0.01, QUICK_CLOSE_S / 2, QUICK_CLOSE_S])
def test_idle_connection_lost_soon_after_its_response_marks_the_origin(after: float) -> None:
    """Evidence (a): a pooled connection lost within QUICK_CLOSE_S of its response."""
    conn = _conn()
    pool = _pool(conn)
    pool.forget(conn, T0 + after)
    assert pool.idle == []
    assert pool.avoids_reuse(T0 + after, replayable=False)
    assert pool.closes_idle_until == T0 + after + CLOSES_IDLE_MEMORY_S
    assert "closes-idle-until=" in repr(pool)


@pytest.mark.parametrize("after", [QUICK_CLOSE_S + 0.001, 5.0, KEEPALIVE_TIMEOUT_S - 1])
def test_idle_connection_lost_later_is_an_ordinary_idle_timeout(after: float) -> None:
    """A server's idle timer closing a connection seconds after its response is no evidence."""
    conn = _conn()
    pool = _pool(conn)
    pool.forget(conn, T0 + after)
    assert pool.idle == [] and pool.closes_idle_until == 0.0
    assert not pool.avoids_reuse(T0 + after, replayable=False)


def test_loss_of_a_connection_that_was_not_idle_is_no_evidence() -> None:
    """Connections we closed (evicted, in use, released unreusable) are not in the idle list when lost."""
    idle, other = _conn(), _conn()
    pool = _pool(idle)
    pool.forget(other, T0 + 0.01)
    assert pool.idle == [idle] and pool.closes_idle_until == 0.0


@pytest.mark.parametrize(("idle_limit", "after", "marked"), [
    (4.0, 0.5, True),  # ``Keep-Alive: timeout=5`` but closed after 0.5 s: without notice
    (0.5, 0.3, True),  # closed before the announced timeout
    (0.5, 0.7, False),  # closed after it: announced, and the pool no longer reuses it anyway
    (0.0, 0.001, False),  # ``timeout=1``: never reused, so its loss is expected
])
def test_an_announced_keep_alive_timeout_bounds_the_evidence(idle_limit: float, after: float, marked: bool) -> None:
    conn = _conn(idle_limit=idle_limit)
    pool = _pool(conn)
    pool.forget(conn, T0 + after)
    assert pool.avoids_reuse(T0 + after, replayable=False) is marked


def test_a_reused_connection_closed_before_any_response_byte_marks_the_origin() -> None:
    """Evidence (b): the client reports the stale keep-alive race itself."""
    pool = _pool()
    pool.note_stale_reuse(T0)
    assert pool.avoids_reuse(T0, replayable=False)
    assert pool.closes_idle_until == T0 + CLOSES_IDLE_MEMORY_S


# ------------------------------------------------------------------------------------------ while marked


@pytest.mark.parametrize("replayable", [True, False])
def test_while_marked_only_requests_that_cannot_be_resent_avoid_idle_connections(replayable: bool) -> None:
    """A POST (or a streamed body) opens a fresh connection; a GET still reuses: it is resent if stale."""
    conn = _conn()
    pool = _marked_pool(conn)
    decision, got, to_close = pool.assign(T0 + 0.02, replayable=replayable)
    if replayable:
        assert (decision, got, to_close) == (Decision.REUSE, conn, [])
        assert pool.idle == [] and pool.active == 1
    else:
        assert (decision, got, to_close) == (Decision.CREATE, None, [])
        assert pool.idle == [conn] and pool.active == 1  # left for idempotent requests


def test_the_mark_lapses_after_the_memory_without_new_evidence() -> None:
    conn = _conn()
    pool = _marked_pool(conn)
    until = pool.closes_idle_until
    assert pool.assign(until - 0.001, replayable=False)[0] is Decision.CREATE
    conn2 = _conn(idle_since=until - 1)
    pool.idle[:] = [conn2]
    assert not pool.avoids_reuse(until, replayable=False)
    assert pool.assign(until, replayable=False) == (Decision.REUSE, conn2, [])


def test_each_new_piece_of_evidence_extends_the_mark() -> None:
    pool = _marked_pool()
    later = T0 + CLOSES_IDLE_MEMORY_S - 1
    pool.note_stale_reuse(later)
    assert pool.avoids_reuse(T0 + CLOSES_IDLE_MEMORY_S + 100, replayable=False)
    conn = _conn(idle_since=later + 10)
    pool.idle.append(conn)
    pool.forget(conn, later + 10.5)
    assert pool.closes_idle_until == later + 10.5 + CLOSES_IDLE_MEMORY_S


def test_a_marked_origin_keeps_a_bounded_number_of_idle_connections() -> None:
    """POSTs open connections without consuming idle ones: beyond MARKED_IDLE_MAX the oldest is closed."""
    idle = [_conn(idle_since=T0 + i) for i in range(MARKED_IDLE_MAX)]
    pool = _marked_pool(*idle)
    decision, got, to_close = pool.assign(T0 + 20, replayable=False)
    assert (decision, got, to_close) == (Decision.CREATE, None, [idle[0]])
    assert pool.idle == idle[1:]
    pool.give_back(_conn(idle_since=T0 + 20))  # the POST's connection goes idle as usual
    assert len(pool.idle) == MARKED_IDLE_MAX
    assert pool.assign(T0 + 21, replayable=False)[2] == [idle[1]]


def test_a_marked_origin_at_its_cap_evicts_an_idle_connection_for_a_post() -> None:
    conn = _conn()
    pool = _marked_pool(conn, max_connections=2)
    pool.active = 1
    assert pool.assign(T0 + 0.02, replayable=False) == (Decision.CREATE, None, [conn])
    assert pool.idle == [] and pool.active == 2
    assert pool.assign(T0 + 0.03, replayable=False) == (Decision.WAIT, None, [])


def test_a_marked_pool_is_kept_until_the_mark_lapses() -> None:
    """The sweeper drops unused pools; a marked one keeps what it learnt while the mark lasts."""
    pool = _marked_pool()
    assert not pool.is_unused(T0 + 1)
    assert pool.is_unused(pool.closes_idle_until)
    assert _pool().is_unused(T0)


# ------------------------------------------------------------------------------------------------ shrinking


def _checkout(pool: OriginPool, n: int, now: float = T0) -> list[Http11Connection]:
    """``n`` requests in flight at once: reused idle connections first, then new ones (stand-ins)."""
    out = []
    for _ in range(n):
        decision, conn, _ = pool.assign(now)
        out.append(conn if decision is Decision.REUSE else _conn(idle_since=now))
    return out


def _return_all(pool: OriginPool, conns: list[Http11Connection], now: float) -> None:
    for c in conns:
        c.idle_since = now  # what ``Http11Connection.finish`` does
        assert pool.give_back(c) is None


def test_a_burst_s_connections_are_closed_once_the_load_no_longer_needs_them() -> None:
    """300 calls at once, then a steady 3 at a time: the sweep after the burst keeps them (the interval needed
    300), the next one keeps only what that interval needed (at least ``IDLE_KEPT_MIN``) — oldest idle closed,
    most recently used kept."""
    pool = _pool()
    burst = _checkout(pool, 300)
    _return_all(pool, burst, T0 + 0.1)
    assert pool.sweep(T0 + 1) == []
    assert len(pool.idle) == 300
    for t in range(2, 6):  # a steady load of 3 concurrent calls
        steady = _checkout(pool, 3, T0 + t)
        _return_all(pool, steady, T0 + t + 0.01)
    closed = pool.sweep(T0 + 6)
    assert IDLE_KEPT_MIN > 3
    assert len(closed) == 300 - IDLE_KEPT_MIN and len(pool.idle) == IDLE_KEPT_MIN
    assert set(map(id, steady)) <= set(map(id, pool.idle))  # the warm ones stay
    assert all(c not in pool.idle for c in closed)


def test_connections_in_use_count_towards_the_need() -> None:
    """20 in use at a sweep with a peak of 30: 10 idle kept, not 30."""
    pool = _pool()
    conns = _checkout(pool, 30)
    _return_all(pool, conns[:10], T0 + 0.1)
    _return_all(pool, conns[10:20], T0 + 0.2)  # two batches: 20 idle, 10 still in use
    pool.sweep(T0 + 1)  # peak 30, 10 in use → keeps up to 20 idle
    assert len(pool.idle) == 20 and pool.active == 10
    _return_all(pool, conns[20:], T0 + 2)  # now 30 idle, 0 active; the interval's peak was 10
    assert len(pool.sweep(T0 + 3)) == 20
    assert len(pool.idle) == 10


def test_sparse_traffic_keeps_its_connection_to_the_keep_alive_expiry() -> None:
    """One call every 20 s: the sweeps in between (need 0) keep it; it is reused, never reopened."""
    pool = _pool()
    first = _checkout(pool, 1)
    _return_all(pool, first, T0)
    for t in (5, 10, 15):
        assert pool.sweep(T0 + t) == []
    decision, conn, _ = pool.assign(T0 + 20)
    assert decision is Decision.REUSE and conn is first[0]


def test_a_steady_load_never_loses_its_connections_to_the_sweep() -> None:
    pool = _pool()
    for t in range(20):
        conns = _checkout(pool, 8, T0 + t)
        _return_all(pool, conns, T0 + t + 0.5)
        if t % 5 == 4:
            assert pool.sweep(T0 + t + 0.6) == []
    assert len(pool.idle) == 8
