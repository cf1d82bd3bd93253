"""Structured logs: one JSON line per client call (access log, stdout) and JSON event lines (stderr).

The access log is written through a buffer flushed at most every ``FLUSH_INTERVAL_S`` (or when full), so
a call costs one ``orjson.dumps`` and a memory append.  Package keys are masked by the caller
(``keys.mask_key``); secrets never reach these functions.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any

import orjson

__all__ = ["AccessLog", "configure_logging", "log_event", "thousandths"]

FLUSH_INTERVAL_S = 0.5  # a line is visible within half a second (uvicorn flushes per line; too slow at 10k rps)
BUFFER_LIMIT = 64 * 1024  # flush early past this many bytes

_logger = logging.getLogger("sidecar_gateway")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            data.update(extra)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("sidecar_gateway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def log_event(level: int, event: str, **fields: Any) -> None:
    if _logger.isEnabledFor(level):
        _logger.log(level, event, extra={"fields": fields})


class AccessLog:
    __slots__ = ("_buf", "_last_flush", "_out", "enabled")

    def __init__(self, out: IO[bytes] | None = None, *, enabled: bool = True) -> None:
        self._out = out if out is not None else sys.stdout.buffer
        self._buf = bytearray()
        self._last_flush = time.monotonic()
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        self._buf += orjson.dumps(record)
        self._buf += b"\n"
        if len(self._buf) > BUFFER_LIMIT or time.monotonic() - self._last_flush > FLUSH_INTERVAL_S:
            self.flush()

    def write_line(self, line: bytes) -> None:
        """A record already encoded as one JSON line (the native lane's, see native/lane.py ``Recorder``)."""
        self._buf += line
        if len(self._buf) > BUFFER_LIMIT or time.monotonic() - self._last_flush > FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buf:
            return
        try:
            self._out.write(self._buf)
            self._out.flush()
        except (OSError, ValueError):
            pass
        self._buf.clear()


def thousandths(value: float) -> float:
    """``value`` to 3 decimals, for the access log: ``round(value, 3)`` is exact but costs ~0.4 µs (a decimal
    string round trip); the nearest double to k/1000 prints as exactly that decimal (shortest repr)."""
    return int(value * 1000 + 0.5) / 1000
