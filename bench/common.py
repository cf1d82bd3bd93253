"""Shared helpers of the benchmark: free ports, /proc accounting, process groups, HTTP readiness probes."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = 1024
READY_TIMEOUT_S = 30.0
READY_POLL_S = 0.1
STOP_GRACE_S = 5.0
PROBE_TIMEOUT_S = 2.0
NOFILE_WANTED = 65536  # raised up to the hard limit; 10,000 idle connections need > 10k descriptors


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE of this process (and so of every child) as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(NOFILE_WANTED, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


# --------------------------------------------------------------------------------------------------- /proc


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def parent_map() -> dict[int, int]:
    """pid → ppid of every live process."""
    result: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if not stat:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        result[int(entry)] = int(fields[1])
    return result


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    parents = parent_map()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree: list[int] = []
    stack = [root] if root in parents else []
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the given processes (live ones only), in seconds."""
    ticks = 0
    for pid in pids:
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / CLOCK_TICKS


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), 0 when unavailable."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss(pids: Iterable[int]) -> None:
    """Reset VmHWM (``echo 5 > clear_refs``, proc(5)); silently skipped where not permitted."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def system_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all CPUs), from the first line of /proc/stat."""
    values = [int(v) for v in _read("/proc/stat").splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Managed:
    """A server started in its own session (process group); stopped as a group."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    worker_filter: str = ""  # substring of a worker's command line; "" = the root counts as the only worker
    exclude: Sequence[str] = field(default_factory=tuple)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def workers(self) -> list[int]:
        if not self.worker_filter:
            return [self.pid]
        found = []
        for pid in self.tree():
            if pid == self.pid:
                continue
            line = cmdline(pid)
            if self.worker_filter in line and not any(x in line for x in self.exclude):
                found.append(pid)
        return found or [self.pid]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(_read(str(self.log_path)).splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait()
        # stragglers of the group (workers that outlived their parent)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


class ProcessSet:
    """Every server this benchmark started; ``stop_all`` is called on exit, whatever happens."""

    def __init__(self) -> None:
        self.items: list[Managed] = []

    def start(self, name: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, stdout_to_log: bool = True, worker_filter: str = "",
              exclude: Sequence[str] = ()) -> Managed:
        log = log_path.open("ab")
        out = log if stdout_to_log else subprocess.DEVNULL
        proc = subprocess.Popen(list(argv), stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        log.close()
        managed = Managed(name, proc, log_path, worker_filter, tuple(exclude))
        self.items.append(managed)
        return managed

    def stop(self, managed: Managed) -> None:
        managed.stop()
        if managed in self.items:
            self.items.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(self.items):
            managed.stop()
        self.items.clear()


def http_status(url: str, *, method: str = "GET", body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_ready(url: str, managed: Managed, *, timeout_s: float = READY_TIMEOUT_S, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"{managed.name} exited with {managed.proc.returncode}:\n{managed.log_tail()}")
        try:
            if http_status(url) == expect:
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(READY_POLL_S)
    raise RuntimeError(f"{managed.name} not ready at {url} within {timeout_s} s ({last}):\n{managed.log_tail()}")
