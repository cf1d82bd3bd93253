"""Handlers for the ``python`` stack tests (contract §8.2).  Each is a ``handler(event, context)``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

# Released by a test to let ``blocking`` return; set by ``blocking`` once it runs.
release_blocking = threading.Event()
blocking_started = threading.Event()
# Records what event-mode handlers saw (written from worker threads or the loop).
seen: list[dict[str, Any]] = []


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"modify": {"addHeaders": {"X-Echo": event["point"]}}}


async def echo_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"modify": {"addHeaders": {"X-Echo": event["point"]}}}


def describe_context(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "function_name": context.function_name,
        "aws_request_id": context.aws_request_id,
        "remaining": context.get_remaining_time_in_millis(),
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "thread": threading.current_thread().name,
    }


def mutate_event(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event["mutated"] = True
    event.setdefault("count", 0)
    event["count"] += 1
    return {"count": event["count"], "keys": sorted(event)}


def returns_none(event: dict[str, Any], context: Any) -> None:
    return None


async def returns_none_async(event: dict[str, Any], context: Any) -> None:
    return None


def returns_list(event: dict[str, Any], context: Any) -> list[int]:
    return [1, 2, 3]


def returns_string(event: dict[str, Any], context: Any) -> str:
    return '{"terminate": {"code": 403}}'


def returns_unserialisable(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"value": object()}


def returns_non_str_keys(event: dict[str, Any], context: Any) -> dict[Any, Any]:
    return {1: "one"}


class AuthorisationDenied(Exception):
    pass


def raises(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise AuthorisationDenied("token expired")


async def raises_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0)
    raise ValueError("bad input")


def exits(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise SystemExit(3)


def blocking(event: dict[str, Any], context: Any) -> dict[str, Any]:
    blocking_started.set()
    release_blocking.wait(timeout=10)
    return {"blocked": True}


async def slow_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(10)
    return {}


def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seen.append(event)
    return {}


async def record_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    seen.append(event)
    return {}
