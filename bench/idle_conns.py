"""Hold many idle keep-alive client connections, then check that every one of them still gets an answer.

Phase 1 opens ``--count`` connections (``--concurrency`` at a time) and sends one GET on each; it then prints
``HOLDING {json}`` and keeps them idle for ``--idle`` seconds (the caller samples the server's RSS meanwhile).
Phase 2 sends a second GET on every connection and prints one JSON line with the error counts.

    python bench/idle_conns.py --url http://127.0.0.1:8080/s1 --count 10000 --idle 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from urllib.parse import urlsplit

import uvloop

REQUEST_TIMEOUT_S = 30.0
HEADER_END = b"\r\n\r\n"
FD_HEADROOM = 1024


def raise_nofile(count: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + FD_HEADROOM
    if soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(HEADER_END)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status


class Holder:
    def __init__(self, host: str, port: int, request: bytes, concurrency: int) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.sem = asyncio.Semaphore(concurrency)
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def open_one(self) -> None:
        async with self.sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                        REQUEST_TIMEOUT_S)
            except (OSError, TimeoutError):
                self.error("connect")
                return
            try:
                writer.write(self.request)
                status = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                self.error("first_request")
                writer.close()
                return
            if status != 200:
                self.error(f"first_status_{status}")
            self.conns.append((reader, writer))

    async def recheck(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.sem:
            if reader.at_eof():
                self.error("closed_while_idle")
                return
            try:
                writer.write(self.request)
                status = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                self.error("second_request")
                return
            if status != 200:
                self.error(f"second_status_{status}")


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    holder = Holder(host, port, request, args.concurrency)
    t0 = time.monotonic()
    await asyncio.gather(*(holder.open_one() for _ in range(args.count)))
    open_s = time.monotonic() - t0
    sys.stdout.write("HOLDING " + json.dumps({"open": len(holder.conns), "errors": holder.errors}) + "\n")
    sys.stdout.flush()
    await asyncio.sleep(args.idle)
    await asyncio.gather(*(holder.recheck(r, w) for r, w in holder.conns))
    answered = len(holder.conns) - sum(v for k, v in holder.errors.items() if not k.startswith(("connect", "first")))
    for _, writer in holder.conns:
        with contextlib.suppress(Exception):
            writer.close()
    return {"requested": args.count, "open": len(holder.conns), "answered_after_idle": answered,
            "errors": holder.errors, "open_s": open_s, "idle_s": args.idle}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    raise_nofile(args.count)
    result = uvloop.run(run(args))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
