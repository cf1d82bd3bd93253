"""docs/benchmarks.md and docs/benchmarks.png from the raw results of bench/run.py."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from servers import PEER_LOG_NOTE, REFERENCE_TARGETS, SCENARIO_BY_KEY, Scenario

TARGET_LABEL = {"gateway": "sidecar-gateway", "nginx": "nginx", "caddy": "Caddy",
                "nginx_tuned": "nginx (auth_request, empty answer: keeps upstream keep-alive)",
                "caddy_tuned": "Caddy (forward_auth, empty answer: keeps upstream keep-alive)",
                "floor": "featureless Python proxy (bench/floor_proxy.py: uvloop + httptools, no gateway features)"}
PLOT_TARGETS = ("gateway", "nginx", "caddy")
# the reference rows (REFERENCE_TARGETS) are not in the chart
TABLE_TARGETS = ("gateway", "nginx", "nginx_tuned", "caddy", "caddy_tuned", "floor")
PLOT_COLOURS = {"gateway": "#1f77b4", "nginx": "#2ca02c", "caddy": "#ff7f0e"}
PYTHON_PACKAGES = ("sidecar-gateway", "uvicorn", "uvloop", "httptools", "aiohttp", "orjson", "pydantic", "botocore",
                   "matplotlib")
PLAIN_TARGET = 0.6  # issue 6: plain proxy ≥ 0.6× nginx rps
PRE_TARGET = 1.2  # pre-processor (http) ≥ 1.2× nginx auth_request and Caddy forward_auth
LAMBDA_TARGET = 0.8  # aws-lambda pre ≥ 0.8× the http-stack figure
P99_TARGET = 2.0  # p99 at the fixed rate ≤ 2× nginx's
RSS_TARGET_MB = 80.0  # RSS per worker with 1,000 endpoints
BACKGROUND_WARN_PCT = 5.0  # median background CPU above this: the doc says the machine was not quiet
CHART_DPI = 120
CHART_SIZE_IN = (11.0, 8.0)
COMMAND_TIMEOUT_S = 10


# ------------------------------------------------------------------------------------------ aggregation


def _stats(values: Sequence[float]) -> tuple[float, float, float] | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return None
    return statistics.median(clean), min(clean), max(clean)


def _values(data: dict[str, Any], key: str, target: str, kind: str, metric: str) -> list[float]:
    out = []
    for run in data["runs"]:
        entry = run.get(key, {}).get("targets", {}).get(target, {}).get(kind)
        if entry is not None:
            out.append(float(entry[metric]))
    return out


def _ratios(data: dict[str, Any], num: tuple[str, str, str, str], den: tuple[str, str, str, str]) -> list[float]:
    """Per-run ratio of two figures of the same run (key, target, kind, metric each)."""
    out = []
    for run in data["runs"]:
        try:
            a = run[num[0]]["targets"][num[1]][num[2]][num[3]]
            b = run[den[0]]["targets"][den[1]][den[2]][den[3]]
        except KeyError:
            continue
        if b:
            out.append(a / b)
    return out


def _fmt(stats: tuple[float, float, float] | None, spec: str, runs: int) -> str:
    if stats is None:
        return "n/a"
    med, lo, hi = stats
    if runs <= 1:
        return format(med, spec)
    return f"{format(med, spec)} ({format(lo, spec)}–{format(hi, spec)})"


def _times(stats: tuple[float, float, float] | None, runs: int) -> str:
    """A ratio cell: ``0.46×``, or ``n/a``."""
    return "n/a" if stats is None else _fmt(stats, ".2f", runs) + "×"


# --------------------------------------------------------------------------------------------- machine


def _command(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB"
    info = {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "OS": _command(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "Python": platform.python_version(),
        "nginx": _command(["nginx", "-v"]).removeprefix("nginx version: "),
        "Caddy": _command(["caddy", "version"]),
        "wrk": _command(["wrk", "-v"]).split(" [")[0],
        "load average at report time": Path("/proc/loadavg").read_text().strip()
        if Path("/proc/loadavg").exists() else "unknown",
    }
    for package in PYTHON_PACKAGES:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


# -------------------------------------------------------------------------------------------- markdown


class Report:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.args = data["args"]
        self.runs = len(data["runs"])
        self.keys = [k for k in self.args["scenario_keys"] if any(k in run for run in data["runs"])]

    def stat(self, key: str, target: str, kind: str, metric: str) -> tuple[float, float, float] | None:
        return _stats(_values(self.data, key, target, kind, metric))

    def ratio(self, num: tuple[str, str, str, str],
              den: tuple[str, str, str, str]) -> tuple[float, float, float] | None:
        return _stats(_ratios(self.data, num, den))

    def scenario_table(self, scenario: Scenario) -> list[str]:
        key = scenario.key
        rate = _stats([run[key]["rate"] for run in self.data["runs"] if key in run])
        ref = scenario.rate_reference or key
        ref_text = ("nginx's max in this scenario" if ref == key else
                    f"nginx `auth_request`'s max in {ref} — no nginx analogue here")
        lines = [f"### {key.upper()} — {scenario.title}", "",
                 f"Peers: {scenario.peer_kind}.  Fixed rate: {_fmt(rate, ',.0f', self.runs)} req/s "
                 f"(50 % of {ref_text}).", "",
                 "| target | req/s | p50 ms | p99 ms | p99.9 ms | p99 ms @ fixed rate | p99.9 ms @ fixed rate "
                 "| CPU s / 10k req | peak RSS / worker MB | req/s ÷ nginx | req/s ÷ Caddy | p99 @ rate ÷ nginx "
                 "| errors |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for target in TABLE_TARGETS:
            if not _values(self.data, key, target, "wrk", "rps"):
                continue
            label = TARGET_LABEL[target]
            cells = [f"**{label}**" if target == "gateway" else f"*{label} — reference*"
                     if target in REFERENCE_TARGETS else label]
            cells.append(_fmt(self.stat(key, target, "wrk", "rps"), ",.0f", self.runs))
            for metric in ("p50_ms", "p99_ms", "p999_ms"):
                cells.append(_fmt(self.stat(key, target, "wrk", metric), ".2f", self.runs))
            for metric in ("p99_ms", "p999_ms"):
                cells.append(_fmt(self.stat(key, target, "paced", metric), ".2f", self.runs))
            cells.append(_fmt(self.stat(key, target, "wrk", "cpu_per_10k_s"), ".2f", self.runs))
            cells.append(_fmt(self.stat(key, target, "wrk", "peak_rss_mb"), ".1f", self.runs))
            for peer in ("nginx", "caddy"):
                if target == peer:
                    cells.append("1")
                else:
                    cells.append(_times(self.ratio((key, target, "wrk", "rps"), (key, peer, "wrk", "rps")), self.runs))
            if target == "nginx":
                cells.append("1")
            else:
                cells.append(_times(self.ratio((key, target, "paced", "p99_ms"), (key, "nginx", "paced", "p99_ms")),
                                    self.runs))
            errors = [int(v) for v in _values(self.data, key, target, "wrk", "errors")]
            paced_errors = [int(v) for v in _values(self.data, key, target, "paced", "errors")]
            unfinished = sum(int(v) for v in _values(self.data, key, target, "paced", "unfinished"))
            paced_text = str(sum(paced_errors)) if paced_errors else "n/a"
            cells.append(f"{sum(errors)} / {paced_text}" + (f" (+{unfinished:,} unfinished)" if unfinished else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        return lines

    def target_lines(self) -> list[str]:
        rows: list[tuple[str, tuple[float, float, float] | None, Callable[[float], bool] | None, str]] = []

        def add(label: str, stats: tuple[float, float, float] | None, ok: Callable[[float], bool] | None,
                unit: str = "×") -> None:
            rows.append((label, stats, ok, unit))

        add(f"Plain proxy ≥ {PLAIN_TARGET}× nginx rps", self.ratio(("s1", "gateway", "wrk", "rps"),
                                                                    ("s1", "nginx", "wrk", "rps")),
            lambda r: r >= PLAIN_TARGET)
        add(f"Pre-processor (http) ≥ {PRE_TARGET}× nginx `auth_request` rps",
            self.ratio(("s2", "gateway", "wrk", "rps"), ("s2", "nginx", "wrk", "rps")), lambda r: r >= PRE_TARGET)
        add(f"Pre-processor (http) ≥ {PRE_TARGET}× Caddy `forward_auth` rps",
            self.ratio(("s2", "gateway", "wrk", "rps"), ("s2", "caddy", "wrk", "rps")), lambda r: r >= PRE_TARGET)
        for tuned, peer in (("nginx_tuned", "nginx `auth_request`"), ("caddy_tuned", "Caddy `forward_auth`")):
            stats = self.ratio(("s2", "gateway", "wrk", "rps"), ("s2", tuned, "wrk", "rps"))
            if stats is not None:  # absent from results that predate the reference rows
                add(f"(reference, not a target) pre-processor (http) vs {peer} with an empty answer", stats, None)
        for key, peer in (("s1", "nginx"), ("s2", "nginx `auth_request`")):
            stats = self.ratio((key, "floor", "wrk", "rps"), (key, "nginx", "wrk", "rps"))
            if stats is not None:  # absent from results that predate the floor
                add(f"(reference, not a target) featureless Python proxy, {SCENARIO_BY_KEY[key].title}, vs {peer}",
                    stats, None)
                add(f"(reference, not a target) sidecar-gateway vs the featureless Python proxy, "
                    f"{SCENARIO_BY_KEY[key].title}", self.ratio((key, "gateway", "wrk", "rps"),
                                                                 (key, "floor", "wrk", "rps")), None)
        add(f"Pre-processor (aws-lambda) ≥ {LAMBDA_TARGET}× the http-stack figure",
            self.ratio(("s4", "gateway", "wrk", "rps"), ("s2", "gateway", "wrk", "rps")),
            lambda r: r >= LAMBDA_TARGET)
        for key in ("s1", "s2", "s6"):
            add(f"p99 at the fixed rate ≤ {P99_TARGET}× nginx's p99 — {key.upper()} "
                f"({SCENARIO_BY_KEY[key].title})",
                self.ratio((key, "gateway", "paced", "p99_ms"), (key, "nginx", "paced", "p99_ms")),
                lambda r: r <= P99_TARGET)
        memory = self.data.get("memory")
        if memory:
            big = memory["endpoints"]
            peak = max((w["hwm_mb"] for w in big["after_calls"]), default=math.nan)
            add(f"RSS per worker ≤ {RSS_TARGET_MB:.0f} MB with {big['endpoints']:,} endpoints (peak VmHWM)",
                (peak, peak, peak), lambda r: r <= RSS_TARGET_MB, " MB")
            idle = memory["idle"].get("gateway")
            if idle:
                res = idle["result"]
                failed = int(res.get("requested", 0)) - int(res.get("answered_after_idle", 0)) \
                    if not res.get("failed") else -1
                label = f"{self.args['idle_connections']:,} idle keep-alive connections held without errors"
                add(label, (float(failed), float(failed), float(failed)) if failed >= 0 else None,
                    lambda r: r == 0, " failed")
        lines = ["| target (issue 6) | measured | met? |", "|---|---|---|"]
        for label, stats, ok, unit in rows:
            if stats is None:
                lines.append(f"| {label} | not measured | — |")
                continue
            spec = ".0f" if unit == " failed" else (".1f" if unit == " MB" else ".2f")
            verdict = "—" if ok is None else "**met**" if ok(stats[0]) else "**not met**"
            lines.append(f"| {label} | {_fmt(stats, spec, 1 if unit != '×' else self.runs)}{unit} | {verdict} |")
        return lines

    def memory_lines(self) -> list[str]:
        memory = self.data.get("memory")
        if not memory:
            return ["Skipped (`--skip-memory`).", ""]
        big = memory["endpoints"]
        rss = ", ".join(f"{w['rss_mb']:.1f}" for w in big["after_calls"])
        hwm = ", ".join(f"{w['hwm_mb']:.1f}" for w in big["after_calls"])
        start = ", ".join(f"{w['rss_mb']:.1f}" for w in big["at_start"])
        base = ", ".join(f"{w['rss_mb']:.1f}" for w in memory["baseline_rss_mb"])
        lines = [
            f"**{big['endpoints']:,} endpoints** (each with an http-stack pre-processor; a second gateway with "
            f"`--workers {self.args['workers']}`, ready after {big['startup_s']:.1f} s). RSS per worker right after "
            f"start: {start} MB; after {big['requests']:,} calls (every endpoint once, spread over the workers) "
            f"(statuses {big['statuses']}): VmRSS {rss} MB, peak VmHWM {hwm} MB.  For comparison, the benchmark "
            f"gateway (6 endpoints) after all load runs: {base} MB per worker.", "",
            f"**{self.args['idle_connections']:,} idle keep-alive client connections** (opened by "
            f"`bench/idle_conns.py`, one GET each, held idle {self.args['idle_seconds']:g} s, then a second GET on "
            "every one):", "",
            "| target | opened | answered after idle | errors | RSS / worker before, MB | RSS / worker while "
            "holding, MB |",
            "|---|---|---|---|---|---|"]
        for target in PLOT_TARGETS:
            idle = memory["idle"].get(target)
            if not idle:
                continue
            res = idle["result"]
            if res.get("failed"):
                lines.append(f"| {TARGET_LABEL[target]} | failed: {res.get('stderr', '')[-200:]!r} | | | | |")
                continue
            before = ", ".join(f"{w['rss_mb']:.1f}" for w in idle["before"])
            during = ", ".join(f"{w['rss_mb']:.1f}" for w in idle["during"])
            lines.append(f"| {TARGET_LABEL[target]} | {res['open']:,} | {res['answered_after_idle']:,} | "
                         f"{res['errors'] or 0} | {before} | {during} |")
        lines.append("")
        return lines

    def background(self) -> tuple[float, float] | None:
        values = []
        for run in self.data["runs"]:
            for entry in run.values():
                for target in entry["targets"].values():
                    values.extend(target[k]["background_cpu_pct"] for k in ("wrk", "paced") if k in target)
        if not values:
            return None
        return statistics.median(values), max(values)

    def loadgen_share(self) -> float | None:
        shares = []
        for run in self.data["runs"]:
            for entry in run.values():
                for target in entry["targets"].values():
                    wrk = target.get("wrk")
                    if wrk and wrk["requests"]:
                        shares.append(wrk["loadgen_cpu_s"] / (self.args["duration"] * self.data["cores"]) * 100)
        return statistics.median(shares) if shares else None

    def render(self) -> str:
        args = self.args
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.data["started"]))
        command = "python bench/run.py" + (" --quick" if args["quick"] else "")
        extra = [a for a in self.data["argv"][1:]]
        exact = "python bench/run.py " + " ".join(extra) if extra else "python bench/run.py"
        bg = self.background()
        share = self.loadgen_share()
        lines = [
            "# Benchmarks", "",
            f"Generated by `{exact}` on {when} in {self.data['elapsed_s'] / 60:.1f} min — do not edit by hand; "
            f"re-run `{command}` (details: [`bench/`](../bench/run.py)).  Issue 6 asks for these numbers; all "
            "figures come from one run of all targets on the same machine, so compare **ratios**, not absolute "
            "numbers.", "",
        ]
        if args["quick"] or self.runs < 3:
            lines += [f"> **{'Quick mode' if args['quick'] else 'Reduced run'}**: {self.runs} run(s) of "
                      f"{args['duration']:g} s per figure — a smoke test of the pipeline, not a publishable "
                      "measurement.", ""]
        if bg and bg[0] > BACKGROUND_WARN_PCT:
            lines += [f"> **The machine was not quiet**: other processes (e.g. test suites of other sessions) used "
                      f"a median {bg[0]:.0f} % (max {bg[1]:.0f} %) of the CPUs during the measurements; absolute "
                      "numbers and ratios are skewed. Re-run on a quiet machine before quoting them.", ""]
        lines += ["## Targets of issue 6", "",
                  f"Median of per-run ratios over {self.runs} run(s) (min–max in parentheses).", ""]
        lines += [*self.target_lines(), ""]
        lines += ["Where the time goes and what is left for the unmet targets: [performance.md](performance.md) "
                  "(hand-written analysis, profiles and before/after measurements).", ""]
        lines += ["## Results per scenario", "",
                  f"`wrk -t{args['threads']} -c{args['connections']} -d{args['duration']:g}s` (after a "
                  f"{args['warmup']:g} s warm-up) gives req/s and p50/p99/p99.9 at a fixed connection count.  "
                  "\"@ fixed rate\" is the paced generator (`bench/paced.py`, **not wrk2** — wrk2 is not packaged "
                  f"in Debian) at 50 % of nginx's max, {args['paced_duration']:g} s, {args['connections']} "
                  "connections, latency measured from each request's scheduled time.  CPU = utime+stime of the "
                  "server's whole process tree (gateway supervisor + workers, nginx master + workers, Caddy) per "
                  "10,000 requests of the wrk run; peak RSS = max VmHWM over the server's workers during the wrk run "
                  "(reset before each run).  Errors = wrk / paced-generator errors (socket errors, timeouts, "
                  "unexpected statuses; the 403s of S6 are expected) in the wrk / fixed-rate runs; "
                  "\"unfinished\" = requests of the fixed-rate run still unanswered min(5 s, duration) after the "
                  "last one was due — the target could not sustain the rate, and its fixed-rate latencies then "
                  "measure its queue, not its service time.  "
                  + (f"Each cell: median (min–max) of {self.runs} runs." if self.runs > 1 else "One run per cell."),
                  ""]
        for key in self.keys:
            lines += self.scenario_table(SCENARIO_BY_KEY[key])
        lines += ["![req/s and p99 per scenario and peer](benchmarks.png)", ""]
        lines += ["## Memory", "", *self.memory_lines()]
        lines += ["## Set-up", ""]
        lines += [
            "Everything runs on loopback on this one machine, started by `bench/run.py` from a temporary "
            "directory and killed (process groups) at the end:", "",
            "* **backend, sidecar function, Lambda stub** — one nginx, `worker_processes 1`: the backend answers "
            "every path with a fixed 100-byte body; the stub answers `POST /2015-03-31/functions/<name>/invocations` "
            "with `{}` and does not verify SigV4.  The function answers `{}` (`return 200 '{}'`, `application/json`)"
            " — to the gateway and, in S2, to nginx `auth_request` and Caddy `forward_auth` alike, the set-up of "
            "issue 6 (\"nginx `auth_request` to the same sidecar function\"), against which the S2 targets are "
            "computed.  Neither peer uses the body of the auth answer, and after an answer with a body both close "
            "their upstream connection: every request opens a new connection to the function (measured with `ss`: "
            "one TIME_WAIT socket per request).  For reference only, S2 also shows both peers calling a location "
            "that answers an empty 200, which keeps the upstream keep-alive connection (the rows \"… empty answer "
            "…\"; no fixed-rate run, no target).  S6: the function answers the gateway "
            "`{\"terminate\":{\"code\":403}}` and the peers' `auth_request`/`forward_auth` an empty 403 — the issue "
            "does not define S6's peer, and an empty 403 is the cheapest answer for the peers.",
            f"* **nginx** peer — `worker_processes {args['workers']}`, `proxy_pass` to an upstream with "
            "`keepalive 128`, HTTP/1.1 upstream; `auth_request` to the function (`proxy_pass_request_body off`).",
            f"* **Caddy** peer — `GOMAXPROCS={args['workers']}`, `reverse_proxy` (128 idle conns per host) and "
            "`forward_auth` to the function; HTTP/1.1 only, admin API off.",
            f"* **sidecar-gateway** — `sidecar-gateway run gateway.yaml --workers {args['workers']}`, one endpoint "
            "per scenario, `key_required: false`; S4 uses `useAssumeRole: false` with dummy "
            "`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` and `AWS_ENDPOINT_URL_LAMBDA` pointing at the stub (every "
            "call is signed with SigV4); S5 posts a 10 KB JSON body with `expand-input: requestPayload` and "
            "`max-payload-size: 20`.",
            f"* **featureless Python proxy** (reference rows of S1, S2, S6; no target, no fixed-rate run) — "
            f"`bench/floor_proxy.py --workers {args['workers']}`: the gateway's own stack (uvloop, httptools, "
            "orjson) doing the scenario's job with nothing else — no routing table, keys, header validation, "
            "forwarded headers, message ids, logs, metrics or deadlines.  What any CPython request cycle costs on "
            "this machine: floor ÷ nginx is the part of the distance to the targets that comes from Python, "
            "gateway ÷ floor the part that comes from what the gateway does on top.",
            f"* Logging: {PEER_LOG_NOTE} (stdout redirected, the JSON lines are still produced).",
            f"* **Load generator and servers share the {self.data['cores']} cores**: wrk "
            f"(`-t{args['threads']}`) and the paced generator ({self.data['cores']} Python processes) compete with "
            "the server under test and the backend nginx for the same CPUs"
            + (f" (wrk used a median {share:.0f} % of the machine during its runs)" if share is not None else "")
            + ".  This lowers every absolute number and favours the target that needs the least CPU per request; "
            "the ratios are what the issue's targets are about.",
            "* Background load: CPU used by processes other than the server under test, the backend nginx and the "
            "load generator, from /proc/stat: "
            + (f"median {bg[0]:.1f} %, max {bg[1]:.1f} % of the machine." if bg else "not measured."), ""]
        if self.data.get("notes"):
            lines += ["Notes from the installer / run:", ""] + [f"* {n}" for n in self.data["notes"]] + [""]
        lines += ["## Machine", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in machine().items()] + [""]
        lines += ["## Commands", "", "```bash",
                  f"{exact}   # this document",
                  "python bench/run.py                 # full run: 3 runs × (3 s warm-up + 10 s wrk + 10 s paced)",
                  "python bench/run.py --quick         # 1 run, 3 s each: pipeline smoke test (< 3 min)",
                  "python bench/run.py --scenarios 1,2 --runs 5 --duration 20   # a subset, longer",
                  "# what it runs per scenario and target (ports are picked free at start):",
                  f"wrk -t{args['threads']} -c{args['connections']} -d{args['duration']:g}s --latency --timeout=2s "
                  "-s bench/wrk_report.lua http://127.0.0.1:PORT/PATH   # BENCH_BODY_FILE=body.json for S5",
                  f"python bench/paced.py --url http://127.0.0.1:PORT/PATH --rate RATE/{self.data['cores']} "
                  f"--duration {args['paced_duration']:g} --connections "
                  f"{args['connections'] // self.data['cores']}   # × {self.data['cores']} processes",
                  f"python bench/idle_conns.py --url http://127.0.0.1:PORT/s1 --count {args['idle_connections']} "
                  f"--idle {args['idle_seconds']:g}",
                  "```", "",
                  "Raw numbers of the last run: `bench/results/latest.json` (not committed).", ""]
        lines += ["## Not measured", "",
                  "* **wrk2** (HdrHistogram, constant throughput) is not in the Debian archive and the benchmark "
                  "installs nothing from elsewhere, so the fixed-rate p99 comes from a Python generator, whose own "
                  "event-loop delays are included in every target's latency alike.",
                  "* **nginx/Caddy analogues of S3–S5**: neither can call a function on the response path (S3), "
                  "sign a sub-request with SigV4 (S4) or send the request body to `auth_request`/`forward_auth` (S5); "
                  "those rows show the gateway alone and their fixed rate is derived from nginx `auth_request` (S2).",
                  "* **TLS, HTTP/2, real Lambda / network latency, STS AssumeRole** (`useAssumeRole: true`): out of "
                  "scope here; everything is plaintext HTTP/1.1 on loopback with credentials from the environment.",
                  "* **Package-key checks**: endpoints use `key_required: false` so every target does the same job.",
                  ""]
        lines += ["## Generated configurations", ""]
        for name, text in self.data.get("configs", {}).items():
            lang = "yaml" if name.endswith(".yaml") else "nginx" if name.endswith(".conf") else ""
            lines += [f"<details><summary>{name}</summary>", "", f"```{lang}", text.rstrip(), "```", "",
                      "</details>", ""]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- chart


def write_png(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    report = Report(data)
    keys = report.keys
    fig, (ax_rps, ax_p99) = plt.subplots(2, 1, figsize=CHART_SIZE_IN)
    width = 0.8 / len(PLOT_TARGETS)
    for offset, target in enumerate(PLOT_TARGETS):
        for ax, kind, metric in ((ax_rps, "wrk", "rps"), (ax_p99, "paced", "p99_ms")):
            xs, meds, los, his = [], [], [], []
            for i, key in enumerate(keys):
                stats = report.stat(key, target, kind, metric)
                if stats is None:
                    continue
                xs.append(i + (offset - (len(PLOT_TARGETS) - 1) / 2) * width)
                meds.append(stats[0])
                los.append(stats[0] - stats[1])
                his.append(stats[2] - stats[0])
            if xs:
                ax.bar(xs, meds, width, yerr=[los, his], capsize=3, label=TARGET_LABEL[target],
                       color=PLOT_COLOURS[target])
    labels = [f"{k.upper()}\n{SCENARIO_BY_KEY[k].short}" for k in keys]
    args = data["args"]
    ax_rps.set_title(f"Throughput: wrk -c{args['connections']} -t{args['threads']} (median of "
                     f"{len(data['runs'])}, bars min–max)")
    ax_rps.set_ylabel("requests / s")
    ax_p99.set_title("p99 latency at a fixed rate (50 % of nginx max; paced Python generator)")
    ax_p99.set_ylabel("p99 ms (log)")
    ax_p99.set_yscale("log")
    for ax in (ax_rps, ax_p99):
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"sidecar-gateway vs nginx / Caddy — {data['cores']} cores, same run", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return True


def write_outputs(data: dict[str, Any], markdown: Path, png: Path) -> None:
    if not write_png(data, png):
        data.setdefault("notes", []).append("matplotlib is not installed: no chart was drawn.")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(Report(data).render())
