"""Proxying: build the backend request from the plan, send it through the pooled client, stream back.

* The backend path is the target's base path + the raw remainder; the client query follows the target's own
  query (gateway-config.md).  Headers go through ``headers.forward_request_headers``.
* Request bodies stream from the ASGI ``receive`` channel unless a processor needed them buffered; the
  gateway's ``max_request_body`` is enforced on both paths (413).
* Response bodies stream to the client chunk by chunk; no unbounded buffering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..config.plan import Target
from ..errors import ClientError, ErrorCode

__all__ = ["BodyTooLarge", "ClientDisconnected", "backend_path", "read_body", "stream_body"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientDisconnected(Exception):
    """The client went away while we were reading its body."""


class BodyTooLarge(ClientError):
    def __init__(self) -> None:
        super().__init__(ErrorCode.PAYLOAD_TOO_LARGE)


def backend_path(target: Target, remainder: str, query_string: str) -> str:
    path = target.base_path + remainder
    if not path:
        path = "/"
    elif not path.startswith("/"):
        path = "/" + path
    if target.query and query_string:
        return f"{path}?{target.query}&{query_string}"
    if target.query or query_string:
        return f"{path}?{target.query or query_string}"
    return path


async def read_body(receive: Receive, limit: int) -> bytes:
    """Buffer the whole request body (only when a processor needs it), bounded by ``limit``."""
    return b"".join([chunk async for chunk in stream_body(receive, limit)])


class stream_body:
    """An async iterator over the client body for the upstream client; records why it stopped."""

    __slots__ = ("_limit", "_receive", "disconnected", "done", "on_done", "too_large")

    def __init__(self, receive: Receive, limit: int, on_done: Callable[[], None] | None = None) -> None:
        self._receive = receive
        self._limit = limit
        self.done = False
        self.too_large = False
        self.disconnected = False
        self.on_done = on_done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise ClientDisconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._limit:
                    self.too_large = True
                    raise BodyTooLarge
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                if self.on_done is not None:
                    self.on_done()
                return
