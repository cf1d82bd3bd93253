"""``sidecar-gateway demo``: the gateway in front of an example backend, with pre- and post-processors served
by the local Lambda runner (real ``awslambdaric`` runtimes), all on loopback with no cloud account.

Endpoints (service ``demo``):

* ``/allow``    pre ``allow``: ``{}`` → the backend answers unchanged;
* ``/modify``   pre ``add_header`` (adds ``X-Demo-Caller``/``X-Demo-Tier`` to the backend request) and post
  ``rewrite_response`` (wraps the backend's JSON in an envelope);
* ``/guarded``  pre ``require_header``: terminate 401 unless ``X-Demo-Token: let-me-in``.

``--smoke`` runs the printed calls itself and exits 0 when every answer is the expected one (used by the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["main"]

FUNCTIONS_DIR = Path(__file__).parent / "functions"
DEMO_KEY = "demo-key-0123456789"
REGION = "us-east-1"
ACCOUNT = "123456789012"
READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def _processor(name: str, extra: str = "") -> str:
    return (f"region: {REGION}\nfunctionARN: {_arn(name)}\nuseAssumeRole: false\ntimeout: 3000\n{extra}")


def _config(port: int, admin_port: int, backend_port: int) -> str:
    target = f"http://127.0.0.1:{backend_port}"
    doc = {
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "services": [{
            "id": "demo",
            "name": "sidecar-gateway demo",
            "endpoints": [
                {"id": "allow", "public_path": "/allow", "target": f"{target}/allow", "timeout": 10,
                 "pre_processing": _processor("allow")},
                {"id": "modify", "public_path": "/modify", "target": f"{target}/modify", "timeout": 10,
                 "pre_processing": _processor("add_header", "include-eavs: tier"),
                 "post_processing": _processor("rewrite_response", "expand-input: responsePayload")},
                {"id": "guarded", "public_path": "/guarded", "target": f"{target}/guarded", "timeout": 10,
                 "pre_processing": _processor("require_header", "include-request-headers: X-Demo-Token")},
            ],
        }],
        "applications": [{"id": "demo-app", "name": "Demo application", "eavs": {"tier": "gold"},
                          "package_keys": [{"key": DEMO_KEY}]}],
    }
    return json.dumps(doc, indent=2)  # JSON is YAML


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not start within {READY_TIMEOUT_S:.0f} s")


def _wait_ready(admin_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the gateway exited with status {proc.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError), \
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit("demo: the gateway did not become ready")


def _calls(port: int) -> list[tuple[str, str, dict[str, str], int, str]]:
    """(title, url, headers, expected status, expected text in the body)."""
    base = f"http://127.0.0.1:{port}"
    return [
        ("allow: the pre-processor returns {} and the backend answers unchanged",
         f"{base}/allow/hello?api_key={DEMO_KEY}", {}, 200, "hello from the example backend"),
        ("modify: the pre-processor adds X-Demo-Caller/X-Demo-Tier, the post-processor rewrites the answer",
         f"{base}/modify/orders?api_key={DEMO_KEY}", {}, 200, "rewrittenBy"),
        ("terminate: no X-Demo-Token, so the pre-processor answers 401 itself",
         f"{base}/guarded/secret?api_key={DEMO_KEY}", {}, 401, "Missing or wrong X-Demo-Token"),
        ("allow with the right token",
         f"{base}/guarded/secret?api_key={DEMO_KEY}", {"X-Demo-Token": "let-me-in"}, 200, "hello"),
        ("no package key: the gateway answers 403 before any function runs",
         f"{base}/allow/hello", {}, 403, "AuthenticationFailure"),
    ]


def _curl(url: str, headers: dict[str, str]) -> str:
    parts = ["curl", "-i"] + [f"-H '{k}: {v}'" for k, v in headers.items()] + [f"'{url}'"]
    return " ".join(parts)


def _smoke(port: int) -> int:
    failures = 0
    for title, url, headers, status, text in _calls(port):
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                got_status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            got_status, body = e.code, e.read().decode()
        ok = got_status == status and text in body
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {got_status} {title}")
        if not ok:
            print(f"     expected {status} with {text!r}, got body: {body[:300]!r}")
    return 1 if failures else 0


def main(port: int = 8080, smoke: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sidecar-gateway-demo-"))
    admin_port, backend_port, runner_port = _free_port(), _free_port(), _free_port()
    config_path = workdir / "demo.yaml"
    config_path.write_text(_config(port, admin_port, backend_port))
    env = dict(os.environ)
    env.update({
        "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{runner_port}",
        "AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret", "AWS_REGION": REGION,
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("AWS_PROFILE", None)
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], log: str | None) -> subprocess.Popen[bytes]:
        out = open(workdir / log, "wb") if log else None  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        backend = start([py, "-m", "sidecar_gateway.demo.backend", "--port", str(backend_port)], "backend.log")
        runner = start([py, "-m", "sidecar_gateway.localrunner", str(FUNCTIONS_DIR), "--listen",
                        f"127.0.0.1:{runner_port}", "--region", REGION, "--account-id", ACCOUNT],
                       "functions.log")
        gateway = start([py, "-m", "sidecar_gateway", "run", str(config_path)], "gateway.log")
        _wait_tcp(backend_port, backend, "the example backend")
        _wait_tcp(runner_port, runner, "the local Lambda runner")
        _wait_ready(admin_port, gateway)
        if smoke:
            return _smoke(port)
        print(f"\nsidecar-gateway demo is up (logs and config in {workdir}).\n")
        print(f"  gateway   http://127.0.0.1:{port}   admin http://127.0.0.1:{admin_port}/metrics")
        print(f"  functions local Lambda runner on http://127.0.0.1:{runner_port} ({FUNCTIONS_DIR})\n")
        for title, url, headers, _, _ in _calls(port):
            print(f"# {title}\n{_curl(url, headers)}\n")
        print("Ctrl-C stops everything.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
