"""``transports.deadline.Deadline``: the request path's ``asyncio.timeout_at`` (same outcomes, cheaper)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar_gateway.transports.deadline import Deadline


def test_a_block_past_its_deadline_raises_timeout_error_at_the_deadline():
    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError), Deadline(t0 + 0.05):
            await asyncio.sleep(5)
        return time.monotonic() - t0

    assert 0.04 <= asyncio.run(main()) < 1.0


def test_a_block_that_finishes_in_time_is_untouched_and_the_task_can_still_be_cancelled_later():
    async def main() -> str:
        with Deadline(time.monotonic() + 0.05) as d:
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # past the deadline: the timer was cancelled, nothing fires
        assert not d.expired
        return "ok"

    assert asyncio.run(main()) == "ok"


def test_a_deadline_already_past_expires_at_the_first_await():
    async def main() -> None:
        with Deadline(time.monotonic() - 1):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError):
        asyncio.run(main())


def test_an_outside_cancellation_propagates_as_cancellation_not_timeout():
    async def inner() -> None:
        with Deadline(time.monotonic() + 10):
            await asyncio.sleep(5)

    async def main() -> None:
        task = asyncio.ensure_future(inner())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_an_outside_cancellation_racing_with_the_deadline_still_propagates_as_cancellation():
    async def inner(d: Deadline) -> None:
        with d:
            await asyncio.sleep(5)

    async def main() -> None:
        d = Deadline(time.monotonic() + 10)
        task = asyncio.ensure_future(inner(d))
        await asyncio.sleep(0)  # the task is inside the block
        task.cancel()  # the client hung up ...
        d._expire()  # ... and the deadline fires in the same event-loop step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert d.expired

    asyncio.run(main())
