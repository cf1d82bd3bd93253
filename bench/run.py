"""The sidecar-gateway benchmark (issue 6): one command, everything on loopback, results in docs/.

    python bench/run.py            # full run: 3 runs per figure (~20 min on 2 cores)
    python bench/run.py --quick    # 1 run, short durations (< 3 min): a smoke test of the whole pipeline

It installs wrk, nginx and Caddy (Debian packages) and matplotlib (bench/setup.sh), starts an nginx backend /
sidecar function / Lambda stub, the peers (nginx, Caddy), sidecar-gateway with ``--workers`` = cores and the
featureless Python floor (``floor_proxy.py``, a reference row), measures every scenario against every peer that can do
the same job, and writes docs/benchmarks.md + docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import LOOPBACK, Managed, ProcessSet, http_status, raise_nofile
from load import Measurement, run_paced, run_wrk
from memory import idle_connections, many_endpoints_rss, workers_rss
from report import TARGET_LABEL, write_outputs
from servers import (
    REFERENCE_TARGETS,
    SCENARIO_BY_KEY,
    SCENARIOS,
    Ports,
    Scenario,
    gateway_config,
    start_caddy,
    start_floor,
    start_gateway,
    start_infra,
    start_peer_nginx,
)

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
RESULTS_JSON = BENCH_DIR / "results" / "latest.json"
DEFAULT_MD = REPO / "docs" / "benchmarks.md"
DEFAULT_PNG = REPO / "docs" / "benchmarks.png"

DEFAULT_RUNS = 3
DEFAULT_DURATION_S = 10.0
DEFAULT_WARMUP_S = 3.0
DEFAULT_CONNECTIONS = 64
DEFAULT_THREADS = 2
DEFAULT_ENDPOINTS = 1000
DEFAULT_IDLE_CONNECTIONS = 10_000
DEFAULT_IDLE_S = 10.0
QUICK_DURATION_S = 2.0
QUICK_WARMUP_S = 1.0
QUICK_IDLE_S = 5.0
RATE_FRACTION = 0.5  # the fixed rate is 50 % of nginx's max in the matching scenario
BODY_BYTES = 10 * 1024  # scenario 5: a 10 KB JSON request body
# nginx first: its max sets the fixed rate
TARGETS = ("nginx", "nginx_tuned", "caddy", "caddy_tuned", "gateway", "floor")
SERVER_OF = {"nginx_tuned": "nginx", "caddy_tuned": "caddy"}  # served by another target's server (own locations)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run, 2 s per load run, idle test on the gateway only "
                                                                  "(5 s idle): < 3 minutes")
    parser.add_argument("--runs", type=int, help=f"runs per figure; the median is reported (default {DEFAULT_RUNS})")
    parser.add_argument("--duration", type=float, help=f"seconds per wrk run (default {DEFAULT_DURATION_S:g})")
    parser.add_argument("--paced-duration", type=float, help="seconds per fixed-rate run (default: --duration)")
    parser.add_argument("--warmup", type=float, help=f"seconds of warm-up before each wrk run "
                                                     f"(default {DEFAULT_WARMUP_S:g})")
    parser.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                        help="comma-separated subset, e.g. s1,s2 or 1,2 (default: all six)")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="gateway --workers and the peers' worker count (default: cores)")
    parser.add_argument("--endpoints", type=int, default=DEFAULT_ENDPOINTS, help="endpoints of the memory test")
    parser.add_argument("--idle-connections", type=int, default=DEFAULT_IDLE_CONNECTIONS)
    parser.add_argument("--idle-seconds", type=float, help=f"default {DEFAULT_IDLE_S:g} ({QUICK_IDLE_S:g} quick)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1,000-endpoint and idle-connection tests")
    parser.add_argument("--skip-install", action="store_true", help="do not run bench/setup.sh")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MD)
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--keep-dir", action="store_true", help="keep the temporary directory (configs, logs)")
    parser.add_argument("--report-only", type=Path, metavar="JSON",
                        help="only re-render the Markdown and PNG from raw results (bench/results/latest.json)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else DEFAULT_RUNS)
    args.duration = args.duration or (QUICK_DURATION_S if args.quick else DEFAULT_DURATION_S)
    args.paced_duration = args.paced_duration or args.duration
    args.warmup = args.warmup if args.warmup is not None else (QUICK_WARMUP_S if args.quick else DEFAULT_WARMUP_S)
    args.idle_seconds = args.idle_seconds or (QUICK_IDLE_S if args.quick else DEFAULT_IDLE_S)
    keys = []
    for item in args.scenarios.split(","):
        key = item.strip().lower()
        key = key if key.startswith("s") else f"s{key}"
        if key not in SCENARIO_BY_KEY:
            parser.error(f"unknown scenario {item!r}; known: {', '.join(SCENARIO_BY_KEY)}")
        keys.append(key)
    args.scenario_keys = [s.key for s in SCENARIOS if s.key in keys]
    return args


def install(skip: bool) -> list[str]:
    """Run bench/setup.sh; return its notes (missing packages etc.)."""
    if skip:
        return []
    log("installing (bench/setup.sh)")
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", str(BENCH_DIR / "setup.sh")], capture_output=True, text=True, env=env, check=False)
    notes = [ln.removeprefix("setup: ") for ln in out.stderr.splitlines() if ln.startswith("setup:")]
    for note in notes:
        log(note)
    return notes


def which(tool: str) -> bool:
    return subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, check=False).returncode == 0


class Bench:
    def __init__(self, args: argparse.Namespace, prefix: Path) -> None:
        self.args = args
        self.prefix = prefix
        self.cores = os.cpu_count() or 1
        self.procs = ProcessSet()
        self.ports = Ports.allocate()
        self.servers: dict[str, Managed] = {}
        self.urls: dict[str, str] = {}
        self.body_file = prefix / "body-10k.json"
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------------------ set-up

    def start(self) -> None:
        filler = "x" * (BODY_BYTES - len('{"data":""}'))
        self.body_file.write_text('{"data":"' + filler + '"}')
        assert self.body_file.stat().st_size == BODY_BYTES
        log(f"starting servers in {self.prefix} (ports {dataclasses.asdict(self.ports)})")
        self.infra = start_infra(self.procs, self.prefix, self.ports)
        self.servers["nginx"] = start_peer_nginx(self.procs, self.prefix, self.ports, self.args.workers)
        self.urls["nginx"] = f"http://{LOOPBACK}:{self.ports.nginx}"
        if which("caddy"):
            self.servers["caddy"] = start_caddy(self.procs, self.prefix, self.ports, self.args.workers)
            self.urls["caddy"] = f"http://{LOOPBACK}:{self.ports.caddy}"
        else:
            self.notes.append("Caddy is not installed: the Caddy columns are empty.")
        self.servers["gateway"] = start_gateway(self.procs, self.prefix, "gateway", gateway_config(self.ports),
                                                self.ports, self.ports.gateway_admin, self.args.workers)
        self.urls["gateway"] = f"http://{LOOPBACK}:{self.ports.gateway}"
        self.servers["floor"] = start_floor(self.procs, self.prefix, self.ports, self.args.workers)
        self.urls["floor"] = f"http://{LOOPBACK}:{self.ports.floor}"
        self.check_answers()

    def server(self, target: str) -> Managed:
        return self.servers[SERVER_OF.get(target, target)]

    def url(self, target: str) -> str:
        return self.urls[SERVER_OF.get(target, target)]

    def path(self, target: str, scenario: Scenario) -> str | None:
        if SERVER_OF.get(target, target) not in self.servers:
            return None
        return scenario.path(target)

    def check_answers(self) -> None:
        """Every scenario answers as expected on every target before anything is measured."""
        body = self.body_file.read_bytes()
        for scenario in SCENARIOS:
            for target in TARGETS:
                path = self.path(target, scenario)
                if path is None:
                    continue
                kwargs: dict[str, Any] = {}
                if scenario.post_body:
                    kwargs = {"method": "POST", "body": body, "headers": {"Content-Type": "application/json"}}
                status = http_status(self.url(target) + path, **kwargs)
                if status != scenario.expected_status:
                    raise RuntimeError(f"{target} {scenario.key} {path}: status {status}, expected "
                                       f"{scenario.expected_status}\n{self.server(target).log_tail()}")
        log("every target answers as expected")

    # ---------------------------------------------------------------------------------------- measuring

    def restart_if_dead(self, target: str, during: str) -> bool:
        """Restart a peer that died (Caddy 2.6.2 can crash under overload); True when it had died."""
        name = SERVER_OF.get(target, target)
        server = self.servers[name]
        if server.alive():
            return False
        tail = [ln for ln in server.log_tail(400).splitlines() if ln.startswith(("fatal error", "panic"))]
        reason = tail[0] if tail else f"exit status {server.proc.returncode}"
        log(f"{name} died during {during}: {reason}; restarting")
        starters = {"nginx": start_peer_nginx, "caddy": start_caddy}
        if name not in starters:
            raise RuntimeError(f"{name} died during {during}:\n{server.log_tail()}")
        self.notes.append(f"{TARGET_LABEL[name]} died during {during} (`{reason}`); it was restarted and the "
                          "measurement repeated.")
        self.procs.stop(server)
        self.servers[name] = starters[name](self.procs, self.prefix, self.ports, self.args.workers)
        return True

    def guarded(self, target: str, during: str, measure: Callable[[], Measurement]) -> Measurement:
        """Run ``measure``; when the server died meanwhile, restart it and measure once more."""
        result = measure()
        if self.restart_if_dead(target, during):
            result = measure()
            if self.restart_if_dead(target, during + " (repeat)"):
                result.errors = max(result.errors, 1)
        return result

    def wrk(self, target: str, scenario: Scenario, duration: float) -> Measurement:
        path = self.path(target, scenario)
        assert path is not None
        return run_wrk(self.url(target) + path, duration_s=duration, connections=self.args.connections,
                       threads=self.args.threads, body_file=self.body_file if scenario.post_body else None,
                       expected_status=scenario.expected_status, server=self.server(target), infra=self.infra,
                       cores=self.cores)

    def paced(self, target: str, scenario: Scenario, rate: float) -> Measurement:
        path = self.path(target, scenario)
        assert path is not None
        return run_paced(self.url(target) + path, rate=rate, duration_s=self.args.paced_duration,
                         connections=self.args.connections, processes=self.cores,
                         body_file=self.body_file if scenario.post_body else None,
                         expected_status=scenario.expected_status, server=self.server(target), infra=self.infra,
                         cores=self.cores)

    def measure(self) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        for run in range(self.args.runs):
            nginx_max: dict[str, float] = {}
            per_scenario: dict[str, Any] = {}
            for key in self.args.scenario_keys:
                scenario = SCENARIO_BY_KEY[key]
                entry: dict[str, Any] = {}
                for target in TARGETS:
                    if self.path(target, scenario) is None:
                        continue
                    if self.args.warmup > 0:
                        self.guarded(target, f"{key} warm-up",
                                     lambda t=target, s=scenario: self.wrk(t, s, self.args.warmup))
                    result = self.guarded(target, f"{key} wrk run {run + 1}",
                                          lambda t=target, s=scenario: self.wrk(t, s, self.args.duration))
                    entry[target] = {"wrk": dataclasses.asdict(result)}
                    log(f"run {run + 1}/{self.args.runs} {key} {target:11s} wrk: {result.rps:9.0f} rps  "
                        f"p99 {result.p99_ms:7.2f} ms  cpu/10k {result.cpu_per_10k_s:5.2f} s  "
                        f"rss {result.peak_rss_mb:6.1f} MB  errors {result.errors}")
                    if target == "nginx":
                        nginx_max[key] = result.rps
                ref = scenario.rate_reference or key
                if ref not in nginx_max:  # the reference scenario was not selected: measure nginx on it now
                    ref_scenario = SCENARIO_BY_KEY[ref]
                    if self.args.warmup > 0:
                        self.wrk("nginx", ref_scenario, self.args.warmup)
                    nginx_max[ref] = self.wrk("nginx", ref_scenario, self.args.duration).rps
                rate = RATE_FRACTION * nginx_max[ref]
                for target, data in entry.items():
                    if target in REFERENCE_TARGETS:
                        continue
                    result = self.guarded(target, f"{key} fixed-rate run {run + 1}",
                                          lambda t=target, s=scenario, r=rate: self.paced(t, s, r))
                    data["paced"] = dataclasses.asdict(result)
                    log(f"run {run + 1}/{self.args.runs} {key} {target:11s} paced @ {rate:7.0f} rps: p99 "
                        f"{result.p99_ms:7.2f} ms  p99.9 {result.p999_ms:7.2f} ms  errors {result.errors}  "
                        f"unfinished {result.unfinished}")
                per_scenario[key] = {"rate": rate, "rate_reference": ref, "targets": entry}
            runs.append(per_scenario)
        return runs

    def memory(self) -> dict[str, Any]:
        result: dict[str, Any] = {"baseline_rss_mb": workers_rss(self.servers["gateway"])}
        log(f"memory: {self.args.endpoints} endpoints")
        result["endpoints"] = many_endpoints_rss(self.procs, self.prefix, self.ports, self.args.endpoints,
                                                 self.args.workers)
        result["idle"] = {}
        for target in TARGETS:
            if target not in self.servers or target in REFERENCE_TARGETS or (self.args.quick and target != "gateway"):
                continue  # quick mode: the gateway alone (the target is about the gateway)
            path = SCENARIO_BY_KEY["s1"].gateway_path if target == "gateway" else SCENARIO_BY_KEY["s1"].nginx_path
            log(f"memory: {self.args.idle_connections} idle keep-alive connections to {target}")
            result["idle"][target] = idle_connections(self.servers[target], self.urls[target] + str(path),
                                                      self.args.idle_connections, self.args.idle_seconds)
            log(f"memory: {target}: {json.dumps(result['idle'][target])}")
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        write_outputs(json.loads(args.report_only.read_text()), args.markdown, args.png)
        log(f"wrote {args.markdown} and {args.png} from {args.report_only}")
        return 0
    started = time.time()
    notes = install(args.skip_install)
    for tool in ("wrk", "nginx"):
        if not which(tool):
            log(f"{tool} is required and not installed (apt-get install {tool}); stopping")
            return 1
    nofile = raise_nofile()
    prefix = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    prefix.chmod(0o755)  # nginx workers may run as nobody and need to reach their temp paths
    bench = Bench(args, prefix)
    atexit.register(bench.procs.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench.start()
        runs = bench.measure()
        memory = bench.memory() if not args.skip_memory else None
    finally:
        bench.procs.stop_all()
    data = {
        "argv": sys.argv, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started": started, "elapsed_s": time.time() - started, "cores": bench.cores, "nofile": nofile,
        "notes": notes + bench.notes, "runs": runs, "memory": memory,
        "configs": {name: (prefix / name).read_text() for name in ("nginx.conf", "Caddyfile", "gateway.yaml",
                                                                  "infra.conf") if (prefix / name).exists()},
    }
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(data, indent=1))
    write_outputs(data, args.markdown, args.png)
    log(f"wrote {args.markdown} and {args.png} ({data['elapsed_s']:.0f} s; raw data in {RESULTS_JSON})")
    if not args.keep_dir:
        subprocess.run(["rm", "-rf", str(prefix)], check=False)
    else:
        log(f"kept {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
