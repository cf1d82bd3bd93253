"""The ASGI entry point: one straight line per call through a precompiled plan (style rules 9 and 11).

    route → authenticate → [pre-processing] → proxy → [post-processing] → respond

Theory of operation:

* ``GatewayApp`` holds a ``RuntimeHolder``; each call takes the *current* ``Runtime`` once at its start and
  uses it to the end, so a SIGHUP reload swaps configurations without touching calls in flight.
* Pre/post processing are the endpoint's ``EndpointSidecar`` (``sidecar/engine.py``); an endpoint without
  processors has ``None`` there and the call is a plain proxy.
* Always answer: a gateway error before the response started is rendered (§6.2); an unexpected exception is
  a logged 500 if nothing was sent, an aborted connection otherwise (uvicorn ``run_asgi``).
* Client disconnects cancel the call (and with it the upstream request): our HTTP protocol cancels the task
  (``protocol.DISCONNECT_EXTENSION``); under another ASGI server a watcher task on ``receive`` does it.
* Hot-path rules (performance issue): per call one dict (the access record), one responder, the views a
  processor needs only when the endpoint has one, one pass over the client headers, one upstream timer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import BackendFailure, ClientError, ErrorCode, GatewayError, InternalError
from ..observability.logs import AccessLog, log_event
from ..observability.logs import thousandths as _thousandths
from ..observability.metrics import flush as flush_metrics
from ..observability.metrics import overload_rejections_total, unmatched_total
from ..sidecar.apply import terminate_headers
from ..sidecar.call import BackendRequest, BackendResponse, CallContext, ClientRequest
from ..transports.deadline import Deadline
from ..transports.pool import ConnectError, HttpResponse, ReadError
from .headers import MESSAGE_ID, client_address, forward_request_headers, strip_hop_by_hop
from .keys import authenticate, find_key, mask_key
from .protocol import CLIENT_DISCONNECTED, DISCONNECT_EXTENSION, MESSAGE_ID_EXTENSION, direct_respond
from .proxy import BodyTooLarge, ClientDisconnected, backend_path, read_body, stream_body
from .responses import Reply, render_error, render_termination_message
from .routing import MethodNotAllowed
from .runtime import EndpointRuntime, Runtime, RuntimeHolder

__all__ = ["GatewayApp", "new_message_id"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A minimum budget for the backend call when pre-processing used up the endpoint deadline: the backend still
# gets a chance to answer fast rather than an immediate 504 (Envoy's per-try floor is similar in spirit).
MIN_BACKEND_BUDGET_S = 0.001

_perf_counter = time.perf_counter
_getrandbits = random.getrandbits
# RFC 9562 §5.4: version 4 in bits 48-51 of the octets (76-79 of the integer), variant 10 in bits 62-63 (64-65).
_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A random (version 4) UUID string for ``X-Mashery-Message-ID``.

    Message ids must be unique, not secret (they are sent to the backend and logged), so the 122 random bits
    come from ``random`` (Mersenne Twister seeded from ``os.urandom``, re-seeded in forked children) instead of
    ``uuid.uuid4()``'s ``os.urandom`` call and ``UUID`` object: ~10× cheaper, same format."""
    h = "%032x" % ((_getrandbits(128) & _UUID_CLEAR) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Responder:
    """Tracks whether the response started (style rule 11) and sends replies; carries the matched endpoint
    (for its metrics) to the end of the call."""

    __slots__ = ("epr", "finished", "respond", "send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.respond = direct_respond(send)  # a whole response in one call when our protocol serves us
        self.started = False
        self.finished = False  # set just before the last body message
        self.status = 0
        self.epr: EndpointRuntime | None = None

    async def reply(self, reply: Reply) -> None:
        self.started = True
        self.status = reply.status
        headers = reply.headers
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await self.whole(reply.status, headers, reply.body)

    async def whole(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A response whose body is known: one ``respond`` call, or the two ASGI messages."""
        respond = self.respond
        if respond is not None and respond(status, headers, body):
            self.finished = True
            return
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        self.finished = True
        await self.send({"type": "http.response.body", "body": body})


def _host_without_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    return host.rsplit(":", 1)[0].lower() if ":" in host else host.lower()


def _cancelled_by_disconnect(exc: asyncio.CancelledError) -> bool:
    return bool(exc.args) and exc.args[0] == CLIENT_DISCONNECTED


class GatewayApp:
    serves_native = True  # our protocol may serve eligible calls through the native lane (native/lane.py)

    def __init__(self, holder: RuntimeHolder, access_log: AccessLog | None = None) -> None:
        self.holder = holder
        self.access_log = access_log or AccessLog()
        self.inflight = 0  # calls in progress in this worker, all runtimes together (admission control)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.holder.start()
                except Exception as exc:  # reported to uvicorn, which refuses to start
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.holder.stop()
                self.access_log.flush()
                flush_metrics()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.holder.current
        if self.inflight >= runtime.plan.max_inflight:
            await self._shed(scope, send)
            return
        self.inflight += 1
        runtime.inflight += 1
        responder = _Responder(send)
        record: dict[str, Any] = {}
        started = _perf_counter()
        try:
            await self._handle(runtime, scope, receive, responder, record)
        except asyncio.CancelledError as exc:
            if not (record.get("disconnected") or _cancelled_by_disconnect(exc)):
                raise
            record["disconnected"] = True
            record["status"] = 499  # nginx's "client closed request"
        except Exception as exc:
            log_event(logging.ERROR, "unhandled_error", message_id=record.get("message_id"), error=repr(exc))
            if not responder.started:
                await responder.reply(render_error(InternalError(repr(exc)), None))
            else:
                raise
        finally:
            self.inflight -= 1
            runtime.inflight -= 1
            elapsed = _perf_counter() - started
            status = record.get("status")
            if status is None:
                status = record["status"] = responder.status
            epr = responder.epr
            if epr is not None:
                epr.metrics.observe(status, elapsed)
            if self.access_log.enabled:
                record["duration_ms"] = _thousandths(elapsed * 1000)
                record["ts"] = _thousandths(time.time())
                self.access_log.write(record)

    async def _shed(self, scope: Scope, send: Send) -> None:
        """Admission control: ``max_inflight`` calls are in progress in this worker, so this one is answered
        503 ServiceUnavailable at once (nothing routed, no function or backend called) with ``Retry-After``,
        and the connection is closed so the client's next attempt may land on a less busy worker.  Answering
        costs a few microseconds, so overload degrades into fast refusals instead of an unbounded queue."""
        reply = render_error(GatewayError(ErrorCode.OVERLOADED), None)
        reply.headers += [(b"retry-after", b"1"), (b"connection", b"close")]
        overload_rejections_total.inc()
        if self.access_log.enabled:
            raw = scope.get("raw_path")
            self.access_log.write({"method": scope["method"], "path": raw.decode("latin-1") if raw else scope["path"],
                                   "status": reply.status, "error": "ServiceUnavailable",
                                   "ts": _thousandths(time.time())})
        await _Responder(send).reply(reply)

    async def _handle(self, rt: Runtime, scope: Scope, receive: Receive, responder: _Responder,
                      record: dict[str, Any]) -> None:
        method: str = scope["method"]
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else scope["path"]
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host_b = b""
        for k, v in headers:
            if k == b"host":
                host_b = v
                break
        host = host_b.decode("latin-1")
        record["method"] = method
        record["path"] = raw_path

        # P1: match the endpoint
        try:
            match = rt.router.match(_host_without_port(host), method, raw_path)
        except ClientError as err:
            reply = render_error(err, None)
            if isinstance(err, MethodNotAllowed):
                reply.headers.append((b"allow", err.allow.encode()))
            unmatched_total.labels(str(err.status)).inc()
            record["error"] = err.error_name
            await responder.reply(reply)
            return
        endpoint = match.endpoint
        epr: EndpointRuntime = rt.endpoints[endpoint.endpoint_id]
        responder.epr = epr
        extensions = scope.get("extensions")
        message_id = (extensions.get(MESSAGE_ID_EXTENSION) if extensions else None) or new_message_id()
        record["message_id"] = message_id
        record["service_id"] = endpoint.service_id
        record["endpoint_id"] = endpoint.endpoint_id

        # P2: key authentication
        qs = scope["query_string"]
        query_string = qs.decode("latin-1") if qs else ""
        try:
            presented = find_key(endpoint.key_location, query_string, headers)
            record["key"] = mask_key(presented)  # the path is logged without its query, so without the key
            package_key = authenticate(presented, rt.plan.keys, key_required=endpoint.key_required)
        except ClientError as err:
            record["error"] = err.error_name
            await responder.reply(render_error(err, endpoint))
            return

        client = scope.get("client")
        peer = client[0] if client else ""
        peer_trusted = rt.is_trusted(peer)
        scheme = scope.get("scheme", "http")
        target = endpoint.target
        remainder = match.remainder
        backend = BackendRequest(
            method, target.scheme, target.host, target.port, backend_path(target, remainder, query_string),
            forward_request_headers(headers, peer=peer, peer_trusted=peer_trusted, scheme=scheme, host=host_b,
                                    backend_host=target.host_header),
        )
        call: CallContext | None = None
        if epr.sidecar is not None:
            client_addr = client_address(peer, headers, rt.plan.trusted_proxies) if peer_trusted else peer
            request = ClientRequest(method, scheme, host, raw_path, remainder or "/", query_string, headers,
                                    client_addr)
            call = CallContext(message_id, endpoint, request, package_key)
        deadline = time.monotonic() + endpoint.timeout_s
        watcher = None
        if not extensions or DISCONNECT_EXTENSION not in extensions:
            watcher = _DisconnectWatcher(receive, record, responder)  # a server that does not cancel for us
        try:
            await self._call(rt, epr, call, message_id, headers, backend, receive, responder, record, deadline,
                             watcher)
        finally:
            if watcher is not None:
                watcher.stop()

    async def _call(self, rt: Runtime, epr: EndpointRuntime, call: CallContext | None, message_id: str,
                    headers: list[tuple[bytes, bytes]], backend: BackendRequest, receive: Receive,
                    responder: _Responder, record: dict[str, Any], deadline: float,
                    watcher: _DisconnectWatcher | None) -> None:
        endpoint = epr.plan
        sidecar = epr.sidecar
        limit = rt.plan.max_request_body
        body_stream: stream_body | None = None
        try:
            # Request body: announced too large → 413 at once; buffered only when a processor needs it.
            declared, chunked = _body_framing(headers)
            if declared is not None and declared > limit:
                raise BodyTooLarge
            has_body = declared != 0 and (declared is not None or chunked)
            if call is not None and has_body and sidecar.needs_request_body:  # type: ignore[union-attr]
                call.request.body = await read_body(receive, limit)
                backend.body = call.request.body
                has_body = False
            if not has_body and watcher is not None:
                watcher.start()

            # P3–P11: pre-processing
            if call is not None and sidecar.pre is not None:  # type: ignore[union-attr]
                termination = await sidecar.run_pre(call, backend)  # type: ignore[union-attr]
                if termination is not None:
                    await responder.reply(self._termination_reply(termination, endpoint,
                                                                  sidecar.pre_error_set))  # type: ignore[union-attr]
                    record["verdict_pre"] = "terminate"
                    return
                # a processor may have added one: the gateway's is set last, replacing it (contract §1, §4.4)
                backend.headers = [(k, v) for k, v in backend.headers if k != MESSAGE_ID]

            # P12: message id last, then the backend request
            backend.headers.append((MESSAGE_ID, message_id.encode()))
            body: Any = backend.body
            if body is None and has_body:
                body_stream = stream_body(receive, limit, on_done=watcher.start if watcher is not None else None)
                body = body_stream
            elif backend.body_replaced:
                backend.headers = [(k, v) for k, v in backend.headers if k != b"content-length"]
                backend.headers.append((b"content-length", str(len(backend.body or b"")).encode()))
            upstream = await self._send_upstream(rt, epr, backend, body, body_stream, deadline, record)

            # Q1–Q8: post-processing; no byte reaches the client before the verdict
            if call is not None and sidecar.post is not None:  # type: ignore[union-attr]
                response = BackendResponse(upstream.status, strip_hop_by_hop(upstream.headers))
                try:
                    if sidecar.needs_response_body:  # type: ignore[union-attr]
                        response.body = await self._read_backend_body(upstream, deadline)
                    termination = await sidecar.run_post(call, backend, response)  # type: ignore[union-attr]
                except BaseException:
                    upstream.close()
                    raise
                if termination is not None:
                    upstream.close()
                    await responder.reply(self._termination_reply(termination, endpoint,
                                                                  sidecar.post_error_set))  # type: ignore[union-attr]
                    record["verdict_post"] = "terminate"
                    return
                if response.body is not None:
                    upstream.release() if sidecar.needs_response_body else upstream.close()  # type: ignore[union-attr]
                await self._respond(responder, response.status, response.headers, response.body, upstream)
            else:
                await self._respond(responder, upstream.status, strip_hop_by_hop(upstream.headers), None, upstream)
        except GatewayError as exc:
            if responder.started:
                raise
            err: GatewayError = BodyTooLarge() if body_stream is not None and body_stream.too_large else exc
            record["error"] = err.error_name
            use_set = sidecar.error_set_for(err) if sidecar is not None else False
            await responder.reply(render_error(err, endpoint, use_error_set=use_set))
        except ClientDisconnected:
            record["disconnected"] = True
            record["status"] = 499

    async def _send_upstream(self, rt: Runtime, epr: EndpointRuntime, backend: BackendRequest, body: Any,
                             body_stream: stream_body | None, deadline: float,
                             record: dict[str, Any]) -> HttpResponse:
        t0 = _perf_counter()
        try:
            with Deadline(max(deadline, time.monotonic() + MIN_BACKEND_BUDGET_S)):
                upstream = await rt.client.request(backend.method, backend.uri(), backend.headers, body)
        except TimeoutError:
            raise BackendFailure(ErrorCode.BACKEND_TIMEOUT) from None
        except (ConnectError, ReadError) as exc:
            if body_stream is not None and body_stream.too_large:
                raise BodyTooLarge from None
            if body_stream is not None and body_stream.disconnected:
                raise ClientDisconnected from None
            log_event(logging.WARNING, "backend_unavailable", message_id=record.get("message_id"), error=str(exc))
            raise BackendFailure(ErrorCode.BACKEND_UNAVAILABLE) from None
        elapsed = _perf_counter() - t0
        epr.metrics.upstream_duration.observe(elapsed)
        record["upstream_ms"] = _thousandths(elapsed * 1000)
        return upstream

    @staticmethod
    async def _read_backend_body(upstream: HttpResponse, deadline: float) -> bytes:
        """The whole backend body, for a post-processor that expands it; a broken or late body is the backend's
        failure (502/504), exactly as a broken or late head would be."""
        try:
            with Deadline(max(deadline, time.monotonic() + MIN_BACKEND_BUDGET_S)):
                return await upstream.read()
        except TimeoutError:
            raise BackendFailure(ErrorCode.BACKEND_TIMEOUT) from None
        except ReadError:
            raise BackendFailure(ErrorCode.BACKEND_UNAVAILABLE) from None

    @staticmethod
    def _termination_reply(termination: Any, endpoint: Any, use_error_set: bool) -> Reply:
        if termination.body is None:
            return render_termination_message(termination.code, termination.message, endpoint,
                                              use_error_set=use_error_set, extra_headers=list(termination.headers))
        return Reply(termination.code, terminate_headers(termination), termination.body)

    @staticmethod
    async def _respond(responder: _Responder, status: int, headers: list[tuple[bytes, bytes]],
                       body: bytes | None, upstream: HttpResponse) -> None:
        send = responder.send
        responder.started = True
        responder.status = status
        if body is not None:  # a processor replaced or buffered it
            headers = [(k, v) for k, v in headers if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await responder.whole(status, headers, body)
            return
        read_chunk = getattr(upstream, "read_chunk", None)  # our pool's response; the aiohttp fallback has none
        if read_chunk is not None:
            whole = upstream.read_whole_ready()  # the usual small body, already here with its head
            if whole is not None:
                try:
                    await responder.whole(status, headers, whole)
                except BaseException:
                    upstream.close()
                    raise
                upstream.release()
                return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        try:
            if read_chunk is None:
                async for chunk in upstream.iter_chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                # The last piece goes out with ``more_body: False`` as soon as the body is known to be complete
                # (one ASGI message fewer for the usual small body that arrived with the head).
                while chunk := await read_chunk():
                    if upstream.body_complete:
                        responder.finished = True
                        await send({"type": "http.response.body", "body": chunk})
                        upstream.release()
                        return
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ReadError:
            upstream.close()
            raise  # the response started: uvicorn aborts the connection (the client sees a truncated body)
        except BaseException:
            upstream.close()  # cancelled (client gone): never return a half-read connection to the pool
            raise
        upstream.release()
        responder.finished = True
        await send({"type": "http.response.body", "body": b""})


class _DisconnectWatcher:
    """For ASGI servers other than ours (``protocol.DISCONNECT_EXTENSION`` absent): once the request body has
    been read, keeps reading ``receive`` and cancels the call on ``http.disconnect`` — unless the response is
    already complete (uvicorn also answers ``http.disconnect`` once the response has been sent)."""

    __slots__ = ("_receive", "_record", "_responder", "_task", "_waiter")

    def __init__(self, receive: Receive, record: dict[str, Any], responder: _Responder) -> None:
        self._receive = receive
        self._record = record
        self._responder = responder
        self._task = asyncio.current_task()
        self._waiter: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._waiter is None:
            self._waiter = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message.get("type") == "http.disconnect":
                if self._task is not None and not self._responder.finished:
                    self._record["disconnected"] = True
                    self._task.cancel()
                return

    def stop(self) -> None:
        self._task = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()


def _body_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(declared Content-Length or None when absent or unparsable, whether Transfer-Encoding is present)."""
    declared: int | None = None
    seen_length = False
    chunked = False
    for k, v in headers:
        if k == b"content-length":
            if not seen_length:
                seen_length = True
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
        elif k == b"transfer-encoding":
            chunked = True
    return declared, chunked
