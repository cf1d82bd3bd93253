"""The input JSON sent to a function (contract §3, §9.1 cache key, §9.3 pre-flight input).

Rules of this file:

* Sans-IO (style rule 2): a ``ProcessorPlan`` and a ``CallContext`` (plus, at post, the backend request as
  sent and the backend response as received) go in; compact UTF-8 JSON bytes come out.
* A member is **omitted** when its condition does not hold; never ``null``, never an empty object (§3).
* Header names are lower-case; repeated fields are joined with ``", "`` in the order received;
  connection-level headers are never sent (§3.2).  The ``authorization`` value loses a leading ``Bearer``
  scheme (§3.2 rule 5, §10 Q7).
* A body is sent only when its ``…Payload`` token is expanded and it is non-empty; it is plain text only when
  every §3.3 condition holds, else standard padded base64.  ``payloadLength`` is the byte count as received.
* Any failure while building is the catalogue error ``InvalidJSONInputForAWSLambda`` (§5.1 P8: 400 at pre,
  §5.2 Q5: 500 at post); it is a ``ClientError``, not covered by ``failSafe`` (§5.4).

Theory of operation.  ``build_input`` assembles a ``dict`` in the member order of the §3.5 worked examples
(order is not normative) and serialises it once with orjson, which writes compact JSON with non-ASCII as
UTF-8.  Every per-plan decision (which headers, which EAVs, which ``expand-input`` tokens) was compiled into
the plan; here we only read the call.  ``cache_key`` re-reads the bytes that were actually sent so that the
key always describes the real input (§9.1).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

import orjson

from ..config.plan import ProcessorPlan
from ..errors import ClientError, ErrorCode, Point
from .call import BackendRequest, BackendResponse, CallContext, TokenInfo

__all__ = ["build_input", "build_preflight_input", "cache_key"]

CONNECTION_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
"""§3.2: connection-level headers describe one hop, never the message; they are never sent to a function."""

_AUTHORIZATION = b"authorization"
_BEARER = re.compile(r"bearer[ \t]+(.*)", re.IGNORECASE | re.DOTALL)
"""§3.2 rule 5: ``^bearer[ \\t]+(.*)$`` case-insensitive (used with ``fullmatch``)."""

_HEADER_JOIN = b", "  # §3.2: repeated header fields joined in the order received

_TEXT_MEDIA_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
        "application/graphql",
    }
)
"""§3.3: media types sent as plain text (besides ``text/*``, ``application/*+json`` and ``application/*+xml``)."""

_TEXT_CHARSETS = frozenset({"utf-8", "us-ascii"})  # §3.3: charset absent, utf-8 or us-ascii
_IDENTITY_CODINGS = frozenset({"", "identity"})  # §3.3: Content-Encoding other than identity forces base64
_CONTENT_TYPE = b"content-type"
_CONTENT_ENCODING = b"content-encoding"
_CONTENT_TRANSFER_ENCODING = b"content-transfer-encoding"

_PREFLIGHT_SYNCHRONICITY = "RequestResponse"  # §9.3: the pre-flight call is always request-response

_INPUT_ERROR = {Point.PRE: ErrorCode.INPUT_PRE, Point.POST: ErrorCode.INPUT_POST, Point.PREFLIGHT: ErrorCode.INPUT_PRE}
"""§5.1 P8 (400) / §5.2 Q5 (500); pre-flight uses the pre names (§5.3)."""


# ---------------------------------------------------------------------------------------------------------------
# Headers (§3.2)
# ---------------------------------------------------------------------------------------------------------------


def _decode_header(value: bytes) -> str:
    """Header bytes as text: UTF-8 when valid (the common, ASCII case), else Latin-1 (RFC 9110 obs-text)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _join_selected(headers: Iterable[tuple[bytes, bytes]], selected: frozenset[bytes] | None) -> dict[str, str] | None:
    """Selected headers (a container of lower-cased bytes names, or None for "every header") joined per name."""
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in CONNECTION_HEADERS or (selected is not None and name not in selected):
            continue
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    if not found:
        return None
    out: dict[str, str] = {}
    for name, values in found.items():
        text = _decode_header(values[0] if len(values) == 1 else _HEADER_JOIN.join(values))
        if name == _AUTHORIZATION:
            m = _BEARER.fullmatch(text)
            if m is not None:
                text = m.group(1)
        out[name.decode("latin-1")] = text
    return out


def _request_headers(plan: ProcessorPlan, call: CallContext) -> dict[str, str] | None:
    if not plan.request_headers:
        return None
    return _join_selected(call.request.headers, plan.request_headers)


def _response_headers(plan: ProcessorPlan, response: BackendResponse) -> dict[str, str] | None:
    """§3.2 response table: nothing / included / all but skipped / included minus skipped."""
    if not plan.send_response_headers:
        return None
    include, skip = plan.include_response_headers, plan.skip_response_headers
    if include is not None:
        selected: frozenset[bytes] | None = include - skip if skip else include
        return _join_selected(response.headers, selected)
    if skip:
        return _join_selected(((n, v) for n, v in response.headers if n not in skip), None)
    return _join_selected(response.headers, None)


# ---------------------------------------------------------------------------------------------------------------
# Payload (§3.3)
# ---------------------------------------------------------------------------------------------------------------


def _is_text_media_type(media_type: str) -> bool:
    if media_type in _TEXT_MEDIA_TYPES:
        return True
    top, _, sub = media_type.partition("/")
    if not sub:
        return False
    if top == "text":
        return True
    return top == "application" and (sub.endswith("+json") or sub.endswith("+xml"))


def _may_be_text(headers: list[tuple[bytes, bytes]]) -> bool:
    """The header conditions of §3.3 (the UTF-8 validity of the bytes is checked by decoding)."""
    content_type: bytes | None = None
    for name, value in headers:
        if name == _CONTENT_TYPE:
            if content_type is None:
                content_type = value
        elif name == _CONTENT_ENCODING:
            codings = value.decode("latin-1").lower().split(",")
            if any(c.strip() not in _IDENTITY_CODINGS for c in codings):
                return False
        elif name == _CONTENT_TRANSFER_ENCODING:
            return False
    if content_type is None:
        return False
    media_type, *parameters = content_type.decode("latin-1").split(";")
    if not _is_text_media_type(media_type.strip().lower()):
        return False
    for parameter in parameters:
        key, _, val = parameter.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip('"').lower() not in _TEXT_CHARSETS:
            return False
    return True


def _add_payload(target: dict[str, Any], body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    text: str | None = None
    if _may_be_text(headers):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    if text is None:
        target["payload"] = base64.b64encode(body).decode("ascii")  # RFC 4648 §4, padded, no line breaks
    else:
        target["payload"] = text
    target["payloadLength"] = len(body)
    target["payloadBase64Encoded"] = text is None


# ---------------------------------------------------------------------------------------------------------------
# operation / token / routing (§3.4), EAVs
# ---------------------------------------------------------------------------------------------------------------


def _query(query_string: str) -> dict[str, str | list[str]] | None:
    """§3.4 ``operation.query``: decoded; once → string, several → array in order; no ``=`` → ``""``."""
    out: dict[str, str | list[str]] = {}
    for part in query_string.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name, value = unquote_plus(raw_name), unquote_plus(raw_value)
        previous = out.get(name)
        if previous is None:
            out[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            out[name] = [previous, value]
    return out or None


def _operation(call: CallContext) -> dict[str, Any]:
    request = call.request
    operation: dict[str, Any] = {"httpVerb": request.method.upper(), "path": request.remainder}
    if request.query_string:
        query = _query(request.query_string)
        if query is not None:
            operation["query"] = query
    operation["uri"] = request.uri()
    return operation


def _token(token: TokenInfo) -> dict[str, str] | None:
    out = {
        key: value
        for key, value in (
            ("scope", token.scope),
            ("userContext", token.user_context),
            ("grantType", token.grant_type),
            ("expires", token.expires),
        )
        if value  # §3.4: members without a value are omitted
    }
    return out or None


def _selected_eavs(selection: tuple[str, ...], eavs: Mapping[str, str]) -> dict[str, str] | None:
    if not selection:
        return None
    out: dict[str, str] = {}
    for name in selection:
        value = eavs.get(name)
        if value is not None and value.strip():  # §1: a blank EAV counts as absent
            out[name] = value
    return out or None


def _header_members(plan: ProcessorPlan, call: CallContext, doc: dict[str, Any]) -> None:
    """The identification members every input starts with (§3.1)."""
    doc["masheryMessageId"] = call.message_id
    if call.package_key is not None:
        doc["packageKey"] = call.package_key.key
    doc["serviceId"] = plan.service_id
    doc["endpointId"] = plan.endpoint_id
    if plan.params:
        doc["params"] = dict(plan.params)


def _eav_members(plan: ProcessorPlan, call: CallContext, doc: dict[str, Any]) -> None:
    eavs = _selected_eavs(plan.eav_selection, call.app_eavs)
    if eavs is not None:
        doc["eavs"] = eavs
    key_eavs = _selected_eavs(plan.key_eav_selection, call.key_eavs)
    if key_eavs is not None:
        doc["packageKeyEAVs"] = key_eavs


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def _build(plan: ProcessorPlan, call: CallContext, routing: BackendRequest | None,
           response: BackendResponse | None) -> bytes:
    doc: dict[str, Any] = {"point": plan.point.input_name, "synchronicity": plan.mode.input_name}
    _header_members(plan, call, doc)

    request: dict[str, Any] = {}
    headers = _request_headers(plan, call)
    if headers is not None:
        request["headers"] = headers
    body = call.request.body
    if plan.expand_request_payload and body:
        _add_payload(request, body, call.request.headers)
    if request:
        doc["request"] = request

    if plan.point is Point.POST:
        if response is None:
            raise ValueError("post-processing input needs the backend response")
        resp: dict[str, Any] = {"code": response.status}
        response_headers = _response_headers(plan, response)
        if response_headers is not None:
            resp["headers"] = response_headers
        if plan.expand_response_payload and response.body:
            _add_payload(resp, response.body, response.headers)
        doc["response"] = resp

    if plan.expand_remote_address:
        doc["remoteAddr"] = call.request.client_addr  # §10 Q19: member remoteAddr, token remoteAddress
    _eav_members(plan, call, doc)
    if plan.expand_operation:
        doc["operation"] = _operation(call)
    if plan.expand_token and call.token is not None:
        token = _token(call.token)
        if token is not None:
            doc["token"] = token
    if plan.expand_routing and routing is not None:
        doc["routing"] = {"httpVerb": routing.method, "uri": routing.uri()}
    return orjson.dumps(doc)


def build_input(plan: ProcessorPlan, call: CallContext, *, routing: BackendRequest | None,
                response: BackendResponse | None) -> bytes:
    """§3: the input for ``plan.point``.  ``routing`` is the backend request (pre: before modification;
    post: as sent); ``response`` the backend response as received (post only).  Raises ``ClientError``
    ``InvalidJSONInputForAWSLambda`` (§5.1 P8 / §5.2 Q5) when the input cannot be built."""
    try:
        return _build(plan, call, routing, response)
    except Exception as exc:  # any failure is the catalogue error of its point (§6.1)
        raise ClientError(_INPUT_ERROR[plan.point]) from exc


def build_preflight_input(plan: ProcessorPlan, call: CallContext) -> bytes:
    """§9.3: the pre-flight input (nothing specific to the request, so cacheable per package key)."""
    try:
        doc: dict[str, Any] = {"point": Point.PREFLIGHT.input_name, "synchronicity": _PREFLIGHT_SYNCHRONICITY}
        _header_members(plan, call, doc)
        _eav_members(plan, call, doc)
        return orjson.dumps(doc)
    except Exception as exc:
        raise ClientError(ErrorCode.INPUT_PRE) from exc


def cache_key(input_bytes: bytes) -> str:
    """§9.1: SHA-256 (hex) of the canonical input: without ``masheryMessageId``, keys sorted (recursively),
    compact separators, UTF-8 without escaping."""
    doc = orjson.loads(input_bytes)
    doc.pop("masheryMessageId", None)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
