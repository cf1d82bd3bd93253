"""All metrics in one list (Envoy ``ALL_EXT_PROC_FILTER_STATS`` style), Prometheus text format.

Gateway metrics (issue "gateway core") and the sidecar metrics of contract §9.6.  Children are bound once
per endpoint (and per status code on first use) so the request path does a dict lookup and an ``inc``.
With ``--workers`` > 1 the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and serves
the aggregate through ``MultiProcessCollector``.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "FLUSH_INTERVAL_S",
    "REGISTRY",
    "Buffered",
    "EndpointMetrics",
    "LazyChild",
    "flush",
    "render_metrics",
    "sidecar_errors",
    "sidecar_invocation_duration",
    "sidecar_nonblocking_dropped",
    "sidecar_nonblocking_queue_depth",
    "sidecar_output_cache_lookups",
    "sidecar_verdicts",
]

REGISTRY = CollectorRegistry(auto_describe=True)
_EP = ("service_id", "endpoint_id")
_SC = ("service_id", "endpoint_id", "point")
# Latency buckets: 1 ms … 10 s (the upstream call is usually a few ms on loopback; 10 s is past every sane
# endpoint timeout).  The sidecar histogram uses the §9.6 range 0.005 … 10 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIDECAR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Counter("gateway_requests_total", "Client calls answered, by endpoint and status",
                         (*_EP, "status"), registry=REGISTRY)
overload_rejections_total = Counter("gateway_overload_rejections_total",
                                   "Client calls answered 503 because max_inflight calls were in progress",
                                   registry=REGISTRY)
unmatched_total = Counter("gateway_unmatched_requests_total", "Client calls that matched no endpoint",
                          ("status",), registry=REGISTRY)
upstream_duration = Histogram("gateway_upstream_duration_seconds",
                              "Backend call: request sent to response head received", _EP,
                              buckets=_LATENCY_BUCKETS, registry=REGISTRY)
request_duration = Histogram("gateway_request_duration_seconds", "Whole client call inside the gateway", _EP,
                             buckets=_LATENCY_BUCKETS, registry=REGISTRY)
sidecar_invocation_duration = Histogram("sidecar_invocation_duration_seconds", "Function invocation to outcome",
                                        (*_SC, "stack"), buckets=_SIDECAR_BUCKETS, registry=REGISTRY)
sidecar_verdicts = Counter("sidecar_verdicts_total", "One per processor per call where the processor applies",
                           (*_SC, "verdict", "mode"), registry=REGISTRY)
sidecar_errors = Counter("sidecar_errors_total", "Contract §6.1 errors raised by a processor",
                         (*_SC, "error_name"), registry=REGISTRY)
sidecar_output_cache_lookups = Counter("sidecar_output_cache_lookups_total", "Output cache lookups (§9.1)",
                                       (*_SC, "result"), registry=REGISTRY)
sidecar_nonblocking_dropped = Counter("sidecar_nonblocking_dropped_total", "Non-blocking invocations dropped",
                                      _SC, registry=REGISTRY)
sidecar_nonblocking_queue_depth = Gauge("sidecar_nonblocking_queue_depth", "Non-blocking queue length",
                                        registry=REGISTRY, multiprocess_mode="livesum")


loop_lag = Histogram("gateway_event_loop_lag_seconds", "How late a 20 ms timer fires (event-loop stalls)",
                     buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0), registry=REGISTRY)
loop_lag_max = Gauge("gateway_event_loop_lag_max_seconds", "Largest event-loop lag of the last 10 s",
                     registry=REGISTRY, multiprocess_mode="max")


# ------------------------------------------------------------------------------------------ buffered children
#
# A prometheus_client child costs 1–2 µs per ``inc`` (a lock; with --workers, an mmap write per value) and a
# histogram ``observe`` two of those: ~10 µs per proxied call with --workers 2, ~5 % of its CPU.  The request
# path therefore adds to plain Python numbers in a ``Buffered`` child, and ``flush`` pushes the deltas into
# the prometheus children at most ``FLUSH_INTERVAL_S`` after the first buffered value (one timer for all
# children, armed only while something is buffered) and before every single-process /metrics rendering.  A
# multi-worker /metrics (rendered by the supervisor from the workers' files) is at most that old — Envoy
# flushes its stats every 5 s by default.  Every buffered child is touched only from its event loop's thread.

FLUSH_INTERVAL_S = 1.0

_dirty: list[Buffered] = []
_NO_COUNTS: list[int] = []  # shared by every counter child (never written)
_flush_timer: asyncio.TimerHandle | None = None


class Buffered:
    """A metric child bound on first flush, fed from the request path without locks (see above).

    ``inc`` for counters, ``observe`` for histograms (buckets taken from the parent)."""

    __slots__ = ("_bounds", "_child", "_counts", "_delta", "_dirty", "_labels", "_parent", "_sum")

    def __init__(self, parent: Counter | Histogram, *labels: str) -> None:
        self._parent = parent
        self._labels = labels
        self._child: Any = None
        self._delta = 0.0
        self._dirty = False
        bounds = getattr(parent, "_upper_bounds", None)  # histograms only (ends with +Inf)
        self._bounds: tuple[float, ...] = tuple(bounds) if bounds is not None else ()
        self._counts: list[int] = [0] * len(self._bounds) if bounds is not None else _NO_COUNTS
        self._sum = 0.0

    def inc(self, amount: float = 1) -> None:
        self._delta += amount
        if not self._dirty:
            self._mark()

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bucket with amount <= bound
        self._sum += amount
        if not self._dirty:
            self._mark()

    def _mark(self) -> None:
        global _flush_timer
        self._dirty = True
        _dirty.append(self)
        if _flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a tool or a test calling in directly): no buffering
                flush()
                return
            _flush_timer = loop.call_later(FLUSH_INTERVAL_S, flush)

    def _flush(self) -> None:
        self._dirty = False
        child = self._child
        if child is None:
            child = self._child = self._parent.labels(*self._labels)
        if self._bounds:
            total, self._sum = self._sum, 0.0
            counts = self._counts
            if total or any(counts):
                child._sum.inc(total)  # prometheus_client stores per-bucket (non-cumulative) counts
                for i, n in enumerate(counts):
                    if n:
                        child._buckets[i].inc(n)
                        counts[i] = 0
        else:
            delta, self._delta = self._delta, 0.0
            child.inc(delta)


def flush() -> None:
    """Push every buffered value into the prometheus children (the timer, /metrics, shutdown)."""
    global _flush_timer
    if _flush_timer is not None:
        _flush_timer.cancel()
        _flush_timer = None
    while _dirty:
        _dirty.pop()._flush()


LazyChild = Buffered  # the name the sidecar code binds its per-processor children with


class EndpointMetrics:
    """One endpoint's children, bound on first flush: a prometheus child is ~4 kB (a histogram, 14 buckets
    each with a lock) and a scraped series, so the 1,000 endpoints of a large configuration cost nothing until
    called (performance issue: RSS per worker).  The request path only adds to ``Buffered`` numbers."""

    __slots__ = ("_labels", "_request_duration", "_status", "_upstream_duration")

    def __init__(self, service_id: str, endpoint_id: str) -> None:
        self._labels = (service_id, endpoint_id)
        self._status: dict[int, Buffered] = {}
        self._upstream_duration: Buffered | None = None
        self._request_duration: Buffered | None = None

    @property
    def upstream_duration(self) -> Buffered:
        child = self._upstream_duration
        if child is None:
            child = self._upstream_duration = Buffered(upstream_duration, *self._labels)
        return child

    @property
    def request_duration(self) -> Buffered:
        child = self._request_duration
        if child is None:
            child = self._request_duration = Buffered(request_duration, *self._labels)
        return child

    def count(self, status: int) -> None:
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = Buffered(requests_total, *self._labels, str(status))
        child.inc()

    def observe(self, status: int, duration_s: float) -> None:
        """One answered call: ``gateway_requests_total`` by status and ``gateway_request_duration_seconds``."""
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = Buffered(requests_total, *self._labels, str(status))
        child.inc()
        self.request_duration.observe(duration_s)


def render_metrics(multiprocess: bool = False) -> bytes:
    """The exposition text: this process's registry, or the workers' aggregate in multiprocess mode.

    May run in an executor thread: the caller ``flush``-es first, on the event loop's thread."""
    if multiprocess and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
