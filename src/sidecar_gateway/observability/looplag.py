"""Event-loop lag: how late a periodic timer fires (the classic stall detector; Node's monitorEventLoopDelay).

A task sleeps ``INTERVAL_S`` and measures how much later than asked it woke up.  Each sample goes to the
``gateway_event_loop_lag_seconds`` histogram; ``gateway_event_loop_lag_max_seconds`` holds the largest sample
of the last ``WINDOW_S``.  Anything blocking the loop (a sync call on the hot path, a huge JSON dump) shows
up here.

Wall-clock lag also counts time the loop thread was ready to run but the kernel gave its CPU to another process
(a busy 2-core machine).  On Linux the kernel keeps that figure per thread (``/proc/thread-self/schedstat``,
second field: time spent waiting on a run queue), so each sample also goes, less that wait, to
``gateway_event_loop_stall_seconds``: the loop's own stalls — its code running, or a blocking system call —
whatever the neighbours do.  The reliability suite asserts on the stall; elsewhere stall equals lag.
"""

from __future__ import annotations

import asyncio
import os
import time

from .metrics import loop_lag, loop_lag_max, loop_stall

__all__ = ["INTERVAL_S", "monitor_loop_lag", "open_runqueue_clock"]

INTERVAL_S = 0.02  # 20 ms: fine enough to see a 50 ms stall, cheap (50 wake-ups/s)
WINDOW_S = 10.0  # the max gauge forgets after this long
SCHEDSTAT = "/proc/thread-self/schedstat"  # "<on-cpu ns> <run-queue wait ns> <timeslices>"


def open_runqueue_clock() -> int | None:
    """A descriptor on the calling thread's schedstat (``thread-self`` resolves at open), or None where the
    kernel has none; ``runqueue_wait`` reads it (a 2 µs ``pread``)."""
    try:
        fd = os.open(SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        runqueue_wait(fd)
    except (OSError, ValueError, IndexError):
        os.close(fd)
        return None
    return fd


def runqueue_wait(fd: int) -> float:
    """Seconds the thread has spent runnable but not running, since it started."""
    return int(os.pread(fd, 96, 0).split()[1]) / 1e9


async def monitor_loop_lag() -> None:
    fd = open_runqueue_clock()  # opened here, on the loop's own thread
    try:
        window_start = time.monotonic()
        window_max = 0.0
        waited_before = runqueue_wait(fd) if fd is not None else 0.0
        while True:
            before = time.monotonic()
            await asyncio.sleep(INTERVAL_S)
            now = time.monotonic()
            lag = max(0.0, now - before - INTERVAL_S)
            loop_lag.observe(lag)
            if fd is not None:
                waited = runqueue_wait(fd)
                loop_stall.observe(max(0.0, lag - (waited - waited_before)))
                waited_before = waited
            else:
                loop_stall.observe(lag)
            if now - window_start > WINDOW_S:
                window_start, window_max = now, 0.0
            if lag > window_max:
                window_max = lag
            loop_lag_max.set(window_max)
    finally:
        if fd is not None:
            os.close(fd)
