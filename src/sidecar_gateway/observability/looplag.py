"""Event-loop lag: how late a periodic timer fires (the classic stall detector; Node's monitorEventLoopDelay).

A task sleeps ``INTERVAL_S`` and measures how much later than asked it woke up.  Each sample goes to the
``gateway_event_loop_lag_seconds`` histogram; ``gateway_event_loop_lag_max_seconds`` holds the largest sample
of the last ``WINDOW_S``.  Anything blocking the loop (a sync call on the hot path, a huge JSON dump) shows
up here; the reliability suite asserts on it.
"""

from __future__ import annotations

import asyncio
import time

from .metrics import loop_lag, loop_lag_max

__all__ = ["INTERVAL_S", "monitor_loop_lag"]

INTERVAL_S = 0.02  # 20 ms: fine enough to see a 50 ms stall, cheap (50 wake-ups/s)
WINDOW_S = 10.0  # the max gauge forgets after this long


async def monitor_loop_lag() -> None:
    window_start = time.monotonic()
    window_max = 0.0
    while True:
        before = time.monotonic()
        await asyncio.sleep(INTERVAL_S)
        now = time.monotonic()
        lag = max(0.0, now - before - INTERVAL_S)
        loop_lag.observe(lag)
        if now - window_start > WINDOW_S:
            window_start, window_max = now, 0.0
        if lag > window_max:
            window_max = lag
        loop_lag_max.set(window_max)
