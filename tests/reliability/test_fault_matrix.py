"""Fault matrix (issue 5): every function fault × pre/post × sure-fire/fail-safe × request-response/event × http/
aws-lambda, plus backend faults, each asserting the client-visible outcome of the contract (§5.3, §5.4, §6.2,
gateway-config.md "Gateway-made errors"), and that the gateway keeps serving another endpoint at full speed while
functions hang (no event-loop stall over 50 ms).

Three gateways, one endpoint per case:

* ``main``: ``http`` stack against ``FaultyServer``; ``aws-lambda`` with ``AWS_ENDPOINT_URL_LAMBDA``/``_STS``/``_SSM``
  all pointing at ``FaultyServer`` (transport faults, STS/SSM failures and hangs, short-lived credentials);
  backend faults.  The cases whose server closes every keep-alive connection after answering (``closeeach``) use
  a ``FaultyServer`` of their own, so that what the gateway's pool learns about that origin comes from them alone.
* ``runner``: ``aws-lambda`` through the local Lambda runner and real ``awslambdaric`` runtimes (``sleepy``,
  ``raise_error``, ``garbage`` of ``tests/functions``).
* ``dead``: ``aws-lambda`` with the Lambda endpoint on a port that refuses connections (unreachable).

The whole matrix is fired once per module (fast cases on a few threads, then every slow case at once while probe
threads call a plain endpoint), and each test asserts on the recorded outcome of its case.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from support.backend import BackendServer
from support.faulty import FaultyServer, LoopLag, parse_loop_lag
from support.gateway_proc import GatewayProcess, config, endpoint, service, session
from support.lambda_runner import FUNCTIONS_DIR, run_lambda_runner

REGION = "eu-west-1"
ACCOUNT = "123456789012"
HANG_MS = 300  # deadline of the cases whose function never answers in time
FAST_MS = 5000  # deadline of the cases whose function answers at once: a loaded 2-core box never turns them into 504s
RUNNER_MS = 15000  # real runtimes: a cold start of an awslambdaric process may take seconds on a loaded machine
SLOW_STAGGER_S = 0.01  # the slow cases start 10 ms apart: ~30 hanging calls in flight at any time
DEADLINE_SLACK_S = 2.0  # a slow case must be answered within its deadline plus this
PROBE_MAX_S = 1.0  # no call to the plain endpoint may take longer than this while functions hang ...
PROBE_MEDIAN_S = 0.1  # ... and their median must stay at loopback speed
LAG_LIMIT_S = 0.05  # issue 5: no event-loop stall over 50 ms
RENDER_STALL_S = 0.04  # a /metrics reading slower than this client-side may have stalled the loop over 50 ms

TIMEOUT_FAULTS = {"hang", "slowbytes", "sts-hang", "ssm-hang", "runner-sleepy"}
CONNECT_FAULTS = {"reset", "badhttp", "unreachable"}
INVALID_FAULTS = {"garbage", "oversize", "badutf8", "runner-garbage"}
HTTP_FAULTS = ("hang", "reset", "slowbytes", "garbage", "oversize", "badutf8", "status500", "throttle429", "badhttp",
               "unreachable")
AWS_FAULTS = ("hang", "reset", "slowbytes", "garbage", "oversize", "badutf8", "status500", "throttle429", "badhttp",
              "sts-fail", "sts-hang", "ssm-fail", "ssm-hang")
RUNNER_FAULTS = ("runner-sleepy", "runner-raise", "runner-garbage")
RUNNER_FUNCTIONS = {"runner-sleepy": "sleepy", "runner-raise": "raise_error", "runner-garbage": "garbage"}

TIMEOUT_MESSAGE = "Timeout occured while connecting to AWS Service"
CONNECT_MESSAGE = "Error while connecting to AWS lambda."
INVALID_MESSAGE = "Invalid output from AWS Lambda function"
STATUS_MESSAGE = "Success Response not returned from AWS Lambda"


# --------------------------------------------------------------------------------------------------------------
# The cases and their contract outcomes
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The client-visible outcome: the backend's own answer, a catalogue error, or the 502 function error."""

    kind: str  # "backend" | "error" | "function_error"
    status: int = 200
    name: str = ""
    detail: str = ""


BACKEND_ANSWER = Expect("backend")


@dataclass(frozen=True)
class Case:
    stack: str  # "http" | "aws"
    fault: str
    point: str  # "pre" | "post"
    fail_safe: bool
    event: bool

    @property
    def id(self) -> str:
        policy, mode = "fs" if self.fail_safe else "sf", "ev" if self.event else "rr"
        return f"{self.stack}-{self.fault}-{self.point}-{policy}-{mode}"

    @property
    def gateway(self) -> str:
        if self.fault.startswith("runner-"):
            return "runner"
        return "dead" if self.stack == "aws" and self.fault == "unreachable" else "main"

    @property
    def slow(self) -> bool:
        return self.fault in TIMEOUT_FAULTS

    @property
    def deadline_ms(self) -> int:
        if self.slow:
            return HANG_MS
        return RUNNER_MS if self.gateway == "runner" else FAST_MS

    def expected(self) -> Expect:
        """§5.3 outcome table, §5.4 failSafe, §8.1 for the http stack, §7.2 for Lambda; event never blocks (P9)."""
        if self.event or self.fail_safe:
            return BACKEND_ANSWER
        name = f"InvalidResponseFromAWSLambdaIn{'Pre' if self.point == 'pre' else 'Post'}Process"
        if self.fault in TIMEOUT_FAULTS:
            return Expect("error", 504, "Gateway Timeout", TIMEOUT_MESSAGE)
        if self.fault == "runner-raise":
            return Expect("function_error", 502)
        if self.fault in CONNECT_FAULTS:
            return Expect("error", 500, name, CONNECT_MESSAGE)
        if self.fault in INVALID_FAULTS:
            return Expect("error", 500, name, INVALID_MESSAGE)
        if self.fault == "status500":
            return Expect("error", 500, name, STATUS_MESSAGE)
        if self.fault == "throttle429":  # §7.2: Lambda's error document message; §8.1: any other status
            return Expect("error", 500, name, "Rate Exceeded." if self.stack == "aws" else STATUS_MESSAGE)
        if self.fault == "sts-fail":
            return Expect("error", 500, name, "STS is down")
        if self.fault == "ssm-fail":
            return Expect("error", 500, name, "SSM is down")
        raise AssertionError(self.fault)


def _all_cases() -> list[Case]:
    out = []
    for stack, faults in (("http", HTTP_FAULTS), ("aws", AWS_FAULTS + RUNNER_FAULTS + ("unreachable",))):
        for fault in faults:
            for point in ("pre", "post"):
                for fail_safe in (False, True):
                    for event in (False, True):
                        out.append(Case(stack, fault, point, fail_safe, event))
    return out


CASES = _all_cases()
CASES_BY_ID = {c.id: c for c in CASES}


def _processor(case: Case, *, faulty: FaultyServer, dead_port: int) -> str:
    behaviour = (f"timeout: {case.deadline_ms}\nfailSafe: {str(case.fail_safe).lower()}\n"
                 f"synchronicity: {'event' if case.event else 'request-response'}\n")
    if case.stack == "http":
        url = f"http://127.0.0.1:{dead_port}/fn" if case.fault == "unreachable" else \
            faulty.path_url(f"/{case.fault}/{case.id}")
        return f"stack: http\nurl: {url}\n{behaviour}"
    if case.fault.startswith("runner-"):
        function, auth = RUNNER_FUNCTIONS[case.fault], "useAssumeRole: false\n"
    elif case.fault.startswith(("sts-", "ssm-")):
        role = case.fault if case.fault.startswith("sts-") else "sts-ok"
        param = case.fault if case.fault.startswith("ssm-") else "ssm-ok"
        function = f"ok__{case.id}"
        auth = f"roleARN: arn:aws:iam::{ACCOUNT}:role/{role}\nexternalIdKey: fault/{param}\n"
    else:
        function, auth = f"{case.fault}__{case.id}", "useAssumeRole: false\n"
    return (f"region: {REGION}\nfunctionARN: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}\n"
            f"{auth}{behaviour}")


# --------------------------------------------------------------------------------------------------------------
# Backend faults
# --------------------------------------------------------------------------------------------------------------

BACKEND_FAULTS = ("down", "slow", "resetmid", "malformed", "closeeach")
BACKEND_TIMEOUT_S = 1.0  # endpoint timeout of the backend-fault endpoints
SIDE_MS = 300  # pre and post deadline on those endpoints (their sum must not exceed the endpoint timeout)
KEEPALIVE_CALLS = 30


def _backend_endpoints(faulty: FaultyServer, dead_port: int, closing: FaultyServer) -> list[dict[str, Any]]:
    eps = []
    for fault in BACKEND_FAULTS:
        for sidecars in (False, True):
            cid = f"backend-{fault}-{'sidecars' if sidecars else 'bare'}"
            side = closing if fault == "closeeach" else faulty  # the closeeach functions share the backend's origin
            target = {
                "down": f"http://127.0.0.1:{dead_port}/down",
                "slow": faulty.path_url(f"/hang/{cid}"),
                "resetmid": faulty.path_url(f"/resetmid/{cid}"),
                "malformed": faulty.path_url(f"/badhttp/{cid}"),
                "closeeach": closing.path_url(f"/closeeach/{cid}"),
            }[fault]
            extra: dict[str, Any] = {}
            if sidecars:
                fn = "ok"
                extra["pre_processing"] = (f"stack: http\nurl: {side.path_url(f'/{fn}/{cid}-pre')}\n"
                                           f"timeout: {SIDE_MS}\n")
                extra["post_processing"] = (f"stack: http\nurl: {side.path_url(f'/{fn}/{cid}-post')}\n"
                                            f"timeout: {SIDE_MS}\nexpand-input: responsePayload\n"
                                            "max-payload-size: 1024\n")
            eps.append(endpoint(cid, f"/m/{cid}", target, key_required=False, timeout=BACKEND_TIMEOUT_S, **extra))
    return eps


# --------------------------------------------------------------------------------------------------------------
# Firing the matrix
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: int | None = None
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    body: bytes = b""
    error: str | None = None
    elapsed: float = 0.0


def _fire(gw: GatewayProcess, path: str, timeout: float = 30.0) -> Outcome:
    start = time.monotonic()
    try:
        with session() as s:
            r = s.get(gw.base_url + path, timeout=timeout)
            return Outcome(r.status_code, CaseInsensitiveDict(r.headers), r.content, None, time.monotonic() - start)
    except requests.RequestException as exc:
        return Outcome(error=repr(exc), elapsed=time.monotonic() - start)


class Probe:
    """Threads calling ``/plain`` of each gateway back to back on keep-alive sessions; records every latency."""

    def __init__(self, gateways: list[GatewayProcess]) -> None:
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(gw,), daemon=True) for gw in gateways]

    def _run(self, gw: GatewayProcess) -> None:
        with session() as s:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    r = s.get(gw.base_url + "/plain/probe", timeout=10)
                    failure = None if r.status_code == 200 else f"{gw.name}: status {r.status_code}"
                except requests.RequestException as exc:
                    failure = f"{gw.name}: {exc!r}"
                with self._lock:
                    self.latencies.append(time.monotonic() - start)
                    if failure:
                        self.failures.append(failure)
                time.sleep(0.01)

    def __enter__(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def _timed_loop_lag(gw: GatewayProcess) -> tuple[tuple[LoopLag, LoopLag], float]:
    start = time.monotonic()
    lag = _loop_lag(gw)
    return lag, time.monotonic() - start


def _loop_lag(gw: GatewayProcess) -> tuple[LoopLag, LoopLag]:
    """(lag, stall): the wall-clock lag histogram, and the same samples less the time the loop thread waited
    for a CPU (observability/looplag.py) — on a busy 2-core CI machine the first also counts the neighbours."""
    with session() as s:
        text = s.get(gw.admin_url + "/metrics", timeout=10).text
    return parse_loop_lag(text), parse_loop_lag(text, "gateway_event_loop_stall_seconds")


@dataclass
class Matrix:
    gateways: dict[str, GatewayProcess]
    faulty: FaultyServer
    closing: FaultyServer  # the closeeach cases' server: only they teach the gateway's pool about its origin
    backend: BackendServer
    outcomes: dict[str, Outcome]
    tokens: dict[str, str]
    probe_latencies: list[float]
    probe_failures: list[str]
    series: dict[str, list[Outcome]]  # the closeeach cases: every one of their KEEPALIVE_CALLS calls, in order
    lag: dict[str, LoopLag]  # per gateway: samples between the baseline reading (after warm-up) and the end
    stall: dict[str, LoopLag]  # the same samples less the loop thread's run-queue wait: what the test judges
    # Rendering /metrics runs on the gateway's loop and, with many endpoints, is itself a stall (test_loop_lag.py):
    # the baseline reading may add exactly one late sample, which is allowed when that reading took long enough.
    lag_allowance: dict[str, int]


def _aws_env(lambda_url: str, control_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "AKIAFAULTMATRIX00001", "AWS_SECRET_ACCESS_KEY": "fault-matrix-secret",
                "AWS_ENDPOINT_URL_LAMBDA": lambda_url, "AWS_ENDPOINT_URL_STS": control_url,
                "AWS_ENDPOINT_URL_SSM": control_url})
    return env


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyServer]:
    server = FaultyServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def closing() -> Iterator[FaultyServer]:
    """A second server for the closeeach cases: the evidence that its origin closes keep-alive connections
    without notice must come from those cases alone, not from other faults (``reset``) on a shared origin."""
    server = FaultyServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, dead_port: int,
           faulty: FaultyServer, closing: FaultyServer) -> Iterator[Matrix]:
    plain = endpoint("plain", "/plain", backend.url("/be/plain"), key_required=False)
    eps: dict[str, list[dict[str, Any]]] = {"main": [plain], "runner": [plain], "dead": [plain]}
    for case in CASES:
        target = backend.url(f"/be/{case.id}")
        key = "pre_processing" if case.point == "pre" else "post_processing"
        eps[case.gateway].append(endpoint(case.id, f"/m/{case.id}", target, key_required=False,
                                          **{key: _processor(case, faulty=faulty, dead_port=dead_port)}))
    eps["main"] += _backend_endpoints(faulty, dead_port, closing)
    fn_url = closing.path_url("/closeeach/fn-closeeach")
    eps["main"].append(endpoint("fn-closeeach", "/m/fn-closeeach", backend.url("/be/fn-closeeach"), key_required=False,
                                pre_processing=f"stack: http\nurl: {fn_url}-pre\n",
                                post_processing=f"stack: http\nurl: {fn_url}-post\n"))
    eps["main"] += _credential_endpoints(backend)
    workdir = tmp_path_factory.mktemp("fault-matrix")
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=workdir / "runner", region=REGION) as runner:
        lambda_urls = {"main": faulty.url, "runner": runner.url, "dead": f"http://127.0.0.1:{dead_port}"}
        gateways = {name: GatewayProcess(workdir / name, config(service(f"svc-{name}", *eps[name])),
                                         env=_aws_env(lambda_urls[name], faulty.url))
                    for name in eps}
        try:
            for gw in gateways.values():
                gw.wait_ready()
            yield _run_matrix(gateways, faulty, closing, backend)
        finally:
            for gw in gateways.values():
                gw.stop()


def _run_matrix(gateways: dict[str, GatewayProcess], faulty: FaultyServer, closing: FaultyServer,
                backend: BackendServer) -> Matrix:
    for gw in gateways.values():  # warm pools and lazily built state out of the measurement
        for _ in range(3):
            _fire(gw, "/plain/warm")
    baseline = {name: _timed_loop_lag(gw) for name, gw in gateways.items()}
    time.sleep(0.3)  # the baseline render's own late timer sample lands now, see Matrix.lag_allowance
    tokens = {c.id: uuid.uuid4().hex for c in CASES}
    for fault in BACKEND_FAULTS:
        for variant in ("bare", "sidecars"):
            tokens[f"backend-{fault}-{variant}"] = uuid.uuid4().hex
    tokens["fn-closeeach"] = uuid.uuid4().hex
    series: dict[str, list[Outcome]] = {}

    def run(cid: str) -> tuple[str, Outcome]:
        gw = gateways[CASES_BY_ID[cid].gateway] if cid in CASES_BY_ID else gateways["main"]
        if cid.startswith("backend-closeeach") or cid == "fn-closeeach":
            calls = series[cid] = _fire_keepalive(gw, f"/m/{cid}/{tokens[cid]}")
            return cid, next((o for o in calls if o.status != 200), calls[-1])
        return cid, _fire(gw, f"/m/{cid}/{tokens[cid]}")

    slow_ids = [c.id for c in CASES if c.slow] + [f"backend-slow-{v}" for v in ("bare", "sidecars")]
    fast_ids = [cid for cid in tokens if cid not in slow_ids]
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes.update(pool.map(run, fast_ids))

    def run_staggered(index_cid: tuple[int, str]) -> tuple[str, Outcome]:
        time.sleep(index_cid[0] * SLOW_STAGGER_S)  # a steady stream of hanging calls, not one thundering herd
        return run(index_cid[1])

    with Probe(list(gateways.values())) as probe, ThreadPoolExecutor(max_workers=len(slow_ids)) as pool:
        time.sleep(0.3)
        outcomes.update(pool.map(run_staggered, enumerate(slow_ids)))
    end = {name: _loop_lag(gw) for name, gw in gateways.items()}
    lag = {name: end[name][0].since(baseline[name][0][0]) for name in gateways}
    stall = {name: end[name][1].since(baseline[name][0][1]) for name in gateways}
    lat = sorted(probe.latencies)
    if lat:  # figures for docs/reliability.md (shown with -s)
        print(f"\nprobe calls {len(lat)}: median {statistics.median(lat) * 1000:.1f} ms, "
              f"p99 {lat[int(0.99 * (len(lat) - 1))] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    for name, figures in lag.items():
        print(f"loop lag {name}: {figures.samples:.0f} samples, over 50 ms {figures.over_50ms:.0f}, "
              f"p99 <= {figures.quantile(0.99)} s, max <= {figures.quantile(1.0)} s; "
              f"stalls over 50 ms {stall[name].over_50ms:.0f}")
    allowance = {name: int(baseline[name][1] > RENDER_STALL_S) for name in gateways}
    return Matrix(gateways, faulty, closing, backend, outcomes, tokens, probe.latencies, probe.failures, series, lag,
                  stall, allowance)


def _fire_keepalive(gw: GatewayProcess, path: str) -> list[Outcome]:
    """``KEEPALIVE_CALLS`` calls, one after the other, on one keep-alive client session; every outcome."""
    outcomes = []
    with session() as s:
        for _ in range(KEEPALIVE_CALLS):
            start = time.monotonic()
            try:
                r = s.get(gw.base_url + path, timeout=30)
                outcomes.append(Outcome(r.status_code, CaseInsensitiveDict(r.headers), r.content, None,
                                        time.monotonic() - start))
            except requests.RequestException as exc:
                outcomes.append(Outcome(error=repr(exc), elapsed=time.monotonic() - start))
    return outcomes


# --------------------------------------------------------------------------------------------------------------
# Assertion helpers
# --------------------------------------------------------------------------------------------------------------


def _describe(o: Outcome) -> str:
    if o.error:
        return f"exception {o.error} after {o.elapsed:.2f}s"
    return (f"{o.status} after {o.elapsed:.2f}s, detail={o.headers.get('X-Error-Detail-Header')!r}, "
            f"body={o.body[:200]!r}")


def _assert_backend_answer(m: Matrix, cid: str) -> None:
    o = m.outcomes[cid]
    assert o.status == 200, _describe(o)
    assert o.body.startswith(b"{") and f"/be/{cid}/{m.tokens[cid]}".encode() in o.body, _describe(o)


def _assert_error(o: Outcome, status: int, name: str, detail: str) -> None:
    assert (o.status, o.body, o.headers.get("X-Error-Detail-Header")) == \
        (status, f"<h1>{name}</h1>".encode(), detail), _describe(o)
    assert o.headers.get("Content-Type", "").split(";")[0] == "application/xml", _describe(o)


def _ids(pred: Callable[[Case], bool]) -> list[str]:
    return [c.id for c in CASES if pred(c)]


# --------------------------------------------------------------------------------------------------------------
# Function faults
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cid", _ids(lambda c: not c.event and not c.fail_safe))
def test_sure_fire_function_fault_answers_the_contract_error(matrix: Matrix, cid: str) -> None:
    """§5.3/§6.2: a failing function of a sure-fire processor ends the call with its catalogue error."""
    case, o = CASES_BY_ID[cid], matrix.outcomes[cid]
    want = case.expected()
    if want.kind == "function_error":
        assert o.status == 502, _describe(o)
        assert o.headers.get("Content-Type") == "application/json" and "X-Error-Detail-Header" not in o.headers
        assert o.body == b'{"code":502,"message":{"detail":"boom","title":"SidecarFailure"}}', _describe(o)
    else:
        _assert_error(o, want.status, want.name, want.detail)


@pytest.mark.parametrize("cid", _ids(lambda c: not c.event and not c.fail_safe and c.point == "pre"))
def test_sure_fire_pre_failure_never_calls_the_backend(matrix: Matrix, cid: str) -> None:
    """P10: a sure-fire pre failure answers the client without calling the backend."""
    assert matrix.backend.matching(matrix.tokens[cid]) == []


@pytest.mark.parametrize("cid", _ids(lambda c: c.fail_safe and not c.event))
def test_fail_safe_function_fault_carries_on_with_the_backend_answer(matrix: Matrix, cid: str) -> None:
    """§5.4: a fail-safe processor's failure is treated as {}: the client gets the backend's own answer."""
    _assert_backend_answer(matrix, cid)


@pytest.mark.parametrize("cid", _ids(lambda c: c.event))
def test_event_mode_function_fault_never_blocks_the_call(matrix: Matrix, cid: str) -> None:
    """P9: whatever the function does in event mode, the call goes on to the backend unchanged."""
    _assert_backend_answer(matrix, cid)


@pytest.mark.parametrize("cid", _ids(lambda c: c.slow))
def test_hanging_function_is_abandoned_at_its_deadline(matrix: Matrix, cid: str) -> None:
    """§5.3: at the deadline the gateway abandons the invocation; the answer comes at deadline + slack at most."""
    o = matrix.outcomes[cid]
    assert o.elapsed < HANG_MS / 1000 + DEADLINE_SLACK_S, _describe(o)


@pytest.mark.parametrize("cid", _ids(lambda c: c.gateway == "main" and not c.fault.startswith(("sts-", "ssm-"))))
def test_function_is_invoked_exactly_once(matrix: Matrix, cid: str) -> None:
    """§5.3: the gateway never retries a function invocation, whatever the failure."""
    kind = "http" if CASES_BY_ID[cid].stack == "http" else "lambda"
    assert len(matrix.faulty.calls_for(cid, kind)) == (0 if "unreachable" in cid else 1)


@pytest.mark.parametrize("cid", _ids(lambda c: c.gateway == "main" and c.fault == "hang"))
def test_abandoned_invocation_connection_is_closed(matrix: Matrix, cid: str) -> None:
    """A deadline-abandoned call closes its connection to the function (no leaked sockets)."""
    calls = matrix.faulty.calls_for(cid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and calls[0].gone_after is None:
        time.sleep(0.05)
    assert calls[0].gone_after is not None and calls[0].gone_after < HANG_MS / 1000 + DEADLINE_SLACK_S


@pytest.mark.parametrize("fault", ["sts-fail", "sts-hang", "ssm-fail", "ssm-hang"])
def test_credential_failure_never_invokes_the_function(matrix: Matrix, fault: str) -> None:
    """§7.3/§7.4: when STS or SSM fails, no Invoke is sent."""
    assert [c for c in matrix.faulty.calls if c.kind == "lambda" and f"-{fault}-" in c.case] == []


# --------------------------------------------------------------------------------------------------------------
# The gateway keeps serving while functions hang
# --------------------------------------------------------------------------------------------------------------


def test_plain_endpoint_answers_at_full_speed_while_functions_hang(matrix: Matrix) -> None:
    """Calls to a sidecar-free endpoint all succeed, promptly, while every slow case is in flight."""
    lat = matrix.probe_latencies
    assert matrix.probe_failures == []
    assert len(lat) >= 20, f"only {len(lat)} probe calls"
    assert max(lat) < PROBE_MAX_S and statistics.median(lat) < PROBE_MEDIAN_S, \
        f"median {statistics.median(lat):.3f}s max {max(lat):.3f}s over {len(lat)} calls"


@pytest.mark.parametrize("name", ["main", "runner", "dead"])
def test_event_loop_never_stalls_over_50ms_during_the_matrix(matrix: Matrix, name: str) -> None:
    """gateway_event_loop_stall_seconds: not one sample above 50 ms while every fault is injected and the functions
    hang (beyond the one late sample the baseline /metrics reading itself may cause).  The stall is the timer's
    lag less the time the loop thread sat on a run queue: CI runs three gateways, a Lambda runner, fault servers
    and the test's threads on two cores, and the kernel handing a core to one of them is not the gateway's stall."""
    stall = matrix.stall[name]
    assert stall.samples > 100, stall
    assert stall.over_50ms <= matrix.lag_allowance[name], (stall, matrix.lag[name], matrix.lag_allowance[name])


# --------------------------------------------------------------------------------------------------------------
# Backend faults
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bare", "sidecars"])
def test_backend_down_answers_502_backend_unavailable(matrix: Matrix, variant: str) -> None:
    """gateway-config.md: a refused backend connection is 502 BackendUnavailable."""
    _assert_error(matrix.outcomes[f"backend-down-{variant}"], 502, "BackendUnavailable", "Backend could not be reached")


@pytest.mark.parametrize("variant", ["bare", "sidecars"])
def test_slow_backend_answers_504_within_the_endpoint_timeout(matrix: Matrix, variant: str) -> None:
    """A backend that never answers: 504 BackendTimeout, at the endpoint timeout (plus slack)."""
    o = matrix.outcomes[f"backend-slow-{variant}"]
    _assert_error(o, 504, "BackendTimeout", "Backend did not answer within the endpoint timeout")
    assert o.elapsed < BACKEND_TIMEOUT_S + DEADLINE_SLACK_S, _describe(o)


def test_backend_reset_mid_body_is_never_delivered_as_complete(matrix: Matrix) -> None:
    """Without a post-processor the response streams: a reset mid-body aborts the client's response."""
    o = matrix.outcomes["backend-resetmid-bare"]
    assert o.error is not None or (o.status == 502 and b"<h1>BackendUnavailable</h1>" in o.body), _describe(o)


def test_backend_reset_mid_body_before_post_processing_answers_502(matrix: Matrix) -> None:
    """With a post-processor reading the body, a reset mid-body is a backend failure: 502 BackendUnavailable."""
    _assert_error(matrix.outcomes["backend-resetmid-sidecars"], 502, "BackendUnavailable",
                  "Backend could not be reached")


@pytest.mark.parametrize("variant", ["bare", "sidecars"])
def test_malformed_backend_response_answers_502(matrix: Matrix, variant: str) -> None:
    """A backend answering with a malformed HTTP response: 502 BackendUnavailable."""
    _assert_error(matrix.outcomes[f"backend-malformed-{variant}"], 502, "BackendUnavailable",
                  "Backend could not be reached")


@pytest.mark.parametrize("fault", ["down", "slow", "resetmid", "malformed"])
def test_failed_backend_call_runs_no_post_processor(matrix: Matrix, fault: str) -> None:
    """§5.2: when the backend fails, the gateway's error goes to the client and no post-processor runs."""
    cid = f"backend-{fault}-sidecars"
    assert len(matrix.faulty.calls_for(f"{cid}-pre")) == 1
    assert matrix.faulty.calls_for(f"{cid}-post") == []


# Servers that close keep-alive connections without notice (``closeeach``: keep-alive framing, then FIN).  The pool
# cannot see the FIN before it arrives, and a function invocation is never resent (§5.3), so the first function
# POST that the pool sends on such a closed connection fails with the contract's connection failure.  That failure
# (or the connection's loss right after its answer, seen while it sits idle) teaches the pool that the origin closes
# idle connections: from then on function POSTs to it open a fresh connection (``fastpool.py`` module docstring).
# Backend GETs are idempotent and resent once on a fresh connection, so they never fail.  With other cases of the
# closeeach series calling the same server concurrently (a server of their own, ``closing``), the one failure may
# come from any call of a series, not only the first; there is never more than one per series, and nothing is
# ever sent twice.


def _connection_failures(cid: str, calls: list[Outcome], ok: Callable[[Outcome], bool]) -> tuple[int, int]:
    """Check a closeeach series: every call but at most one is ``ok``; that one is exactly the contract's
    connection-failure answer of the pre or the post processor.  Returns (pre failures, post failures)."""
    assert len(calls) == KEEPALIVE_CALLS
    failed = [o for o in calls if not ok(o)]
    assert len(failed) <= 1, f"{cid}: {len(failed)} calls failed: " + "; ".join(_describe(o) for o in failed)
    pre = post = 0
    for o in failed:
        point = "Pre" if o.body == b"<h1>InvalidResponseFromAWSLambdaInPreProcess</h1>" else "Post"
        _assert_error(o, 500, f"InvalidResponseFromAWSLambdaIn{point}Process", CONNECT_MESSAGE)
        pre, post = (pre + 1, post) if point == "Pre" else (pre, post + 1)
    return pre, post


@pytest.mark.parametrize("variant", ["bare", "sidecars"])
def test_backend_closing_keepalive_connections_fails_no_call(matrix: Matrix, variant: str) -> None:
    """A backend closing every connection right after its answer, 30 calls on one client connection: every
    backend GET succeeds, and reaches the backend once.  With functions on the same host:port (sidecars), at most
    one call fails, with the connection-failure answer; every other call carries both modifies."""
    cid = f"backend-closeeach-{variant}"
    calls = matrix.series[cid]

    def ok(o: Outcome) -> bool:
        if o.status != 200 or b'"backend":"faulty"' not in o.body:
            return False
        # with sidecars: the pre modify reached the backend, the post modify was applied
        return variant == "bare" or (f"{cid}-pre".encode() in o.body and o.headers.get("X-Faulty-Fn") == f"{cid}-post")

    if variant == "bare":
        assert all(ok(o) for o in calls), "; ".join(_describe(o) for o in calls if not ok(o))
        assert len(matrix.closing.calls_for(cid)) == KEEPALIVE_CALLS
        return
    pre_failed, post_failed = _connection_failures(cid, calls, ok)
    assert len(matrix.closing.calls_for(cid)) == KEEPALIVE_CALLS - pre_failed  # a failed pre stops the call
    assert len(matrix.closing.calls_for(f"{cid}-pre")) == KEEPALIVE_CALLS - pre_failed  # never resent
    assert len(matrix.closing.calls_for(f"{cid}-post")) == KEEPALIVE_CALLS - pre_failed - post_failed


def test_function_closing_keepalive_connections_fails_no_call(matrix: Matrix) -> None:
    """Functions (pre and post) closing every connection right after their answer, 30 calls on one client
    connection: at most one call fails, with the connection-failure answer; every other call carries the post
    modify.  No invocation is ever resent."""
    calls = matrix.series["fn-closeeach"]
    pre_failed, post_failed = _connection_failures(
        "fn-closeeach", calls, lambda o: o.status == 200 and o.headers.get("X-Faulty-Fn") == "fn-closeeach-post")
    assert len(matrix.closing.calls_for("fn-closeeach-pre")) == KEEPALIVE_CALLS - pre_failed
    assert len(matrix.closing.calls_for("fn-closeeach-post")) == KEEPALIVE_CALLS - pre_failed - post_failed


# --------------------------------------------------------------------------------------------------------------
# Credentials expiring mid-run (§7.5)
# --------------------------------------------------------------------------------------------------------------


def _credential_endpoints(backend: BackendServer) -> list[dict[str, Any]]:
    eps = []
    for role in ("sts-short", "sts-soon"):
        pre = (f"region: {REGION}\nfunctionARN: arn:aws:lambda:{REGION}:{ACCOUNT}:function:ok__cred-{role}\n"
               f"roleARN: arn:aws:iam::{ACCOUNT}:role/{role}\nexternalIdKey: fault/ssm-ok\ntimeout: {FAST_MS}\n")
        eps.append(endpoint(f"cred-{role}", f"/cred/{role}", backend.url(f"/be/cred-{role}"), key_required=False,
                            pre_processing=pre))
    return eps


def _cred_call(m: Matrix, role: str) -> Outcome:
    return _fire(m.gateways["main"], f"/cred/{role}/x")


def _invocation_keys(m: Matrix, role: str) -> list[str | None]:
    return [c.access_key for c in m.faulty.calls_for(f"cred-{role}", "lambda")]


def test_credentials_under_a_minute_from_expiry_are_replaced_before_use(matrix: Matrix) -> None:
    """§7.5: credentials with less than a minute left are not usable: each call waits for a fresh AssumeRole and
    signs with the new key; every call succeeds."""
    outcomes = [_cred_call(matrix, "sts-short") for _ in range(3)]
    issued = matrix.faulty.issued_keys("sts-short")
    keys = _invocation_keys(matrix, "sts-short")
    assert [o.status for o in outcomes] == [200, 200, 200], [_describe(o) for o in outcomes]
    assert len(issued) >= 3 and len(set(keys)) == 3 and set(keys) <= set(issued), (issued, keys)


def test_credentials_near_expiry_are_refreshed_in_background_while_calls_succeed(matrix: Matrix) -> None:
    """§7.5: inside the 5-minute refresh window, calls keep the current credentials while one background refresh
    runs; later calls sign with the refreshed key."""
    first = _cred_call(matrix, "sts-soon")
    assert first.status == 200, _describe(first)
    statuses = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses.append(_cred_call(matrix, "sts-soon").status)
        keys = _invocation_keys(matrix, "sts-soon")
        if len(set(keys)) >= 2:
            break
        time.sleep(0.1)
    issued = matrix.faulty.issued_keys("sts-soon")
    assert set(statuses) == {200}
    assert len(issued) >= 2 and keys[0] == issued[0] and keys[-1] != issued[0], (issued, keys)
