"""Serving: uvicorn (uvloop + httptools) with our signals, the admin listener, and ``--workers N``.

* One worker: this process serves traffic and the admin listener.
* N workers: this process is a supervisor.  It starts N worker processes that each bind the traffic port with
  ``SO_REUSEPORT`` (the kernel spreads connections), serves the admin listener itself (``/metrics`` aggregates
  the workers through Prometheus multiprocess mode; ``/readyz`` is ready when every worker is), forwards
  SIGHUP/SIGTERM, and restarts a worker that dies unexpectedly.
* SIGHUP re-reads the file off the event loop: a valid file swaps the runtime (calls in flight keep theirs),
  an invalid one is logged line by line and the running configuration is kept (gateway-config.md).
* SIGTERM stops accepting, lets calls in flight finish for up to ``DRAIN_S`` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass

import uvicorn

from ..config.loader import load_config
from ..config.plan import GatewayPlan
from ..config.problems import Level
from ..observability.logs import AccessLog, configure_logging, log_event
from ..observability.looplag import monitor_loop_lag
from .admin import AdminServer
from .app import GatewayApp
from .protocol import LimitedHttpToolsProtocol
from .runtime import RuntimeHolder

__all__ = ["ServeOptions", "serve"]

DRAIN_S = 30  # gateway-config.md: SIGTERM finishes requests in flight for up to 30 s
WORKER_START_TIMEOUT_S = 30.0
BACKLOG = 2048  # listen backlog (uvicorn default 2048; nginx 511 on Linux)
RESTART_BACKOFF_S = 1.0  # a crashing worker is restarted at most once a second
# Generational GC thresholds for a server (CPython default (700, 10, 10)).  A call allocates a few hundred
# container objects that die young and are freed by reference counting; with the default a young-generation
# collection ran every few calls and a full one every ~100 (≈3 % of CPU in py-spy).  50,000 allocations per
# young collection keeps the young generation within a few MB; reference cycles are still collected.
GC_THRESHOLDS = (50_000, 20, 100)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config_path: str
    host: str
    port: int
    workers: int = 1


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: GatewayApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=LimitedHttpToolsProtocol,  # httptools + request-head size/count/time limits (protocol.py)
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,  # the backend's Date passes through; no second Date header
        proxy_headers=False,  # X-Forwarded-* are ours to interpret (trusted_proxies)
        timeout_graceful_shutdown=DRAIN_S,
        timeout_keep_alive=75,  # longer than typical client pools (nginx keepalive_timeout 75 s)
    )


def _log_problems(problems: list, *, prefix: str = "") -> None:
    for p in problems:
        print(prefix + p.render(), file=sys.stderr, flush=True)


async def _reload(holder: RuntimeHolder, opts: ServeOptions) -> None:
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, load_config, opts.config_path)
    if result.plan is None:
        log_event(logging.ERROR, "reload_rejected", config=opts.config_path,
                  problems=[p.render() for p in result.problems if p.level is Level.ERROR])
        _log_problems(result.problems)
        return
    old = holder.current.plan
    plan = result.plan
    if (plan.listen_host, plan.listen_port) != (old.listen_host, old.listen_port) or \
            (plan.admin_host, plan.admin_port) != (old.admin_host, old.admin_port):
        log_event(logging.WARNING, "reload_listen_changed", detail="listen/admin.listen take effect at next start")
    holder.reload(plan)


async def _serve_worker(plan: GatewayPlan, opts: ServeOptions, sock: socket.socket, *, with_admin: bool,
                        ready_flag: multiprocessing.synchronize.Event | None = None) -> None:
    holder = RuntimeHolder(plan)
    app = GatewayApp(holder, AccessLog())
    server = uvicorn.Server(_uvicorn_config(app))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(holder, opts)))
    admin = None
    if with_admin:
        admin = AdminServer(plan.admin_host, plan.admin_port, ready=lambda: server.started,
                            token=lambda: _admin_token(plan, holder.current.plan if holder.ready_runtime else plan))
        await admin.start()

    async def flush_logs() -> None:
        while True:
            await asyncio.sleep(0.5)
            app.access_log.flush()

    flusher = loop.create_task(flush_logs())
    lag_monitor = loop.create_task(monitor_loop_lag())

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.01)
        if server.started:
            log_event(logging.INFO, "listening", host=opts.host, port=opts.port, pid=os.getpid())
            if ready_flag is not None:
                ready_flag.set()

    announcer = loop.create_task(announce())
    # Everything allocated so far (config, plan, imported modules) lives as long as the process: move it out of
    # the collector's reach so a full collection does not walk it on the hot path (CPython docs, gc.freeze).
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        await server.serve(sockets=[sock])
    finally:
        flusher.cancel()
        announcer.cancel()
        lag_monitor.cancel()
        app.access_log.flush()
        if admin is not None:
            await admin.close()


def _ignore_signals_for_uvicorn() -> None:
    # uvicorn re-raises the captured SIGTERM/SIGINT after its graceful shutdown; with a Python-level no-op as the
    # "original" handler that re-raise does nothing and we exit 0 (gateway-config.md: SIGTERM → exit 0).
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)


def _run_single(plan: GatewayPlan, opts: ServeOptions) -> int:
    import uvloop

    _ignore_signals_for_uvicorn()
    sock = _bind(opts.host, opts.port, reuse_port=False)
    uvloop.run(_serve_worker(plan, opts, sock, with_admin=True))
    return 0


def _worker_main(opts: ServeOptions, ready_flag: multiprocessing.synchronize.Event) -> None:
    import uvloop

    configure_logging()
    _ignore_signals_for_uvicorn()
    result = load_config(opts.config_path)
    if result.plan is None:
        _log_problems(result.problems)
        sys.exit(1)
    sock = _bind(opts.host, opts.port, reuse_port=True)
    uvloop.run(_serve_worker(result.plan, opts, sock, with_admin=False, ready_flag=ready_flag))


def _run_supervisor(plan: GatewayPlan, opts: ServeOptions) -> int:
    mp_dir = tempfile.mkdtemp(prefix="sidecar-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    ctx = multiprocessing.get_context("spawn")
    workers: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.synchronize.Event]] = []

    def spawn() -> tuple[multiprocessing.process.BaseProcess, multiprocessing.synchronize.Event]:
        flag = ctx.Event()
        proc = ctx.Process(target=_worker_main, args=(opts, flag), name="sidecar-gateway-worker", daemon=False)
        proc.start()
        return proc, flag

    # Probe the port once so a bind failure is reported by the supervisor, not N times.
    _bind(opts.host, opts.port, reuse_port=True).close()
    for _ in range(opts.workers):
        workers.append(spawn())

    async def supervise() -> int:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        current = {"token": plan.admin_token}
        admin = AdminServer(plan.admin_host, plan.admin_port, token=lambda: current["token"], multiprocess=True,
                            ready=lambda: all(f.is_set() and p.is_alive() for p, f in workers))
        await admin.start()

        def on_hup() -> None:
            result = load_config(opts.config_path)
            if result.plan is None:
                log_event(logging.ERROR, "reload_rejected", config=opts.config_path)
                _log_problems(result.problems)
                return
            current["token"] = _admin_token(plan, result.plan)
            for p, _ in workers:
                if p.pid is not None and p.is_alive():
                    os.kill(p.pid, signal.SIGHUP)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        loop.add_signal_handler(signal.SIGINT, stopping.set)
        last_restart = 0.0
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await stopping.wait()
            for i, (p, _) in enumerate(workers):
                if not p.is_alive() and not stopping.is_set() and time.monotonic() - last_restart > RESTART_BACKOFF_S:
                    log_event(logging.WARNING, "worker_died", pid=p.pid, exitcode=p.exitcode)
                    _mark_dead(p.pid)
                    workers[i] = spawn()
                    last_restart = time.monotonic()
        for p, _ in workers:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_S + 5
        for p, _ in workers:
            while p.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.is_alive():
                p.kill()
        await admin.close()
        return 0

    import shutil

    import uvloop

    try:
        return uvloop.run(supervise())
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)


def _admin_token(started: GatewayPlan, now: GatewayPlan) -> str | None:
    """The token in force.  ``admin.listen`` only changes at restart, so a reload that drops the token (e.g.
    because its file moved the listener to loopback) keeps the old one while the running listener is not on
    loopback."""
    if now.admin_token or _is_loopback(started.admin_host):
        return now.admin_token
    return started.admin_token


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    with contextlib.suppress(Exception):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def serve(plan: GatewayPlan, opts: ServeOptions) -> int:
    configure_logging()
    if opts.workers <= 1:
        return _run_single(plan, opts)
    return _run_supervisor(plan, opts)
