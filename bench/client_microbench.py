"""Micro-benchmark of the upstream HTTP client: our httptools pool vs the aiohttp-backed one.

    python bench/client_microbench.py [--seconds 3] [--concurrency 50] [--rounds 3] [--no-uvloop]

A raw-asyncio keep-alive backend (uvloop, httptools request parser, a fixed 2-byte answer) runs in a child
process on loopback so the client's event loop has a core to itself.  For each client and each mode (one
request at a time; ``--concurrency`` concurrent tasks) it counts complete request+read cycles for ``--seconds``
after a warm-up, and prints requests/s and the client process's CPU time per request.  The clients alternate
for ``--rounds`` rounds and the best round of each counts, which damps noise from other load on the machine.
Prints the ratios new/aiohttp.  Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from collections.abc import Awaitable, Callable

import httptools

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
WARMUP_S = 0.5

Results = dict[tuple[str, int], tuple[float, float]]  # (client, concurrency) -> (req/s, CPU µs per request)


class _Backend(asyncio.Protocol):
    """Answers every request on the connection with ``RESPONSE`` (keep-alive)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)


def _serve(sock: socket.socket, use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        uvloop.install()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Backend, sock=sock)
        await server.serve_forever()

    asyncio.run(serve())


async def _measure(one: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s, client CPU µs per request) over ``seconds`` after a warm-up."""
    stop = False
    count = 0

    async def worker() -> None:
        nonlocal count
        while not stop:
            await one()
            count += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(WARMUP_S)
    start_count, start, cpu = count, time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    done, elapsed, cpu = count - start_count, time.perf_counter() - start, time.process_time() - cpu
    stop = True
    await asyncio.gather(*tasks)
    return done / elapsed, cpu / max(done, 1) * 1e6


async def _bench(port: int, seconds: float, concurrency: int, rounds: int) -> Results:
    from sidecar_gateway.transports.fastpool import HttpClient as FastClient
    from sidecar_gateway.transports.pool import AiohttpClient

    url = f"http://127.0.0.1:{port}/bench"
    headers = [(b"host", b"backend.local"), (b"user-agent", b"microbench"), (b"accept", b"*/*")]
    best: Results = {}
    for r in range(rounds):
        for name, factory in (("httptools-pool", FastClient), ("aiohttp", AiohttpClient)):
            client = factory()

            async def one(client: FastClient | AiohttpClient = client) -> None:
                resp = await client.request("GET", url, headers)
                await resp.read()

            for conc in (1, concurrency):
                rps, cpu_us = await _measure(one, conc, seconds)
                print(f"round {r + 1} {name:15s} concurrency={conc:3d}: {rps:9.0f} req/s {cpu_us:7.1f} µs CPU/req",
                      flush=True)
                if rps > best.get((name, conc), (0.0, 0.0))[0]:
                    best[(name, conc)] = (rps, cpu_us)
            await client.aclose()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    use_uvloop = not args.no_uvloop

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    backend = multiprocessing.get_context("fork").Process(target=_serve, args=(sock, use_uvloop), daemon=True)
    backend.start()
    try:
        if use_uvloop:
            import uvloop

            uvloop.install()
        results = asyncio.run(_bench(port, args.seconds, args.concurrency, args.rounds))
    finally:
        backend.terminate()
        backend.join()
    for conc in (1, args.concurrency):
        (new_rps, new_cpu), (old_rps, old_cpu) = results[("httptools-pool", conc)], results[("aiohttp", conc)]
        print(f"concurrency {conc:3d}: httptools-pool {new_rps:.0f} req/s ({new_cpu:.0f} µs CPU/req), "
              f"aiohttp {old_rps:.0f} req/s ({old_cpu:.0f} µs CPU/req): {new_rps / old_rps:.2f}x req/s, "
              f"{old_cpu / new_cpu:.2f}x less CPU per request")


if __name__ == "__main__":
    main()
