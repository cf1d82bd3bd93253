"""The ``http`` stack: a function reached by ``POST <url>`` (contract §8.1) through our pooled client.

Rules of this file:

* Request (§8.1): ``POST <url>``, the input JSON as body, ``Content-Type``/``Accept: application/json``,
  ``X-Sidecar-Invocation-Type`` (``RequestResponse`` or ``Event``), ``X-Mashery-Message-ID`` and the static
  ``header.<name>`` values.  Everything but the message id is encoded once, in ``__init__``.
* Redirects are never followed (``pool.HttpClient`` guarantees it), so a 3xx is "any other status".
* Response mapping, in this order (§8.1 table, §5.3, §10 Q16):

  ====================================  ============================================================
  ``X-Amz-Function-Error`` present       ``FUNCTION_ERROR`` (body, header value), any status, any mode
  ``Event`` mode and 200/202/204         ``ACCEPTED``; the body is ignored
  202                                    ``ACCEPTED``
  204, or 200 with an empty body         ``OUTPUT(b"{}")`` (allow): the ``http`` exception of Q16
  200                                    ``OUTPUT(body)``; the output interpreter judges it (§4.3)
  anything else                          ``InvocationError(UNEXPECTED_STATUS)``
  ====================================  ============================================================

* Pool ``ConnectError``/``ReadError`` become ``InvocationError(CONNECTION_FAILURE)`` (§5.3) at this edge.
* The deadline is the caller's (``asyncio.timeout``); on cancellation the response is closed, so a half-read
  connection never returns to the pool.  No retries (§5.3).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sidecar_gateway.config.plan import HttpConnection
from sidecar_gateway.errors import ErrorCode, InvocationError
from sidecar_gateway.transports.base import InvocationType, InvokeResult, ResultKind
from sidecar_gateway.transports.http11 import encode_request_head, split_url
from sidecar_gateway.transports.pool import ConnectError, HttpClient, HttpResponse, ReadError

__all__ = ["INJECTED", "HttpTransport", "inject"]

log = logging.getLogger(__name__)

# Bounds (style rule 12).
MAX_OUTPUT_BYTES = 6 * 1024 * 1024  # §4.3 rule 1: an output larger than 6 MB is invalid (Lambda's sync payload cap)
# We read one byte past the limit and stop: the interpreter sees an oversized body and rejects it (§4.3), and a
# misbehaving function can never make us buffer more than this.
READ_CAP = MAX_OUTPUT_BYTES + 1
# A body we are going to ignore (Event mode, 202, unexpected status) is drained only when its declared length is
# at most this, to keep the keep-alive connection; otherwise the connection is dropped (cheaper than reading it).
DISCARD_DRAIN_MAX = 64 * 1024

# §10 Q16 "empty or whitespace body": whitespace as JSON defines it (RFC 8259 §2: space, tab, LF, CR).
_JSON_WHITESPACE = b" \t\r\n"
_EMPTY_OUTPUT = b"{}"  # §8.1: an empty 200 or a 204 means {} (allow)

_STATUS_OK = 200
_STATUS_ACCEPTED = 202
_STATUS_NO_CONTENT = 204
_EVENT_ACCEPTED_STATUSES = frozenset((_STATUS_OK, _STATUS_ACCEPTED, _STATUS_NO_CONTENT))  # §8.1 last sentence

_FUNCTION_ERROR_HEADER = b"x-amz-function-error"  # pool headers are lower-cased
_CONTENT_LENGTH_HEADER = b"content-length"
_MESSAGE_ID_HEADER = b"X-Mashery-Message-ID"
_INVOCATION_TYPE_HEADER = b"X-Sidecar-Invocation-Type"
_FIXED_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Type", b"application/json"),
    (b"Accept", b"application/json"),
)
# Headers the contract sets itself: a configured ``header.<name>`` with one of these names is dropped (with a
# warning at construction) so that the §8.1 protocol headers cannot be overridden or duplicated.
_RESERVED_NAMES = frozenset(
    name.lower() for name in (b"Content-Type", _INVOCATION_TYPE_HEADER, _MESSAGE_ID_HEADER)
)


INJECTED: dict[str, tuple[Any, ...]] = {}
"""Answers the native lane already received for a call it hands to the Python lane (message id → its result:
``(None, status, headers, body, has_function_error)``, ``("timeout", "")`` or ``("failure", detail)``).
``invoke`` uses one instead of calling the function again (the function is called once per call)."""
INJECTED_MAX = 4096  # bounded: an entry whose call never reaches ``invoke`` (e.g. an output-cache hit) ages out


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _content_length(resp: HttpResponse) -> int | None:
    raw = _header(resp.headers, _CONTENT_LENGTH_HEADER)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


async def _read_capped(resp: HttpResponse) -> bytes:
    """The body, or its first ``READ_CAP`` bytes when it is longer (then the connection is dropped)."""
    declared = _content_length(resp)
    if declared is not None and declared <= READ_CAP:
        return await resp.read()
    parts: list[bytes] = []
    size = 0
    async with contextlib.aclosing(resp.iter_chunks()) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= READ_CAP:
                break
    if size >= READ_CAP:
        resp.close()  # the rest is unread: never hand this connection back to the pool
    return b"".join(parts)[:READ_CAP]


async def _discard(resp: HttpResponse) -> None:
    """Finish with a response whose body does not matter, keeping the connection when that is cheap."""
    declared = _content_length(resp)
    if declared is not None and declared <= DISCARD_DRAIN_MAX:
        await resp.read()
    else:
        resp.close()


class HttpTransport:
    """One ``http`` connection (§8.1).  Shares the process-wide ``HttpClient``; does not own it."""

    __slots__ = ("_client", "_headers", "_url")

    def __init__(self, conn: HttpConnection, client: HttpClient) -> None:
        # Global (per compiled plan): URL, client, and the static head for each invocation type.
        self._url = conn.url
        self._client = client
        configured: list[tuple[bytes, bytes]] = []
        for name, value in conn.headers:
            raw_name = name.encode("latin-1")
            if raw_name.lower() in _RESERVED_NAMES:
                log.warning("http transport %s: configured header %s ignored (set by the gateway, §8.1)",
                            conn.url, name)
                continue
            configured.append((raw_name, value.encode("latin-1")))
        # A configured header.Accept replaces the default Accept (it is not reserved by §2.5).
        overridden = {name.lower() for name, _ in configured}
        fixed = tuple(h for h in _FIXED_HEADERS if h[0].lower() not in overridden)
        self._headers: dict[InvocationType, tuple[tuple[bytes, bytes], ...]] = {
            itype: (*fixed, (_INVOCATION_TYPE_HEADER, itype.value.encode("ascii")), *configured)
            for itype in InvocationType
        }

    @property
    def url(self) -> str:
        return self._url

    @staticmethod
    def classify_native(result: tuple[Any, ...]) -> InvokeResult:
        """``_classify`` of an answer the native lane received (request-response), raising as ``invoke`` does."""
        return _injected(result, InvocationType.REQUEST_RESPONSE)

    def native_signer(self, payload: bytes, placeholder: str) -> None:
        """No signing on this stack (the native lane asks every transport)."""
        return None

    def encoded_request(self, payload: bytes, message_id: str) -> bytes | None:
        """The whole request ``invoke`` writes for a request-response call over a plain-http URL (the native lane
        writes the same bytes), or None for an https function."""
        origin, target, host = split_url(self._url)
        if origin.scheme != "http":
            return None
        headers = [*self._headers[InvocationType.REQUEST_RESPONSE], (_MESSAGE_ID_HEADER, message_id.encode("latin-1"))]
        return encode_request_head("POST", target, headers, host, payload, False).data + payload

    async def invoke(self, payload: bytes, *, invocation_type: InvocationType, message_id: str,
                     deadline: float) -> InvokeResult:
        """POST the input and classify the answer (module docstring).  ``deadline`` is enforced by the caller."""
        if INJECTED:
            injected = INJECTED.pop(message_id, None)
            if injected is not None:
                return _injected(injected, invocation_type)
        headers = [*self._headers[invocation_type], (_MESSAGE_ID_HEADER, message_id.encode("latin-1"))]
        try:  # the pool's errors are the §5.3 connection-failure row (a plain ``try``: this is the hot path)
            resp = await self._client.request("POST", self._url, headers, payload)
            try:
                return await self._classify(resp, invocation_type)
            except BaseException:
                resp.close()  # cancelled at the deadline or failed mid-body: the connection is not reusable
                raise
        except (ConnectError, ReadError) as exc:
            raise InvocationError(ErrorCode.CONNECTION_FAILURE, str(exc)) from exc

    async def _classify(self, resp: HttpResponse, invocation_type: InvocationType) -> InvokeResult:
        function_error = _header(resp.headers, _FUNCTION_ERROR_HEADER)
        if function_error is not None or (resp.status == _STATUS_OK and invocation_type is not InvocationType.EVENT):
            body = await _read_capped(resp)  # the answer is in the body (a document or the output)
        else:
            await _discard(resp)
            body = b""
        return _outcome(resp.status, function_error, body, invocation_type)

    async def aclose(self) -> None:
        """Nothing to do: the ``HttpClient`` is shared and closed by its owner."""

    def __repr__(self) -> str:
        return f"<HttpTransport url={self._url!r}>"


def _outcome(status: int, function_error: bytes | None, body: bytes, invocation_type: InvocationType) -> InvokeResult:
    """The §8.1 table (module docstring) for an answer whose body is read (or ignored, as the table says)."""
    if function_error is not None:  # checked first (§8.1)
        return InvokeResult(ResultKind.FUNCTION_ERROR, body, function_error.decode("latin-1"))
    if (invocation_type is InvocationType.EVENT and status in _EVENT_ACCEPTED_STATUSES) or status == _STATUS_ACCEPTED:
        return InvokeResult.accepted()
    if status == _STATUS_NO_CONTENT:
        return InvokeResult(ResultKind.OUTPUT, _EMPTY_OUTPUT)
    if status == _STATUS_OK:
        if not body.strip(_JSON_WHITESPACE):
            return InvokeResult(ResultKind.OUTPUT, _EMPTY_OUTPUT)
        return InvokeResult(ResultKind.OUTPUT, body)
    raise InvocationError(ErrorCode.UNEXPECTED_STATUS, f"status {status}")


def _injected(result: tuple[Any, ...], invocation_type: InvocationType) -> InvokeResult:
    """``_classify`` of an answer the native lane received (``INJECTED``), with the same errors as ``invoke``."""
    kind = result[0]
    if kind == "timeout":
        raise TimeoutError  # the caller's deadline handling (§5.3 timeout) sees what a late function causes
    if kind == "failure":
        raise InvocationError(ErrorCode.CONNECTION_FAILURE, result[1])
    _, status, headers, body, has_function_error = result
    function_error = (_header(headers, _FUNCTION_ERROR_HEADER) or b"") if has_function_error else None
    return _outcome(status, function_error, body, invocation_type)


def inject(message_id: str, result: tuple[Any, ...]) -> None:
    """Record the native lane's answer for ``message_id`` (``INJECTED``)."""
    if len(INJECTED) >= INJECTED_MAX:
        INJECTED.pop(next(iter(INJECTED)))
    INJECTED[message_id] = result
