"""``Deadline``: cancel the current task at a point in time and turn that into ``TimeoutError``.

The same contract as ``asyncio.timeout_at`` (the caller's deadline, enforced by cancellation, see ``base.py``)
at a fraction of its cost: ``asyncio.timeout`` is an async context manager with a state machine and a
``reschedule`` step (~7.5 µs per use under uvloop, measured), and even a bare ``call_later`` + ``cancel`` pair
costs ~4.3 µs under uvloop (a libuv timer and a ``TimerHandle`` per use).  The request path uses a deadline once
or twice per call (the backend call, each function call) and almost every one ends in time, so here all the
deadlines of a loop share **one** loop timer: entering pushes ``(when, seq, deadline)`` on a heap (~0.3 µs),
leaving marks the entry finished, and the single timer is armed for the earliest entry.

Theory of operation:

* Cancellation (as ``asyncio.Timeout``): on entry the task's ``cancelling()`` count is remembered; when the
  deadline passes it is marked expired and its task cancelled.  On exit, if the block ends with
  ``CancelledError`` after the deadline expired, the cancellation is ours exactly when ``uncancel()`` brings the
  count back to the remembered one — then ``TimeoutError`` is raised instead.  A cancellation from elsewhere
  (the client hung up) that races with ours propagates unchanged.
* The shared timer (``_Timers``, one per event loop): when it fires, every entry at the top of the heap that is
  finished or due is popped and the due ones expire; it is re-armed for the new top.  An entry earlier than the
  armed time re-arms it.  Finished entries deeper in the heap are counted; when they are more than half of it
  (and over ``_COMPACT_MIN``) the heap is rebuilt without them, so its size stays within twice the deadlines in
  progress however long the timeouts are.

Times are ``time.monotonic()`` values, like every deadline in the gateway.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["Deadline"]

_monotonic = time.monotonic
_heappush = heapq.heappush
_heappop = heapq.heappop
# What asyncio.current_task() reads, without its Python wrapper (3.11); where asyncio keeps no such dict, the API.
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    asyncio.tasks._current_tasks.get if hasattr(asyncio.tasks, "_current_tasks") else asyncio.current_task)
_get_running_loop = asyncio.get_running_loop
_COMPACT_MIN = 256  # finished entries tolerated in the heap before a rebuild is considered


class _Timers:
    """The deadlines of one event loop and the one timer that enforces them."""

    __slots__ = ("_armed_at", "_handle", "_heap", "_loop", "_seq", "finished")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self.finished = 0  # finished entries still in the heap

    def add(self, deadline: Deadline) -> None:
        when = deadline._when
        _heappush(self._heap, (when, next(self._seq), deadline))
        if when < self._armed_at:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_later(max(when - _monotonic(), 0.0), self._fire)

    def compact(self) -> None:
        """Drop finished entries (called when they outnumber the live ones)."""
        heap = self._heap
        heap[:] = [entry for entry in heap if not entry[2].finished]
        heapq.heapify(heap)
        self.finished = 0

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = float("inf")
        heap = self._heap
        now = _monotonic()
        due: list[Deadline] = []
        while heap:
            top = heap[0][2]
            if top.finished:
                _heappop(heap)
                self.finished -= 1
            elif heap[0][0] <= now:
                _heappop(heap)
                top.finished = True  # out of the heap: its exit must not count it again
                due.append(top)
            else:
                break
        if heap:
            self._arm(heap[0][0])
        for deadline in due:
            deadline._expire()


_timers_of: dict[asyncio.AbstractEventLoop, _Timers] = {}


def _timers(loop: asyncio.AbstractEventLoop) -> _Timers:
    timers = _timers_of.get(loop)
    if timers is None:
        for old in [lp for lp in _timers_of if lp.is_closed()]:  # loops of earlier asyncio.run() calls
            del _timers_of[old]
        timers = _timers_of[loop] = _Timers(loop)
    return timers


class Deadline:
    __slots__ = ("_cancelling", "_task", "_timers", "_when", "expired", "finished")

    def __init__(self, when: float) -> None:
        self._when = when
        self.expired = False
        self.finished = False  # left the block, or expired (either way: no longer the heap's concern)

    def __enter__(self) -> Deadline:
        loop = _get_running_loop()
        task = _current_task(loop)
        if task is None:
            raise RuntimeError("Deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        timers = self._timers = _timers(loop)
        timers.add(self)
        return self

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.finished:
            self.finished = True
            timers = self._timers
            finished = timers.finished = timers.finished + 1
            if finished > _COMPACT_MIN and finished * 2 > len(timers._heap):
                timers.compact()
        if self.expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc
