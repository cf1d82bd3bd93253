"""Deterministic cost per request: user-space instructions counted by valgrind's callgrind.

    python bench/instructions.py [--scenarios s1,s2,s4,s6] [--requests 1000] [--src DIR ...] [--floor [SCRIPT]]

Wall-clock and CPU-time figures on the benchmark machine drift by ±20 % between runs, which hides any change
worth less than that (performance.md).  This tool counts instructions instead: the infra nginx of the benchmark
(backend, function, Lambda stub; ``servers.py``) and one gateway with ``--workers 1`` running under
``valgrind --tool=callgrind``; per scenario it sends warm-up requests, zeroes the counters
(``callgrind_control -z``), sends exactly ``--requests`` requests over 4 keep-alive connections, dumps the counters
(``callgrind_control -d``) and divides.  Repeated runs agree within ~0.5 %.

Only user space is counted (the kernel's socket work is not), and an instruction is not a nanosecond, so this is a
ruler for changes to the gateway's own code — A/B two source trees with ``--src`` (the first is the baseline; a
tree is a directory holding the ``sidecar_gateway`` package, e.g. ``src`` of a ``git worktree``) — not a
replacement for ``run.py``.  ``INSTRUCTIONS_KEEP=DIR`` keeps each scenario's dump there for
``callgrind_annotate`` (where the instructions go).  Valgrind slows the gateway ~50×: start-up takes about a
minute per tree.

``--floor`` also counts the featureless Python proxy of the benchmark (``floor_proxy.py``, in-process) on the
scenarios it serves (S1, S2, S6) — the same ruler for "what any CPython request cycle costs"; ``--floor SCRIPT``
counts another script with the same command line instead (an experiment: the floor plus one feature).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from common import LOOPBACK, ProcessSet, wait_ready
from servers import (
    FLOOR_SCRIPT,
    SCENARIO_BY_KEY,
    SCENARIOS,
    Ports,
    Scenario,
    floor_args,
    gateway_config,
    gateway_env,
    start_infra,
)

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 4
WARMUP_REQUESTS = 200
READY_TIMEOUT_S = 300.0  # start-up under valgrind
BODY = b'{"items":[' + b",".join(b'{"id":%d,"name":"item-%05d"}' % (i, i) for i in range(330)) + b"]}"


def request_bytes(port: int, scenario: Scenario) -> bytes:
    head = f"{'POST' if scenario.post_body else 'GET'} {scenario.gateway_path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
    head += "User-Agent: instructions\r\nAccept: */*\r\n"
    if scenario.post_body:
        return (head + f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    return (head + "\r\n").encode()


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(lines[0].split()[1]), length


def send(port: int, request: bytes, count: int, expected: int) -> None:
    """``count`` requests over ``CONNECTIONS`` keep-alive connections, one at a time on each; every answer whole
    and with the ``expected`` status (responses here always carry Content-Length)."""
    errors: list[str] = []

    def worker(n: int) -> None:
        try:
            with socket.create_connection((LOOPBACK, port)) as sock:
                buf = b""
                for _ in range(n):
                    sock.sendall(request)
                    while (end := buf.find(b"\r\n\r\n")) < 0:
                        buf += sock.recv(65536)
                    status, length = _status_and_length(buf[:end])
                    while len(buf) < end + 4 + length:
                        buf += sock.recv(65536)
                    buf = buf[end + 4 + length:]
                    if status != expected:
                        raise RuntimeError(f"status {status}, expected {expected}")
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    share = [count // CONNECTIONS + (1 if i < count % CONNECTIONS else 0) for i in range(CONNECTIONS)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"requests failed: {errors[:3]}")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def _dumped_ir(out_dir: Path, pid: int, before: set[Path]) -> int:
    """The instruction total of the dump written after ``before`` (callgrind writes ``cg.<pid>.<n>``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = sorted(set(out_dir.glob(f"cg.{pid}.*")) - before)
        for path in new:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def _count(label: str, pid: int, out_dir: Path, port: int, work: dict[str, tuple[bytes, int]],
           requests: int) -> dict[str, float]:
    """Per scenario of ``work`` (key → request bytes, expected status): warm up, zero the counters of the process
    under callgrind, send ``requests`` requests, dump, and divide."""
    result: dict[str, float] = {}
    for key, (request, expected) in work.items():
        send(port, request, WARMUP_REQUESTS, expected)
        _control("-z", str(pid))
        before = set(out_dir.glob(f"cg.{pid}.*"))
        send(port, request, requests, expected)
        _control("-d", key, str(pid))
        result[key] = _dumped_ir(out_dir, pid, before) / requests
        keep = os.environ.get("INSTRUCTIONS_KEEP")
        if keep:  # the dumps themselves, for callgrind_annotate (where the instructions go)
            Path(keep).mkdir(parents=True, exist_ok=True)
            for path in set(out_dir.glob(f"cg.{pid}.*")) - before:
                shutil.copy(path, Path(keep) / f"{label.replace('/', '_')}.{key}.{path.name}")
        print(f"[instructions] {label}: {key} {result[key]:,.0f} per request", file=sys.stderr, flush=True)
    return result


def measure_tree(index: int, src: Path, keys: list[str], requests: int, prefix: Path, ports: Ports,
                 procs: ProcessSet) -> dict[str, float]:
    config = prefix / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(ports), sort_keys=False))
    env = gateway_env(ports)
    env["PYTHONPATH"] = str(src)
    out_dir = prefix / f"callgrind-{index}"
    out_dir.mkdir()
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p", os.path.realpath(sys.executable),
            "-m", "sidecar_gateway", "run", str(config), "--workers", "1"]
    gateway = procs.start("gateway", argv, prefix / "gateway.log", env=env, stdout_to_log=False)
    try:
        wait_ready(f"http://{LOOPBACK}:{ports.gateway_admin}/readyz", gateway, timeout_s=READY_TIMEOUT_S)
        work = {key: (request_bytes(ports.gateway, SCENARIO_BY_KEY[key]), SCENARIO_BY_KEY[key].expected_status)
                for key in keys}
        return _count(str(src), gateway.proc.pid, out_dir, ports.gateway, work, requests)
    finally:
        procs.stop(gateway)


def measure_floor(script: Path, keys: list[str], requests: int, prefix: Path, ports: Ports,
                  procs: ProcessSet) -> dict[str, float]:
    """Instructions per request of the featureless proxy ``script`` (``floor_proxy.py``'s command line)."""
    out_dir = prefix / "callgrind-floor"
    out_dir.mkdir(exist_ok=True)
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.%p", os.path.realpath(sys.executable),
            *floor_args(script, ports, 1)]
    floor = procs.start("floor", argv, prefix / "floor.log")
    try:
        wait_ready(f"http://{LOOPBACK}:{ports.floor}/plain", floor, timeout_s=READY_TIMEOUT_S)
        work = {}
        for key in keys:
            scenario = SCENARIO_BY_KEY[key]
            if scenario.floor_path is not None:
                request = request_bytes(ports.floor, scenario).replace(scenario.gateway_path.encode(),
                                                                        scenario.floor_path.encode(), 1)
                work[key] = (request, scenario.expected_status)
        return _count(script.name, floor.proc.pid, out_dir, ports.floor, work, requests)
    finally:
        procs.stop(floor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="s1,s2,s4,s6", help="comma-separated subset of s1..s6")
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per scenario")
    parser.add_argument("--src", type=Path, action="append",
                        help="directory holding the sidecar_gateway package (repeat to compare; default: src/)")
    parser.add_argument("--floor", type=Path, nargs="?", const=FLOOR_SCRIPT, metavar="SCRIPT",
                        help="also count the featureless Python proxy (default script: bench/floor_proxy.py)")
    args = parser.parse_args(argv)
    keys = [k.strip() if k.strip().startswith("s") else f"s{k.strip()}" for k in args.scenarios.split(",")]
    unknown = [k for k in keys if k not in SCENARIO_BY_KEY]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(s.key for s in SCENARIOS)}")
    trees = [p.resolve() for p in (args.src or [ROOT / "src"])]
    if not (shutil.which("valgrind") and shutil.which("callgrind_control") and shutil.which("nginx")):
        subprocess.run(["bash", str(ROOT / "bench" / "setup.sh")], check=False,
                       env=dict(os.environ, PYTHON=sys.executable))
        if not (shutil.which("valgrind") and shutil.which("nginx")):
            parser.error("needs valgrind and nginx (bench/setup.sh installs them with apt-get as root)")
    procs = ProcessSet()
    with tempfile.TemporaryDirectory(prefix="sg-instr-") as tmp:
        prefix = Path(tmp)
        prefix.chmod(0o755)  # nginx workers may run as nobody
        ports = Ports.allocate()
        try:
            start_infra(procs, prefix, ports)
            results = [measure_tree(i, tree, keys, args.requests, prefix, ports, procs) for i, tree in enumerate(trees)]
            floor = (measure_floor(args.floor.resolve(), keys, args.requests, prefix, ports, procs)
                     if args.floor else None)
        finally:
            procs.stop_all()
    header = "| scenario | " + " | ".join(str(t) for t in trees) + (" | change |" if len(trees) > 1 else " |")
    if floor is not None:
        header += f" {args.floor.name} | {trees[-1].name} ÷ floor |"
    print(header)
    print("|---" * (len(trees) + 1 + (len(trees) > 1) + 2 * (floor is not None)) + "|")
    for key in keys:
        cells = [f"{r[key]:,.0f}" for r in results]
        change = [f"{(results[-1][key] / results[0][key] - 1) * 100:+.1f} %"] if len(trees) > 1 else []
        if floor is not None:
            change += [f"{floor[key]:,.0f}", f"{results[-1][key] / floor[key]:.2f}×"] if key in floor else ["n/a"] * 2
        print(f"| {key} | " + " | ".join(cells + change) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
