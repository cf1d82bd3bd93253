"""Serving: uvicorn (uvloop + httptools) with our signals, the admin listener, and ``--workers N``.

* One worker: this process serves traffic and the admin listener.
* N workers: this process is a supervisor.  It starts N worker processes that each bind the traffic port with
  ``SO_REUSEPORT`` (the kernel spreads connections), serves the admin listener itself (``/metrics`` merges the
  workers' metric snapshots, observability/metrics.py; ``/readyz`` is ready when every worker is), forwards
  SIGHUP/SIGTERM, and restarts a worker that dies unexpectedly.
* SIGHUP re-reads the file off the event loop: a valid file swaps the runtime (calls in flight keep theirs),
  an invalid one is logged line by line and the running configuration is kept (gateway-config.md).
* SIGTERM stops accepting, lets calls in flight finish for up to ``DRAIN_S`` and exits 0.

Graceful shutdown without lost connections (``_DrainingServer``, in every worker and in single-process mode)
-----------------------------------------------------------------------------------------------------------

The kernel completes TCP handshakes on a listening socket by itself and queues the connections in the accept
backlog until the process calls ``accept()``; the client's ``connect()`` has succeeded and it sends its request.
uvicorn's shutdown closes the listener, and closing a listener resets every connection still in its backlog: the
client sees its request fail with "connection reset" although it was never refused.  With ``--workers N`` each
worker has its own ``SO_REUSEPORT`` listener and so its own backlog: every worker drains its own.

At shutdown, before uvicorn's own (which closes listeners and waits for calls in flight), each worker:

1. attaches a socket filter to its listener (Linux, ``SO_ATTACH_FILTER``, classic BPF) that drops segments with SYN
   set and ACK clear: from now on no new handshake starts on this listener.  A client whose SYN is dropped is not
   connected; its kernel retransmits the SYN (Linux: after 1 s) and then meets a closed port ("connection
   refused", the ordinary "not accepted" outcome), a sibling worker still listening, or a successor process
   bound to the port.  Segments of established connections and the last ACK of a handshake pass the filter;
2. accepts every connection waiting in the backlog (non-blocking ``accept()`` until ``EAGAIN``) and hands each to
   the event loop with uvicorn's protocol factory (``loop.connect_accepted_socket``): it is served and tracked
   like any other connection, so the drain below waits for it;
3. waits ``HANDSHAKE_SETTLE_S`` (the event loop keeps accepting normally meanwhile) so handshakes whose SYN-ACK
   was already sent complete and are queued;
4. accepts the backlog once more and closes the listener in the same synchronous step: nothing can be queued
   between the last ``accept()`` and ``close()`` that the filter would let in.

Each connection so accepted gets its request answered with ``Connection: close`` (protocol.py ``shutdown()``),
within ``DRAIN_S`` like every call in flight.

Remaining windows (see ``_DrainingServer``): a handshake whose last ACK reaches the gateway more than
``HANDSHAKE_SETTLE_S`` after step 1 (client round trip beyond that, or that ACK lost) is still half-open when the
listener closes; its client believed itself connected and gets a reset.  Without the filter (not Linux, or the
kernel refused it) steps 1 and 3 are skipped and the window is the microseconds between the last ``accept()`` and
``close()`` plus the handshakes in flight at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import struct
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
HANDSHAKE_SETTLE_S = 0.25
"""Shutdown: time between refusing new handshakes and the final backlog drain, for handshakes already answered
with a SYN-ACK to complete (a client round trip; loopback and a data centre are far below it)."""
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


_SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>
# Classic BPF over a TCP segment (a TCP socket's filter sees the segment from its TCP header): drop when SYN is set
# and ACK is not (a new connection attempt); keep everything else whole.  (code, jt, jf, k) per instruction.
_DROP_SYN_PROGRAM = (
    (0x30, 0, 0, 13),  # ldb [13]        TCP flags byte
    (0x54, 0, 0, 0x12),  # and #0x12      SYN | ACK
    (0x15, 0, 1, 0x02),  # jeq #0x02      only SYN → next (drop), else skip it (keep)
    (0x06, 0, 0, 0),  # ret #0           drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1  keep
)


def _refuse_new_handshakes(sock: socket.socket) -> bool:
    """Attach the SYN-dropping filter to the listener ``sock``; False when the platform or kernel refuses it.
    Connections accepted later inherit the filter: it only ever drops a bare SYN, never part of a connection."""
    if not sys.platform.startswith("linux"):
        return False
    code = b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN_PROGRAM)
    program = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(_DROP_SYN_PROGRAM), ctypes.addressof(program))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)  # the kernel copies the program
    except OSError as exc:
        log_event(logging.WARNING, "shutdown_filter_unavailable", error=str(exc))
        return False
    return True


def _accept_backlog(sock: socket.socket) -> list[socket.socket]:
    """Every connection waiting in the accept backlog of the non-blocking listener ``sock`` (until ``EAGAIN``)."""
    accepted: list[socket.socket] = []
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return accepted
        except ConnectionAbortedError:  # reset by its client while queued
            continue
        except OSError as exc:  # out of descriptors or memory: what is left is reset at close (logged)
            log_event(logging.ERROR, "shutdown_backlog_accept_failed", error=str(exc), accepted=len(accepted))
            return accepted
        accepted.append(conn)


class _DrainingServer(uvicorn.Server):
    """uvicorn's server whose shutdown first serves the connections waiting in the accept backlog of each listener
    instead of letting the listener's close reset them (module docstring, steps 1-4), then runs uvicorn's shutdown
    (close listeners, ``shutdown()`` every connection, wait for them and the calls in flight up to ``DRAIN_S``).

    Remaining windows, in which a client whose ``connect()`` succeeded can still be reset without an answer:

    * its handshake's last ACK reaches the gateway more than ``HANDSHAKE_SETTLE_S`` after shutdown began (a round
      trip beyond that, or the ACK lost and retransmitted): the half-open connection is dropped with the listener.
      With ``--workers N`` on Linux >= 5.14, ``net.ipv4.tcp_migrate_req = 1`` hands such connections (and any left
      in a backlog) to a sibling listener while one is open;
    * without the SYN filter (not Linux, or ``setsockopt`` refused, logged ``shutdown_filter_unavailable``): the
      connections completed between the last ``accept()`` and ``close()`` (one synchronous step, microseconds)
      and the handshakes in flight at that moment;
    * ``accept()`` failing for want of descriptors (logged ``shutdown_backlog_accept_failed``).

    Clients that connect after shutdown began are not connected (their SYN is dropped, then refused once the
    listener is closed): "stops accepting".
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        listeners = [sock for sock in sockets or () if sock.fileno() != -1]
        if listeners:
            await self._drain_backlogs(listeners)
        await super().shutdown(sockets=sockets)

    async def _drain_backlogs(self, listeners: list[socket.socket]) -> None:
        filtered = all([_refuse_new_handshakes(sock) for sock in listeners])  # every listener, no short-circuit
        drained = 0
        if filtered:
            early = [conn for sock in listeners for conn in _accept_backlog(sock)]
            drained += await self._serve_accepted(early)
            await asyncio.sleep(HANDSHAKE_SETTLE_S)
        # The final drain and the close in one synchronous step: nothing else runs in between.
        late = [conn for sock in listeners for conn in _accept_backlog(sock)]
        for server in self.servers:
            server.close()
        for sock in listeners:
            sock.close()
        drained += await self._serve_accepted(late)
        log_event(logging.INFO, "shutdown_backlog_drained", pid=os.getpid(), connections=drained,
                  syn_filter=filtered)

    async def _serve_accepted(self, conns: list[socket.socket]) -> int:
        """Serve connections accepted by the drain like uvicorn's own (same protocol factory, tracked in
        ``server_state.connections``), each told about the shutdown from its creation (protocol ``shutdown()``:
        its request is answered with ``Connection: close``)."""
        if not conns:
            return 0
        loop = asyncio.get_running_loop()
        config, state, app_state = self.config, self.server_state, self.lifespan.state

        def create_protocol() -> asyncio.Protocol:  # uvicorn Server.startup's factory
            protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=app_state, _loop=loop)
            protocol.shutdown()  # no request yet: marks it and starts the first-request grace
            return protocol

        results = await asyncio.gather(*(loop.connect_accepted_socket(create_protocol, conn) for conn in conns),
                                       return_exceptions=True)
        served = 0
        for conn, result in zip(conns, results, strict=True):
            if isinstance(result, BaseException):
                log_event(logging.WARNING, "shutdown_backlog_connection_failed", error=repr(result))
                conn.close()
            else:
                served += 1
        return served


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
    server = _DrainingServer(_uvicorn_config(app))
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


def serve(plan: GatewayPlan, opts: ServeOptions) -> int:
    configure_logging()
    if opts.workers <= 1:
        return _run_single(plan, opts)
    return _run_supervisor(plan, opts)
