"""The floor plus chosen pieces of the gateway: what each piece costs on its own (performance.md, "Sixth session").

    FLOOR_PIECES=headers python bench/instructions.py --scenarios s1,s2,s6 --floor bench/floor_pieces.py
    FLOOR_PIECES=headers,route,log,metrics,deadline python bench/floor_pieces.py --port P --backend H:P/path \\
        --function H:P        # as a server, e.g. under wrk next to floor_proxy.py and the gateway

``floor_proxy.py`` (same command line, same paths: ``/plain`` S1, ``/pre`` S2, ``/deny`` S6) with the gateway's
own code added where ``FLOOR_PIECES`` (comma-separated) says; nothing else changes, so the difference in
instructions per request between two runs is the cost of the pieces:

* ``none`` — the floor, collecting the request headers (what every piece below reads);
* ``headers`` — ``forward_request_headers``, the message id, ``strip_hop_by_hop`` and the response-head check;
* ``route`` — ``Router.match``, key lookup, masking and authentication, the backend path;
* ``log`` — the access record and ``AccessLog.write`` (to /dev/null);
* ``metrics`` — the endpoint's call and upstream histograms;
* ``deadline`` — a ``Deadline`` around the backend exchange;
* ``client`` — our ``HttpClient`` for the backend instead of the raw exchange;
* ``sidecar`` — ``EndpointSidecar.run_pre`` (input builder, http transport, output interpreter, decision
  procedure) instead of the raw pre-call;
* ``server`` / ``stock`` — our ``LimitedHttpToolsProtocol`` / uvicorn's ``HttpToolsProtocol`` with the floor's
  job as an ASGI app, instead of the raw ``asyncio.Protocol`` (other pieces are ignored then).

A measuring tool, not product code: it reaches into the gateway's internals and may need adjusting when they change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import tempfile
import time
from typing import Any

import floor_proxy as fp
import uvloop

from sidecar_gateway.config.loader import load_config
from sidecar_gateway.gateway.app import _thousandths, new_message_id
from sidecar_gateway.gateway.headers import MESSAGE_ID, forward_request_headers, strip_hop_by_hop
from sidecar_gateway.gateway.keys import authenticate, find_key, mask_key
from sidecar_gateway.gateway.protocol import _HEAD_LINES, LimitedHttpToolsProtocol, direct_respond
from sidecar_gateway.gateway.proxy import backend_path
from sidecar_gateway.gateway.runtime import RuntimeHolder
from sidecar_gateway.observability.logs import AccessLog
from sidecar_gateway.sidecar.call import BackendRequest, CallContext, ClientRequest
from sidecar_gateway.transports.deadline import Deadline

PIECES = frozenset(os.environ.get("FLOOR_PIECES", "none").split(","))
KNOWN = {"none", "headers", "route", "log", "metrics", "deadline", "client", "sidecar", "server", "stock"}
HOLDER: RuntimeHolder
LOG = AccessLog(open(os.devnull, "wb"))  # noqa: SIM115 (open for the life of the process)
CONFIG = """
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:0}}
services:
- id: bench
  endpoints:
  - {{id: bench-s1, public_path: /plain, target: "http://127.0.0.1:{bport}/backend", key_required: false}}
  - id: bench-s2
    public_path: /pre
    target: "http://127.0.0.1:{bport}/backend"
    key_required: false
    pre_processing: "stack: http\\nurl: http://{func}/allow\\n"
  - id: bench-s6
    public_path: /deny
    target: "http://127.0.0.1:{bport}/backend"
    key_required: false
    pre_processing: "stack: http\\nurl: http://{func}/terminate\\n"
"""
class _Client(fp._Client):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.headers: list[tuple[bytes, bytes]] = []

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.handle_pieces(self.parser.get_method(), self.url, self.headers))

    async def handle_pieces(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        rt = HOLDER.current
        backend = self.backend
        started = time.perf_counter()
        path = url.decode("latin-1")
        if "route" in PIECES:
            match = rt.router.match("127.0.0.1", method.decode(), path)
            endpoint = match.endpoint
            presented = find_key(endpoint.key_location, "", headers)
            mask_key(presented)
            authenticate(presented, rt.plan.keys, key_required=endpoint.key_required)
            backend_path(endpoint.target, match.remainder, "")
        function_path = fp.FUNCTION_PATH.get(url[:4])
        if function_path is not None:
            if "sidecar" in PIECES:
                text_method = method.decode()
                match = rt.router.match("127.0.0.1", text_method, path)
                epr = rt.endpoints[match.endpoint.endpoint_id]
                request = ClientRequest(text_method, "http", "127.0.0.1", path, match.remainder or "/", "", headers,
                                        "127.0.0.1")
                call = CallContext(new_message_id(), match.endpoint, request, None)
                outgoing = BackendRequest(text_method, "http", "127.0.0.1", backend.port, "/backend", list(headers))
                allowed = await epr.sidecar.run_pre(call, outgoing) is None  # type: ignore[union-attr]
            else:
                _, _, answer = await self.function.exchange(fp.pre_call_head(self.function, function_path, method,
                                                                              url))
                allowed = fp.allows(answer)
            if not allowed:
                self.transport.write(fp.FORBIDDEN)
                return
        head = fp.backend_head(backend, method)
        if "headers" in PIECES:
            sent = forward_request_headers(headers, peer="127.0.0.1", peer_trusted=False, scheme="http",
                                           host=b"127.0.0.1", backend_host=b"127.0.0.1:%d" % backend.port)
            sent.append((MESSAGE_ID, new_message_id().encode()))
            head = (b"%s %s HTTP/1.1\r\n" % (method, backend.path) + b"".join(k + b": " + v + b"\r\n" for k, v in sent)
                    + b"\r\n")
        if "client" in PIECES:
            upstream = await rt.client.request(method.decode(), f"http://127.0.0.1:{backend.port}/backend", [], None)
            status, answer_headers, body = upstream.status, upstream.headers, upstream.read_whole_ready() or b""
            upstream.release()
        elif "deadline" in PIECES:
            with Deadline(time.monotonic() + 30):
                status, answer_headers, body = await backend.exchange(head)
        else:
            status, answer_headers, body = await backend.exchange(head)
        epr = rt.endpoints["bench-s1"]
        if "metrics" in PIECES:
            epr.metrics.upstream_duration.observe(time.perf_counter() - started)
        if "headers" in PIECES:
            lines = [k + b": " + v + b"\r\n" for k, v in strip_hop_by_hop([(k.lower(), v) for k, v in answer_headers])]
            block = b"".join(lines)
            if _HEAD_LINES.fullmatch(block) is None or block.count(b"\n") != len(lines):
                raise RuntimeError("invalid response head")
            answer = b"".join((b"HTTP/1.1 %d OK\r\n" % status, block, b"\r\n", body))
        else:
            answer = fp.response_bytes(status, answer_headers, body)
        self.transport.write(answer)
        if "metrics" in PIECES:
            epr.metrics.observe(status, time.perf_counter() - started)
        if "log" in PIECES:
            elapsed_ms = (time.perf_counter() - started) * 1000
            LOG.write({"method": method.decode(), "path": path, "message_id": "x", "service_id": "bench",
                       "endpoint_id": "bench-s1", "key": None, "upstream_ms": _thousandths(elapsed_ms),
                       "status": status, "duration_ms": _thousandths(elapsed_ms), "ts": _thousandths(time.time())})


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``server`` / ``stock``: the floor's job behind an ASGI server (raw upstream exchanges)."""
    if scope["type"] != "http":
        return
    method = scope["method"].encode()
    url = scope["raw_path"]
    function_path = fp.FUNCTION_PATH.get(url[:4])
    allowed = True
    if function_path is not None:
        function = _Client.function
        _, _, answer = await function.exchange(fp.pre_call_head(function, function_path, method, url))
        allowed = fp.allows(answer)
    if not allowed:
        status, headers, body = 403, [(b"content-length", b"0")], b""
    else:
        status, answer_headers, body = await _Client.backend.exchange(fp.backend_head(_Client.backend, method))
        headers = [(k.lower(), v) for k, v in answer_headers if k.lower() not in fp.HOP]
    respond = direct_respond(send)
    if respond is not None and respond(status, headers, body):
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _serve(sock: socket.socket, args: argparse.Namespace) -> None:
    global HOLDER
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(CONFIG.format(port=args.port, bport=_Client.backend.port, func=args.function))
    HOLDER = RuntimeHolder(load_config(config.name).plan)
    await HOLDER.start()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as gateway/server.py
    if PIECES & {"server", "stock"}:
        import uvicorn
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        protocol = HttpToolsProtocol if "stock" in PIECES else LimitedHttpToolsProtocol
        server = uvicorn.Server(uvicorn.Config(_asgi_app, loop="none", http=protocol, ws="none", lifespan="off",
                                               access_log=False, log_level="warning", server_header=False,
                                               date_header=False, proxy_headers=False))
        await server.serve(sockets=[sock])
        return
    await fp.serve_until_sigterm(sock, _Client)


def main() -> None:
    args, sock = fp.command_line(__doc__.split("\n\n")[0], "ignored: one process (start several on one port)")
    unknown = PIECES - KNOWN
    if unknown:
        raise SystemExit(f"unknown FLOOR_PIECES {sorted(unknown)}; known: {sorted(KNOWN)}")
    uvloop.run(_serve(sock, args))


if __name__ == "__main__":
    main()
