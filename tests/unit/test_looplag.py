"""The loop-lag monitor (observability/looplag.py): the lag histogram counts every late timer, the stall
histogram only what the loop thread itself caused — not the time the kernel gave its CPU to someone else.

Each case runs the real monitor in a child process, on one CPU, and reads its /metrics exposition."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection

import pytest

from sidecar_gateway.observability.looplag import monitor_loop_lag, open_runqueue_clock
from sidecar_gateway.observability.metrics import render_metrics
from support.faulty import LoopLag, parse_loop_lag


def _has_schedstat() -> bool:
    fd = open_runqueue_clock()
    if fd is None:
        return False
    os.close(fd)
    return True


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_schedstat(),
                                reason="needs /proc/thread-self/schedstat")
CPU = min(os.sched_getaffinity(0))
RUN_S = 1.5


def _hog(cpu: int, seconds: float) -> None:
    os.sched_setaffinity(0, {cpu})
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _monitored(conn: Connection, cpu: int, idle_priority: bool, block_s: float) -> None:
    """Run the monitor for ``RUN_S``; with ``block_s``, the loop runs a synchronous busy stretch that long once."""
    os.sched_setaffinity(0, {cpu})
    if idle_priority:  # SCHED_IDLE: any runnable neighbour on this CPU goes first → long run-queue waits
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(monitor_loop_lag())
        await asyncio.sleep(0.3)
        if block_s:
            _hog(cpu, block_s)  # the loop's own stall: a synchronous stretch of work
        await asyncio.sleep(RUN_S - 0.3)
        task.cancel()

    asyncio.run(main())
    conn.send(render_metrics().decode())


def _run(idle_priority: bool, block_s: float, neighbours: int) -> tuple[LoopLag, LoopLag]:
    ctx = multiprocessing.get_context("spawn")
    hogs = [ctx.Process(target=_hog, args=(CPU, RUN_S + 2.0), daemon=True) for _ in range(neighbours)]
    for h in hogs:
        h.start()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_monitored, args=(child, CPU, idle_priority, block_s), daemon=True)
    proc.start()
    try:
        assert parent.poll(RUN_S + 30), "the monitored process did not report"
        text = parent.recv()
    finally:
        proc.join(10)
        for h in hogs:
            h.kill()
            h.join(5)
    return parse_loop_lag(text), parse_loop_lag(text, "gateway_event_loop_stall_seconds")


def test_a_synchronous_stretch_on_the_loop_is_a_stall() -> None:
    lag, stall = _run(idle_priority=False, block_s=0.12, neighbours=0)
    assert lag.over_50ms >= 1, lag
    assert stall.over_50ms >= 1, stall
    assert stall.samples == lag.samples > 20


def test_waiting_for_a_cpu_taken_by_a_neighbour_is_lag_but_not_a_stall() -> None:
    """A busy neighbour process on the loop's only CPU, the loop at idle priority: its timer fires late again
    and again (lag), yet the loop itself never blocked (no stall)."""
    lag, stall = _run(idle_priority=True, block_s=0.0, neighbours=1)
    assert lag.over_50ms >= 3, lag
    assert stall.over_50ms == 0, stall
