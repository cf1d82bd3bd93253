"""The memory targets of issue 6: RSS per worker with 1,000 endpoints, and 10,000 idle keep-alive connections."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import LOOPBACK, Managed, ProcessSet, free_ports, status_kb
from servers import Ports, big_gateway_config, start_gateway

BENCH_DIR = Path(__file__).resolve().parent
IDLE_SCRIPT = BENCH_DIR / "idle_conns.py"
KB_PER_MB = 1024
TOUCH_CONCURRENCY = 32  # concurrent requests while touching every endpoint once
BIG_READY_TIMEOUT_S = 120.0
IDLE_SLACK_S = 180.0  # opening + re-checking 10,000 connections, on top of the idle time
SETTLE_S = 1.0
START_ATTEMPTS = 3


def workers_rss(managed: Managed) -> list[dict[str, float]]:
    return [{"pid": pid, "rss_mb": status_kb(pid, "VmRSS") / KB_PER_MB, "hwm_mb": status_kb(pid, "VmHWM") / KB_PER_MB}
            for pid in managed.workers()]


async def _touch(port: int, paths: list[str]) -> dict[int, int]:
    """One GET per path over a few keep-alive connections; returns status → count."""
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            while not queue.empty():
                path = queue.get_nowait()
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                               if k.strip().lower() == "content-length"), 0)
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(TOUCH_CONCURRENCY)))
    return statuses


def many_endpoints_rss(procs: ProcessSet, prefix: Path, ports: Ports, count: int, workers: int) -> dict[str, Any]:
    """Start a second gateway with ``count`` endpoints (each with an http pre-processor), call each once, read RSS."""
    for attempt in range(START_ATTEMPTS):
        # ports picked now: after the load runs, ports picked at start may have become someone's ephemeral port
        listen, admin = free_ports(2)
        ports = dataclasses.replace(ports, big_gateway=listen, big_gateway_admin=admin)
        t0 = time.monotonic()
        try:
            gateway = start_gateway(procs, prefix, "gateway-big", big_gateway_config(ports, count), ports,
                                    ports.big_gateway_admin, workers, ready_timeout_s=BIG_READY_TIMEOUT_S)
            break
        except RuntimeError:
            if attempt == START_ATTEMPTS - 1:
                raise
    startup_s = time.monotonic() - t0
    try:
        at_start = workers_rss(gateway)
        paths = [f"/e{i:05d}" for i in range(count)]  # every endpoint once (the kernel spreads them over workers)
        statuses = asyncio.run(_touch(ports.big_gateway, paths))
        time.sleep(SETTLE_S)
        after = workers_rss(gateway)
    finally:
        procs.stop(gateway)
    return {"endpoints": count, "startup_s": startup_s, "at_start": at_start, "after_calls": after,
            "statuses": {str(k): v for k, v in statuses.items()}, "requests": len(paths)}


def idle_connections(server: Managed, url: str, count: int, idle_s: float) -> dict[str, Any]:
    """Run bench/idle_conns.py against ``url``; sample the server's RSS while the connections are held."""
    before = workers_rss(server)
    argv = [sys.executable, str(IDLE_SCRIPT), "--url", url, "--count", str(count), "--idle", str(idle_s)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holding: dict[str, Any] = {}
    during: list[dict[str, float]] = []
    result: dict[str, Any] = {}
    deadline = time.monotonic() + idle_s + IDLE_SLACK_S
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("HOLDING "):
            holding = json.loads(line.removeprefix("HOLDING "))
            time.sleep(min(SETTLE_S, idle_s / 2))
            during = workers_rss(server)
        elif line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        if time.monotonic() > deadline:
            proc.kill()
            break
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    if not result:
        result = {"failed": True, "stderr": stderr[-2000:]}
    return {"before": before, "holding": holding, "during": during, "result": result, "alive": server.alive()}
