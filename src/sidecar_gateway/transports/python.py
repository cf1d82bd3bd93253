"""The ``python`` stack: an in-process callable used like a Lambda handler (contract §8.2).

Rules of this file:

* ``handler(event, context)``: ``event`` is a fresh ``dict`` parsed from the input bytes for every call;
  ``context`` is a ``LambdaContext`` with ``function_name`` (the ``handler`` text), ``aws_request_id`` (a new
  UUID4 per call), ``get_remaining_time_in_millis()`` and the usual informational attributes.
* The handler never blocks the event loop (§8.2): a coroutine function is awaited on the loop, so the caller's
  ``asyncio.timeout`` cancels it at the deadline; a plain function runs in the bounded executor
  (``sidecar.python.max_threads``) and, at the deadline, the caller stops waiting and the result is discarded
  (a thread cannot be interrupted).  For plain functions the result is also classified and serialised in the
  worker thread, so the loop only receives a finished ``InvokeResult``.
* Return value (§8.2, §5.3):

  ==========================  ===========================================================================
  ``dict``                     ``OUTPUT(orjson.dumps(value))``: the JSON round trip
  ``dict`` orjson refuses      ``OUTPUT(INVALID_OUTPUT_BODY)`` (non-``str`` keys, ints beyond 64 bits, …)
  ``None``                     ``OUTPUT(b"")``: "not returned" (EMPTY_OUTPUT downstream)
  anything else                ``OUTPUT(INVALID_OUTPUT_BODY)``
  an exception                 ``FUNCTION_ERROR`` with ``{"errorType", "errorMessage"}``, ``Unhandled``
  ==========================  ===========================================================================

  Invalid results are reported as bytes the output interpreter is bound to reject (§4.3 rule 1: top level
  not an object) rather than through a separate path, so every stack reaches the same catalogue row through
  the same code.
* ``Event`` mode (§8.2 last bullet, §9.4): the handler is scheduled and ``ACCEPTED`` returned at once; its
  result is ignored, a failure is logged.  Coroutine handlers scheduled this way are still bounded by the
  ``deadline`` (so abandoned tasks cannot pile up); plain functions run to completion in the executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from sidecar_gateway.config.plan import PythonConnection
from sidecar_gateway.errors import InternalError
from sidecar_gateway.transports.base import InvocationType, InvokeResult, ResultKind

__all__ = ["LambdaContext", "PythonTransport", "make_executor"]

log = logging.getLogger(__name__)

THREAD_NAME_PREFIX = "sidecar-python"  # makes handler threads recognisable in thread dumps and py-spy
# A JSON array: valid JSON whose top level is not an object, hence invalid output by §4.3 rule 1.
INVALID_OUTPUT_BODY = b"[]"
NOT_RETURNED_BODY = b""  # §5.3 "Empty output": a handler returning None
FUNCTION_ERROR_KIND = "Unhandled"  # what Lambda puts in X-Amz-Function-Error for an uncaught exception

# Informational context values for a function that has no Lambda deployment behind it.
LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"  # the placeholder account id used by LocalStack and SAM local
LOCAL_MEMORY_LIMIT_MB = "128"  # Lambda's default size; a string, as awslambdaric exposes it (env var text)
LOCAL_FUNCTION_VERSION = "$LATEST"


def make_executor(max_threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The bounded pool plain handlers run in (§8.2 ``sidecar.python.max_threads``, default 32)."""
    if max_threads < 1:
        raise ValueError(f"max_threads must be at least 1, got {max_threads}")
    return concurrent.futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=THREAD_NAME_PREFIX)


class LambdaContext:
    """The ``context`` argument (§8.2), shaped like awslambdaric's ``LambdaContext``."""

    __slots__ = ("_clock", "_deadline", "aws_request_id", "client_context", "function_name", "function_version",
                 "identity", "invoked_function_arn", "log_group_name", "log_stream_name", "memory_limit_in_mb")

    def __init__(self, function_name: str, deadline: float, clock: Callable[[], float]) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self.function_version = LOCAL_FUNCTION_VERSION
        self.memory_limit_in_mb = LOCAL_MEMORY_LIMIT_MB
        self.invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{function_name}"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = THREAD_NAME_PREFIX
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = deadline
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the deadline, never negative.  Safe from a worker thread (reads a monotonic clock)."""
        return max(0, int((self._deadline - self._clock()) * 1000))

    def __repr__(self) -> str:
        return f"<LambdaContext function_name={self.function_name!r} aws_request_id={self.aws_request_id}>"


def _function_error(exc: BaseException) -> InvokeResult:
    """§8.2: ``errorType`` is the class name, ``errorMessage`` is ``str(exception)``."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not escape the transport
        message = repr(exc.__class__)
    body = orjson.dumps({"errorType": exc.__class__.__name__, "errorMessage": message})
    return InvokeResult(ResultKind.FUNCTION_ERROR, body, FUNCTION_ERROR_KIND)


def _result_of(value: object) -> InvokeResult:
    """Map a handler's return value to an output body (module docstring table)."""
    if value is None:
        return InvokeResult(ResultKind.OUTPUT, NOT_RETURNED_BODY)
    if isinstance(value, dict):
        try:
            return InvokeResult(ResultKind.OUTPUT, orjson.dumps(value))
        except orjson.JSONEncodeError:
            return InvokeResult(ResultKind.OUTPUT, INVALID_OUTPUT_BODY)
    if inspect.iscoroutine(value):  # a plain function returned a coroutine: never awaited, close it quietly
        value.close()
    return InvokeResult(ResultKind.OUTPUT, INVALID_OUTPUT_BODY)


class PythonTransport:
    """One ``python`` connection (§8.2).  The executor is shared and owned by the caller."""

    __slots__ = ("_executor", "_function", "_is_coroutine", "_name", "_pending")

    def __init__(self, conn: PythonConnection, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        # Global (per compiled plan): the callable and how it must be run, decided once.
        self._function = conn.function
        self._name = conn.handler
        self._is_coroutine = inspect.iscoroutinefunction(conn.function)
        self._executor = executor
        # Event-mode tasks in flight: the loop keeps only weak references to tasks.
        self._pending: set[asyncio.Task[InvokeResult]] = set()

    async def invoke(self, payload: bytes, *, invocation_type: InvocationType, message_id: str,
                     deadline: float) -> InvokeResult:
        """Run the handler (module docstring).  ``deadline`` is in ``loop.time()`` units."""
        loop = asyncio.get_running_loop()
        event = _parse_event(payload)
        context = LambdaContext(self._name, deadline, loop.time)
        if invocation_type is InvocationType.EVENT:
            task = loop.create_task(self._run(loop, event, context, deadline, bounded=True),
                                    name=f"sidecar-python-event:{message_id}")
            self._pending.add(task)
            task.add_done_callback(self._event_done)
            return InvokeResult.accepted()
        return await self._run(loop, event, context, deadline, bounded=False)

    async def _run(self, loop: asyncio.AbstractEventLoop, event: dict[str, Any], context: LambdaContext,
                   deadline: float, *, bounded: bool) -> InvokeResult:
        if not self._is_coroutine:
            return await loop.run_in_executor(self._executor, self._call_plain, event, context)
        if bounded:
            async with asyncio.timeout_at(deadline):
                return await self._call_coroutine(event, context)
        return await self._call_coroutine(event, context)

    def _call_plain(self, event: dict[str, Any], context: LambdaContext) -> InvokeResult:
        """Runs in a worker thread.  Catches ``BaseException``: a handler's ``sys.exit()`` must not reach the
        loop; ``KeyboardInterrupt`` is only ever delivered to the main thread, so nothing real is swallowed."""
        try:
            value = self._function(event, context)
        except BaseException as exc:
            return _function_error(exc)
        return _result_of(value)

    async def _call_coroutine(self, event: dict[str, Any], context: LambdaContext) -> InvokeResult:
        try:
            value = await self._function(event, context)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller's deadline (or shutdown): propagate the cancellation
            return _function_error(exc)  # the handler raised CancelledError itself
        except (Exception, SystemExit) as exc:
            return _function_error(exc)
        return _result_of(value)

    def _event_done(self, task: asyncio.Task[InvokeResult]) -> None:
        self._pending.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, TimeoutError):
                log.warning("python handler %s (event mode) did not finish before the deadline", self._name)
            else:
                log.error("python handler %s (event mode) could not be run", self._name, exc_info=exc)
            return
        result = task.result()
        if result.kind is ResultKind.FUNCTION_ERROR:
            log.warning("python handler %s (event mode) failed: %s", self._name, result.body.decode())

    async def aclose(self) -> None:
        """Cancel event-mode coroutine tasks still running.  Threads cannot be stopped: the executor's owner
        shuts it down."""
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def __repr__(self) -> str:
        kind = "coroutine" if self._is_coroutine else "thread"
        return f"<PythonTransport handler={self._name!r} run={kind} event_pending={len(self._pending)}>"


def _parse_event(payload: bytes) -> dict[str, Any]:
    """A fresh dict per call (§8.2).  The input is built by the gateway (§3), so anything else is our bug."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InternalError(f"python transport: input is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise InternalError("python transport: input is not a JSON object")
    return event
