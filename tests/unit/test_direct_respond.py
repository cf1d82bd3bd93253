"""``_Cycle.respond`` (protocol.direct_respond): the gateway's one-call response writes the very bytes that the two
ASGI messages write, for every framing case — on a real uvicorn server with our protocol, over real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from sidecar_gateway.gateway.protocol import LimitedHttpToolsProtocol, direct_respond

CASES: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "length": (200, [(b"content-type", b"text/plain"), (b"content-length", b"5")], b"hello"),
    "no-length": (200, [(b"content-type", b"text/plain")], b"hello"),  # chunked
    "empty-no-length": (200, [], b""),
    "no-content": (204, [(b"x-a", b"1")], b""),
    "not-modified": (304, [(b"etag", b'"x"')], b""),
    "upper-case-names": (201, [(b"X-Mixed-Case", b"v"), (b"Content-Length", b"2")], b"ok"),
    "close": (200, [(b"connection", b"close"), (b"content-length", b"2")], b"ok"),
    "bad-value": (200, [(b"x-a", b"bad\r\nx-b: smuggled"), (b"content-length", b"2")], b"ok"),
    "bad-name": (200, [(b"x a", b"1"), (b"content-length", b"2")], b"ok"),
    "short-body": (200, [(b"content-length", b"10")], b"ok"),
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    status, headers, body = CASES[scope["path"].strip("/")]
    if scope["query_string"] == b"direct":
        respond = direct_respond(send)
        assert respond is not None
        assert respond(status, list(headers), body)
        assert not respond(status, list(headers), body)  # a second response is refused, nothing written
    else:
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=free, http=LimitedHttpToolsProtocol, lifespan="off",
                            log_level="critical", access_log=False, server_header=False, date_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield free
    server.should_exit = True
    thread.join(5)


def exchange(port: int, method: str, path: str, keep_alive: bool) -> bytes:
    """Everything the server writes for one request (until it closes, or 0.3 s of silence on keep-alive)."""
    connection = "keep-alive" if keep_alive else "close"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: {connection}\r\n\r\n".encode())
        sock.settimeout(0.3 if keep_alive else 5)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "close"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("case", list(CASES))
def test_respond_writes_what_the_asgi_messages_write(port: int, case: str, method: str, keep_alive: bool) -> None:
    direct = exchange(port, method, f"/{case}?direct", keep_alive)
    messages = exchange(port, method, f"/{case}?asgi", keep_alive)
    assert direct == messages
    if case.startswith("bad"):
        assert direct == b""  # refused before a byte is written (a CRLF in a value never splits the head)
    else:  # short-body: the head went out, then the connection was closed on the missing bytes
        assert direct.startswith(b"HTTP/1.1 %d" % CASES[case][0])


def test_another_servers_send_has_no_direct_respond() -> None:
    async def send(message: dict[str, Any]) -> None:
        return None

    assert direct_respond(send) is None
