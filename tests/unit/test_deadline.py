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


# The shared timer: every deadline of a loop on one heap and one loop timer (module docstring).


def test_many_concurrent_deadlines_each_expire_at_their_own_time_in_any_order_of_entry():
    """Entered in shuffled order (so later entries are often earlier and must re-arm the one timer)."""
    offsets = [0.02 * k for k in (5, 1, 4, 2, 3, 6, 1, 5)]

    async def one(offset: float, t0: float) -> float:
        with pytest.raises(TimeoutError), Deadline(t0 + offset):
            await asyncio.sleep(5)
        return time.monotonic() - t0

    async def main() -> list[float]:
        t0 = time.monotonic()
        return await asyncio.gather(*(one(o, t0) for o in offsets))

    for offset, took in zip(offsets, asyncio.run(main()), strict=True):
        assert offset - 0.005 <= took < offset + 0.5, (offset, took)


def test_deadlines_that_end_in_time_leave_no_timer_behind_and_the_heap_stays_bounded():
    """10,000 blocks that finish in time with a long deadline: none fires, and the shared heap is compacted so it
    never holds much more than twice the deadlines in progress."""
    from sidecar_gateway.transports import deadline as module

    async def main() -> int:
        fired = 0
        biggest = 0
        for _ in range(10_000):
            with Deadline(time.monotonic() + 300) as d:
                await asyncio.sleep(0)
            fired += d.expired
            biggest = max(biggest, len(module._timers(asyncio.get_running_loop())._heap))
        assert fired == 0
        return biggest

    assert asyncio.run(main()) <= 2 * module._COMPACT_MIN + 2


def test_a_deadline_that_ended_in_time_does_not_cancel_a_later_block_of_the_same_task():
    async def main() -> str:
        with Deadline(time.monotonic() + 0.03):
            await asyncio.sleep(0)
        with Deadline(time.monotonic() + 5):
            await asyncio.sleep(0.1)  # the first deadline passes meanwhile: it must not cancel this block
        return "ok"

    assert asyncio.run(main()) == "ok"
