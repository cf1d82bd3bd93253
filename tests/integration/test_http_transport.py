"""``HttpTransport`` (contract §8.1) against a real loopback aiohttp server, through the real pooled client."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from sidecar_gateway.config.plan import HttpConnection
from sidecar_gateway.errors import ErrorCode, InvocationError
from sidecar_gateway.transports.base import InvocationType, InvokeResult, ResultKind
from sidecar_gateway.transports.http import MAX_OUTPUT_BYTES, READ_CAP, HttpTransport
from sidecar_gateway.transports.pool import HttpClient

INPUT = orjson.dumps({"point": "PreProcessor", "masheryMessageId": "m-1"})
MESSAGE_ID = "0b6f1c2e-0000-4000-8000-000000000001"
OUTPUT = b'{"modify":{"addHeaders":{"X-Checked":"yes"}}}'
ERROR_DOC = b'{"errorType":"java.lang.RuntimeException","errorMessage":"boom"}'
BIG = 7 * 1024 * 1024  # larger than the 6 MB output limit (§4.3)


@dataclass
class Recorded:
    """What the server saw, and knobs the tests turn."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    delay_s: float = 0.0
    peers: list[Any] = field(default_factory=list)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), like a crashed function host."""
    assert request.transport is not None
    sock = request.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()


def _app(rec: Recorded) -> web.Application:
    async def record(request: web.Request) -> None:
        rec.requests.append({
            "method": request.method,
            "path": request.path,
            "headers": [(k, v) for k, v in request.headers.items()],
            "body": await request.read(),
        })
        rec.peers.append(request.transport.get_extra_info("peername") if request.transport else None)

    async def fixed(request: web.Request) -> web.StreamResponse:
        await record(request)
        name = request.match_info["name"]
        if name == "output":
            return web.Response(status=200, body=OUTPUT, content_type="application/json")
        if name == "empty":
            return web.Response(status=200, body=b"")
        if name == "whitespace":
            return web.Response(status=200, body=b" \r\n\t ")
        if name == "null":
            return web.Response(status=200, body=b"null")
        if name == "no-content":
            return web.Response(status=204)
        if name == "accepted":
            return web.Response(status=202, body=b'{"ignored":true}')
        if name == "function-error":
            return web.Response(status=200, body=ERROR_DOC, headers={"X-Amz-Function-Error": "Unhandled"})
        if name == "function-error-500":
            return web.Response(status=500, body=ERROR_DOC, headers={"X-Amz-Function-Error": "Handled"})
        if name == "redirect":
            return web.Response(status=302, headers={"Location": "/fn/output"})
        if name == "exact-limit":
            return web.Response(status=200, body=b" " * (MAX_OUTPUT_BYTES - 2) + b"{}")
        if name == "big":
            return web.Response(status=200, body=b"x" * BIG)
        if name == "echo":
            return web.json_response({"headers": [[k, v] for k, v in request.headers.items()]})
        return web.Response(status=int(name), body=b'{"message":"nope"}')

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse(status=200)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"y" * (256 * 1024)
        try:
            for _ in range(BIG // len(chunk)):
                await resp.write(chunk)
        except (ConnectionResetError, ConnectionError):
            pass  # the client stopped reading once it had enough
        return resp

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        await asyncio.sleep(rec.delay_s)
        return web.Response(status=200, body=OUTPUT)

    async def reset_mid_body(request: web.Request) -> web.StreamResponse:
        await record(request)
        resp = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"modify":')
        _reset(request)
        return resp

    async def reset_before_head(request: web.Request) -> web.StreamResponse:
        await record(request)
        _reset(request)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/fn/{name}", fixed)
    app.router.add_post("/big-chunked", big_chunked)
    app.router.add_post("/slow", slow)
    app.router.add_post("/reset-mid-body", reset_mid_body)
    app.router.add_post("/reset-before-head", reset_before_head)
    return app


@dataclass
class Server:
    base: str
    rec: Recorded


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    rec = Recorded()
    runner = web.AppRunner(_app(rec), handle_signals=False, shutdown_timeout=0.5)  # do not wait for /slow
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield Server(f"http://127.0.0.1:{port}", rec)
    await runner.cleanup()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient()
    yield c
    await c.aclose()


async def _invoke(transport: HttpTransport, mode: InvocationType = InvocationType.REQUEST_RESPONSE) -> InvokeResult:
    deadline = asyncio.get_running_loop().time() + 5.0
    return await transport.invoke(INPUT, invocation_type=mode, message_id=MESSAGE_ID, deadline=deadline)


def _transport(url: str, client: HttpClient, headers: tuple[tuple[str, str], ...] = ()) -> HttpTransport:
    return HttpTransport(HttpConnection(url=url, headers=headers), client)


RR = InvocationType.REQUEST_RESPONSE
EV = InvocationType.EVENT

# The §8.1 table, one row per case: (path, mode, expected result).
RESULT_ROWS = [
    ("/fn/output", RR, InvokeResult(ResultKind.OUTPUT, OUTPUT)),
    ("/fn/empty", RR, InvokeResult(ResultKind.OUTPUT, b"{}")),
    ("/fn/whitespace", RR, InvokeResult(ResultKind.OUTPUT, b"{}")),
    ("/fn/null", RR, InvokeResult(ResultKind.OUTPUT, b"null")),  # JSON null is for the interpreter (Q16)
    ("/fn/no-content", RR, InvokeResult(ResultKind.OUTPUT, b"{}")),
    ("/fn/accepted", RR, InvokeResult.accepted()),
    ("/fn/function-error", RR, InvokeResult(ResultKind.FUNCTION_ERROR, ERROR_DOC, "Unhandled")),
    ("/fn/function-error-500", RR, InvokeResult(ResultKind.FUNCTION_ERROR, ERROR_DOC, "Handled")),
    ("/fn/output", EV, InvokeResult.accepted()),
    ("/fn/empty", EV, InvokeResult.accepted()),
    ("/fn/no-content", EV, InvokeResult.accepted()),
    ("/fn/accepted", EV, InvokeResult.accepted()),
    ("/fn/function-error", EV, InvokeResult(ResultKind.FUNCTION_ERROR, ERROR_DOC, "Unhandled")),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("path", "mode", "expected"), RESULT_ROWS,
                         ids=[f"{p.rsplit('/', 1)[1]}-{m.value}" for p, m, _ in RESULT_ROWS])
async def test_response_maps_to_result(path: str, mode: InvocationType, expected: InvokeResult, server: Server,
                                       client: HttpClient) -> None:
    """Each §8.1 row (and its Event-mode variant) maps to the documented result."""
    assert await _invoke(_transport(server.base + path, client), mode) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [201, 301, 400, 404, 429, 500, 503])
@pytest.mark.parametrize("mode", [RR, EV], ids=["RequestResponse", "Event"])
async def test_other_status_is_unexpected(status: int, mode: InvocationType, server: Server,
                                          client: HttpClient) -> None:
    """Any status outside 200/202/204 without X-Amz-Function-Error is UNEXPECTED_STATUS (§8.1, §5.3)."""
    with pytest.raises(InvocationError) as info:
        await _invoke(_transport(f"{server.base}/fn/{status}", client), mode)
    assert info.value.code is ErrorCode.UNEXPECTED_STATUS


@pytest.mark.asyncio
async def test_request_carries_contract_and_configured_headers(server: Server, client: HttpClient) -> None:
    """POST with the input body, the four §8.1 headers and the header.<name> values."""
    transport = _transport(f"{server.base}/fn/output", client,
                           (("X-Api-Key", "secret-1"), ("X-Tenant", "acme")))
    await _invoke(transport)
    await _invoke(transport, EV)
    rr, ev = server.rec.requests
    assert rr["method"] == "POST" and rr["body"] == INPUT
    headers = dict(rr["headers"])
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["X-Sidecar-Invocation-Type"] == "RequestResponse"
    assert headers["X-Mashery-Message-ID"] == MESSAGE_ID
    assert headers["X-Api-Key"] == "secret-1"
    assert headers["X-Tenant"] == "acme"
    assert dict(ev["headers"])["X-Sidecar-Invocation-Type"] == "Event"


@pytest.mark.asyncio
async def test_configured_header_cannot_override_protocol_headers(server: Server, client: HttpClient) -> None:
    """A header.<name> reusing a §8.1 protocol header name is dropped; the gateway's value is sent once."""
    transport = _transport(f"{server.base}/fn/output", client,
                           (("X-Mashery-Message-ID", "spoofed"), ("content-type", "text/plain")))
    await _invoke(transport)
    sent = server.rec.requests[0]["headers"]
    assert [v for k, v in sent if k.lower() == "x-mashery-message-id"] == [MESSAGE_ID]
    assert [v for k, v in sent if k.lower() == "content-type"] == ["application/json"]


@pytest.mark.asyncio
async def test_configured_accept_replaces_the_default(server: Server, client: HttpClient) -> None:
    """header.Accept is not reserved by §2.5: the configured value is sent instead of application/json."""
    transport = _transport(f"{server.base}/fn/output", client, (("Accept", "application/vnd.acme+json"),))
    await _invoke(transport)
    sent = server.rec.requests[0]["headers"]
    assert [v for k, v in sent if k.lower() == "accept"] == ["application/vnd.acme+json"]


@pytest.mark.asyncio
async def test_connection_is_kept_alive_between_calls(server: Server, client: HttpClient) -> None:
    """Consecutive calls (including discarded Event bodies) reuse one pooled connection."""
    transport = _transport(f"{server.base}/fn/output", client)
    for mode in (RR, EV, RR):
        await _invoke(transport, mode)
    assert len(set(server.rec.peers)) == 1


@pytest.mark.asyncio
async def test_redirect_is_not_followed(server: Server, client: HttpClient) -> None:
    """A 302 is 'any other status'; its Location is never requested (§8.1)."""
    with pytest.raises(InvocationError) as info:
        await _invoke(_transport(f"{server.base}/fn/redirect", client))
    assert info.value.code is ErrorCode.UNEXPECTED_STATUS
    assert [r["path"] for r in server.rec.requests] == ["/fn/redirect"]


@pytest.mark.asyncio
async def test_body_at_the_limit_is_read_whole(server: Server, client: HttpClient) -> None:
    """A 6 MiB body is returned intact for the interpreter."""
    result = await _invoke(_transport(f"{server.base}/fn/exact-limit", client))
    assert len(result.body) == MAX_OUTPUT_BYTES and result.body.endswith(b"{}")


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/fn/big", "/big-chunked"], ids=["content-length", "chunked"])
async def test_oversized_body_is_cut_one_byte_past_the_limit(path: str, server: Server, client: HttpClient) -> None:
    """Reading stops at 6 MiB + 1 bytes, enough for the interpreter to reject it (§4.3), and the client survives."""
    transport = _transport(server.base + path, client)
    result = await _invoke(transport)
    assert result.kind is ResultKind.OUTPUT
    assert len(result.body) == READ_CAP
    assert await _invoke(_transport(f"{server.base}/fn/output", client)) == InvokeResult(ResultKind.OUTPUT, OUTPUT)


@pytest.mark.asyncio
async def test_connection_refused_is_a_connection_failure(client: HttpClient) -> None:
    """Nothing listening: CONNECTION_FAILURE (§5.3)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InvocationError) as info:
        await _invoke(_transport(f"http://127.0.0.1:{port}/fn", client))
    assert info.value.code is ErrorCode.CONNECTION_FAILURE


@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/reset-mid-body", "/reset-before-head"])
async def test_connection_reset_is_a_connection_failure(path: str, server: Server, client: HttpClient) -> None:
    """A reset before or during the response is CONNECTION_FAILURE, and the next call works."""
    with pytest.raises(InvocationError) as info:
        await _invoke(_transport(server.base + path, client))
    assert info.value.code is ErrorCode.CONNECTION_FAILURE
    assert await _invoke(_transport(f"{server.base}/fn/output", client)) == InvokeResult(ResultKind.OUTPUT, OUTPUT)


@pytest.mark.asyncio
async def test_deadline_cancellation_leaves_transport_usable(server: Server, client: HttpClient) -> None:
    """asyncio.timeout cancels a slow call promptly; the same transport then answers normally."""
    transport = _transport(f"{server.base}/slow", client)
    server.rec.delay_s = 5.0
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await _invoke(transport)
    assert time.monotonic() - started < 1.0
    server.rec.delay_s = 0.0
    assert await _invoke(transport) == InvokeResult(ResultKind.OUTPUT, OUTPUT)
