"""The README's demo command works on a fresh machine: gateway + example backend + local Lambda runner."""

from __future__ import annotations

import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_shows_allow_modify_and_terminate() -> None:
    """Every call the demo prints answers as described: allow 200, modify 200 rewritten, terminate 401, 403, and
    the five examples of examples/ (JWT, verb plan, PII masking, event analytics, backend credentials)."""
    out = subprocess.run([sys.executable, "-m", "sidecar_gateway", "demo", "--smoke", "--port", str(_free_port())],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("ok  ") == 12, out.stdout
    assert "FAIL" not in out.stdout
