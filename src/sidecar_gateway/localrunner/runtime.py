"""Execution environments: one ``awslambdaric`` process each, fed through its own Lambda Runtime API listener.

Theory of operation (Lambda "execution environment lifecycle"):

* An environment is a subprocess ``python -m awslambdaric <module>.<function>`` started in its own session
  (so its whole process group can be killed) with the variables Lambda sets (``AWS_LAMBDA_RUNTIME_API``,
  ``_HANDLER``, ``LAMBDA_TASK_ROOT``, ...).  awslambdaric's native client builds its URLs as
  ``http://`` + ``AWS_LAMBDA_RUNTIME_API`` + ``/2018-06-01/...`` and its init-error path opens
  ``http.client.HTTPConnection(AWS_LAMBDA_RUNTIME_API)``, which takes ``host:port`` only; so each environment
  gets its own loopback port rather than a path prefix, and the Runtime API handlers tell environments apart
  by the local port the request arrived on.
* The runtime long-polls ``GET /runtime/invocation/next``, runs the handler and posts ``/response`` or
  ``/error``; an import or syntax error is posted to ``/runtime/init/error`` before the runtime exits.
* One invocation at a time.  ``EnvState`` and ``_TRANSITIONS`` below are the whole lifecycle; a Runtime API
  call that does not fit the current state (a response for another request id, a second response) is refused
  as spurious with 400 ``InvalidRequestID``, like Lambda's own Runtime API, never applied "as best we can".
* ``run`` always ends with an ``Outcome``: the result, the runtime's error document, a timeout (the process
  group is killed first, so a runaway handler and its children are gone when the caller hears about it),
  or ``Runtime.ExitError`` when the process died.
* Everything the process writes (stdout and stderr, one pipe) is read without blocking and printed between
  CloudWatch-style ``START``/``END``/``REPORT`` lines; before ``END`` the pipe is drained synchronously, so a
  handler's last lines always precede it (the runtime writes them before it posts its response).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import enum
import json
import math
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aiohttp import web

from .manifest import FunctionSpec

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "EnvState",
    "ExecutionEnvironment",
    "Invocation",
    "LogSink",
    "Outcome",
    "OutcomeKind",
    "build_runtime_api",
    "error_document",
]

# Invoke payload limit for RequestResponse, request and response alike: 6 MB (Lambda quotas page).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# Lambda gives the init phase 10 s before it gives up on an execution environment (Lambda quotas page).
INIT_TIMEOUT_S = 10.0
# After SIGKILL, how long we wait for the kernel to let us reap the process before we stop waiting.
KILL_REAP_TIMEOUT_S = 5.0
# Pipe reads: one pipe buffer (Linux default 64 KiB) per read, at most this many reads per event-loop callback,
# so a handler that prints without pause cannot starve the event loop (uvicorn's flow-control idea).
OUTPUT_READ_SIZE = 64 * 1024
OUTPUT_READS_PER_CALLBACK = 16
# Draining before START/END/REPORT: everything written so far, bounded (4 MiB) because a runaway handler that
# has not stopped printing (the timeout case) would otherwise keep the drain going for ever.
OUTPUT_READS_PER_DRAIN = 64
# A line longer than this is printed in pieces rather than buffered without bound (CloudWatch cuts events at
# 256 KiB).
MAX_LOG_LINE_BYTES = 256 * 1024
# X-Amz-Log-Result carries "the last 4 KB of the execution log" (Invoke API reference).
LOG_TAIL_BYTES = 4 * 1024
RUNTIME_API_PREFIX = "/2018-06-01/runtime"
LATEST = "$LATEST"


class EnvState(enum.Enum):
    IDLE = "idle"  # no invocation; the runtime waits (or is about to wait) in GET /next
    ASSIGNED = "assigned"  # an invocation waits for the runtime's next GET /next (during a cold start: init runs)
    RUNNING = "running"  # GET /next delivered the invocation; the handler runs
    DEAD = "dead"  # the process exited or was killed; never reused


# The lifecycle, in one table (style rule 4).  DEAD is reachable from everywhere, and is final.
_TRANSITIONS: Mapping[EnvState, frozenset[EnvState]] = {
    EnvState.IDLE: frozenset({EnvState.ASSIGNED, EnvState.DEAD}),
    EnvState.ASSIGNED: frozenset({EnvState.RUNNING, EnvState.DEAD}),
    EnvState.RUNNING: frozenset({EnvState.IDLE, EnvState.DEAD}),
    EnvState.DEAD: frozenset(),
}


class OutcomeKind(enum.Enum):
    RESULT = "result"  # body: the function's result bytes
    FUNCTION_ERROR = "function_error"  # body: an error document; the Invoke answer carries X-Amz-Function-Error


class ReportStatus(enum.Enum):
    """The ``Status`` field Lambda adds to a REPORT line when an invocation did not end normally."""

    SUCCESS = ""  # no Status field
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    body: bytes
    report_status: ReportStatus = ReportStatus.SUCCESS
    error_type: str = ""  # for REPORT "Error Type" when report_status is ERROR


def error_document(error_type: str, message: str) -> bytes:
    """A Lambda platform error document (``errorType``/``errorMessage``), compact JSON."""
    return json.dumps({"errorType": error_type, "errorMessage": message}, separators=(",", ":")).encode()


class InvalidRequestID(Exception):
    """A Runtime API call named a request that is not the one running in this environment (spurious)."""


class LifecycleError(Exception):
    """Internal misuse: an environment was asked for a transition ``_TRANSITIONS`` does not allow."""


@dataclass(eq=False, slots=True)
class Invocation:
    """One Invoke call on its way through an environment.  Created by the server, completed by ``run``."""

    request_id: str
    invoked_function_arn: str
    payload: bytes
    timeout_s: float
    client_context: str | None = None
    trace_id: str = field(default_factory=lambda: _new_trace_id())
    outcome: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    delivered: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    delivered_at: float = 0.0  # loop time when GET /next handed it over
    deadline: float = math.inf  # loop time at which it times out
    log_tail: collections.deque[str] = field(default_factory=collections.deque)
    log_tail_bytes: int = 0

    def log_result(self) -> str:
        """Base64 of the last 4 KB of this invocation's log (``X-Amz-Log-Result``)."""
        return base64.b64encode("".join(self.log_tail).encode()[-LOG_TAIL_BYTES:]).decode()


def _new_trace_id() -> str:
    """An X-Ray trace header as Lambda passes it in Lambda-Runtime-Trace-Id."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


class LogSink:
    """Writes the runner's log lines (START/END/REPORT and function output) to a text stream."""

    def __init__(self, stream: TextIO) -> None:
        self._stream: TextIO | None = stream

    def write(self, function: str, lines: list[str]) -> None:
        if lines and self._stream is not None:
            try:
                self._stream.write("".join(f"[{function}] {line}\n" for line in lines))
                self._stream.flush()
            except (OSError, ValueError):  # the terminal or pipe went away: keep serving, stop logging
                self._stream = None


class ExecutionEnvironment:
    """One awslambdaric process and the Runtime API state that feeds it."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        functions_dir: Path,
        runtime_api_port: int,
        region: str,
        python: str,
        log: LogSink,
        on_exit: Callable[[ExecutionEnvironment], None],
    ) -> None:
        # For the environment's lifetime.
        self.spec = spec
        self.runtime_api_port = runtime_api_port
        self._functions_dir = functions_dir
        self._region = region
        self._python = python
        self._log = log
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._process: asyncio.subprocess.Process | None = None
        self._output_fd = -1
        self._partial_line = b""
        self._exit_watch: asyncio.Task[None] | None = None
        self._spawned_at = 0.0
        self._init_duration_ms: float | None = None  # measured at the first GET /next; reported once
        self._init_error: bytes | None = None
        self._peak_memory_mb = 0
        self.state = EnvState.IDLE
        self.invocation_count = 0
        # Per invocation.
        self._inbox: asyncio.Queue[Invocation | None] = asyncio.Queue()
        self._current: Invocation | None = None

    def __repr__(self) -> str:
        return (f"<ExecutionEnvironment {self.spec.name} pid={self.pid} port={self.runtime_api_port}"
                f" state={self.state.value} invocations={self.invocation_count}>")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def _transition(self, new: EnvState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LifecycleError(f"{self!r}: no transition {self.state.value} -> {new.value}")
        self.state = new

    async def start(self) -> None:
        """Spawn the runtime process (cold start).  Raises ``OSError`` when it cannot be started."""
        read_fd, write_fd = os.pipe()
        try:
            self._spawned_at = self._loop.time()
            self._process = await asyncio.create_subprocess_exec(
                self._python, "-m", "awslambdaric", self.spec.handler,
                stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                cwd=self._functions_dir, env=self._environment(), start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._output_fd = read_fd
        os.set_blocking(read_fd, False)
        self._loop.add_reader(read_fd, self._read_output, OUTPUT_READS_PER_CALLBACK)
        self._exit_watch = asyncio.create_task(self._watch_exit(), name=f"exit-watch-{self.spec.name}")

    def _environment(self) -> dict[str, str]:
        """The variables Lambda defines for a Python runtime, then the function's own (which may override)."""
        task_root = str(self._functions_dir)
        inherited_path = os.environ.get("PYTHONPATH")
        env = {
            # Kept from the runner so the same interpreter and its site-packages are found.
            **{k: v for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV") if (v := os.environ.get(k))},
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.runtime_api_port}",
            "LAMBDA_TASK_ROOT": task_root,
            "_HANDLER": self.spec.handler,
            "AWS_LAMBDA_FUNCTION_NAME": self.spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": LATEST,
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(math.ceil(self.spec.timeout_s)),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[{LATEST}]{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self._region,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
            "PYTHONPATH": task_root + (os.pathsep + inherited_path if inherited_path else ""),
            # Module-level prints (before awslambdaric wraps stdout) must not sit in a block buffer.
            "PYTHONUNBUFFERED": "1",
            "TZ": ":UTC",
        }
        env.update(self.spec.environment)
        return env

    async def _watch_exit(self) -> None:
        assert self._process is not None  # set by start(), which creates this task
        code = await self._process.wait()
        self._kill_group()  # children the handler left behind die with the runtime
        self._read_output(OUTPUT_READS_PER_DRAIN)
        self._close_output()
        previous = self.state
        self._transition(EnvState.DEAD)
        self._inbox.put_nowait(None)  # release a pending GET /next
        invocation = self._current
        if invocation is not None and not invocation.outcome.done():
            if self._init_error is not None:
                outcome = Outcome(OutcomeKind.FUNCTION_ERROR, self._init_error, ReportStatus.ERROR,
                                  _error_type(self._init_error))
            else:
                detail = _exit_detail(code)
                outcome = Outcome(
                    OutcomeKind.FUNCTION_ERROR,
                    error_document("Runtime.ExitError",
                                   f"RequestId: {invocation.request_id} Error: Runtime exited with error: {detail}"),
                    ReportStatus.ERROR, "Runtime.ExitError",
                )
            self._finish(invocation, outcome, delivered=previous is EnvState.RUNNING)
        self._on_exit(self)

    def _kill_group(self) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)  # pgid == pid: start_new_session made it the leader

    async def kill(self) -> None:
        """SIGKILL the whole process group and wait until the process is reaped (bounded)."""
        self._kill_group()
        if self._exit_watch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit_watch), KILL_REAP_TIMEOUT_S)

    # -- one invocation ----------------------------------------------------------------------------------------

    async def run(self, invocation: Invocation) -> Outcome:
        """Run ``invocation`` here; always returns an outcome (see the module docstring)."""
        if self.state is EnvState.DEAD:  # died between placement and now (or killed at shutdown)
            return Outcome(OutcomeKind.FUNCTION_ERROR, error_document(
                "Runtime.ExitError", f"RequestId: {invocation.request_id} Error: Runtime exited"), ReportStatus.ERROR,
                "Runtime.ExitError")
        self._transition(EnvState.ASSIGNED)
        self._current = invocation
        self.invocation_count += 1
        self._inbox.put_nowait(invocation)
        done, _ = await asyncio.wait({invocation.delivered, invocation.outcome}, timeout=INIT_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            message = f"RequestId: {invocation.request_id} Error: init did not complete within {INIT_TIMEOUT_S:g} s"
            self._finish(invocation, Outcome(OutcomeKind.FUNCTION_ERROR, error_document("Sandbox.Timedout", message),
                                             ReportStatus.TIMEOUT), delivered=False)
            await self.kill()
        elif not invocation.outcome.done():
            remaining = invocation.deadline - self._loop.time()
            done, _ = await asyncio.wait({invocation.outcome}, timeout=max(remaining, 0.0))
            if not done:
                message = f"{invocation.request_id} Task timed out after {invocation.timeout_s:.2f} seconds"
                self._read_output(OUTPUT_READS_PER_DRAIN)
                self._emit([f"{_utc_now()} {message}"])
                self._finish(invocation, Outcome(OutcomeKind.FUNCTION_ERROR,
                                                 error_document("Sandbox.Timedout", message), ReportStatus.TIMEOUT),
                             delivered=True)
                await self.kill()
        return invocation.outcome.result()

    async def next_invocation(self) -> Invocation | None:
        """GET /next: wait for the assigned invocation and hand it over; ``None`` once the environment died."""
        invocation = await self._inbox.get()
        if invocation is None or self.state is not EnvState.ASSIGNED or invocation is not self._current:
            return None
        now = self._loop.time()
        if self._init_duration_ms is None:
            self._init_duration_ms = (now - self._spawned_at) * 1000
        self._transition(EnvState.RUNNING)
        invocation.delivered_at = now
        invocation.deadline = now + invocation.timeout_s
        invocation.delivered.set_result(None)
        self._read_output(OUTPUT_READS_PER_DRAIN)  # init output belongs before START
        self._max_memory_mb()  # a first reading, in case the process dies before REPORT
        self._emit([f"START RequestId: {invocation.request_id} Version: {LATEST}"])
        return invocation

    def post_response(self, request_id: str, body: bytes) -> None:
        invocation = self._running(request_id)
        if len(body) > MAX_PAYLOAD_BYTES:
            outcome = Outcome(
                OutcomeKind.FUNCTION_ERROR,
                error_document("Function.ResponseSizeTooLarge", "Response payload size exceeded maximum allowed"
                               f" payload size ({MAX_PAYLOAD_BYTES} bytes)."),
                ReportStatus.ERROR, "Function.ResponseSizeTooLarge",
            )
        else:
            outcome = Outcome(OutcomeKind.RESULT, body)
        self._transition(EnvState.IDLE)
        self._finish(invocation, outcome, delivered=True)

    def post_error(self, request_id: str, body: bytes, error_type: str | None) -> None:
        invocation = self._running(request_id)
        if _error_type(body) is None:  # not a JSON error document: make one, as Lambda does
            body = error_document(error_type or "Unhandled", body.decode("utf-8", "replace"))
        self._transition(EnvState.IDLE)
        self._finish(invocation, Outcome(OutcomeKind.FUNCTION_ERROR, body), delivered=True)

    def post_init_error(self, body: bytes, error_type: str | None) -> None:
        """The runtime could not load the handler; it exits next, and ``_watch_exit`` answers with this."""
        if _error_type(body) is None:
            body = error_document(error_type or "Runtime.Unknown", body.decode("utf-8", "replace"))
        self._init_error = body

    def _running(self, request_id: str) -> Invocation:
        invocation = self._current
        if self.state is not EnvState.RUNNING or invocation is None or invocation.request_id != request_id:
            raise InvalidRequestID(f"{self!r}: no running invocation {request_id}")
        return invocation

    def _finish(self, invocation: Invocation, outcome: Outcome, *, delivered: bool) -> None:
        if invocation.outcome.done():
            return
        self._read_output(OUTPUT_READS_PER_DRAIN)
        self._flush_partial_line()
        now = self._loop.time()
        lines = []
        if delivered:
            duration_ms = (now - invocation.delivered_at) * 1000
            report = (
                f"REPORT RequestId: {invocation.request_id}\tDuration: {duration_ms:.2f} ms"
                f"\tBilled Duration: {math.ceil(duration_ms)} ms\tMemory Size: {self.spec.memory_mb} MB"
                f"\tMax Memory Used: {self._max_memory_mb()} MB"
            )
            if self.invocation_count == 1 and self._init_duration_ms is not None:
                report += f"\tInit Duration: {self._init_duration_ms:.2f} ms"
            lines.append(f"END RequestId: {invocation.request_id}")
        else:
            report = f"INIT_REPORT Init Duration: {(now - self._spawned_at) * 1000:.2f} ms\tPhase: init"
        if outcome.report_status is not ReportStatus.SUCCESS:
            report += f"\tStatus: {outcome.report_status.value}"
            if outcome.error_type:
                report += f"\tError Type: {outcome.error_type}"
        lines.append(report)
        self._emit(lines)
        self._current = None
        invocation.outcome.set_result(outcome)

    def _max_memory_mb(self) -> int:
        """Peak resident set size of the runtime process (VmHWM), like Lambda's 'Max Memory Used'; the last value
        read when the process is already gone (0 where /proc does not exist)."""
        if self._process is not None:
            try:
                with open(f"/proc/{self._process.pid}/status", encoding="ascii") as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            self._peak_memory_mb = max(self._peak_memory_mb, math.ceil(int(line.split()[1]) / 1024))
                            break
            except (OSError, ValueError, IndexError):
                pass  # not Linux, or the process is gone
        return self._peak_memory_mb

    # -- output ------------------------------------------------------------------------------------------------

    def _read_output(self, max_reads: int) -> None:
        """Read what the process wrote (up to ``max_reads`` pipe buffers) and print it line by line."""
        reads = 0
        lines: list[str] = []
        while self._output_fd >= 0 and reads < max_reads:
            reads += 1
            try:
                chunk = os.read(self._output_fd, OUTPUT_READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._close_output()
                break
            pieces = (self._partial_line + chunk).split(b"\n")
            self._partial_line = pieces.pop()
            if len(self._partial_line) > MAX_LOG_LINE_BYTES:
                pieces.append(self._partial_line)
                self._partial_line = b""
            lines.extend(_log_lines(pieces))
        self._emit(lines)

    def _flush_partial_line(self) -> None:
        if self._partial_line:
            self._emit(_log_lines([self._partial_line]))
            self._partial_line = b""

    def _close_output(self) -> None:
        if self._output_fd >= 0:
            self._loop.remove_reader(self._output_fd)
            os.close(self._output_fd)
            self._output_fd = -1
            self._flush_partial_line()

    def _emit(self, lines: list[str]) -> None:
        if not lines:
            return
        invocation = self._current
        if invocation is not None:
            for line in lines:
                invocation.log_tail.append(line + "\n")
                invocation.log_tail_bytes += len(line) + 1
            while invocation.log_tail_bytes > LOG_TAIL_BYTES and len(invocation.log_tail) > 1:
                invocation.log_tail_bytes -= len(invocation.log_tail.popleft())
        self._log.write(self.spec.name, lines)


def _log_lines(pieces: list[bytes]) -> list[str]:
    # awslambdaric joins a multi-line error log with "\r" so CloudWatch keeps it one event; a terminal wants lines.
    # Function output is hostile to a terminal: other control characters are shown escaped, never interpreted.
    return [
        line.translate(_CONTROL_ESCAPES)
        for piece in pieces
        for line in piece.decode("utf-8", "replace").replace("\r", "\n").split("\n")
    ]


_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F) if code != ord("\t")}


def _exit_detail(code: int) -> str:
    """How Lambda words a runtime's end: ``exit status 1`` or ``signal: killed``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name.removeprefix("SIG").lower()
    except ValueError:
        name = str(-code)
    return f"signal: {'killed' if name == 'kill' else name}"


def _error_type(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("errorType"), str):
        return str(document["errorType"])
    return None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


# -- the Runtime API ----------------------------------------------------------------------------------------------

_RUNTIME_API_ACCEPTED = json.dumps({"status": "OK"}).encode()
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


def build_runtime_api(resolve: Callable[[web.Request], ExecutionEnvironment | None]) -> web.Application:
    """The Lambda Runtime API; ``resolve`` maps a request to its environment (by the port it arrived on)."""
    app = web.Application(client_max_size=2 * MAX_PAYLOAD_BYTES)  # oversized responses are refused by us, not aiohttp

    async def next_invocation(request: web.Request) -> web.StreamResponse:
        env = resolve(request)
        invocation = await env.next_invocation() if env is not None else None
        if invocation is None:
            return _runtime_error(410, "Runtime.EnvironmentGone", "the execution environment is shutting down")
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000 + invocation.timeout_s * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.invoked_function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
            "Content-Type": "application/json",
        }
        if invocation.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        return web.Response(body=invocation.payload, headers=headers)

    async def response(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        env = resolve(request)
        try:
            if env is None:
                raise InvalidRequestID("unknown execution environment")
            env.post_response(request.match_info["request_id"], body)
        except InvalidRequestID:
            return _runtime_error(400, "InvalidRequestID", "Invalid request ID")
        return _accepted()

    async def error(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        env = resolve(request)
        try:
            if env is None:
                raise InvalidRequestID("unknown execution environment")
            env.post_error(request.match_info["request_id"], body, request.headers.get(_ERROR_TYPE_HEADER))
        except InvalidRequestID:
            return _runtime_error(400, "InvalidRequestID", "Invalid request ID")
        return _accepted()

    async def init_error(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        env = resolve(request)
        if env is None:
            return _runtime_error(403, "Runtime.InvalidEnvironment", "unknown execution environment")
        env.post_init_error(body, request.headers.get(_ERROR_TYPE_HEADER))
        return _accepted()

    app.router.add_get(f"{RUNTIME_API_PREFIX}/invocation/next", next_invocation)
    app.router.add_post(f"{RUNTIME_API_PREFIX}/invocation/{{request_id}}/response", response)
    app.router.add_post(f"{RUNTIME_API_PREFIX}/invocation/{{request_id}}/error", error)
    app.router.add_post(f"{RUNTIME_API_PREFIX}/init/error", init_error)
    return app


def _accepted() -> web.Response:
    return web.Response(status=202, body=_RUNTIME_API_ACCEPTED, content_type="application/json")


def _runtime_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_document(error_type, message), content_type="application/json")
