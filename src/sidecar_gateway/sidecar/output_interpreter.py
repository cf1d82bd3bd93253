"""A function's output → ``Verdict`` (contract §4, §5.3, §9.1 hints).

Rules of this file:

* Sans-IO (style rule 2): bytes in, a ``Verdict`` or a catalogue ``FunctionFailure`` out.  The clock is the
  caller's ``now`` (epoch seconds), used only to turn ``unchangedUntil`` into a TTL.
* The **whole** output is validated before a ``Verdict`` exists (§4.3): an invalid ``Verdict`` cannot be
  built, so nothing is ever half-applied.  Members that are ignored are **not** validated: a ``terminate``
  without ``code``, ``completeWithCode`` at pre, ``changeRoute`` at post, unknown members, the whole
  ``modify`` when a ``terminate`` with ``code`` wins, and at pre-flight every ``modify`` member except the
  header ones (§9.3).
* A member whose value is ``null`` is absent (§4.1).  JSON ``null`` or a blank body is "not returned"
  (``EMPTY_OUTPUT``, §5.3, §10 Q16); every other defect is ``INVALID_OUTPUT``.  Both are ``FunctionFailure``
  (covered by ``failSafe``, §5.4).
* Function-supplied headers are hostile (style rule 10): names must be RFC 9110 tokens and not forbidden
  (§4.3 rule 4), values free of control characters except HTAB (§4.3 rule 5).  They leave this module as
  lower-cased ``bytes`` names and UTF-8 ``bytes`` values.

Theory of operation (§4.4 precedence):

1. Size, emptiness, JSON, top-level object (§4.3 rule 1); ``terminate``/``modify`` must be objects (rule 2).
2. ``terminate`` with a non-null ``code`` wins: it alone is validated and becomes a ``Termination``.
3. Otherwise a ``modify`` object is validated member by member (types, headers, body, point-specific
   members) and becomes a ``Modification``; one without any effect is an allow.
4. Otherwise (``{}``, or a terminate without code and no modify) the verdict is allow.
The idempotence hints (§9.1) never invalidate an output: a malformed one is ignored.
"""

from __future__ import annotations

import binascii
import math
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import ErrorCode, FunctionFailure, Point
from ..sdk._validate import FORBIDDEN_HEADERS, MAX_OUTPUT_BYTES, MAX_STATUS, MIN_STATUS
from .verdict import ALLOW, ChangeRoute, Modification, Termination, Verdict, VerdictKind

__all__ = ["FORBIDDEN_HEADERS", "MAX_OUTPUT_BYTES", "function_failure", "interpret_output"]

# §4.3 rule 1 (6 MB), rule 3 (status range) and rule 4 (forbidden header names) are defined once, in the
# function authors' SDK (standard library only: ``sdk/_validate.py``), so the gateway and the SDK's @sidecar
# validation cannot drift apart.

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 §5.6.2 ``token = 1*tchar`` (ASCII only)."""

_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""§4.3 rule 5: CR, LF, NUL and every other control character (C0, DEL, C1) except HTAB."""

_BAD_URI_CHAR = re.compile(r"[^\x21-\x7e]")
"""§4.3 rule 6: a ``changeRoute.uri`` goes into a request line: printable ASCII only (no space, no control)."""

_JSON_WHITESPACE = b" \t\r\n"  # RFC 8259 ws: a body of only these is "not returned" (§5.3)
_ROUTE_SCHEMES = {"http": 80, "https": 443}  # §4.4 step 3: absolute http/https only, with their default ports
_DEFAULT_FUNCTION_ERROR_DETAIL = "Function error"  # §5.3: errorMessage missing or not a string


class _Invalid(Exception):
    """Internal: the output breaks §4.3; the message names the rule (kept as ``__cause__`` for the log)."""


# ---------------------------------------------------------------------------------------------------------------
# Member validators (§4.3)
# ---------------------------------------------------------------------------------------------------------------


def _status(value: Any, member: str) -> int:
    # ``type(...) is int``: JSON booleans are not integers, and 200.0 is a number with a fraction (rule 3).
    if type(value) is not int or not MIN_STATUS <= value <= MAX_STATUS:
        raise _Invalid(f"{member} must be an integer 200-599")
    return value


def _utf8(text: str, member: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise _Invalid(f"{member} is not valid Unicode") from None


def _header_name(name: Any, member: str) -> str:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise _Invalid(f"{member}: header name is not a token: {name!r}")
    lowered = name.lower()
    if lowered in FORBIDDEN_HEADERS:
        raise _Invalid(f"{member}: forbidden header {name!r}")
    return lowered


def _header_maps(obj: dict[str, Any], member: str) -> tuple[tuple[bytes, bytes], ...]:
    """``headers`` ∪ ``addHeaders``, ``addHeaders`` winning for a name in both (§4.2)."""
    merged: dict[str, tuple[bytes, bytes]] = {}
    for key in ("headers", "addHeaders"):  # addHeaders last: it wins
        headers = obj.get(key)
        if headers is None:
            continue
        where = f"{member}.{key}"
        if not isinstance(headers, dict):
            raise _Invalid(f"{where} must be an object of strings")
        seen: set[str] = set()
        for name, value in headers.items():
            lowered = _header_name(name, where)
            if lowered in seen:
                raise _Invalid(f"{where}: {name!r} listed twice")
            seen.add(lowered)
            if not isinstance(value, str):
                raise _Invalid(f"{where}: value of {name!r} is not a string")
            if _BAD_VALUE_CHAR.search(value) is not None:
                raise _Invalid(f"{where}: value of {name!r} contains a control character")
            merged[lowered] = (lowered.encode("ascii"), _utf8(value, where))
    return tuple(merged.values())


def _drop_headers(value: Any) -> frozenset[bytes]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise _Invalid("modify.dropHeaders must be an array of strings")
    return frozenset(_header_name(name, "modify.dropHeaders").encode("ascii") for name in value)


def _body(obj: dict[str, Any], member: str) -> tuple[bytes | None, bool]:
    """``json`` (wins) or ``payload`` (§4.4 step 4) → (body bytes or None, body is json).  Both are validated."""
    payload = obj.get("payload")
    if payload is not None and not isinstance(payload, str):
        raise _Invalid(f"{member}.payload must be a string")
    base64_encoded = obj.get("base64Encoded")
    if base64_encoded is not None and not isinstance(base64_encoded, bool):
        raise _Invalid(f"{member}.base64Encoded must be a boolean")
    decoded: bytes | None = None
    if payload is not None:
        if base64_encoded:  # §10 Q13: decoded only when base64Encoded is true
            try:
                decoded = binascii.a2b_base64(payload.encode("ascii"), strict_mode=True)
            except (binascii.Error, UnicodeEncodeError):
                raise _Invalid(f"{member}.payload is not valid base64") from None
        else:
            decoded = _utf8(payload, f"{member}.payload")
    json_value = obj.get("json")
    if json_value is not None:
        # §4.4, §10 Q14: compact, non-ASCII as UTF-8, member order kept (orjson's defaults).
        return orjson.dumps(json_value), True
    return decoded, False


def _change_route(value: Any, backend_authority: str, route_hosts: frozenset[str]) -> ChangeRoute:
    """§4.3 rule 6, §4.4 step 3."""
    if not isinstance(value, dict):
        raise _Invalid("modify.changeRoute must be an object")
    uri, verb = value.get("uri"), value.get("httpVerb")
    if uri is None and verb is None:
        raise _Invalid("modify.changeRoute has neither uri nor httpVerb")
    method: str | None = None
    if verb is not None:
        if not isinstance(verb, str) or _TOKEN.fullmatch(verb) is None:
            raise _Invalid("modify.changeRoute.httpVerb is not a token")
        method = verb.upper()
    if uri is None:
        return ChangeRoute(method=method)
    if not isinstance(uri, str) or _BAD_URI_CHAR.search(uri) is not None:
        raise _Invalid("modify.changeRoute.uri is not an absolute http/https URL")
    try:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise _Invalid("modify.changeRoute.uri is not an absolute http/https URL") from None
    default_port = _ROUTE_SCHEMES.get(scheme)
    if default_port is None or not host or "@" in parts.netloc or port == 0:
        raise _Invalid("modify.changeRoute.uri is not an absolute http/https URL")
    if port is None:
        port = default_port
    host_text = f"[{host}]" if ":" in host else host
    authority = host_text if port == default_port else f"{host_text}:{port}"
    if authority != backend_authority.lower() and authority not in route_hosts:
        raise _Invalid(f"modify.changeRoute.uri: host {authority!r} is not permitted")
    path_qs = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")  # a fragment is never sent
    return ChangeRoute(scheme=scheme, host=host, port=port, path_qs=path_qs, method=method)


# ---------------------------------------------------------------------------------------------------------------
# terminate / modify / hints
# ---------------------------------------------------------------------------------------------------------------


def _termination(obj: dict[str, Any]) -> Termination:
    code = _status(obj["code"], "terminate.code")
    message = obj.get("message")
    if message is not None and not isinstance(message, str):
        raise _Invalid("terminate.message must be a string")
    headers = _header_maps(obj, "terminate")
    body, is_json = _body(obj, "terminate")
    return Termination(code=code, message=message, headers=headers, body=body, body_is_json=is_json)


_NO_EFFECT = Modification()


def _modification(obj: dict[str, Any], point: Point, backend_authority: str,
                  route_hosts: frozenset[str]) -> Modification:
    drop = _drop_headers(obj.get("dropHeaders"))
    add = _header_maps(obj, "modify")
    if point is Point.PREFLIGHT:  # §9.3: only the header members are applied, the rest is ignored
        return Modification(drop_headers=drop, add_headers=add)
    body, is_json = _body(obj, "modify")
    complete_with_code: int | None = None
    change_route: ChangeRoute | None = None
    if point is Point.POST:
        code = obj.get("completeWithCode")  # §10 Q27: ignored (not validated) at pre
        if code is not None:
            complete_with_code = _status(code, "modify.completeWithCode")
    else:
        route = obj.get("changeRoute")  # [ext] pre only; ignored (not validated) at post
        if route is not None:
            change_route = _change_route(route, backend_authority, route_hosts)
    return Modification(drop_headers=drop, add_headers=add, body=body, body_is_json=is_json,
                        complete_with_code=complete_with_code, change_route=change_route)


def _cache_ttl_ms(doc: dict[str, Any], now: float) -> int | None:
    """§9.1: the earlier of ``unchangedFor`` / ``unchangedUntil``; malformed hints ignored; ≤ 0 → None."""
    ttls: list[int] = []
    unchanged_for = doc.get("unchangedFor")
    if type(unchanged_for) is int:
        ttls.append(unchanged_for)
    unchanged_until = doc.get("unchangedUntil")
    if isinstance(unchanged_until, str):
        try:
            expiry = datetime.fromisoformat(unchanged_until)
        except ValueError:
            expiry = None
        if expiry is not None and expiry.tzinfo is not None:  # RFC 3339 demands an offset
            ttls.append(math.floor((expiry.timestamp() - now) * 1000))
    if not ttls:
        return None
    ttl = min(ttls)
    return ttl if ttl > 0 else None


def _interpret(raw: bytes, point: Point, backend_authority: str, route_hosts: frozenset[str],
               now: float) -> Verdict:
    if len(raw) > MAX_OUTPUT_BYTES:
        raise _Invalid("output larger than 6 MB")
    if not raw.strip(_JSON_WHITESPACE):
        raise FunctionFailure(ErrorCode.EMPTY_OUTPUT, point=point)
    try:
        doc = orjson.loads(raw)  # rejects invalid UTF-8 (rule 1)
    except orjson.JSONDecodeError:
        raise _Invalid("output is not UTF-8 JSON") from None
    if doc is None:
        raise FunctionFailure(ErrorCode.EMPTY_OUTPUT, point=point)
    if not isinstance(doc, dict):
        raise _Invalid("output is not a JSON object")

    terminate, modify = doc.get("terminate"), doc.get("modify")
    if terminate is not None and not isinstance(terminate, dict):
        raise _Invalid("terminate must be an object")
    ttl = _cache_ttl_ms(doc, now)
    if terminate is not None and terminate.get("code") is not None:  # §4.4 step 1: terminate with code wins
        return Verdict(VerdictKind.TERMINATE, termination=_termination(terminate), cache_ttl_ms=ttl)
    if modify is not None:
        if not isinstance(modify, dict):
            raise _Invalid("modify must be an object")
        modification = _modification(modify, point, backend_authority, route_hosts)
        if modification != _NO_EFFECT:
            return Verdict(VerdictKind.MODIFY, modification=modification, cache_ttl_ms=ttl)
    return ALLOW if ttl is None else Verdict(VerdictKind.ALLOW, cache_ttl_ms=ttl)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def interpret_output(raw: bytes, point: Point, *, backend_authority: str, route_hosts: frozenset[str],
                     now: float) -> Verdict:
    """§4: validate the whole output, then reduce it to a ``Verdict`` by the §4.4 precedence.

    ``backend_authority`` is the endpoint's backend ``host[:port]`` (default port omitted) and ``route_hosts``
    the lower-cased ``route_hosts`` of the endpoint (§4.4 step 3).  ``now`` is epoch seconds (§9.1 hints).
    Raises ``FunctionFailure`` ``EMPTY_OUTPUT`` or ``INVALID_OUTPUT`` (§5.3).  Pre-flight is read as pre,
    except that only the header members of ``modify`` count (§9.3).
    """
    try:
        return _interpret(raw, point, backend_authority, route_hosts, now)
    except _Invalid as exc:
        raise FunctionFailure(ErrorCode.INVALID_OUTPUT, point=point) from exc


def function_failure(body: bytes, function_error_header: str, point: Point) -> FunctionFailure:
    """§5.3 function error (502): ``detail`` = top-level ``errorMessage`` when a string, else ``Function error``;
    ``title`` = top-level ``errorType`` when present, else the ``X-Amz-Function-Error`` value."""
    detail, title = _DEFAULT_FUNCTION_ERROR_DETAIL, function_error_header
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        message = doc.get("errorMessage")
        if isinstance(message, str):
            detail = message
        error_type = doc.get("errorType")
        if error_type is not None:
            title = error_type if isinstance(error_type, str) else orjson.dumps(error_type).decode("utf-8")
    return FunctionFailure(ErrorCode.FUNCTION_ERROR, point=point, detail=detail, title=title)
