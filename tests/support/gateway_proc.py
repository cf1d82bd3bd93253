"""The gateway as a real subprocess, plus the small HTTP and /proc helpers the integration tests share.

* ``GatewayProcess`` writes a YAML configuration into a temporary directory (filling ``listen`` and
  ``admin.listen`` with free loopback ports unless given), starts
  ``[sys.executable, "-m", "sidecar_gateway", "run", CONFIG, *args]`` in a new session with stdout and stderr
  captured to files, and waits until ``GET http://<admin>/readyz`` answers 200 (15 s).  ``stop()`` sends
  SIGTERM, then SIGKILL to the whole process group.
* Config builders: ``endpoint()``, ``service()``, ``config()`` and the shared applications/keys.
* HTTP helpers: ``session()`` (a ``requests`` session that ignores proxy variables) and ``raw_request()``
  (``http.client`` with the request target and headers sent exactly as given).
* ``/proc`` helpers: ``session_pids()``, ``rss_bytes()``, ``listening_addresses()``, ``socket_owner_pids()``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

__all__ = [
    "ACTIVE_KEY",
    "APPLICATIONS",
    "DISABLED_KEY",
    "OTHER_KEY",
    "GatewayProcess",
    "RawResponse",
    "cmdline",
    "config",
    "endpoint",
    "free_port",
    "listening_addresses",
    "raw_request",
    "rss_bytes",
    "run_cli",
    "service",
    "session",
    "session_pids",
    "socket_owner_pids",
    "write_yaml",
]

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

ACTIVE_KEY = "abc123def456ghi789"
OTHER_KEY = "zyx987wvu654tsr321"
DISABLED_KEY = "dis000abled111key222"

APPLICATIONS: list[dict[str, Any]] = [
    {
        "id": "app-1",
        "name": "Acme mobile",
        "eavs": {"eav1": "eav_value"},
        "package_keys": [
            {"key": ACTIVE_KEY, "eavs": {"pkg_eav": "pkg_value"}},
            {"key": DISABLED_KEY, "status": "disabled"},
        ],
    },
    {"id": "app-2", "name": "Acme web", "package_keys": [{"key": OTHER_KEY, "status": "active"}]},
]


# --------------------------------------------------------------------------------------------------------------
# Configuration builders
# --------------------------------------------------------------------------------------------------------------


def endpoint(endpoint_id: str, public_path: str, target: str, **extra: Any) -> dict[str, Any]:
    """One endpoint mapping; ``extra`` adds any documented key (methods, public_host, timeout, api_key, ...)."""
    return {"id": endpoint_id, "public_path": public_path, "target": target, **extra}


def service(service_id: str, *endpoints: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": service_id, "endpoints": list(endpoints)}
    if name:
        out["name"] = name
    return out


def config(*services: dict[str, Any], applications: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    """A whole configuration file; ``top`` adds top-level keys (trusted_proxies, max_request_body, ...)."""
    out: dict[str, Any] = {**top, "services": list(services)}
    out["applications"] = APPLICATIONS if applications is None else applications
    return out


def write_yaml(path: Path, data: dict[str, Any] | str) -> None:
    """Write atomically (a reload must never read a half-written file)."""
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------------------
# The gateway process
# --------------------------------------------------------------------------------------------------------------


class GatewayNotReady(RuntimeError):
    pass


class GatewayProcess:
    """A running ``sidecar-gateway run``.

    Attributes: ``proc`` (Popen), ``pid``, ``base_url`` (traffic), ``admin_url``, ``port``, ``admin_port``,
    ``config_path``, ``stdout_path``, ``stderr_path``.
    """

    _counter = 0

    def __init__(
        self,
        workdir: Path,
        cfg: dict[str, Any],
        *,
        args: Iterable[str] = (),
        listen: str | None = None,
        default_admin: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        GatewayProcess._counter += 1
        self.name = f"gw{GatewayProcess._counter}"
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{self.name}.yaml"
        self.stdout_path = workdir / f"{self.name}.stdout"
        self.stderr_path = workdir / f"{self.name}.stderr"
        cfg = dict(cfg)
        cfg.setdefault("listen", f"127.0.0.1:{free_port()}")
        if default_admin:
            cfg.pop("admin", None)
        else:
            cfg.setdefault("admin", {"listen": f"127.0.0.1:{free_port()}"})
        self.file_listen: str = cfg["listen"]
        self.file_admin: dict[str, Any] | None = cfg.get("admin")
        self.listen = listen or cfg["listen"]
        host, _, port = self.listen.rpartition(":")
        self.host, self.port = host, int(port)
        self.admin_port = int(cfg["admin"]["listen"].rpartition(":")[2]) if not default_admin else 9901
        self.base_url = f"http://{self.host}:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        write_yaml(self.config_path, cfg)
        cmd = [sys.executable, "-m", "sidecar_gateway", "run", str(self.config_path), *args]
        if listen:
            cmd += ["--listen", listen]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            full_env.pop(var, None)
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=full_env,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    # -- lifecycle -------------------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        s = session()
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GatewayNotReady(f"gateway exited with {self.proc.returncode} before ready:\n{self.tail()}")
            try:
                r = s.get(self.admin_url + "/readyz", timeout=1)
                if r.status_code == 200:
                    return self
                last = f"/readyz answered {r.status_code}"
            except requests.RequestException as exc:
                last = repr(exc)
            time.sleep(0.05)
        self.stop()
        raise GatewayNotReady(f"gateway not ready after {timeout} s ({last}):\n{self.tail()}")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """SIGTERM the gateway, wait, then SIGKILL its process group.  Returns the exit status."""
        rc = self.proc.poll()
        if rc is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            rc = self.wait_exit(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the session we started: leftover workers, if any
        if rc is None:
            rc = self.wait_exit(5)
        for f in (self._out, self._err):
            with contextlib.suppress(Exception):
                f.close()
        return rc

    def rewrite_config(self, cfg: dict[str, Any] | str) -> None:
        """Replace the configuration file (same listen/admin as at start unless ``cfg`` sets them)."""
        if isinstance(cfg, dict):
            cfg = dict(cfg)
            cfg.setdefault("listen", self.file_listen)
            if self.file_admin is not None:
                cfg.setdefault("admin", self.file_admin)
        write_yaml(self.config_path, cfg)

    def reload(self, cfg: dict[str, Any] | str) -> None:
        self.rewrite_config(cfg)
        self.signal(signal.SIGHUP)

    # -- output ----------------------------------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def output(self) -> str:
        return self.stdout() + "\n" + self.stderr()

    def tail(self, n: int = 40) -> str:
        return (
            "stdout:\n"
            + "\n".join(self.stdout().splitlines()[-n:])
            + "\nstderr:\n"
            + "\n".join(self.stderr().splitlines()[-n:])
        )

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line of stdout and stderr that is a JSON object."""
        out = []
        for line in self.output().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def wait_for_lines(
        self, pred: Callable[[dict[str, Any]], bool], n: int = 1, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """JSON log lines satisfying ``pred``; waits until at least ``n`` are there (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [o for o in self.json_lines() if pred(o)]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_for_text(self, pred: Callable[[str], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.output()):
                return True
            time.sleep(0.05)
        return pred(self.output())

    # -- processes -------------------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every live process of the gateway's session (the main process first)."""
        return session_pids(self.pid)

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in self.pids())


def run_cli(*args: str, timeout: float = 30.0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sidecar_gateway ARGS`` to completion (for ``check`` and refused ``run``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar_gateway", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, out, err + "\n[test: killed after timeout]")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --------------------------------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------------------------------


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # never route loopback calls through a proxy from the environment
    return s


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    host: str | None = None,
    timeout: float = 15.0,
) -> RawResponse:
    """Send ``method target`` exactly as written (no normalisation of dot segments or escapes) with exactly
    the given headers, plus ``Host`` (``host`` or ``127.0.0.1:port``) and ``Content-Length`` for a body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, resp.reason, list(resp.getheaders()), data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------------------
# /proc helpers (Linux)
# --------------------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2 :].split()


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``; ``sid`` itself first when alive."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # fields[0] = state, [1] = ppid, [2] = pgrp, [3] = session
        if fields is None or fields[0] == "Z" or int(fields[3]) != sid:
            continue
        out.append(int(entry))
    return sorted(out, key=lambda p: (p != sid, p))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _tcp_table() -> list[tuple[str, int, str, int, str, int]]:
    """(local ip, local port, remote ip, remote port, state hex, inode) from /proc/net/tcp and tcp6."""
    rows = []
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            lip, lport = parts[1].split(":")
            rip, rport = parts[2].split(":")
            rows.append((_hex_ip(lip), int(lport, 16), _hex_ip(rip), int(rport, 16), parts[3], int(parts[9])))
    return rows


def _hex_ip(h: str) -> str:
    if len(h) == 8:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(h)[::-1])
    raw = bytes.fromhex(h)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, raw)


def listening_addresses(port: int) -> list[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port``."""
    return sorted({lip for lip, lport, _, _, st, _ in _tcp_table() if lport == port and st == "0A"})


def socket_owner_pids(pids: Iterable[int], local_port: int, remote_ports: set[int]) -> dict[int, int]:
    """For the ESTABLISHED server-side sockets ``local_port`` <- ``remote_ports``: remote port -> owning pid
    (among ``pids``)."""
    inode_to_rport = {
        inode: rport
        for _, lport, _, rport, st, inode in _tcp_table()
        if lport == local_port and st == "01" and rport in remote_ports
    }
    owners: dict[int, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in inode_to_rport:
                    owners[inode_to_rport[inode]] = pid
    return owners
