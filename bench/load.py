"""Load runs: ``wrk`` at a fixed connection count and the paced generator at a fixed rate, with CPU accounting."""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import Managed, cpu_seconds, reset_peak_rss, status_kb, system_busy_seconds

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
PACED_SCRIPT = BENCH_DIR / "paced.py"
WRK_MARKER = "BENCHJSON "
WRK_TIMEOUT_S = 2  # wrk --timeout: a request slower than this counts as a timeout error
PER_10K = 10_000
KB_PER_MB = 1024
MS_PER_US = 1e-3
SUBPROCESS_SLACK_S = 30.0
MAX_DRAIN_S = 5.0  # the paced run waits at most this long (and at most its duration) for late answers


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    errors: int  # connect/read/write/timeout errors, plus unexpected statuses
    cpu_per_10k_s: float  # utime+stime of the server's process tree per 10,000 requests
    peak_rss_mb: float  # max VmHWM over the server's workers
    loadgen_cpu_s: float
    background_cpu_pct: float  # busy CPU on the machine not explained by server, infra and load generator
    unfinished: int = 0  # paced: requests still unanswered DRAIN_S after the last one was due (overload)


def percentile(sorted_values: Sequence[int], pct: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return float(sorted_values[rank])


class Accounting:
    """CPU of the server tree, of the infra tree and of the machine over one measured interval."""

    def __init__(self, server: Managed, infra: Managed) -> None:
        self.server = server
        self.infra = infra

    def __enter__(self) -> Accounting:
        self.server_pids = self.server.tree()
        self.infra_pids = self.infra.tree()
        reset_peak_rss(self.server.workers())
        self.t0 = time.monotonic()
        self.server0 = cpu_seconds(self.server_pids)
        self.infra0 = cpu_seconds(self.infra_pids)
        self.system0 = system_busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0
        self.server_cpu = cpu_seconds(self.server_pids) - self.server0
        self.infra_cpu = cpu_seconds(self.infra_pids) - self.infra0
        self.system_cpu = system_busy_seconds() - self.system0
        self.peak_rss_kb = max((status_kb(pid, "VmHWM") for pid in self.server.workers()), default=0)

    def background_pct(self, loadgen_cpu: float, cores: int) -> float:
        other = self.system_cpu - self.server_cpu - self.infra_cpu - loadgen_cpu
        return max(0.0, 100.0 * other / (self.elapsed * cores)) if self.elapsed > 0 else 0.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, *, duration_s: float, connections: int, threads: int, body_file: Path | None,
            expected_status: int, server: Managed, infra: Managed, cores: int) -> Measurement:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
            f"--timeout={WRK_TIMEOUT_S}s", "-s", str(WRK_SCRIPT), url]
    env = {"BENCH_BODY_FILE": str(body_file) if body_file else "", "PATH": "/usr/bin:/bin"}
    before = _children_cpu()
    with Accounting(server, infra) as acc:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                             timeout=duration_s + SUBPROCESS_SLACK_S)
    loadgen = _children_cpu() - before
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(WRK_MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    data = json.loads(line[len(WRK_MARKER):])
    requests = int(data["requests"])
    errors = sum(int(data[k]) for k in ("connect", "read", "write", "timeout"))
    if expected_status < 400:
        errors += int(data["status"])  # wrk's "status" counts non-2xx/3xx answers
    rps = requests / (data["duration_us"] / 1e6) if data["duration_us"] else 0.0
    return Measurement(
        rps=rps, p50_ms=data["p50_us"] * MS_PER_US, p99_ms=data["p99_us"] * MS_PER_US,
        p999_ms=data["p999_us"] * MS_PER_US, requests=requests, errors=errors,
        cpu_per_10k_s=acc.server_cpu / requests * PER_10K if requests else math.nan,
        peak_rss_mb=acc.peak_rss_kb / KB_PER_MB, loadgen_cpu_s=loadgen,
        background_cpu_pct=acc.background_pct(loadgen, cores))


def run_paced(url: str, *, rate: float, duration_s: float, connections: int, processes: int,
              body_file: Path | None, expected_status: int, server: Managed, infra: Managed,
              cores: int) -> Measurement:
    per_rate = rate / processes
    per_conn = max(1, connections // processes)
    argv = [sys.executable, str(PACED_SCRIPT), "--url", url, "--rate", f"{per_rate:.3f}", "--duration",
            str(duration_s), "--connections", str(per_conn), "--expected-status", str(expected_status),
            "--drain", str(min(MAX_DRAIN_S, duration_s))]
    if body_file:
        argv += ["--body-file", str(body_file)]
    outs = [Path(tempfile.mkstemp(prefix="paced-", suffix=".json")[1]) for _ in range(processes)]
    before = _children_cpu()
    with Accounting(server, infra) as acc:
        running = [subprocess.Popen([*argv, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True) for out in outs]
        outputs = [p.communicate(timeout=duration_s + SUBPROCESS_SLACK_S) for p in running]
    loadgen = _children_cpu() - before
    latencies: list[int] = []
    requests = errors = unfinished = 0
    for proc, (_, stderr), out in zip(running, outputs, outs, strict=True):
        text = out.read_text()
        out.unlink()
        if proc.returncode != 0 or not text.strip():
            raise RuntimeError(f"paced generator failed ({proc.returncode}): {stderr[-2000:]}")
        data = json.loads(text)
        latencies.extend(data["latencies_us"])
        requests += int(data["completed"])
        errors += int(data["errors"]) + int(data["unexpected_status"])
        unfinished += int(data["unfinished"])
    latencies.sort()
    return Measurement(
        rps=requests / duration_s, p50_ms=percentile(latencies, 50) * MS_PER_US,
        p99_ms=percentile(latencies, 99) * MS_PER_US, p999_ms=percentile(latencies, 99.9) * MS_PER_US,
        requests=requests, errors=errors,
        cpu_per_10k_s=acc.server_cpu / requests * PER_10K if requests else math.nan,
        peak_rss_mb=acc.peak_rss_kb / KB_PER_MB, loadgen_cpu_s=loadgen,
        background_cpu_pct=acc.background_pct(loadgen, cores), unfinished=unfinished)
