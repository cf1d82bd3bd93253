"""Client-visible rendering of gateway-made errors and terminations (contract §6.2, §5.3, §4.4).

Rendering order (§6.2): the 502 function error is always the documented JSON body; then the endpoint's error
set (when the processor enables it and has an entry for the status); then ``error_format: json``
(problem+json); else the Mashery-compatible XML ``<h1>MESSAGE</h1>`` with ``X-Error-Detail-Header``.
Nothing here does I/O: every function returns a ``Reply``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson

from ..config.plan import EndpointPlan, ErrorFormat
from ..errors import ErrorCode, GatewayError

__all__ = [
    "DEFAULT_TERMINATE_MESSAGE",
    "Reply",
    "render_error",
    "render_termination_message",
    "sanitize_detail",
]

DEFAULT_TERMINATE_MESSAGE = "Service cannot be provided, code 0x000003BB"  # §4.2 terminate.message default
DETAIL_HEADER = b"x-error-detail-header"
DETAIL_HEADER_MAX = 1024  # §6.2: the detail header value is cut to 1,024 characters
CT_XML = b"application/xml"
CT_PROBLEM = b"application/problem+json"
CT_JSON = b"application/json"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_XML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"})


@dataclass(slots=True)
class Reply:
    """A complete response the gateway makes itself."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


def sanitize_detail(text: str) -> bytes:
    """§6.2: control characters → space, non-ASCII → ``?``, at most 1,024 characters."""
    text = _NON_ASCII.sub("?", _CONTROL.sub(" ", text))[:DETAIL_HEADER_MAX]
    return text.encode("ascii")


def _xml(message: str) -> bytes:
    return f"<h1>{message.translate(_XML_ESCAPES)}</h1>".encode()


def _reason(status: int) -> str | None:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return None


def _error_set_reply(endpoint: EndpointPlan, status: int, detail: str | None) -> Reply | None:
    entry = endpoint.error_set.get(status)
    if entry is None:
        return None
    headers = [(b"content-type", entry.content_type.encode("latin-1"))]
    detail_value = entry.detail_header if entry.detail_header is not None else detail
    if detail_value is not None:
        headers.append((DETAIL_HEADER, sanitize_detail(detail_value)))
    return Reply(status, headers, entry.body.encode())


def render_error(err: GatewayError, endpoint: EndpointPlan | None, *, use_error_set: bool = False) -> Reply:
    """Render a catalogue error (§6.2).  ``endpoint`` is None when no endpoint matched (XML is used)."""
    status = err.status
    if err.code is ErrorCode.FUNCTION_ERROR:  # §5.3: always this JSON body, no detail header
        body = orjson.dumps({"code": 502, "message": {"detail": err.error_message, "title": err.title}})
        return Reply(status, [(b"content-type", CT_JSON)], body)
    if use_error_set and endpoint is not None:
        reply = _error_set_reply(endpoint, status, err.error_message)
        if reply is not None:
            return reply
    if endpoint is not None and endpoint.error_format is ErrorFormat.JSON:
        name = err.error_name
        body = orjson.dumps({
            "type": f"urn:sidecar-gateway:error:{name.replace(' ', '')}",
            "title": name,
            "status": status,
            "detail": err.error_message,
        })
        return Reply(status, [(b"content-type", CT_PROBLEM)], body)
    return Reply(status, [(b"content-type", CT_XML), (DETAIL_HEADER, sanitize_detail(err.error_message))],
                 _xml(err.error_name))


def render_termination_message(code: int, message: str | None, endpoint: EndpointPlan, *,
                               use_error_set: bool, extra_headers: list[tuple[bytes, bytes]]) -> Reply:
    """A terminate without ``payload``/``json`` is a gateway-made error (§6.2): rendered from its message;
    no ``X-Error-Detail-Header``; the terminate headers are applied in every rendering (set last)."""
    text = message if message is not None else DEFAULT_TERMINATE_MESSAGE
    reply: Reply | None = None
    if use_error_set:
        reply = _error_set_reply(endpoint, code, None)
    if reply is None:
        if endpoint.error_format is ErrorFormat.JSON:
            body = orjson.dumps({"type": "about:blank", "title": _reason(code) or "Terminated", "status": code,
                                 "detail": text})
            reply = Reply(code, [(b"content-type", CT_PROBLEM)], body)
        else:
            reply = Reply(code, [(b"content-type", CT_XML)], _xml(text))
    if extra_headers:
        names = {k for k, _ in extra_headers}
        reply.headers = [(k, v) for k, v in reply.headers if k not in names] + list(extra_headers)
    return reply
