"""The native lane's Python side: which endpoints it serves, its connection pools, its deadline sweep.

The lane itself (``_lane.c``, docs/native-lane.md) serves a plain-proxy call with no Python on the per-request
path.  It takes only what it can do exactly as the Python lane does; everything else is served by the Python lane
unchanged.  This module decides, once per configuration load (``build_routes``), which public paths it may take:

* the path's group has one endpoint, not bound to a ``public_host``, accepting every method;
* no pre- or post-processing, ``key_required: false``, an ``http://`` target without a query of its own;
* the configuration names no ``trusted_proxies`` (X-Forwarded-For then needs the Python lane's client address).

Per request the C code adds its own conditions (docs/native-lane.md): GET or HEAD, HTTP/1.1, no body, no key
presented, a plain path and plainly valid headers, the whole request in one read.

``SIDECAR_GATEWAY_NATIVE=0`` turns the lane off (every call through the Python lane, the reference); without a C
compiler at install time the extension is absent and ``AVAILABLE`` is False.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..errors import BackendFailure, ErrorCode
from ..observability.logs import BUFFER_LIMIT, FLUSH_INTERVAL_S, log_event
from ..observability.metrics import before_read, request_duration, sidecar_invocation_duration, upstream_duration

try:
    from . import _lane
except ImportError:  # built without a C compiler: the Python lane serves everything
    _lane = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "ENV", "Recorder", "build_routes", "close_pools", "enabled", "serve"]

AVAILABLE = _lane is not None
ENV = "SIDECAR_GATEWAY_NATIVE"
SWEEP_INTERVAL_S = 0.05  # the deadline of a call waiting for its response head is kept to within this
REAP_EVERY = 20  # sweeps between two passes over the pools for expired idle connections (1 s)
CONNECT_TIMEOUT_S = 10.0  # http11.CONNECT_TIMEOUT_S

# Why a native call ended early (``_lane.c`` E_*), for the access record and the log.
E_UNAVAILABLE, E_TIMEOUT, E_BROKEN, E_DISCONNECTED, E_INVALID, E_TERMINATED = 1, 2, 3, 4, 5, 6

_pools: dict[tuple[str, int], Any] = {}  # (host, port) -> _lane.Pool, for the whole worker (survives reloads)
_connecting: set[asyncio.Task[None]] = set()  # connection tasks (``_retry``)
_sweeper: asyncio.TimerHandle | None = None
_ticks = 0


def _retry(upstream: Any) -> None:
    """``_lane.c``: a call needs a new connection — its pool had none idle (``await_connection``), or a pooled
    connection broke before any response byte (then once, same message id: fastpool.py's stale-connection rule).
    Opened now; the call's deadline runs meanwhile (the sweep)."""
    _ensure_sweeper(asyncio.get_running_loop())
    _start(_reconnect(upstream))


async def _reconnect(upstream: Any) -> None:
    """Open ``upstream``'s new connection and hand the call over to it (``handover``: False when the call ended
    meanwhile, and the connection goes to the pool); ``give_up`` when it cannot be opened.  Until the hand-over
    the connection is in no pool, so no other call can take it first."""
    pool = upstream.pool
    host, port = pool.origin
    loop = asyncio.get_running_loop()
    try:
        _, fresh = await asyncio.wait_for(loop.create_connection(lambda: _lane.Upstream(pool), host, port),
                                          CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        log_event(logging.DEBUG, "native_connect_failed", host=host, port=port, error=repr(exc))
        upstream.give_up()
        return
    upstream.handover(fresh)


_ERROR_NAMES = {
    E_UNAVAILABLE: BackendFailure(ErrorCode.BACKEND_UNAVAILABLE).error_name,
    E_TIMEOUT: BackendFailure(ErrorCode.BACKEND_TIMEOUT).error_name,
}
_EVENTS = {
    E_UNAVAILABLE: (logging.WARNING, "backend_unavailable", "connection failed or answer malformed"),
    E_BROKEN: (logging.WARNING, "backend_response_broken", "the backend connection broke mid-body; client cut"),
    E_INVALID: (logging.ERROR, "invalid_backend_header", "Invalid HTTP header."),
}


def enabled() -> bool:
    return AVAILABLE and os.environ.get(ENV, "1") != "0"


PLACEHOLDER = "ffffffff-ffff-4fff-bfff-ffffffffffff"  # where the message id goes in a function call's template


def _eligible(endpoint: Any) -> bool:
    target = endpoint.target
    return (endpoint.post is None and not endpoint.key_required and endpoint.public_host is None
            and endpoint.methods is None and target.scheme == "http" and not target.query)


def _pool(host: str, port: int) -> Any:
    pool = _pools.get((host, port))
    if pool is None:
        pool = _pools[(host, port)] = _lane.Pool((host, port))
    return pool


def _function_entry(processor: Any, endpoint: Any, decide: Any) -> tuple[Any, ...] | None:
    """The pre-processor's part of an endpoint tuple (``_lane.c`` EP_FUNC_*), or None: not for this lane."""
    made = processor.native_call(endpoint, PLACEHOLDER)
    if made is None:
        return None
    url, template, refresh, cache_prefix = made
    mids: tuple[int, ...] = ()
    if template is not None:
        mids = tuple(m.start() for m in re.finditer(re.escape(PLACEHOLDER.encode()), template))
        if not mids:
            return None
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit() or host.startswith("["):
        return None  # an explicit port and a plain host (the lane connects to exactly these)
    plan = processor.plan
    signer = None if refresh is None else [0.0, None, refresh]
    return (_pool(host, int(port)), template, mids, float(plan.deadline_s), processor,
            tuple(plan.request_headers), processor.output_cache_filled, cache_prefix, refresh is not None, signer,
            decide)


def build_routes(runtime: Any, hooks: Any) -> dict[bytes, tuple[Any, ...] | None] | None:
    """The native routing table for ``runtime``: public path → endpoint tuple (read by ``_lane.c``), or None
    for a path the lane must leave to the Python lane.  None when the lane is off for this configuration.
    ``hooks`` is the gateway's ``native_hooks`` module: the lane's 502 and 504 rendered once, here, and the
    terminate decision of a pre-processor the lane calls itself."""
    if not enabled() or runtime.plan.trusted_proxies:
        return None
    routes: dict[bytes, tuple[Any, ...] | None] = {}
    for path, (group, host_bound) in runtime.router._by_path.items():
        key = path.encode("latin-1")
        endpoint = group[0]
        epr = runtime.endpoints[endpoint.endpoint_id]
        function = None
        if epr.sidecar is not None and epr.sidecar.pre is not None and epr.sidecar.post is None:
            function = _function_entry(epr.sidecar.pre, endpoint, hooks.terminate_decider(epr))
        if len(group) != 1 or host_bound or not _eligible(endpoint) or (epr.sidecar is not None and function is None):
            routes[key] = None
            continue
        target = endpoint.target
        pool = _pool(target.host, target.port)
        bad, late = hooks.error_replies(endpoint)
        location = endpoint.key_location
        routes[key] = (
            runtime.endpoints[endpoint.endpoint_id], target.base_path.encode("latin-1"), target.host_header,
            location.in_header, tuple(name.encode("latin-1") for name in location.names), pool,
            endpoint.service_id, endpoint.endpoint_id, float(endpoint.timeout_s),
            bad, late, function, *Recorder.pair(epr, epr.sidecar.pre if function is not None else None),
        )
    return routes


class Recorder:
    """One endpoint's bookkeeping for the calls the native lane answered, as ``GatewayApp._http`` does it for the
    Python lane: the metrics (``EndpointMetrics.observe_native``), the pre-processor's counts, the log event of a
    failure, and the access record — written as the very line ``orjson.dumps`` makes of the Python lane's dict
    (same members, same order; the lane's methods, paths and ids need no JSON escaping, the service and endpoint
    ids are encoded once here; ``_lane.format_record`` prints the thousandths as orjson prints those floats)."""

    __slots__ = ("_ids", "_metrics", "_processor", "tally")

    def __init__(self, epr: Any, processor: Any) -> None:
        self._metrics = epr.metrics
        self._processor = processor
        endpoint = epr.plan
        self._ids = (b',"service_id":' + orjson.dumps(endpoint.service_id) + b',"endpoint_id":'
                     + orjson.dumps(endpoint.endpoint_id) + b',"key":null')
        # Plain outcomes (the backend answered, or a terminate) are counted and logged by _lane.c itself
        # (``record``) into this tally and the access log's buffer; ``fold`` adds the counts into the families.
        self.tally = _lane.Tally(request_duration.bounds, sidecar_invocation_duration.bounds, self._ids, self)

    @classmethod
    def pair(cls, epr: Any, processor: Any) -> tuple[Recorder, Any]:
        """The endpoint tuple's last two members (``_lane.c`` EP_RECORDER, EP_TALLY)."""
        recorder = cls(epr, processor)
        return recorder, recorder.tally

    def fold(self) -> None:
        """The tally's counts since the last fold, into the metric families (as ``done`` counts one call)."""
        calls, statuses, request, request_sum, upstream, upstream_sum, allows, function, function_sum = (
            self.tally.take())
        if calls:
            self._metrics.fold_native(calls, statuses, request, request_sum, upstream, upstream_sum)
        if allows:
            self._processor.native_allows(allows, function, function_sum)

    def done(self, log: Any, method: str, path: str, message_id: str, status: int, elapsed: float,
             upstream_elapsed: float | None, error: int, function_elapsed: float | None) -> None:
        self._metrics.observe_native(status, elapsed, upstream_elapsed)
        if function_elapsed is not None and error != E_TERMINATED:
            self._processor.native_allow(function_elapsed)  # the pre-processor's call and its allow verdict
        if error:
            event = _EVENTS.get(error)
            if event is not None:
                log_event(event[0], event[1], message_id=message_id, error=event[2])
        if not log.enabled:
            return
        if not error:
            log.write_line(_format(self._ids, method, path, message_id, b"", upstream_elapsed, b"", status, elapsed))
            return
        name = _ERROR_NAMES.get(error)
        before = b',"error":' + orjson.dumps(name) if name is not None else b""
        after = b',"disconnected":true' if error == E_DISCONNECTED else (
            b',"verdict_pre":"terminate"' if error == E_TERMINATED else b"")
        log.write_line(_format(self._ids, method, path, message_id, before,
                               None if name is not None else upstream_elapsed, after, status, elapsed))


def _start(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _connecting.add(task)  # a reference each, or the loop may drop them
    task.add_done_callback(_connecting.discard)


def _ensure_sweeper(loop: asyncio.AbstractEventLoop) -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = loop.call_later(SWEEP_INTERVAL_S, _tick, loop)


def fold_tallies() -> None:
    """Every endpoint tally with counts, into the metric families (each sweep, and before a metrics read)."""
    for recorder in _lane.take_dirty():
        recorder.fold()


def _tick(loop: asyncio.AbstractEventLoop) -> None:
    global _sweeper, _ticks
    _lane.sweep()
    fold_tallies()
    _ticks += 1
    if _ticks % REAP_EVERY == 0:
        _reap()
    _sweeper = loop.call_later(SWEEP_INTERVAL_S, _tick, loop)


def _reap() -> None:
    """Close idle pooled connections past their idle limit (``serve`` also skips them when it meets them)."""
    for pool in _pools.values():
        for upstream in list(pool.idle):
            if upstream.expired():
                upstream.close()


def close_pools() -> None:
    """Worker shutdown: close every idle native connection and stop the sweep."""
    global _sweeper
    for pool in _pools.values():
        pool.close()
    if _sweeper is not None:
        _sweeper.cancel()
        _sweeper = None


# the tally counts request and upstream durations in one set of buckets
assert request_duration.bounds == upstream_duration.bounds

if _lane is not None:
    _lane.configure(httptools.HttpResponseParser, dict(STATUS_LINE), _retry, FLUSH_INTERVAL_S, BUFFER_LIMIT)
    before_read(fold_tallies)
    serve = _lane.serve
    _format = _lane.format_record
else:
    serve = None
