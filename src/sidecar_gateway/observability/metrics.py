"""All metrics in one list (Envoy ``ALL_EXT_PROC_FILTER_STATS`` style), Prometheus text format.

Gateway metrics (issue "gateway core") and the sidecar metrics of contract §9.6, kept in our own store and
rendered in the Prometheus text format (version 0.0.4) at scrape time only.

Why our own store (performance issue: CPU per call and RSS per worker, both measured):

* A ``prometheus_client`` child costs 1–2 µs per ``inc`` (a lock; with ``--workers``, an mmap write per value)
  and a histogram ``observe`` two of those: ~10 µs of a proxied call.  Here a counter child is a float and a
  histogram child a list of bucket counts plus a sum: ``inc`` / ``observe`` are a few hundred nanoseconds.
* A ``prometheus_client`` histogram child is ~4 kB (a value object and a lock per bucket); with 1,000 endpoints
  each worker grew by ~12 MB once every endpoint had been called.  Ours is ~300 bytes.

Theory of operation:

* ``Family`` is a metric (name, help, kind, label names, buckets); ``family.labels(*values)`` returns its child
  for those values, created on first use.  Children are touched only from their event loop's thread.
* Single process: /metrics renders the families directly.
* ``--workers N``: the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start.  A worker writes
  a snapshot of all its families to ``<dir>/worker-<pid>.json`` at most ``FLUSH_INTERVAL_S`` after a value
  changed (one timer, armed only while something changed; the write is a rename, so a reader never sees half
  a file), and at shutdown.  The supervisor's /metrics reads every snapshot: counters and histograms are summed
  over all of them (a dead worker's calls still count, as in Prometheus multiprocess mode); gauges are summed
  (``livesum``) or maxed (``max``) over the workers still alive.  A multi-worker /metrics is therefore at most
  ~1 s old (Envoy flushes its stats every 5 s by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "FLUSH_INTERVAL_S",
    "EndpointMetrics",
    "Family",
    "LazyChild",
    "collect",
    "flush",
    "render_metrics",
    "sidecar_errors",
    "sidecar_invocation_duration",
    "sidecar_nonblocking_dropped",
    "sidecar_nonblocking_queue_depth",
    "sidecar_output_cache_lookups",
    "sidecar_verdicts",
]

FLUSH_INTERVAL_S = 1.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SNAPSHOT_PREFIX = "worker-"

_COUNTER, _HISTOGRAM, _GAUGE = "counter", "histogram", "gauge"
_INF = float("inf")

_dirty = False
_flush_timer: asyncio.TimerHandle | None = None
_FAMILIES: list[Family] = []


def _mark() -> None:
    """Something changed: make sure a snapshot is written within ``FLUSH_INTERVAL_S`` (multi-worker only)."""
    global _dirty, _flush_timer
    _dirty = True
    if _flush_timer is None and _SNAPSHOT_DIR is not None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a tool or a test calling in directly): write now
            flush()
            return
        _flush_timer = loop.call_later(FLUSH_INTERVAL_S, flush)


class _Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount
        if not _dirty:
            _mark()


class _Gauge:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value
        if not _dirty:
            _mark()


class _Histogram:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds  # ends with +Inf
        self.counts = [0] * len(bounds)  # per bucket (not cumulative)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self._bounds, amount)] += 1  # the first bucket with amount <= bound
        self.sum += amount
        if not _dirty:
            _mark()

    def add_counts(self, counts: tuple[int, ...], total: float) -> None:
        """Observations counted elsewhere (the native lane's tally): per-bucket counts of the same bounds and
        their sum."""
        mine = self.counts
        for i, n in enumerate(counts):
            if n:
                mine[i] += n
        self.sum += total
        if not _dirty:
            _mark()


class Family:
    """One metric and its children by label values."""

    __slots__ = ("bounds", "children", "help", "kind", "label_names", "mode", "name")

    def __init__(self, name: str, help_text: str, kind: str, label_names: tuple[str, ...] = (), *,
                 buckets: tuple[float, ...] = (), mode: str = "livesum") -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.label_names = label_names
        self.bounds = (*buckets, _INF) if kind == _HISTOGRAM else ()
        self.mode = mode  # gauges across workers: "livesum" or "max"
        self.children: dict[tuple[str, ...], Any] = {}
        _FAMILIES.append(self)

    def labels(self, *values: str) -> Any:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name}: expected labels {self.label_names}, got {values}")
            child = self.children[values] = self._new_child()
        return child

    def _new_child(self) -> Any:
        if self.kind == _HISTOGRAM:
            return _Histogram(self.bounds)
        return _Gauge() if self.kind == _GAUGE else _Counter()

    # an unlabelled family is its own only child
    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)


_EP = ("service_id", "endpoint_id")
_SC = ("service_id", "endpoint_id", "point")
# Latency buckets: 1 ms … 10 s (the upstream call is usually a few ms on loopback; 10 s is past every sane
# endpoint timeout).  The sidecar histogram uses the §9.6 range 0.005 … 10 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIDECAR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

requests_total = Family("gateway_requests_total", "Client calls answered, by endpoint and status", _COUNTER,
                        (*_EP, "status"))
overload_rejections_total = Family("gateway_overload_rejections_total",
                                   "Client calls answered 503 because max_inflight calls were in progress", _COUNTER)
native_requests_total = Family("gateway_native_requests_total",
                               "Client calls served by the native lane (docs/native-lane.md)", _COUNTER)
_native_requests = native_requests_total.labels()
unmatched_total = Family("gateway_unmatched_requests_total", "Client calls that matched no endpoint", _COUNTER,
                         ("status",))
upstream_duration = Family("gateway_upstream_duration_seconds",
                           "Backend call: request sent to response head received", _HISTOGRAM, _EP,
                           buckets=_LATENCY_BUCKETS)
request_duration = Family("gateway_request_duration_seconds", "Whole client call inside the gateway", _HISTOGRAM,
                          _EP, buckets=_LATENCY_BUCKETS)
sidecar_invocation_duration = Family("sidecar_invocation_duration_seconds", "Function invocation to outcome",
                                     _HISTOGRAM, (*_SC, "stack"), buckets=_SIDECAR_BUCKETS)
sidecar_verdicts = Family("sidecar_verdicts_total", "One per processor per call where the processor applies",
                          _COUNTER, (*_SC, "verdict", "mode"))
sidecar_errors = Family("sidecar_errors_total", "Contract §6.1 errors raised by a processor", _COUNTER,
                        (*_SC, "error_name"))
sidecar_output_cache_lookups = Family("sidecar_output_cache_lookups_total", "Output cache lookups (§9.1)",
                                      _COUNTER, (*_SC, "result"))
sidecar_nonblocking_dropped = Family("sidecar_nonblocking_dropped_total", "Non-blocking invocations dropped",
                                     _COUNTER, _SC)
sidecar_nonblocking_queue_depth = Family("sidecar_nonblocking_queue_depth", "Non-blocking queue length", _GAUGE,
                                         mode="livesum")
loop_lag = Family("gateway_event_loop_lag_seconds", "How late a 20 ms timer fires (event-loop stalls)", _HISTOGRAM,
                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
loop_stall = Family("gateway_event_loop_stall_seconds",
                    "Event-loop lag less the time the loop thread waited for a CPU (the loop's own stalls)",
                    _HISTOGRAM, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
loop_lag_max = Family("gateway_event_loop_lag_max_seconds", "Largest event-loop lag of the last 10 s", _GAUGE,
                      mode="max")


class LazyChild:
    """A child bound on first use: most of a large configuration's processors never see a call, and every
    child is a scraped series."""

    __slots__ = ("_child", "_labels", "_parent")

    def __init__(self, parent: Family, *labels: str) -> None:
        self._parent = parent
        self._labels = labels
        self._child: Any = None

    def inc(self, amount: float = 1) -> None:
        child = self._child
        if child is None:
            child = self._child = self._parent.labels(*self._labels)
        child.inc(amount)

    def observe(self, amount: float) -> None:
        child = self._child
        if child is None:
            child = self._child = self._parent.labels(*self._labels)
        child.observe(amount)

    def add_counts(self, counts: tuple[int, ...], total: float) -> None:
        child = self._child
        if child is None:
            child = self._child = self._parent.labels(*self._labels)
        child.add_counts(counts, total)


class EndpointMetrics:
    """One endpoint's children, each bound on first use (the 1,000 endpoints of a large configuration cost
    nothing until called).  After the first call the request path is a slot read and an addition."""

    __slots__ = ("_labels", "_request_duration", "_status", "_upstream_duration")

    def __init__(self, service_id: str, endpoint_id: str) -> None:
        self._labels = (service_id, endpoint_id)
        self._status: dict[int, _Counter] = {}
        self._upstream_duration: _Histogram | None = None
        self._request_duration: _Histogram | None = None

    @property
    def upstream_duration(self) -> _Histogram:
        child = self._upstream_duration
        if child is None:
            child = self._upstream_duration = upstream_duration.labels(*self._labels)
        return child

    @property
    def request_duration(self) -> _Histogram:
        child = self._request_duration
        if child is None:
            child = self._request_duration = request_duration.labels(*self._labels)
        return child

    def _status_child(self, status: int) -> _Counter:
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = requests_total.labels(*self._labels, str(status))
        return child

    def count(self, status: int) -> None:
        self._status_child(status).inc()

    def observe_native(self, status: int, duration_s: float, upstream_s: float | None) -> None:
        """One call the native lane answered and Python records (a failure: ``Recorder.done``): ``observe``,
        the upstream duration when the backend answered, and ``gateway_native_requests_total``."""
        self.observe(status, duration_s)
        if upstream_s is not None:
            self.upstream_duration.observe(upstream_s)
        _native_requests.inc()

    def fold_native(self, calls: int, statuses: tuple[tuple[int, int], ...], request: tuple[int, ...],
                    request_sum: float, upstream: tuple[int, ...], upstream_sum: float) -> None:
        """``observe_native`` for many calls at once: the native lane's tally (``Recorder.fold``)."""
        for status, count in statuses:
            self._status_child(status).inc(count)
        self.request_duration.add_counts(request, request_sum)
        if any(upstream):
            self.upstream_duration.add_counts(upstream, upstream_sum)
        _native_requests.inc(calls)

    def observe(self, status: int, duration_s: float) -> None:
        """One answered call: ``gateway_requests_total`` by status and ``gateway_request_duration_seconds``."""
        self._status_child(status).inc()
        self.request_duration.observe(duration_s)


# ------------------------------------------------------------------------------------------------ snapshots

_Values = dict[str, dict[tuple[str, ...], Any]]  # family name → label values → float | (counts, sum)


def _snapshot_dir() -> Path | None:
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


_SNAPSHOT_DIR = _snapshot_dir()  # set by the supervisor before the workers are spawned


_before_read: list[Callable[[], None]] = []  # counts kept elsewhere, added in before every read (the native lane)


def before_read(hook: Callable[[], None]) -> None:
    """``hook`` runs before the values are read (a scrape, a snapshot): it adds counts kept outside the
    families (native/lane.py folds its tallies)."""
    if hook not in _before_read:
        _before_read.append(hook)


def _values() -> _Values:
    """A copy of every child's value (on the loop thread: consistent, and cheap — ~1 ms per 10k series)."""
    for hook in _before_read:
        hook()
    return _copy()


def _copy() -> _Values:
    out: _Values = {}
    for fam in _FAMILIES:
        if fam.kind == _HISTOGRAM:
            out[fam.name] = {k: (list(c.counts), c.sum) for k, c in fam.children.items()}
        else:
            out[fam.name] = {k: c.value for k, c in fam.children.items()}
    return out


def flush() -> None:
    """Write this worker's snapshot now if anything changed (the timer, shutdown).  No-op in single process."""
    global _dirty, _flush_timer
    if _flush_timer is not None:
        _flush_timer.cancel()
        _flush_timer = None
    for hook in _before_read:
        hook()
    if not _dirty or _SNAPSHOT_DIR is None:
        return
    _dirty = False
    data = {name: [[list(k), v] for k, v in children.items()] for name, children in _copy().items()}
    path = _SNAPSHOT_DIR / f"{_SNAPSHOT_PREFIX}{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    with contextlib.suppress(OSError):  # metrics never take the gateway down (a full disk: stale metrics)
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merged_snapshots(directory: Path) -> _Values:
    """Every worker's snapshot summed (counters, histograms), gauges over live workers by their mode."""
    modes = {fam.name: (fam.kind, fam.mode) for fam in _FAMILIES}
    merged: _Values = {fam.name: {} for fam in _FAMILIES}
    for path in sorted(directory.glob(f"{_SNAPSHOT_PREFIX}*.json")):
        try:
            pid = int(path.stem.removeprefix(_SNAPSHOT_PREFIX))
            data = orjson.loads(path.read_bytes())
        except (ValueError, OSError, orjson.JSONDecodeError):
            continue
        live = _alive(pid)
        for name, series in data.items():
            if name not in modes:
                continue
            kind, mode = modes[name]
            target = merged[name]
            for labels, value in series:
                key = tuple(labels)
                if kind == _HISTOGRAM:
                    counts, total = value
                    prior = target.get(key)
                    if prior is None:
                        target[key] = (list(counts), total)
                    else:
                        target[key] = ([a + b for a, b in zip(prior[0], counts, strict=False)], prior[1] + total)
                elif kind == _COUNTER:
                    target[key] = target.get(key, 0.0) + value
                elif live:
                    prior = target.get(key)
                    target[key] = value if prior is None else (max(prior, value) if mode == "max" else prior + value)
    return merged


# ------------------------------------------------------------------------------------------------ rendering


def _go_float(value: float) -> str:
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _render_family(fam: Family, series: dict[tuple[str, ...], Any]) -> Iterator[str]:
    yield f"# HELP {fam.name} {fam.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
    yield f"# TYPE {fam.name} {fam.kind}\n"
    names = fam.label_names
    for key in sorted(series):
        value = series[key]
        if fam.kind == _HISTOGRAM:
            counts, total = value
            cumulative = 0
            for bound, n in zip(fam.bounds, counts, strict=False):
                cumulative += n
                le = 'le="' + _go_float(bound) + '"'
                yield f"{fam.name}_bucket{_label_text(names, key, le)} {_go_float(cumulative)}\n"
            yield f"{fam.name}_count{_label_text(names, key)} {_go_float(cumulative)}\n"
            yield f"{fam.name}_sum{_label_text(names, key)} {_go_float(total)}\n"
        else:
            yield f"{fam.name}{_label_text(names, key)} {_go_float(value)}\n"


def collect(multiprocess: bool = False) -> _Values | None:
    """This process's values, copied (call on the event loop's thread: ~1 ms per 10k series); ``None`` when
    ``multiprocess`` (``render_metrics`` then reads the workers' snapshots, which needs no loop)."""
    if multiprocess and _snapshot_dir() is not None:
        return None
    return _values()


def render_metrics(multiprocess: bool = False, values: _Values | None = None) -> bytes:
    """The exposition text of ``values`` (from ``collect``), or of the workers' snapshots merged when
    ``values`` is None and ``multiprocess``.  Safe in an executor thread when given ``values`` or reading
    snapshots (the admin server renders there: tens of ms with many endpoints)."""
    if values is None:
        directory = _snapshot_dir() if multiprocess else None
        values = _merged_snapshots(directory) if directory is not None else _values()
    return "".join(line for fam in _FAMILIES for line in _render_family(fam, values.get(fam.name, {}))).encode()
