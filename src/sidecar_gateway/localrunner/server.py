"""The local Lambda service: the Invoke API in front, execution environments behind.

Theory of operation:

* ``POST /2015-03-31/functions/{FunctionName}/invocations`` is answered like Lambda's Invoke (API reference):
  optional SigV4 verification (``signature.py``), the function name resolved from a name or an ARN
  (``naming.py``), then by ``X-Amz-Invocation-Type``: ``RequestResponse`` runs the function and answers 200 with
  its result (or its error document and ``X-Amz-Function-Error: Unhandled``); ``Event`` answers 202 at once and
  runs it in the background; ``DryRun`` answers 204.  Service errors are Lambda's JSON errors with
  ``x-amzn-ErrorType`` (see ``_ERRORS``).
* Each function has a ``FunctionPool``.  Placing an invocation is pure bookkeeping that returns a decision
  (httpcore's ``_assign_requests_to_connections``): reuse an idle environment (warm), start a new one when fewer
  than ``concurrency`` exist (cold), or refuse (429, or wait for ``Event``).  Starting the process happens
  outside the decision.
* ``GET/DELETE /_runner/invocations`` and ``GET /_runner/environments`` expose what callers sent and which
  environments run, so tests elsewhere can assert what the gateway sent (access key, session token, payload).
* ``stop`` kills every environment's process group before closing the listeners.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import datetime as dt
import enum
import json
import logging
import socket
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from .manifest import FunctionSpec
from .naming import InvalidFunctionName, decode_segment, function_arn, parse_function_name
from .runtime import (
    LATEST,
    MAX_PAYLOAD_BYTES,
    EnvState,
    ExecutionEnvironment,
    Invocation,
    LogSink,
    Outcome,
    OutcomeKind,
    build_runtime_api,
    error_document,
)
from .signature import SignatureRejected, parse_authorization, verify_signature

__all__ = ["DEFAULT_ACCOUNT_ID", "DEFAULT_REGION", "FunctionPool", "LocalLambdaRunner", "Placement"]

_log = logging.getLogger(__name__)

# The example account of the AWS documentation; used in ARNs when the caller did not name an account.
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
# Event (asynchronous) invocations: payload up to 1 MB (raised from 256 KB in 2025, Lambda quotas page).
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
# Event invocations waiting for a free environment, per function, before we answer 429 instead of queueing.
MAX_QUEUED_EVENTS = 1_000
# Invocation records kept for /_runner/invocations (oldest dropped first); a test run stays far below.
MAX_RECORDED_INVOCATIONS = 10_000
# On stop, how long in-flight Invoke requests get to receive their (error) answers before connections close.
SHUTDOWN_GRACE_S = 2.0
INVOKE_PATH = "/2015-03-31/functions/{function_name}/invocations"
_INVOKE_PATH_PREFIX = "/2015-03-31/functions/"
_INVOKE_PATH_SUFFIX = "/invocations"


class _Error(enum.Enum):
    """Lambda service errors: (HTTP status, ``x-amzn-ErrorType``).  Messages follow Lambda's where known."""

    RESOURCE_NOT_FOUND = (404, "ResourceNotFoundException")
    TOO_MANY_REQUESTS = (429, "TooManyRequestsException")
    INVALID_REQUEST_CONTENT = (400, "InvalidRequestContentException")
    INVALID_PARAMETER = (400, "InvalidParameterValueException")
    VALIDATION = (400, "ValidationException")
    REQUEST_TOO_LARGE = (413, "RequestEntityTooLargeException")
    SERVICE = (503, "ServiceException")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def error_type(self) -> str:
        return self.value[1]


class InvocationType(enum.Enum):
    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


class Placement(enum.Enum):
    WARM = "warm"  # an idle environment was claimed
    COLD = "cold"  # a slot was reserved; the caller starts a new environment
    THROTTLED = "throttled"  # every slot is busy


class FunctionPool:
    """The environments of one function.  ``place`` decides; the runner does the spawning and the waiting."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self._idle: collections.deque[ExecutionEnvironment] = collections.deque()
        self._busy: set[ExecutionEnvironment] = set()
        self._starting = 0
        self._queued_events = 0
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return (f"<FunctionPool {self.spec.name} idle={len(self._idle)} busy={len(self._busy)}"
                f" starting={self._starting} queued={self._queued_events} limit={self.spec.concurrency}>")

    @property
    def environments(self) -> list[ExecutionEnvironment]:
        return [*self._busy, *self._idle]

    def _in_use(self) -> int:
        return len(self._busy) + self._starting

    def place(self) -> tuple[Placement, ExecutionEnvironment | None]:
        """Reuse an idle environment, else reserve a cold start, else throttle (in that order)."""
        while self._idle:
            env = self._idle.pop()  # most recently used first: the warmest
            if env.state is EnvState.IDLE:
                self._busy.add(env)
                return Placement.WARM, env
        if self._in_use() < self.spec.concurrency:
            self._starting += 1
            return Placement.COLD, None
        return Placement.THROTTLED, None

    async def place_when_available(self) -> tuple[Placement, ExecutionEnvironment | None]:
        """``place``, waiting while throttled (Event invocations queue instead of failing)."""
        self._queued_events += 1
        try:
            while True:
                placement, env = self.place()
                if placement is not Placement.THROTTLED:
                    return placement, env
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
        finally:
            self._queued_events -= 1

    @property
    def event_queue_full(self) -> bool:
        return self._queued_events >= MAX_QUEUED_EVENTS

    def started(self, env: ExecutionEnvironment) -> None:
        self._starting -= 1
        self._busy.add(env)

    def start_failed(self) -> None:
        self._starting -= 1
        self._notify()

    def release(self, env: ExecutionEnvironment) -> None:
        """The invocation is over: keep the environment warm unless it died."""
        self._busy.discard(env)
        if env.state is EnvState.IDLE and env not in self._idle:
            self._idle.append(env)
        self._notify()

    def discard(self, env: ExecutionEnvironment) -> None:
        self._busy.discard(env)
        with contextlib.suppress(ValueError):
            self._idle.remove(env)
        self._notify()

    def _notify(self) -> None:
        """Capacity may have changed: wake every queued Event invocation to retry ``place``."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class LocalLambdaRunner:
    """A local Lambda service for the functions of one directory.  ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        functions_dir: Path,
        functions: Mapping[str, FunctionSpec],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        verify_sigv4: bool = False,
        credentials: Mapping[str, str] | None = None,
        python: str = sys.executable,
        log_stream: TextIO | None = None,
    ) -> None:
        if verify_sigv4 and not credentials:
            raise ValueError("verify_sigv4 needs credentials: a map of access key id -> secret access key")
        # Configuration, fixed for the runner's lifetime.
        self.functions_dir = functions_dir.resolve()
        self.functions = dict(functions)
        self.region = region
        self.account_id = account_id
        self._host = host
        self._port = port
        self._verify_sigv4 = verify_sigv4
        self._credentials = dict(credentials or {})
        self._python = python
        self._log = LogSink(log_stream if log_stream is not None else sys.stdout)
        # Live state.
        self._pools = {name: FunctionPool(spec) for name, spec in self.functions.items()}
        self._by_port: dict[int, ExecutionEnvironment] = {}
        self._sites: dict[int, web.SockSite] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_RECORDED_INVOCATIONS)
        self._invoke_runner: web.AppRunner | None = None
        self._runtime_runner: web.AppRunner | None = None
        self._stopping = False
        self.url = ""

    @property
    def verifies_signatures(self) -> bool:
        return self._verify_sigv4

    def __repr__(self) -> str:
        return f"<LocalLambdaRunner {self.url or 'not started'} pools={list(self._pools.values())!r}>"

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; returns the base URL (``http://host:port``) to use as the Lambda ``endpoint_url``."""
        self._runtime_runner = web.AppRunner(build_runtime_api(self._environment_of), access_log=None,
                                             shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runtime_runner.setup()
        app = web.Application(client_max_size=2 * MAX_PAYLOAD_BYTES)  # larger bodies get Lambda's 413, not aiohttp's
        app.router.add_post(INVOKE_PATH, self._handle_invoke)
        app.router.add_get("/_runner/invocations", self._handle_list_invocations)
        app.router.add_delete("/_runner/invocations", self._handle_clear_invocations)
        app.router.add_get("/_runner/environments", self._handle_list_environments)
        self._invoke_runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._invoke_runner.setup()
        sock = _listening_socket(self._host, self._port)  # our own socket: port 0 then tells us the chosen port
        try:
            await web.SockSite(self._invoke_runner, sock).start()
        except BaseException:
            sock.close()
            raise
        host, port = sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Kill every execution environment (process groups), then close the listeners."""
        self._stopping = True
        environments = [env for pool in self._pools.values() for env in pool.environments]
        environments += [env for env in self._by_port.values() if env not in environments]
        await asyncio.gather(*(env.kill() for env in environments))
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._invoke_runner is not None:
            await self._invoke_runner.cleanup()
        if self._runtime_runner is not None:
            await self._runtime_runner.cleanup()

    # -- introspection -----------------------------------------------------------------------------------------

    @property
    def invocations(self) -> list[dict[str, Any]]:
        return list(self._records)

    def environments(self) -> list[dict[str, Any]]:
        return [
            {"function": pool.spec.name, "pid": env.pid, "state": env.state.value,
             "invocations": env.invocation_count, "runtime_api_port": env.runtime_api_port}
            for pool in self._pools.values() for env in pool.environments
        ]

    async def _handle_list_invocations(self, request: web.Request) -> web.Response:
        return web.json_response(self.invocations)

    async def _handle_clear_invocations(self, request: web.Request) -> web.Response:
        self._records.clear()
        return web.Response(status=204)

    async def _handle_list_environments(self, request: web.Request) -> web.Response:
        return web.json_response(self.environments())

    # -- Invoke ------------------------------------------------------------------------------------------------

    async def _handle_invoke(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        authorization = parse_authorization(request.headers.get("Authorization"))
        raw_segment = _raw_function_segment(request.raw_path)
        record: dict[str, Any] = {
            "request_id": str(uuid.uuid4()),
            "function": None,
            "qualifier": None,
            "function_name": decode_segment(raw_segment),
            "raw_path": request.raw_path,
            "invocation_type": request.headers.get("X-Amz-Invocation-Type", InvocationType.REQUEST_RESPONSE.value),
            "access_key": authorization.access_key if authorization else None,
            "has_security_token": "X-Amz-Security-Token" in request.headers,
            "signature_verified": False,
            "payload": _recordable(body),
            "status": None,
            "function_error": None,
        }
        self._records.append(record)
        response = await self._invoke(request, body, record)
        record["status"] = response.status
        record["function_error"] = response.headers.get("X-Amz-Function-Error")
        response.headers.setdefault("x-amzn-RequestId", record["request_id"])
        return response

    async def _invoke(self, request: web.Request, body: bytes, record: dict[str, Any]) -> web.Response:
        region = self.region
        if self._verify_sigv4:
            try:
                verified = verify_signature(
                    method=request.method, host=request.host, raw_path_qs=request.raw_path,
                    headers=request.headers.items(), body=body, secrets=self._credentials,
                    now=dt.datetime.now(dt.UTC),
                )
            except SignatureRejected as exc:
                return _json_error(exc.status, exc.error_type, {"message": exc.message})
            record["signature_verified"] = True
            region = verified.region
        elif (authorization := parse_authorization(request.headers.get("Authorization"))) is not None:
            region = authorization.region
        try:
            ref = parse_function_name(record["function_name"], request.query.get("Qualifier"))
        except InvalidFunctionName as exc:
            return _lambda_error(_Error.VALIDATION, str(exc))
        record["function"], record["qualifier"] = ref.name, ref.qualifier
        arn = function_arn(ref.region or region, ref.account_id or self.account_id, ref.name)
        pool = self._pools.get(ref.name)
        if pool is None:
            return _lambda_error(_Error.RESOURCE_NOT_FOUND, f"Function not found: {arn}")
        try:
            invocation_type = InvocationType(record["invocation_type"])
        except ValueError:
            return _lambda_error(_Error.INVALID_PARAMETER,
                                 f"Unsupported invocation type: {record['invocation_type']!r}")
        if invocation_type is InvocationType.DRY_RUN:
            return web.Response(status=204, headers={"X-Amz-Executed-Version": LATEST})
        limit = MAX_EVENT_PAYLOAD_BYTES if invocation_type is InvocationType.EVENT else MAX_PAYLOAD_BYTES
        if len(body) > limit:
            return _lambda_error(_Error.REQUEST_TOO_LARGE,
                                 f"Request must be smaller than {limit} bytes for the InvokeFunction operation")
        payload = body if body.strip() else b"{}"  # no Payload: the handler receives {}, as on Lambda
        try:
            json.loads(payload)
        except ValueError as exc:
            return _lambda_error(_Error.INVALID_REQUEST_CONTENT, f"Could not parse request body into json: {exc}")
        try:
            client_context = _client_context(request.headers.get("X-Amz-Client-Context"))
        except ValueError:
            return _lambda_error(_Error.INVALID_REQUEST_CONTENT,
                                 "Client context must be a valid Base64-encoded JSON object.")
        if self._stopping:
            return _lambda_error(_Error.SERVICE, "The local Lambda runner is shutting down.")

        invocation = Invocation(
            request_id=record["request_id"],
            invoked_function_arn=function_arn(ref.region or region, ref.account_id or self.account_id, ref.name,
                                              ref.qualifier),
            payload=payload,
            timeout_s=pool.spec.timeout_s,
            client_context=client_context,
        )
        if invocation_type is InvocationType.EVENT:
            if pool.event_queue_full:
                return _throttled()
            task = asyncio.create_task(self._run_event(pool, invocation), name=f"event-{invocation.request_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return web.Response(status=202, headers={"X-Amz-Executed-Version": LATEST})

        placement, env = pool.place()
        if placement is Placement.THROTTLED:
            return _throttled()
        outcome = await self._run(pool, invocation, placement, env)
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Executed-Version": LATEST,
            "X-Amzn-Trace-Id": invocation.trace_id,
        }
        if outcome.kind is OutcomeKind.FUNCTION_ERROR:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = invocation.log_result()
        return web.Response(status=200, body=outcome.body, headers=headers)

    async def _run_event(self, pool: FunctionPool, invocation: Invocation) -> None:
        placement, env = await pool.place_when_available()
        outcome = await self._run(pool, invocation, placement, env)
        if outcome.kind is OutcomeKind.FUNCTION_ERROR:
            _log.info("event invocation %s of %s failed: %s", invocation.request_id, pool.spec.name,
                      outcome.body[:200].decode("utf-8", "replace"))

    async def _run(self, pool: FunctionPool, invocation: Invocation, placement: Placement,
                   env: ExecutionEnvironment | None) -> Outcome:
        if placement is Placement.COLD:
            try:
                env = await self._start_environment(pool.spec)
            except OSError as exc:
                pool.start_failed()
                return Outcome(OutcomeKind.FUNCTION_ERROR, error_document(
                    "Runtime.Unknown", f"RequestId: {invocation.request_id} Error: could not start runtime: {exc}"))
            pool.started(env)
        assert env is not None  # WARM placements carry their environment
        try:
            if self._stopping:
                await env.kill()
            return await env.run(invocation)  # a dead environment answers Runtime.ExitError
        finally:
            pool.release(env)

    async def _start_environment(self, spec: FunctionSpec) -> ExecutionEnvironment:
        assert self._runtime_runner is not None  # start() ran
        sock = _listening_socket("127.0.0.1", 0)  # one Runtime API port per environment (see runtime.py)
        try:
            port = sock.getsockname()[1]
            site = web.SockSite(self._runtime_runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            raise
        env = ExecutionEnvironment(
            spec, functions_dir=self.functions_dir, runtime_api_port=port, region=self.region,
            python=self._python, log=self._log, on_exit=self._environment_exited,
        )
        self._by_port[port] = env
        self._sites[port] = site
        try:
            await env.start()
        except BaseException:
            self._by_port.pop(port, None)
            await self._sites.pop(port).stop()
            raise
        return env

    def _environment_of(self, request: web.Request) -> ExecutionEnvironment | None:
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        return self._by_port.get(sockname[1]) if sockname else None

    def _environment_exited(self, env: ExecutionEnvironment) -> None:
        self._pools[env.spec.name].discard(env)
        self._by_port.pop(env.runtime_api_port, None)
        site = self._sites.pop(env.runtime_api_port, None)
        if site is not None:
            task = asyncio.get_running_loop().create_task(site.stop())
            self._background.add(task)
            task.add_done_callback(self._background.discard)


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _raw_function_segment(raw_path: str) -> str:
    path = raw_path.split("?", 1)[0]
    return path[len(_INVOKE_PATH_PREFIX):-len(_INVOKE_PATH_SUFFIX)]


def _recordable(body: bytes) -> Any:
    """The payload as JSON when it is JSON, else as text (for /_runner/invocations)."""
    try:
        return json.loads(body) if body.strip() else None
    except ValueError:
        return body.decode("utf-8", "replace")


def _client_context(header: str | None) -> str | None:
    """``X-Amz-Client-Context`` is base64 JSON on Invoke and plain JSON on the Runtime API."""
    if header is None:
        return None
    try:
        text = base64.b64decode(header, validate=True).decode()
        json.loads(text)
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("invalid client context") from exc
    return text


def _json_error(status: int, error_type: str, document: dict[str, Any]) -> web.Response:
    return web.json_response(document, status=status, headers={"x-amzn-ErrorType": error_type},
                             dumps=lambda obj: json.dumps(obj, separators=(",", ":")))


def _lambda_error(error: _Error, message: str, **extra: str) -> web.Response:
    return _json_error(error.status, error.error_type, {"Type": "User", "message": message, **extra})


def _throttled() -> web.Response:
    return _lambda_error(_Error.TOO_MANY_REQUESTS, "Rate Exceeded.",
                         Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
