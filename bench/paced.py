"""A paced (open-loop) HTTP/1.1 load generator, for p99 at a fixed request rate when ``wrk2`` is unavailable.

Request ``i`` is due at ``t0 + i / rate`` whatever happened before (open loop).  A due request goes out on an
idle keep-alive connection, or waits in a backlog until one frees up; its latency is measured from the time it
was *due*, not from when it was sent, so a stalled server is charged for the requests it delayed (the
coordinated-omission correction wrk2 makes).  One process per core is started by the caller; each writes one
JSON line with its latencies in microseconds (``--out FILE``, else stdout).

    python bench/paced.py --url http://127.0.0.1:8080/s1 --rate 5000 --duration 10 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import httptools
import uvloop

DRAIN_S = 5.0  # how long to wait for answers after the last request was due
CONNECT_TIMEOUT_S = 5.0
MICROS = 1_000_000
TICK_S = 0.001  # never sleep shorter than this: sub-millisecond sleeps turn the scheduler into a busy loop


class Generator:
    def __init__(self, host: str, port: int, request: bytes, expected_status: int) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.expected_status = expected_status
        self.idle: list[Connection] = []
        self.backlog: collections.deque[float] = collections.deque()
        self.latencies: list[int] = []
        self.errors = 0
        self.unexpected_status = 0
        self.outstanding = 0
        self.all_done = asyncio.Event()

    def dispatch(self, due: float) -> None:
        self.outstanding += 1
        self.all_done.clear()
        if self.idle:
            self.idle.pop().send(due)
        else:
            self.backlog.append(due)

    def completed(self, conn: Connection, due: float, status: int, ok: bool) -> None:
        self.outstanding -= 1
        if ok:
            self.latencies.append(int((time.monotonic() - due) * MICROS))
            if status != self.expected_status:
                self.unexpected_status += 1
        else:
            self.errors += 1
        if self.outstanding == 0:
            self.all_done.set()
        if conn.usable:
            self.ready(conn)

    def ready(self, conn: Connection) -> None:
        if self.backlog:
            conn.send(self.backlog.popleft())
        else:
            self.idle.append(conn)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(self), self.host, self.port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self.errors += 1
            return
        self.ready(conn)


class Connection(asyncio.Protocol):
    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due: float | None = None
        self.usable = True
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, due: float) -> None:
        self.due = due
        assert self.transport is not None
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def on_message_complete(self) -> None:
        due, self.due = self.due, None
        if due is not None:
            self.gen.completed(self, due, self.parser.get_status_code(), True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def _fail(self) -> None:
        if not self.usable:
            return
        self.usable = False
        if self in self.gen.idle:
            self.gen.idle.remove(self)
        if self.transport is not None:
            self.transport.abort()
        due, self.due = self.due, None
        if due is not None:
            self.gen.completed(self, due, 0, False)
        asyncio.get_running_loop().create_task(self.gen.connect())


def build_request(url: str, body: bytes | None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = f"{'POST' if body is not None else 'GET'} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body is None:
        return host, port, (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return host, port, head.encode() + body


async def run(args: argparse.Namespace) -> dict[str, object]:
    body = open(args.body_file, "rb").read() if args.body_file else None  # noqa: SIM115 - read once
    host, port, request = build_request(args.url, body)
    gen = Generator(host, port, request, args.expected_status)
    await asyncio.gather(*(gen.connect() for _ in range(args.connections)))
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    cpu_start = time.process_time()
    t0 = time.monotonic() + 0.01
    sent = 0
    while sent < total:
        now = time.monotonic()
        due_count = min(total, int((now - t0) / interval) + 1)
        while sent < due_count:
            gen.dispatch(t0 + sent * interval)
            sent += 1
        delay = t0 + sent * interval - time.monotonic()
        await asyncio.sleep(max(delay, TICK_S))  # due requests go out in bursts of ≤ 1 ms, like wrk2's
    schedule_end = time.monotonic()
    if gen.outstanding:
        try:
            await asyncio.wait_for(gen.all_done.wait(), args.drain)
        except TimeoutError:
            pass
    elapsed = time.monotonic() - t0
    return {"pid": os.getpid(), "rate": args.rate, "sent": sent, "completed": len(gen.latencies),
            "errors": gen.errors, "unfinished": gen.outstanding, "unexpected_status": gen.unexpected_status,
            "schedule_s": schedule_end - t0, "elapsed_s": elapsed, "cpu_s": time.process_time() - cpu_start,
            "latencies_us": gen.latencies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second of this process")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--body-file", default="")
    parser.add_argument("--expected-status", type=int, default=200)
    parser.add_argument("--drain", type=float, default=DRAIN_S, help="seconds to wait for answers at the end")
    parser.add_argument("--out", default="", help="write the JSON result here instead of stdout")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    text = json.dumps(result) + "\n"
    if args.out:  # a file: uvloop may leave a stdout pipe non-blocking, which truncates large writes
        with open(args.out, "w") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
