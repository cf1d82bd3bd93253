"""A scripted HTTP-stack sidecar function on loopback (contract §8.1), for end-to-end tests.

Each path answers with a fixed ``Behavior`` (status, headers, body, delay) and every call is recorded
(path, headers, parsed input), so a test can assert both what the gateway sent and what it did with the
answer.  The server runs on its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Behavior", "FunctionServer", "Invocation"]


@dataclass(frozen=True)
class Behavior:
    body: bytes | str | dict[str, Any] = b"{}"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    respond: Callable[[Any], Any] | None = None  # computes the JSON answer from the parsed input


    def payload(self) -> bytes:
        if isinstance(self.body, dict):
            return json.dumps(self.body).encode()
        if isinstance(self.body, str):
            return self.body.encode()
        return self.body


@dataclass
class Invocation:
    path: str
    headers: dict[str, str]
    input: Any


class FunctionServer:
    def __init__(self, behaviors: dict[str, Behavior]) -> None:
        self.behaviors = behaviors
        self.calls: list[Invocation] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    def start(self) -> FunctionServer:
        threading.Thread(target=self._run, daemon=True, name="function-server").start()
        if not self._ready.wait(10):
            raise RuntimeError("function server did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        loop.run_forever()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = None
        with self._lock:
            self.calls.append(Invocation(request.path, dict(request.headers), parsed))
        behavior = self.behaviors.get(request.path, Behavior())
        if behavior.delay_s:
            await asyncio.sleep(behavior.delay_s)
        body = json.dumps(behavior.respond(parsed)).encode() if behavior.respond else behavior.payload()
        return web.Response(status=behavior.status, body=body, headers=behavior.headers)

    def calls_to(self, path: str) -> list[Invocation]:
        with self._lock:
            return [c for c in self.calls if c.path == path]

    def wait_calls(self, path: str, n: int = 1, timeout: float = 5.0) -> list[Invocation]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            calls = self.calls_to(path)
            if len(calls) >= n:
                return calls
            time.sleep(0.02)
        return self.calls_to(path)
