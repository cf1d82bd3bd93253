"""``PythonTransport`` (contract §8.2): handler calling convention, return-value mapping, loop safety."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from sidecar_gateway.config.plan import PythonConnection
from sidecar_gateway.errors import InternalError
from sidecar_gateway.transports.base import InvocationType, InvokeResult, ResultKind
from sidecar_gateway.transports.python import INVALID_OUTPUT_BODY, PythonTransport, make_executor


def _load_handlers() -> ModuleType:
    """Import tests/support/python_handlers.py by path (the tests tree is not a package)."""
    name = "sidecar_test_python_handlers"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "support" / "python_handlers.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


handlers = _load_handlers()

INPUT = orjson.dumps({"point": "PreProcessor", "masheryMessageId": "m-1", "serviceId": "svc"})
MESSAGE_ID = "0b6f1c2e-0000-4000-8000-000000000001"
TIMEOUT_S = 5.0  # generous deadline for calls that are expected to finish


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = make_executor(4)
    handlers.release_blocking.clear()
    handlers.blocking_started.clear()
    handlers.seen.clear()
    yield pool
    handlers.release_blocking.set()  # never leave a worker blocked
    pool.shutdown(wait=True, cancel_futures=True)


def _transport(fn: Callable[..., Any], executor: ThreadPoolExecutor) -> PythonTransport:
    return PythonTransport(PythonConnection(handler=f"python_handlers:{fn.__name__}", function=fn), executor)


async def _invoke(transport: PythonTransport, *, event_mode: bool = False, payload: bytes = INPUT,
                  budget_s: float = TIMEOUT_S) -> InvokeResult:
    deadline = asyncio.get_running_loop().time() + budget_s
    itype = InvocationType.EVENT if event_mode else InvocationType.REQUEST_RESPONSE
    return await transport.invoke(payload, invocation_type=itype, message_id=MESSAGE_ID, deadline=deadline)


EXPECTED_ECHO = orjson.dumps({"modify": {"addHeaders": {"X-Echo": "PreProcessor"}}})


@pytest.mark.asyncio
@pytest.mark.parametrize("fn", [handlers.echo, handlers.echo_async], ids=["sync", "async"])
async def test_dict_result_is_the_output_after_json_round_trip(fn: Callable[..., Any],
                                                               executor: ThreadPoolExecutor) -> None:
    """A returned dict becomes the output bytes (§8.2), for plain and coroutine handlers."""
    result = await _invoke(_transport(fn, executor))
    assert result == InvokeResult(ResultKind.OUTPUT, EXPECTED_ECHO)


@pytest.mark.asyncio
async def test_context_exposes_lambda_members(executor: ThreadPoolExecutor) -> None:
    """context has function_name (the handler text), a fresh uuid4 aws_request_id and the remaining time."""
    transport = _transport(handlers.describe_context, executor)
    first = orjson.loads((await _invoke(transport, budget_s=2.0)).body)
    second = orjson.loads((await _invoke(transport, budget_s=2.0)).body)
    assert first["function_name"] == "python_handlers:describe_context"
    assert uuid.UUID(first["aws_request_id"]).version == 4
    assert first["aws_request_id"] != second["aws_request_id"]
    assert 1000 < first["remaining"] <= 2000
    assert first["memory_limit_in_mb"] == "128"
    assert first["invoked_function_arn"].endswith(":function:python_handlers:describe_context")
    assert first["log_group_name"] == "/aws/lambda/python_handlers:describe_context"
    assert first["thread"].startswith("sidecar-python")


@pytest.mark.asyncio
async def test_remaining_time_is_zero_after_the_deadline(executor: ThreadPoolExecutor) -> None:
    """get_remaining_time_in_millis never goes negative."""
    result = await _invoke(_transport(handlers.describe_context, executor), budget_s=-1.0)
    assert orjson.loads(result.body)["remaining"] == 0


@pytest.mark.asyncio
async def test_each_call_gets_a_fresh_event_dict(executor: ThreadPoolExecutor) -> None:
    """Mutating the event in one call does not leak into the next (§8.2 "a fresh dict")."""
    transport = _transport(handlers.mutate_event, executor)
    for _ in range(2):
        result = await _invoke(transport)
        assert orjson.loads(result.body) == {
            "count": 1, "keys": ["count", "masheryMessageId", "mutated", "point", "serviceId"],
        }


@pytest.mark.asyncio
@pytest.mark.parametrize("fn", [handlers.returns_none, handlers.returns_none_async], ids=["sync", "async"])
async def test_none_is_not_returned(fn: Callable[..., Any], executor: ThreadPoolExecutor) -> None:
    """None maps to an empty output body: "not returned" downstream (§5.3 Empty output)."""
    assert await _invoke(_transport(fn, executor)) == InvokeResult(ResultKind.OUTPUT, b"")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "fn",
    [handlers.returns_list, handlers.returns_string, handlers.returns_unserialisable, handlers.returns_non_str_keys],
    ids=["list", "str", "unserialisable", "non-str-keys"],
)
async def test_non_dict_or_unserialisable_result_is_invalid_output(fn: Callable[..., Any],
                                                                   executor: ThreadPoolExecutor) -> None:
    """Anything but a serialisable dict yields bytes whose top level is not an object (§4.3 rule 1)."""
    result = await _invoke(_transport(fn, executor))
    assert result == InvokeResult(ResultKind.OUTPUT, INVALID_OUTPUT_BODY)
    assert not isinstance(orjson.loads(result.body), dict)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fn", "error_type", "message"),
    [
        (handlers.raises, "AuthorisationDenied", "token expired"),
        (handlers.raises_async, "ValueError", "bad input"),
        (handlers.exits, "SystemExit", "3"),
    ],
    ids=["sync", "async", "sys-exit"],
)
async def test_exception_is_a_function_error(fn: Callable[..., Any], error_type: str, message: str,
                                             executor: ThreadPoolExecutor) -> None:
    """An exception becomes FUNCTION_ERROR with errorType/errorMessage (§8.2) and Unhandled."""
    result = await _invoke(_transport(fn, executor))
    assert result.kind is ResultKind.FUNCTION_ERROR
    assert result.function_error == "Unhandled"
    assert orjson.loads(result.body) == {"errorType": error_type, "errorMessage": message}


@pytest.mark.asyncio
async def test_blocking_sync_handler_does_not_block_the_loop(executor: ThreadPoolExecutor) -> None:
    """While a plain handler blocks its worker thread, other coroutines keep running."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    call = asyncio.create_task(_invoke(_transport(handlers.blocking, executor)))
    assert await asyncio.to_thread(handlers.blocking_started.wait, TIMEOUT_S)
    before = ticks
    await asyncio.sleep(0.1)
    assert ticks > before + 5
    assert not call.done()
    handlers.release_blocking.set()
    assert await call == InvokeResult(ResultKind.OUTPUT, b'{"blocked":true}')
    ticking.cancel()


@pytest.mark.asyncio
async def test_sync_handler_past_deadline_is_abandoned(executor: ThreadPoolExecutor) -> None:
    """At the deadline the caller stops waiting for a plain handler; the transport stays usable."""
    transport = _transport(handlers.blocking, executor)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await _invoke(transport)
    assert time.monotonic() - started < 1.0
    handlers.release_blocking.set()
    assert (await _invoke(transport)).kind is ResultKind.OUTPUT


@pytest.mark.asyncio
async def test_async_handler_is_cancelled_at_deadline(executor: ThreadPoolExecutor) -> None:
    """A coroutine handler is cancelled by the caller's asyncio.timeout (§8.2)."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _invoke(_transport(handlers.slow_async, executor))
    assert time.monotonic() - started < 1.0


@pytest.mark.asyncio
async def test_event_mode_returns_accepted_before_a_sync_handler_finishes(executor: ThreadPoolExecutor) -> None:
    """Event mode schedules the handler and returns ACCEPTED at once (§8.2, §9.4)."""
    transport = _transport(handlers.blocking, executor)
    result = await asyncio.wait_for(_invoke(transport, event_mode=True), 0.5)
    assert result == InvokeResult.accepted()
    assert await asyncio.to_thread(handlers.blocking_started.wait, TIMEOUT_S)
    handlers.release_blocking.set()
    await transport.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("fn", [handlers.record, handlers.record_async], ids=["sync", "async"])
async def test_event_mode_runs_the_handler_in_the_background(fn: Callable[..., Any],
                                                             executor: ThreadPoolExecutor) -> None:
    """The scheduled handler still runs with the event after ACCEPTED is returned."""
    transport = _transport(fn, executor)
    assert await _invoke(transport, event_mode=True) == InvokeResult.accepted()
    for _ in range(200):
        if handlers.seen:
            break
        await asyncio.sleep(0.005)
    assert handlers.seen == [orjson.loads(INPUT)]


@pytest.mark.asyncio
async def test_event_mode_failure_is_logged(executor: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture) -> None:
    """A failing event-mode handler is logged, never raised to the caller."""
    transport = _transport(handlers.raises_async, executor)
    with caplog.at_level(logging.WARNING, logger="sidecar_gateway.transports.python"):
        assert await _invoke(transport, event_mode=True) == InvokeResult.accepted()
        for _ in range(200):
            if "bad input" in caplog.text:
                break
            await asyncio.sleep(0.005)
    assert "bad input" in caplog.text
    assert "event_pending=0" in repr(transport)


@pytest.mark.asyncio
async def test_aclose_cancels_pending_event_coroutines(executor: ThreadPoolExecutor) -> None:
    """aclose cancels event-mode coroutine handlers still running."""
    transport = _transport(handlers.slow_async, executor)
    assert await _invoke(transport, event_mode=True) == InvokeResult.accepted()
    await asyncio.sleep(0)
    assert "event_pending=1" in repr(transport)
    await asyncio.wait_for(transport.aclose(), 1.0)
    assert "event_pending=0" in repr(transport)


@pytest.mark.asyncio
async def test_input_that_is_not_a_json_object_is_an_internal_error(executor: ThreadPoolExecutor) -> None:
    """The gateway builds the input (§3); a non-object is our bug, not the function's."""
    with pytest.raises(InternalError):
        await _invoke(_transport(handlers.echo, executor), payload=b"[1]")


def test_make_executor_names_threads_and_rejects_zero() -> None:
    """Worker threads carry the sidecar-python prefix; a pool needs at least one thread."""
    pool = make_executor(1)
    try:
        assert pool.submit(lambda: threading.current_thread().name).result().startswith("sidecar-python")
    finally:
        pool.shutdown()
    with pytest.raises(ValueError):
        make_executor(0)
