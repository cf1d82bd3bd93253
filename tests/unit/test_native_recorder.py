"""The native lane's access record is the very line the Python lane writes (``orjson.dumps`` of its dict), and
its metrics are the Python lane's (native/lane.py ``Recorder``)."""

from __future__ import annotations

import random
import time
import types

import orjson
import pytest

from sidecar_gateway.errors import BackendFailure, ErrorCode
from sidecar_gateway.native import lane
from sidecar_gateway.observability.logs import thousandths
from sidecar_gateway.observability.metrics import EndpointMetrics, native_requests_total


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
