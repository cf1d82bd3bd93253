"""A fault-injecting HTTP server on raw asyncio: sidecar function (``http`` stack), Lambda ``Invoke``, STS, SSM
and backend in one listener, for the reliability suite and the soak command.

It is deliberately not aiohttp: it must be able to misbehave at the byte level (hang after reading, reset,
trickle a response byte by byte, send a malformed status line, close a keep-alive connection right after an
answer).  It runs on its own event loop in a daemon thread.

Which behaviour a request gets is chosen from the request itself, so one server serves every case of a module:

=========================  =====================================================================================
request                    fault taken from
=========================  =====================================================================================
Lambda ``Invoke``          the function name: ``POST /2015-03-31/functions/<ARN>/invocations`` with the ARN's
                           name ``<fault>__<case>`` (e.g. ``…:function:hang__c17``)
STS ``AssumeRole``         the role name (last segment of ``RoleArn``): ``sts-ok``, ``sts-fail``, ``sts-hang``,
                           ``sts-short`` (credentials expiring in ``SHORT_EXPIRY_S``), ``sts-soon`` (expiring in
                           ``SOON_EXPIRY_S``)
SSM ``GetParameter``       the last segment of the parameter name: ``ssm-ok``, ``ssm-fail``, ``ssm-hang``
anything else              the first path segment: ``/<fault>/<case>/…``
=========================  =====================================================================================

Faults (functions and backends alike; a POST gets a function-style answer, any other method a backend-style one):

==============  ===============================================================================================
``ok``          200; function: ``{"modify":{"addHeaders":{"X-Faulty-Fn":"<case>"}}}``; backend: JSON echo
``hang``        reads the request, never answers; notes when the peer hangs up (``gone_after``)
``reset``       reads the request, then resets the connection (RST) without answering
``slowbytes``   a valid ``ok`` answer sent one byte every ``SLOW_BYTE_INTERVAL_S`` (takes seconds)
``garbage``     200 with a body that is not JSON
``oversize``    200 with a valid JSON object of exactly 6 MB + 1 bytes (contract §4.3 rule 1)
``badutf8``     200 with a JSON object whose string holds invalid UTF-8
``status500``   500, plain-text body (no AWS error message)
``throttle429`` 429, Lambda's throttle document ``{"Type":"User","message":"Rate Exceeded."}``
``badhttp``     a malformed HTTP response (bad status line, header line without a colon), then close
``resetmid``    200 head announcing ``RESETMID_LENGTH`` bytes, a part of them, then RST
``closeeach``   like ``ok`` (keep-alive framing, no ``Connection: close``), then closes the connection (FIN)
==============  ===============================================================================================

Every request is recorded (``calls``), with the access key of its SigV4 ``Authorization`` header when present.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote

__all__ = [
    "FAULTS",
    "OVERSIZE_BYTES",
    "SHORT_EXPIRY_S",
    "SOON_EXPIRY_S",
    "FaultCall",
    "FaultyServer",
    "fault_body",
]

MAX_OUTPUT_BYTES = 6 * 1024 * 1024  # contract §4.3 rule 1: larger outputs are invalid
OVERSIZE_BYTES = MAX_OUTPUT_BYTES + 1
SLOW_BYTE_INTERVAL_S = 0.05  # ``slowbytes``: ~100-byte answer → ~5 s, far past any matrix deadline
RESETMID_LENGTH = 100_000  # ``resetmid`` announces this many body bytes ...
RESETMID_SENT = 30_000  # ... and sends this many before the reset
SHORT_EXPIRY_S = 30  # ``sts-short``: under the 1-minute usability margin of §7.5 at once
SOON_EXPIRY_S = 120  # ``sts-soon``: usable, but inside the 5-minute refresh-ahead window of §7.5
LONG_EXPIRY_S = 3600
HEAD_LIMIT = 64 * 1024
EXTERNAL_ID = "faulty-external-id"
THROTTLE_DOC = {"Type": "User", "message": "Rate Exceeded."}
FAULTS = ("ok", "hang", "reset", "slowbytes", "garbage", "oversize", "badutf8", "status500", "throttle429",
          "badhttp", "resetmid", "closeeach")

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}


def fault_body(fault: str, case: str) -> bytes:
    """The body a POST (function call) gets for an answering fault."""
    if fault in ("ok", "slowbytes", "closeeach"):
        return json.dumps({"modify": {"addHeaders": {"X-Faulty-Fn": case}}}, separators=(",", ":")).encode()
    if fault == "garbage":
        return b"this is <not> JSON {"
    if fault == "badutf8":
        return b'{"modify":{"payload":"\xff\xfe\xfd"}}'
    if fault == "oversize":
        return _oversize_body()
    if fault == "status500":
        return b"internal failure"
    if fault == "throttle429":
        return json.dumps(THROTTLE_DOC).encode()
    raise ValueError(fault)


_OVERSIZE: bytes | None = None


def _oversize_body() -> bytes:
    global _OVERSIZE
    if _OVERSIZE is None:
        head, tail = b'{"modify":{"payload":"', b'"}}'
        _OVERSIZE = head + b"x" * (OVERSIZE_BYTES - len(head) - len(tail)) + tail
        assert len(_OVERSIZE) == OVERSIZE_BYTES
    return _OVERSIZE


@dataclass
class FaultCall:
    """One request the server received."""

    kind: str  # "lambda" | "sts" | "ssm" | "http"
    fault: str
    case: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    access_key: str | None = None
    arrived: float = field(default_factory=time.monotonic)
    gone_after: float | None = None  # ``hang``: seconds until the peer closed the connection

    @property
    def invocation_type(self) -> str | None:
        return self.headers.get("x-amz-invocation-type") or self.headers.get("x-sidecar-invocation-type")


@dataclass
class _Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class _Malformed(Exception):
    pass


class FaultyServer:
    """``start()`` / ``stop()``; ``port``; ``url(path)``; ``calls`` / ``calls_for(case)``; ``issued_keys(role)``."""

    def __init__(self) -> None:
        self.port = 0
        self.calls: list[FaultCall] = []
        self._issued: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> FaultyServer:
        self._thread = threading.Thread(target=self._run, name="faulty-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("faulty server did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._server = loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024, limit=HEAD_LIMIT))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    # -- inspection ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def calls_for(self, case: str, kind: str | None = None) -> list[FaultCall]:
        with self._lock:
            return [c for c in self.calls if c.case == case and (kind is None or c.kind == kind)]

    def issued_keys(self, role: str) -> list[str]:
        """Access keys handed out by AssumeRole for ``role`` (role name), oldest first."""
        with self._lock:
            return list(self._issued.get(role, []))

    def wait_calls(self, case: str, n: int = 1, timeout: float = 5.0) -> list[FaultCall]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.calls_for(case)
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    # -- connection handling ---------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except (_Malformed, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if request is None:
                    return
                keep = await self._dispatch(request, reader, writer)
                if not keep:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _dispatch(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must not be used again."""
        path = req.target.split("?", 1)[0]
        if path.startswith("/2015-03-31/functions/"):
            name = unquote(path.split("/")[3]).split(":function:", 1)[-1].split(":", 1)[0]
            fault, _, case = name.partition("__")
            call = self._record("lambda", fault, case, req)
            return await self._fault(fault, case, call, req, reader, writer, lambda_style=True)
        if req.headers.get("x-amz-target", "").startswith("AmazonSSM."):
            return await self._ssm(req, reader, writer)
        if req.method == "POST" and b"Action=AssumeRole" in req.body:
            return await self._sts(req, reader, writer)
        segments = path.split("/")
        fault = segments[1] if len(segments) > 1 else "ok"
        case = segments[2] if len(segments) > 2 else ""
        call = self._record("http", fault, case, req)
        return await self._fault(fault, case, call, req, reader, writer, lambda_style=False)

    def _record(self, kind: str, fault: str, case: str, req: _Request) -> FaultCall:
        auth = req.headers.get("authorization", "")
        key = None
        if "Credential=" in auth:
            key = auth.split("Credential=", 1)[1].split("/", 1)[0]
        call = FaultCall(kind, fault, case, req.method, req.target, req.headers, req.body, key)
        with self._lock:
            self.calls.append(call)
        return call

    async def _fault(self, fault: str, case: str, call: FaultCall, req: _Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter, *, lambda_style: bool) -> bool:
        is_function = req.method == "POST"
        if fault == "hang":
            await _wait_gone(reader, call)
            return False
        if fault == "reset":
            _reset(writer)
            return False
        if fault == "badhttp":
            writer.write(b"HTTP/1.1 2OO NOT OK\r\nthis is not a header line\r\n\r\n{}")
            await writer.drain()
            return False
        if fault == "resetmid":
            writer.write(_head(200, [("Content-Type", "application/octet-stream"),
                                     ("Content-Length", str(RESETMID_LENGTH))]))
            writer.write(b"r" * RESETMID_SENT)
            await writer.drain()
            await asyncio.sleep(0.1)
            _reset(writer)
            return False
        if fault in ("ok", "slowbytes", "closeeach") and not is_function:
            body = json.dumps({"backend": "faulty", "path": req.target,
                               "headers": req.headers}, separators=(",", ":")).encode()
            status, ctype = 200, "application/json"
        elif fault in ("ok", "slowbytes", "closeeach", "garbage", "oversize", "badutf8", "status500", "throttle429"):
            body = fault_body(fault, case)
            status = {"status500": 500, "throttle429": 429}.get(fault, 200)
            ctype = "text/plain" if fault in ("status500", "garbage") else "application/json"
        else:
            body, status, ctype = f"unknown fault {fault!r}".encode(), 404, "text/plain"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        if lambda_style:
            headers.append(("x-amzn-RequestId", str(uuid.uuid4())))
            if fault == "throttle429":
                headers.append(("x-amzn-ErrorType", "TooManyRequestsException"))
        data = _head(status, headers) + body
        if fault == "slowbytes":
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(SLOW_BYTE_INTERVAL_S)
            return True
        writer.write(data)
        await writer.drain()
        return fault != "closeeach"

    # -- AWS control plane -----------------------------------------------------------------------------------

    async def _sts(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        form = parse_qs(req.body.decode("utf-8", "replace"))
        role = form.get("RoleArn", [""])[0].rsplit("/", 1)[-1]
        call = self._record("sts", role, role, req)
        if role == "sts-hang":
            await _wait_gone(reader, call)
            return False
        if role == "sts-fail":
            body = ('<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type>'
                    "<Code>InternalFailure</Code><Message>STS is down</Message></Error>"
                    f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()
            await _send(writer, 500, body, "text/xml")
            return True
        lifetime = {"sts-short": SHORT_EXPIRY_S, "sts-soon": SOON_EXPIRY_S}.get(role, LONG_EXPIRY_S)
        expiry = (datetime.now(UTC) + timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
        key = "ASIA" + uuid.uuid4().hex[:16].upper()
        with self._lock:
            self._issued.setdefault(role, []).append(key)
        body = ('<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
                f"<Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>secret-{key}</SecretAccessKey>"
                f"<SessionToken>token-{key}</SessionToken><Expiration>{expiry}</Expiration></Credentials>"
                f"<AssumedRoleUser><AssumedRoleId>AROAFAULTY:{role}</AssumedRoleId>"
                f"<Arn>arn:aws:sts::123456789012:assumed-role/{role}/s</Arn></AssumedRoleUser>"
                "</AssumeRoleResult>"
                f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
                "</AssumeRoleResponse>").encode()
        await _send(writer, 200, body, "text/xml")
        return True

    async def _ssm(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            name = str(json.loads(req.body).get("Name", ""))
        except ValueError:
            name = ""
        behaviour = name.rsplit("/", 1)[-1]
        call = self._record("ssm", behaviour, behaviour, req)
        ctype = "application/x-amz-json-1.1"
        if behaviour == "ssm-hang":
            await _wait_gone(reader, call)
            return False
        if behaviour == "ssm-fail":
            await _send(writer, 500, json.dumps({"__type": "InternalServerError", "message": "SSM is down"}).encode(),
                        ctype)
            return True
        doc = {"Parameter": {"Name": name, "Type": "SecureString", "Value": EXTERNAL_ID, "Version": 1,
                             "ARN": f"arn:aws:ssm:eu-west-1:123456789012:parameter{name}", "DataType": "text"}}
        await _send(writer, 200, json.dumps(doc).encode(), ctype)
        return True


# -- wire helpers ------------------------------------------------------------------------------------------------


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _Malformed(lines[0])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _Malformed(line)
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(data[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    return _Request(parts[0], parts[1], headers, body)


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
    writer.write(_head(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("x-amzn-RequestId", str(uuid.uuid4()))]) + body)
    await writer.drain()


async def _wait_gone(reader: asyncio.StreamReader, call: FaultCall) -> None:
    """Hold the connection without answering until the peer closes it (or the server stops)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    call.gone_after = time.monotonic() - call.arrived


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- measurement helpers shared by the reliability suite and bench/soak.py -------------------------------------


@dataclass(frozen=True)
class LoopLag:
    """The gateway's event-loop lag figures from its admin ``/metrics`` (observability/looplag.py)."""

    samples: float  # ``gateway_event_loop_lag_seconds_count``
    over_50ms: float  # samples above the 0.05 s bucket
    window_max: float  # ``gateway_event_loop_lag_max_seconds`` (max over the last 10 s)
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)

    def since(self, before: LoopLag) -> LoopLag:
        """Samples taken between ``before`` and this reading (``window_max`` is this reading's)."""
        earlier = dict(before.buckets)
        return LoopLag(self.samples - before.samples, self.over_50ms - before.over_50ms, self.window_max,
                       tuple((le, n - earlier.get(le, 0.0)) for le, n in self.buckets))

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (Prometheus ``histogram_quantile`` without
        interpolation: an upper bound on the true value)."""
        if self.samples <= 0:
            return 0.0
        rank = q * self.samples
        for le, n in self.buckets:
            if n >= rank:
                return le
        return float("inf")


def parse_loop_lag(metrics_text: str, family: str = "gateway_event_loop_lag_seconds") -> LoopLag:
    """``family`` is the lag histogram or ``gateway_event_loop_stall_seconds`` (lag less run-queue wait)."""
    count = over = window = 0.0
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(family + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(family + "_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("gateway_event_loop_lag_max_seconds"):
            window = float(line.rsplit(" ", 1)[1])
    within = dict(buckets).get(0.05, count)
    over = count - within
    return LoopLag(count, over, window, tuple(sorted(buckets)))
