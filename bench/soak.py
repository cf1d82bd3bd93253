"""Soak: the gateway under paced load for a long time, with faults injected on a schedule (issue 5 "Load and soak").

    python bench/soak.py --duration 600            # 10 minutes at 80 % of a quickly measured max rps
    python bench/soak.py --duration 30 --rate 40   # the CI version (tests/reliability/test_soak_short.py)

What runs:

* a server process: the recording backend (``tests/support/backend.py``) and the fault-injecting server
  (``tests/support/faulty.py``) serving the ``http``-stack functions, the Lambda ``Invoke`` API, STS and SSM, and
  failing backends;
* the gateway (``sidecar-gateway run``) with pre and post processors on some endpoints, ``http`` and ``aws-lambda``
  stacks, sure-fire and fail-safe;
* this process: a paced (open-loop) aiohttp client.  Request *i* is due at ``t0 + i / rate`` whatever happened to
  the earlier ones, so a stalled gateway shows up as latency and never as a lower offered load.

Every request goes to one endpoint, and every endpoint has one contract outcome (``ENDPOINTS``), so every answer
is checked.  Faults are scheduled: the load always carries the normal mix; on top, ``FAULT_SHARE`` of the
requests go to the fault endpoints of the current window (function hangs → function errors → backend resets and
slowness → quiet, ``WINDOW_S`` each).  Every ``--reload-every`` seconds the configuration file is rewritten (a
marker endpoint toggles) and the gateway gets SIGHUP.

Reported (JSON and Markdown in ``--out-dir``): requests sent, answered, answered per contract, lost (no answer at
all), per-endpoint counts, latency percentiles, RSS and open file descriptors every ``--sample-every`` seconds,
event-loop lag p99 / p99.9 / max (bucket upper bounds of the gateway's ``gateway_event_loop_lag_seconds``
histogram between a reading at the start and one at the end: /metrics is read only twice because rendering it is
itself a loop stall, see tests/reliability/test_loop_lag.py).  Exit status 1 when an assertion fails:

* lost == 0 and answered per contract == sent;
* RSS after warm-up stays within ±``--rss-tolerance`` (10 %) of the first post-warm-up sample;
* open file descriptors do not grow: the last third's floor ≤ the first post-warm-up third's floor + ``FD_SLACK``,
  and once the load and its connections are gone the gateway returns to its pre-load count (+ ``FD_SLACK``) within
  ``SETTLE_S`` (nothing held that is not in use);
* the last reload was applied (its marker endpoint answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.faulty import LoopLag, parse_loop_lag  # noqa: E402
from support.gateway_proc import GatewayProcess, config, endpoint, service  # noqa: E402

REGION = "eu-west-1"
ACCOUNT = "123456789012"
REQUEST_TIMEOUT_S = 15.0  # no contract outcome takes longer than the 1 s endpoint timeout; this is "lost"
FN_DEADLINE_MS = 300  # deadline of the hanging-function endpoints
BACKEND_TIMEOUT_S = 1.0  # endpoint timeout of the slow-backend endpoint
FAULT_SHARE = 0.2  # share of requests sent to the current fault window's endpoints
WINDOW_S = 10.0  # length of each fault window
FD_SLACK = 24  # file descriptors: pooled keep-alive connections come and go with the offered load
SETTLE_S = 30.0  # after the load: the pool closes idle connections the load no longer needs within 2 sweeps (10 s)
MAX_CONNECTIONS = 512  # client connection limit (open loop: in-flight requests never wait for a free slot)
TICK_S = 0.005  # pacing granularity
CALIBRATE_CONCURRENCY = 32

# --------------------------------------------------------------------------------------------------------------
# Endpoints and their contract outcomes
# --------------------------------------------------------------------------------------------------------------

Check = Callable[[int, dict[str, str], bytes], bool]


def _ok_modified_backend(status: int, headers: dict[str, str], body: bytes) -> bool:
    """200 from the backend, which received the pre-processor's added header."""
    return status == 200 and b"x-faulty-fn" in body.lower()


def _ok_post_modified(status: int, headers: dict[str, str], body: bytes) -> bool:
    return status == 200 and "x-faulty-fn" in headers and b"x-faulty-fn" in body.lower()


def _backend_ok(status: int, headers: dict[str, str], body: bytes) -> bool:
    return status == 200 and body.startswith(b"{")


def _error(status_want: int, name: str, detail: str) -> Check:
    def check(status: int, headers: dict[str, str], body: bytes) -> bool:
        return (status, body, headers.get("x-error-detail-header")) == (status_want, f"<h1>{name}</h1>".encode(),
                                                                          detail)
    return check


PRE_ERR = "InvalidResponseFromAWSLambdaInPreProcess"
_SHED = _error(503, "ServiceUnavailable", "The gateway is at its limit of calls in progress")  # max_inflight


@dataclass(frozen=True)
class Route:
    name: str
    check: Check
    window: str  # "normal" or the fault window that sends traffic here
    weight: float


ROUTES: tuple[Route, ...] = (
    Route("plain", _backend_ok, "normal", 0.30),
    Route("pre", _ok_modified_backend, "normal", 0.25),
    Route("prepost", _ok_post_modified, "normal", 0.25),
    Route("aws", _ok_modified_backend, "normal", 0.10),
    Route("aws-assumed", _ok_modified_backend, "normal", 0.10),
    Route("fn-hang", _error(504, "Gateway Timeout", "Timeout occured while connecting to AWS Service"), "hangs", 0.5),
    Route("fn-hang-fs", _backend_ok, "hangs", 0.3),
    Route("aws-hang", _error(504, "Gateway Timeout", "Timeout occured while connecting to AWS Service"), "hangs", 0.2),
    Route("fn-500", _error(500, PRE_ERR, "Success Response not returned from AWS Lambda"), "errors", 0.3),
    Route("fn-garbage", _error(500, PRE_ERR, "Invalid output from AWS Lambda function"), "errors", 0.2),
    Route("fn-reset-fs", _backend_ok, "errors", 0.2),
    Route("aws-throttle", _error(500, PRE_ERR, "Rate Exceeded."), "errors", 0.2),
    Route("post-500-fs", _backend_ok, "errors", 0.1),
    Route("be-reset", _error(502, "BackendUnavailable", "Backend could not be reached"), "backend", 0.5),
    Route("be-slow", _error(504, "BackendTimeout", "Backend did not answer within the endpoint timeout"), "backend",
          0.5),
)
ROUTES_BY_NAME = {r.name: r for r in ROUTES}
WINDOWS = ("hangs", "errors", "backend", "quiet")


def _http(url: str, extra: str = "") -> str:
    return f"stack: http\nurl: {url}\n{extra}"


def _aws(function: str, extra: str = "", *, assume: bool = False) -> str:
    auth = (f"roleARN: arn:aws:iam::{ACCOUNT}:role/sts-ok\nexternalIdKey: fault/ssm-ok\n" if assume
            else "useAssumeRole: false\n")
    return f"region: {REGION}\nfunctionARN: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}\n{auth}{extra}"


def gateway_config(backend_url: str, faulty_url: str, reload_marker: int) -> dict[str, Any]:
    f = faulty_url
    short = f"timeout: {FN_DEADLINE_MS}\n"
    eps = [
        endpoint("plain", "/plain", f"{backend_url}/be/plain"),
        endpoint("pre", "/pre", f"{backend_url}/be/pre", pre_processing=_http(f"{f}/ok/pre")),
        endpoint("prepost", "/prepost", f"{backend_url}/be/prepost", pre_processing=_http(f"{f}/ok/prepost-pre"),
                 post_processing=_http(f"{f}/ok/prepost-post", "include-response-headers: content-type\n")),
        endpoint("aws", "/aws", f"{backend_url}/be/aws", pre_processing=_aws("ok__aws")),
        endpoint("aws-assumed", "/aws-assumed", f"{backend_url}/be/aws-assumed",
                 pre_processing=_aws("ok__aws-assumed", assume=True)),
        endpoint("fn-hang", "/fn-hang", f"{backend_url}/be/fn-hang", pre_processing=_http(f"{f}/hang/fn-hang", short)),
        endpoint("fn-hang-fs", "/fn-hang-fs", f"{backend_url}/be/fn-hang-fs",
                 pre_processing=_http(f"{f}/hang/fn-hang-fs", short + "failSafe: true\n")),
        endpoint("aws-hang", "/aws-hang", f"{backend_url}/be/aws-hang", pre_processing=_aws("hang__aws-hang", short)),
        endpoint("fn-500", "/fn-500", f"{backend_url}/be/fn-500", pre_processing=_http(f"{f}/status500/fn-500")),
        endpoint("fn-garbage", "/fn-garbage", f"{backend_url}/be/fn-garbage",
                 pre_processing=_http(f"{f}/garbage/fn-garbage")),
        endpoint("fn-reset-fs", "/fn-reset-fs", f"{backend_url}/be/fn-reset-fs",
                 pre_processing=_http(f"{f}/reset/fn-reset-fs", "failSafe: true\n")),
        endpoint("aws-throttle", "/aws-throttle", f"{backend_url}/be/aws-throttle",
                 pre_processing=_aws("throttle429__aws-throttle")),
        endpoint("post-500-fs", "/post-500-fs", f"{backend_url}/be/post-500-fs",
                 post_processing=_http(f"{f}/status500/post-500-fs", "failSafe: true\n")),
        endpoint("be-reset", "/be-reset", f"{f}/reset/be-reset"),
        endpoint("be-slow", "/be-slow", f"{f}/hang/be-slow", timeout=BACKEND_TIMEOUT_S),
        endpoint(f"reload-{reload_marker}", f"/reload-{reload_marker}", f"{backend_url}/be/reload"),
    ]
    for ep in eps:
        ep["key_required"] = False
    return config(service("soak", *eps))


# --------------------------------------------------------------------------------------------------------------
# The server process (backend + faulty server), away from the client's GIL
# --------------------------------------------------------------------------------------------------------------


def _serve(conn: Any) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.backend import BackendServer
    from support.faulty import FaultyServer

    backend = BackendServer().start()
    faulty = FaultyServer().start()
    conn.send((backend.port, faulty.port))
    conn.recv()  # until the parent says stop (or dies: EOFError)


def _control_lag(conn: Any, seconds: float) -> None:
    """The gateway's lag monitor, in an otherwise idle process: how late a 20 ms timer fires on this machine
    anyway (CPU contention, scheduling).  Sends (samples, samples over 50 ms, max)."""
    async def run() -> tuple[int, int, float]:
        n = over = 0
        worst = 0.0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            before = time.monotonic()
            await asyncio.sleep(0.02)
            lag = max(0.0, time.monotonic() - before - 0.02)
            n, over, worst = n + 1, over + (lag > 0.05), max(worst, lag)
        return n, over, worst

    conn.send(asyncio.run(run()))


class Control:
    def __init__(self, seconds: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_control_lag, args=(child, seconds), daemon=True, name="soak-control-lag")
        self.proc.start()

    def result(self) -> dict[str, float]:
        samples, over, worst = self._parent.recv() if self._parent.poll(30) else (0, 0, 0.0)
        self.proc.join(5)
        return {"samples": samples, "over_50ms": over, "max_s": round(worst, 4)}


class Servers:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="soak-servers")
        self.proc.start()
        if not self._parent.poll(30):
            raise RuntimeError("soak servers did not start")
        backend_port, faulty_port = self._parent.recv()
        self.backend_url = f"http://127.0.0.1:{backend_port}"
        self.faulty_url = f"http://127.0.0.1:{faulty_port}"

    def stop(self) -> None:
        try:
            self._parent.send("stop")
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# --------------------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    per_contract: int = 0
    shed: int = 0  # refused 503 ServiceUnavailable (max_inflight): a documented answer, counted per contract
    lost: int = 0
    by_route: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # first few, for the report
    lost_examples: list[str] = field(default_factory=list)

    def record(self, route: str, outcome: str) -> None:
        self.by_route.setdefault(route, Counter())[outcome] += 1


class Schedule:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.normal = [r for r in ROUTES if r.window == "normal"]

    @staticmethod
    def window(elapsed: float) -> str:
        return WINDOWS[int(elapsed // WINDOW_S) % len(WINDOWS)]

    def pick(self, elapsed: float) -> Route:
        window = self.window(elapsed)
        if window != "quiet" and self.rng.random() < FAULT_SHARE:
            routes = [r for r in ROUTES if r.window == window]
        else:
            routes = self.normal
        return self.rng.choices(routes, weights=[r.weight for r in routes])[0]


async def _one(session: aiohttp.ClientSession, base: str, route: Route, tally: Tally) -> None:
    tally.sent += 1
    start = time.monotonic()
    try:
        async with session.get(f"{base}/{route.name}/x") as resp:
            body = await resp.read()
            headers = {k.lower(): v for k, v in resp.headers.items()}
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.lost += 1
        tally.record(route.name, "lost")
        if len(tally.lost_examples) < 10:
            tally.lost_examples.append(f"{route.name}: {exc!r}")
        return
    tally.answered += 1
    tally.latencies.append(time.monotonic() - start)
    if route.check(status, headers, body):
        tally.per_contract += 1
        tally.record(route.name, "ok")
    elif _SHED(status, headers, body):
        tally.per_contract += 1
        tally.shed += 1
        tally.record(route.name, "shed")
    else:
        tally.record(route.name, f"violation {status}")
        if len(tally.violations) < 10:
            tally.violations.append(f"{route.name}: {status} {headers.get('x-error-detail-header')!r} {body[:120]!r}")


async def calibrate(base: str, seconds: float) -> float:
    """Closed-loop max rps of the soak's own traffic (``CALIBRATE_CONCURRENCY`` workers back to back): the normal
    mix plus the scheduled faults, over one whole cycle of fault windows by default.  (A fault-free calibration
    overstated the max ~2.5×: hanging, slow and failing calls cost the gateway more than the normal mix, so 80 %
    of it was an overload and the soak measured a queue.)"""
    schedule = Schedule(7)
    tally = Tally()
    end = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=CALIBRATE_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        start = time.monotonic()

        async def worker() -> None:
            while time.monotonic() < end:
                await _one(session, base, schedule.pick(time.monotonic() - start), tally)

        await asyncio.gather(*(worker() for _ in range(CALIBRATE_CONCURRENCY)))
        return tally.answered / (time.monotonic() - start)


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    sent: int


def _fd_count(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


async def _metrics(session: aiohttp.ClientSession, gw: GatewayProcess) -> tuple[LoopLag, LoopLag]:
    """(lag, stall): the lag histogram and the same samples less the loop thread's run-queue wait."""
    async with session.get(gw.admin_url + "/metrics") as resp:
        text = await resp.text()
    return parse_loop_lag(text), parse_loop_lag(text, "gateway_event_loop_stall_seconds")


async def _fill_pool(session: aiohttp.ClientSession, base: str) -> None:
    """Open the load generator's whole connection pool (``MAX_CONNECTIONS`` keep-alive connections) before the run.

    aiohttp reuses its idle connections oldest first, so at a steady rate every pooled connection is reused well
    within its keep-alive timeout and the pool never shrinks: its size is the generator's largest burst so far.
    Left to grow, that high-water mark (a few hundred client connections, each a descriptor and a protocol in the
    gateway) shows up as slowly rising gateway descriptors and RSS — measured, and mistaken for a gateway leak in
    earlier runs.  Filled up front, the client side is constant and the judged growth is the gateway's own.  The
    calls go to the 1 s slow backend so that all of them are in flight at once (each answers 504, not tallied)."""
    async def one() -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(f"{base}/be-slow/fill") as resp:
                await resp.read()

    await asyncio.gather(*(one() for _ in range(MAX_CONNECTIONS)))


async def soak(gw: GatewayProcess, servers: Servers, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    tally = Tally()
    schedule = Schedule(args.seed)
    samples: list[Sample] = []
    reloads = 0
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    fds_before = _fd_count(gw.pids())  # listening sockets, log files, the loop: what the gateway holds idle
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, \
            aiohttp.ClientSession(timeout=timeout) as admin:
        await _fill_pool(session, gw.base_url)
        read_start = time.monotonic()
        lag_start = await _metrics(admin, gw)
        lag_first_read_s = time.monotonic() - read_start
        control = Control(args.duration)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + args.duration
        tasks: set[asyncio.Task[None]] = set()
        next_sample = t0
        next_reload = t0 + args.reload_every
        i = 0
        while True:
            now = loop.time()
            if now >= end:
                break
            if now >= next_sample:  # /proc only: a /metrics render is itself a loop stall (tests/reliability)
                samples.append(Sample(round(now - t0, 1), gw.rss() / 2**20, _fd_count(gw.pids()), tally.sent))
                next_sample += args.sample_every
            if now >= next_reload:
                reloads += 1
                gw.rewrite_config(gateway_config(servers.backend_url, servers.faulty_url, reloads))
                gw.signal(signal.SIGHUP)
                next_reload += args.reload_every
            due = min(end, now + TICK_S)
            while t0 + i / rate < due:
                route = schedule.pick(t0 + i / rate - t0)
                task = loop.create_task(_one(session, gw.base_url, route, tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(TICK_S)
        if tasks:
            await asyncio.gather(*tasks)
        lag_end = await _metrics(admin, gw)
        samples.append(Sample(round(loop.time() - t0, 1), gw.rss() / 2**20, _fd_count(gw.pids()), tally.sent))
        reload_applied = True
        if reloads:
            reload_applied = await _poll_ok(session, f"{gw.base_url}/reload-{reloads}/x", 10.0)
    settled = await _settle(gw, fds_before)
    lag = lag_end[0].since(lag_start[0])
    stall = lag_end[1].since(lag_start[1])
    summary = _summarise(tally, samples, lag, stall, lag_first_read_s, reloads, reload_applied, settled, rate, args)
    summary["control_lag"] = control.result()
    return summary


async def _settle(gw: GatewayProcess, before: int) -> dict[str, float]:
    """The leak check proper: the load and its client connections are gone, so within ``SETTLE_S`` the gateway
    must hold no more descriptors than before the load (every upstream connection closed or back to a need of
    zero).  A descriptor held by anything (a connection neither pooled nor closed, a file) stays and shows here."""
    start = time.monotonic()
    fds = _fd_count(gw.pids())
    while fds > before + FD_SLACK and time.monotonic() - start < SETTLE_S:
        await asyncio.sleep(1.0)
        fds = _fd_count(gw.pids())
    return {"before": before, "after": fds, "seconds": round(time.monotonic() - start, 1)}


async def _poll_ok(session: aiohttp.ClientSession, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    return False


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summarise(tally: Tally, samples: list[Sample], lag: LoopLag, stall: LoopLag, lag_first_read_s: float, reloads: int,
               reload_applied: bool, settled: dict[str, float], rate: float,
               args: argparse.Namespace) -> dict[str, Any]:
    after = [s for s in samples if s.t >= args.warmup]
    failures: list[str] = []
    if tally.lost:
        failures.append(f"lost {tally.lost} requests (no answer)")
    if tally.per_contract != tally.sent:
        failures.append(f"{tally.sent - tally.per_contract} of {tally.sent} requests not answered per contract")
    rss_base = after[0].rss_mb if after else 0.0
    rss_dev = max((abs(s.rss_mb - rss_base) / rss_base for s in after), default=0.0) if rss_base else 0.0
    if len(after) < 2:
        failures.append(f"only {len(after)} samples after warm-up: cannot judge RSS/fds")
    elif rss_dev > args.rss_tolerance:
        failures.append(f"RSS moved {rss_dev:.1%} from {rss_base:.1f} MB after warm-up "
                        f"(limit {args.rss_tolerance:.0%})")
    fd_growth = 0
    if len(after) >= 2:
        third = max(1, len(after) // 3)
        # the least fds of each third: in-flight connections (hanging calls of a fault window) come and go; a leak
        # lifts the floor
        fd_growth = min(s.fds for s in after[-third:]) - min(s.fds for s in after[:third])
        if fd_growth > FD_SLACK:
            failures.append(f"open file descriptors grew by {fd_growth} (limit {FD_SLACK})")
    if settled["after"] > settled["before"] + FD_SLACK:
        failures.append(f"{settled['after'] - settled['before']} more descriptors than before the load "
                        f"{SETTLE_S:.0f} s after it ended (limit {FD_SLACK}): something was not released")
    if not reload_applied:
        failures.append(f"the last SIGHUP reload (#{reloads}) was not applied")
    return {
        "duration_s": args.duration,
        "rate_rps": round(rate, 1),
        "sent": tally.sent,
        "answered": tally.answered,
        "answered_per_contract": tally.per_contract,
        "shed_503": tally.shed,
        "lost": tally.lost,
        "reloads": reloads,
        "last_reload_applied": reload_applied,
        "latency_ms": {q: round(_percentile(tally.latencies, p) * 1000, 1)
                       for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "loop_lag": {"samples": lag.samples, "p99_le_s": lag.quantile(0.99), "p999_le_s": lag.quantile(0.999),
                     "max_le_s": lag.quantile(1.0), "over_50ms": lag.over_50ms,
                     "stall_over_50ms": stall.over_50ms,
                     "over_50ms_by_reading": int(lag_first_read_s > 0.04)},
        "rss_mb_after_warmup": {"baseline": round(rss_base, 1), "max_deviation": round(rss_dev, 4)},
        "fd_growth": fd_growth,
        "fds_settled": settled,
        "samples": [asdict(s) | {"rss_mb": round(s.rss_mb, 1)} for s in samples],
        "by_route": {k: dict(v) for k, v in sorted(tally.by_route.items())},
        "violations": tally.violations,
        "lost_examples": tally.lost_examples,
        "failures": failures,
        "ok": not failures,
    }


def markdown(summary: dict[str, Any]) -> str:
    s = {"control_lag": {"samples": 0, "over_50ms": 0, "max_s": 0.0}} | summary
    settled = s["fds_settled"]
    lines = [
        f"# Soak: {s['duration_s']} s at {s['rate_rps']} rps — {'PASS' if s['ok'] else 'FAIL'}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests sent | {s['sent']} |",
        f"| answered | {s['answered']} |",
        f"| answered per contract | {s['answered_per_contract']} |",
        f"| of which refused 503 ServiceUnavailable (max_inflight) | {s.get('shed_503', 0)} |",
        f"| lost | {s['lost']} |",
        f"| SIGHUP reloads | {s['reloads']} (last applied: {s['last_reload_applied']}) |",
        f"| latency p50 / p90 / p99 / max (ms) | {s['latency_ms']['p50']} / {s['latency_ms']['p90']} / "
        f"{s['latency_ms']['p99']} / {s['latency_ms']['max']} |",
        f"| event-loop lag p99 / p99.9 / max (bucket upper bounds) | ≤ {s['loop_lag']['p99_le_s']} s / "
        f"≤ {s['loop_lag']['p999_le_s']} s / ≤ {s['loop_lag']['max_le_s']} s |",
        f"| lag samples over 50 ms | {s['loop_lag']['over_50ms']:.0f} of {s['loop_lag']['samples']:.0f} "
        f"({s['loop_lag']['over_50ms_by_reading']} caused by the soak's own first /metrics reading) |",
        f"| of which stalls (lag less the loop thread's wait for a CPU) over 50 ms | "
        f"{s['loop_lag'].get('stall_over_50ms', '–')} |",
        f"| control: an idle process's 20 ms timer, samples over 50 ms / max | "
        f"{s['control_lag']['over_50ms']} of {s['control_lag']['samples']} / {s['control_lag']['max_s']} s |",
        f"| RSS baseline after warm-up / max deviation | {s['rss_mb_after_warmup']['baseline']} MB / "
        f"{s['rss_mb_after_warmup']['max_deviation']:.1%} |",
        f"| fd growth (floor of last third − floor of first third after warm-up) | {s['fd_growth']} |",
        f"| fds before the load → {SETTLE_S:.0f} s after it (settled in) | {settled['before']} → "
        f"{settled['after']} ({settled['seconds']} s) |",
        "",
        "| t (s) | RSS (MB) | fds | sent |",
        "|---|---|---|---|",
    ]
    lines += [f"| {x['t']} | {x['rss_mb']} | {x['fds']} | {x['sent']} |"
              for x in s["samples"]]
    lines += ["", "| endpoint | outcomes |", "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{o}: {n}' for o, n in v.items())} |" for k, v in s["by_route"].items()]
    if s["failures"]:
        lines += ["", "Failures:", *[f"- {f}" for f in s["failures"]]]
    if s["violations"] or s["lost_examples"]:
        lines += ["", "Examples:", *[f"- {v}" for v in s["violations"] + s["lost_examples"]]]
    return "\n".join(lines) + "\n"


def _aws_env(faulty_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "AKIASOAKGATEWAY00001", "AWS_SECRET_ACCESS_KEY": "soak-secret",
                "AWS_ENDPOINT_URL_LAMBDA": faulty_url, "AWS_ENDPOINT_URL_STS": faulty_url,
                "AWS_ENDPOINT_URL_SSM": faulty_url})
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--rate", type=float, default=None, help="requests per second (default: 80%% of measured max)")
    p.add_argument("--rate-fraction", type=float, default=0.8, help="share of the measured max when --rate is unset")
    p.add_argument("--calibrate", type=float, default=len(WINDOWS) * WINDOW_S,
                   help="seconds of closed-loop max-rps measurement with the fault schedule (default: one cycle)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before RSS/fd judging (default 1/6, ≤ 60)")
    p.add_argument("--sample-every", type=float, default=10.0, help="RSS/fd/lag sampling period (default 10 s)")
    p.add_argument("--reload-every", type=float, default=30.0, help="SIGHUP period (default 30 s)")
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS deviation after warm-up")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(60.0, args.duration / 6)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    servers = Servers()
    workdir = args.out_dir / "soak-gateway"
    gw = GatewayProcess(workdir, gateway_config(servers.backend_url, servers.faulty_url, 0),
                        env=_aws_env(servers.faulty_url))
    try:
        gw.wait_ready()
        rate = args.rate
        measured = None
        if rate is None:
            measured = asyncio.run(calibrate(gw.base_url, args.calibrate))
            rate = max(1.0, measured * args.rate_fraction)
            print(f"measured max {measured:.0f} rps (closed loop, {CALIBRATE_CONCURRENCY} workers, with the fault "
                  f"schedule); soaking at "
                  f"{rate:.0f} rps", flush=True)
        summary = asyncio.run(soak(gw, servers, args, rate))
        summary["measured_max_rps"] = round(measured, 1) if measured else None
    finally:
        rc = gw.stop()
        servers.stop()
    summary["gateway_exit_status"] = rc
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (args.out_dir / f"soak-{stamp}.json").write_text(json.dumps(summary, indent=2))
    (args.out_dir / f"soak-{stamp}.md").write_text(markdown(summary))
    (args.out_dir / "soak-latest.json").write_text(json.dumps(summary, indent=2))
    print(markdown(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
