"""The native lane's access record is the very line the Python lane writes (``orjson.dumps`` of its dict), and
its metrics are the Python lane's (native/lane.py ``Recorder``)."""

from __future__ import annotations

import bisect
import random
import time
import types

import orjson
import pytest

from sidecar_gateway.errors import BackendFailure, ErrorCode
from sidecar_gateway.native import lane
from sidecar_gateway.observability.logs import thousandths
from sidecar_gateway.observability.metrics import (
    EndpointMetrics,
    native_requests_total,
    request_duration,
    sidecar_invocation_duration,
)


class _Log:
    enabled = True

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write_line(self, line: bytes) -> None:
        self.lines.append(line)


def _python_lane_record(method: str, path: str, mid: str, service: str, endpoint: str, status: int, elapsed: float,
                        upstream: float | None, error: int) -> bytes:
    """The dict ``GatewayApp._http`` builds for the same outcome, encoded as ``AccessLog.write`` encodes it."""
    record: dict[str, object] = {"method": method, "path": path, "message_id": mid, "service_id": service,
                                 "endpoint_id": endpoint, "key": None}
    if error == lane.E_UNAVAILABLE:
        record["error"] = BackendFailure(ErrorCode.BACKEND_UNAVAILABLE).error_name
    elif error == lane.E_TIMEOUT:
        record["error"] = BackendFailure(ErrorCode.BACKEND_TIMEOUT).error_name
    elif upstream is not None:
        record["upstream_ms"] = thousandths(upstream * 1000)
    if error == lane.E_DISCONNECTED:
        record["disconnected"] = True
    elif error == lane.E_TERMINATED:
        record["verdict_pre"] = "terminate"
    record["status"] = status
    record["duration_ms"] = thousandths(elapsed * 1000)
    return record  # type: ignore[return-value]


@pytest.mark.parametrize("ids", [("svc", "ep"), ("0123456789", "9876543210"), ('sé"r\\v', "ép\u2603")])
def test_access_line_is_the_python_lanes_json(ids: tuple[str, str]) -> None:
    rng = random.Random(7)
    service, endpoint = ids
    epr = types.SimpleNamespace(metrics=EndpointMetrics(service, endpoint),
                                plan=types.SimpleNamespace(service_id=service, endpoint_id=endpoint))
    recorder = lane.Recorder(epr, None)
    for _ in range(2000):
        log = _Log()
        error = rng.choice([0, 0, 0, lane.E_UNAVAILABLE, lane.E_TIMEOUT, lane.E_BROKEN, lane.E_DISCONNECTED,
                            lane.E_TERMINATED])
        elapsed = rng.choice([rng.random() / 1000, rng.random(), rng.random() * 40, 0.0, 1e-7])
        upstream = None if error in (lane.E_UNAVAILABLE, lane.E_TIMEOUT) or rng.random() < 0.2 else elapsed / 2
        status = rng.choice([200, 204, 304, 403, 404, 499, 502, 504])
        path = rng.choice(["/s1", "/a/b-c_d~e!$&'()*+,;=:@", "/"])
        mid = lane._lane.message_id() if lane.AVAILABLE else "6b37e9c6-aab0-4f8b-8d44-b9da47661d8e"
        recorder.done(log, "GET", path, mid, status, elapsed, upstream, error, None)
        (line,) = log.lines
        expected = _python_lane_record("GET", path, mid, service, endpoint, status, elapsed, upstream, error)
        got = orjson.loads(line)
        assert line.endswith(b"\n")
        assert abs(got.pop("ts") - thousandths(time.time())) < 5
        assert got == expected and list(got) == list(expected)
        expected["ts"] = 1795674160.7
        got_line = line[: line.rindex(b',"ts":')] + b',"ts":1795674160.7}\n'
        assert got_line == orjson.dumps(expected) + b"\n"


def test_metrics_are_the_python_lanes() -> None:
    native = EndpointMetrics("svc-r", "ep-r")
    python = EndpointMetrics("svc-p", "ep-p")
    before = native_requests_total.labels().value
    for status, elapsed, upstream in [(200, 0.0012, 0.001), (502, 0.2, None), (200, 3.0, 2.5), (404, 0.0, None)]:
        native.observe_native(status, elapsed, upstream)
        python.observe(status, elapsed)
        if upstream is not None:
            python.upstream_duration.observe(upstream)
    assert {k: c.value for k, c in native._status.items()} == {k: c.value for k, c in python._status.items()}
    for name in ("request_duration", "upstream_duration"):
        a, b = getattr(native, name), getattr(python, name)
        assert (a.counts, a.sum) == (b.counts, b.sum)
    assert native_requests_total.labels().value == before + 4


class _Processor:
    """What ``Recorder.fold`` hands a pre-processor's plain allows to (``Processor.native_allows``)."""

    def __init__(self) -> None:
        self.allows: list[tuple[int, tuple[int, ...], float]] = []

    def native_allows(self, count: int, buckets: tuple[int, ...], total: float) -> None:
        self.allows.append((count, buckets, total))


@pytest.mark.skipif(not lane.AVAILABLE, reason="native lane not built")
def test_tally_folds_into_the_families_as_observe_native_counts() -> None:
    """Calls counted in the C tally (``record``), folded by ``Recorder.fold``, leave the endpoint's families as
    ``observe_native`` call by call does: statuses, every histogram bucket (bounds included: bisect_left), sums,
    the native counter; the pre-processor's allows go to ``native_allows`` with their own buckets."""
    rng = random.Random(11)
    bounds = list(request_duration.bounds[:-1])
    side = list(sidecar_invocation_duration.bounds[:-1])
    folded = EndpointMetrics("svc-t", "ep-t")
    called = EndpointMetrics("svc-c", "ep-c")
    epr = types.SimpleNamespace(metrics=folded, plan=types.SimpleNamespace(service_id="svc-t", endpoint_id="ep-t"))
    processor = _Processor()
    recorder = lane.Recorder(epr, processor)
    expected_side = [0] * len(sidecar_invocation_duration.bounds)
    before = native_requests_total.labels().value
    calls = 0
    for _ in range(3000):
        status = rng.choice([200, 200, 204, 304, 403, 418])
        elapsed = rng.choice([rng.random() / 100, rng.random() * 20, rng.choice(bounds), 0.0, 100.0])
        upstream = rng.choice([None, elapsed / 2, rng.choice(bounds)])
        function = rng.choice([None, rng.random() / 10, rng.choice(side), 50.0])
        assert recorder.tally.add(status, elapsed, -1.0 if upstream is None else upstream,
                                  -1.0 if function is None else function)
        called.observe_native(status, elapsed, upstream)
        if function is not None:
            expected_side[bisect.bisect_left(sidecar_invocation_duration.bounds, function)] += 1
        calls += 1
        if rng.random() < 0.01:
            recorder.fold()
    recorder.fold()
    recorder.fold()  # nothing left: a second fold adds nothing
    assert {k: c.value for k, c in folded._status.items()} == {k: c.value for k, c in called._status.items()}
    for name in ("request_duration", "upstream_duration"):
        a, b = getattr(folded, name), getattr(called, name)
        assert a.counts == b.counts
        assert a.sum == pytest.approx(b.sum)
    assert native_requests_total.labels().value == before + 2 * calls
    assert sum(count for count, _, _ in processor.allows) == sum(expected_side)
    assert [sum(c) for c in zip(*(b for _, b, _ in processor.allows), strict=True)] == expected_side


@pytest.mark.skipif(not lane.AVAILABLE, reason="native lane not built")
def test_tally_leaves_a_seventeenth_status_to_python() -> None:
    """The tally holds 16 statuses between folds; one more is refused (``record`` then records the call through
    ``Recorder.done``) and nothing of it is counted."""
    epr = types.SimpleNamespace(metrics=EndpointMetrics("svc-s", "ep-s"),
                                plan=types.SimpleNamespace(service_id="svc-s", endpoint_id="ep-s"))
    recorder = lane.Recorder(epr, None)
    assert all(recorder.tally.add(200 + i, 0.01, -1.0, -1.0) for i in range(16))
    assert not recorder.tally.add(299, 0.01, -1.0, -1.0)
    assert recorder.tally.take()[0] == 16
