"""Validation of a function's output against contract §4.3, with the standard library only.

Rules of this file:

* It must agree with ``sidecar_gateway.sidecar.output_interpreter.interpret_output`` on *valid versus
  invalid* for every JSON document (a property test pits the two against each other).  The interpreter
  stops at the first defect; this validator lists every defect it finds, so a function author sees them all.
* What the interpreter ignores is ignored here too (§4.3 first paragraph): a ``terminate`` without ``code``,
  ``completeWithCode`` at pre, ``changeRoute`` at post, unknown members, the whole ``modify`` when a
  ``terminate`` with ``code`` wins, and at pre-flight every ``modify`` member but the header ones (§9.3).
  A member whose value is ``null`` is absent (§4.1).
* The output is first serialised the way a runtime would (``json.dumps``) and parsed back, so what is
  validated is the JSON document the gateway will receive (tuples become arrays, ``IntEnum`` becomes an
  integer, ``NaN`` or a lone surrogate make it unserialisable).  Keys must be strings: ``json.dumps`` would
  convert other keys, but the ``python`` stack serialises with orjson, which refuses them (§8.2).
* ``point`` ``None`` means "not known yet" (the builders): every point-specific member is then validated.
  The ``changeRoute`` host permission (§4.4 step 3) depends on the endpoint's configuration; it is checked
  only when ``permitted_hosts`` is given.

Nothing here imports anything outside the standard library: this package is zipped into Lambda functions.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FORBIDDEN_HEADERS",
    "MAX_JSON_DEPTH",
    "MAX_OUTPUT_BYTES",
    "MAX_STATUS",
    "MIN_STATUS",
    "InvalidOutput",
    "output_problems",
    "validate_output",
]

MAX_OUTPUT_BYTES = 6 * 1024 * 1024
"""§4.3 rule 1: an output over 6 MB is invalid (also the AWS Lambda limit for a synchronous response)."""

MAX_JSON_DEPTH = 1024
"""Nesting depth (arrays and objects) the gateway's JSON parser (orjson) accepts; deeper is not JSON to it."""

MIN_STATUS, MAX_STATUS = 200, 599  # §4.2 / §4.3 rule 3: terminate.code and completeWithCode

FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
"""§4.3 rule 4 (§10 Q8): header names a function may neither set nor drop (framing, routing, hop-by-hop)."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110 §5.6.2 ``token = 1*tchar`` (ASCII only)."""

_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
"""§4.3 rule 5: CR, LF, NUL and every other control character (C0, DEL, C1) except HTAB."""

_BAD_URI_CHAR = re.compile(r"[^\x21-\x7e]")
"""§4.3 rule 6: a ``changeRoute.uri`` goes into a request line: printable ASCII only."""

_ROUTE_SCHEMES = {"http": 80, "https": 443}  # §4.4 step 3: absolute http/https only, with their default ports
_POINTS = ("PreProcessor", "PostProcessor", "Preflight")  # §3.1 ``point`` values


class InvalidOutput(ValueError):
    """The output breaks contract §4.3; ``problems`` lists every defect found (one sentence each).

    Raised by ``validate_output``, the builders and the ``@sidecar`` decorator.  In a Lambda function it
    surfaces as a function error (``errorType`` ``InvalidOutput``), which is clearer than the gateway's
    ``Invalid output from AWS Lambda function`` (§5.3).
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid sidecar output (contract §4.3):\n{lines}")


class _Collector:
    """Collects problem sentences; ``where`` prefixes are contract member paths (``modify.addHeaders``)."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, message: str) -> None:
        self.problems.append(message)


# ---------------------------------------------------------------------------------------------------------------
# JSON document (§4.3 rule 1)
# ---------------------------------------------------------------------------------------------------------------


def _depth_and_keys(value: Any, out: _Collector) -> None:
    """Iteratively: nesting deeper than ``MAX_JSON_DEPTH`` and non-string keys are problems."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    too_deep = bad_key = False
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
            if not bad_key and any(not isinstance(k, str) for k in item):
                bad_key = True
                out.add("object keys must be strings (the python stack serialises with orjson, which refuses others)")
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            too_deep = True
            break
        stack.extend((child, depth + 1) for child in children)
    if too_deep:
        out.add(f"output nested deeper than {MAX_JSON_DEPTH} levels is not accepted as JSON by the gateway")


def _as_json_document(output: Any, out: _Collector) -> Any:
    """The document the gateway receives, or None (with problems) when there is none (§4.3 rule 1, §5.3)."""
    if output is None:
        out.add("no output: None / JSON null means 'AWS Lambda Response is not returned' (§5.3); return {} to allow")
        return None
    _depth_and_keys(output, out)
    if out.problems:
        return None
    try:
        text = json.dumps(output, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        out.add(f"output is not serialisable as UTF-8 JSON: {exc}")
        return None
    if size > MAX_OUTPUT_BYTES:
        out.add(f"output is larger than 6 MB ({size} bytes)")
        return None
    document = json.loads(text)
    if not isinstance(document, dict):
        out.add(f"output must be a JSON object, not {type(document).__name__}")
        return None
    return document


# ---------------------------------------------------------------------------------------------------------------
# Member validators (§4.3 rules 2–6)
# ---------------------------------------------------------------------------------------------------------------


def _status(value: Any, member: str, out: _Collector) -> None:
    # ``type(...) is int``: JSON booleans are not integers, and 200.0 has a fraction part in JSON terms (rule 3).
    if type(value) is not int or not MIN_STATUS <= value <= MAX_STATUS:
        out.add(f"{member} must be an integer 200-599, got {value!r}")


def _text(value: Any, member: str, out: _Collector) -> None:
    if not isinstance(value, str):
        out.add(f"{member} must be a string, got {type(value).__name__}")


def _header_name(name: Any, member: str, out: _Collector) -> str | None:
    """Rule 4: an RFC 9110 token that is not forbidden; returns the lower-cased name when valid."""
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        out.add(f"{member}: header name is not an RFC 9110 token: {name!r}")
        return None
    lowered = name.lower()
    if lowered in FORBIDDEN_HEADERS:
        out.add(f"{member}: header {name!r} is forbidden (the gateway owns it)")
        return None
    return lowered


def _header_map(headers: Any, member: str, out: _Collector) -> None:
    """Rules 3–5 for ``addHeaders`` / ``headers``: an object of strings, token names, no repeats, clean values."""
    if not isinstance(headers, dict):
        out.add(f"{member} must be an object of strings")
        return
    seen: set[str] = set()
    for name, value in headers.items():
        lowered = _header_name(name, member, out)
        if lowered is not None:
            if lowered in seen:
                out.add(f"{member}: {name!r} is listed twice (names are case-insensitive)")
            seen.add(lowered)
        if not isinstance(value, str):
            out.add(f"{member}: value of {name!r} must be a string")
        elif _BAD_VALUE_CHAR.search(value) is not None:
            out.add(f"{member}: value of {name!r} contains a control character (only TAB is allowed)")


def _header_maps(obj: dict[str, Any], member: str, out: _Collector) -> None:
    for key in ("headers", "addHeaders"):
        value = obj.get(key)
        if value is not None:
            _header_map(value, f"{member}.{key}", out)


def _drop_headers(value: Any, out: _Collector) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        out.add("modify.dropHeaders must be an array of strings")
        return
    for name in value:
        _header_name(name, "modify.dropHeaders", out)


def _body(obj: dict[str, Any], member: str, out: _Collector) -> None:
    """``payload`` / ``base64Encoded`` (§4.2, §10 Q13); ``json`` is any JSON value and always valid."""
    payload = obj.get("payload")
    if payload is not None and not isinstance(payload, str):
        out.add(f"{member}.payload must be a string")
        payload = None
    base64_encoded = obj.get("base64Encoded")
    if base64_encoded is not None and not isinstance(base64_encoded, bool):
        out.add(f"{member}.base64Encoded must be a boolean")
        base64_encoded = None
    if payload is not None and base64_encoded:
        try:
            binascii.a2b_base64(payload.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            out.add(f"{member}.payload is not valid base64 (RFC 4648 §4, padded, no line breaks)")


def _change_route(value: Any, permitted_hosts: frozenset[str] | None, out: _Collector) -> None:
    """Rule 6 and §4.4 step 3 (the host permission only when ``permitted_hosts`` is known)."""
    if not isinstance(value, dict):
        out.add("modify.changeRoute must be an object")
        return
    uri, verb = value.get("uri"), value.get("httpVerb")
    if uri is None and verb is None:
        out.add("modify.changeRoute has neither uri nor httpVerb")
        return
    if verb is not None and (not isinstance(verb, str) or _TOKEN.fullmatch(verb) is None):
        out.add("modify.changeRoute.httpVerb is not a token")
    if uri is None:
        return
    bad_uri = "modify.changeRoute.uri is not an absolute http/https URL"
    if not isinstance(uri, str) or _BAD_URI_CHAR.search(uri) is not None:
        out.add(bad_uri)
        return
    try:
        parts = urlsplit(uri)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        out.add(bad_uri)
        return
    default_port = _ROUTE_SCHEMES.get(scheme)
    if default_port is None or not host or "@" in parts.netloc or port == 0:
        out.add(bad_uri)
        return
    if permitted_hosts is None:
        return
    port = default_port if port is None else port
    host_text = f"[{host}]" if ":" in host else host
    authority = host_text if port == default_port else f"{host_text}:{port}"
    if authority not in permitted_hosts:
        out.add(f"modify.changeRoute.uri: host {authority!r} is not the backend host nor in route_hosts (§4.4)")


def _modify(obj: dict[str, Any], point: str | None, permitted_hosts: frozenset[str] | None, out: _Collector) -> None:
    _drop_headers(obj.get("dropHeaders"), out)
    _header_maps(obj, "modify", out)
    if point == "Preflight":  # §9.3: only the header members are applied; the rest is ignored
        return
    _body(obj, "modify", out)
    if point in (None, "PostProcessor"):
        code = obj.get("completeWithCode")  # §10 Q27: ignored (not validated) at pre
        if code is not None:
            _status(code, "modify.completeWithCode", out)
    if point in (None, "PreProcessor"):
        route = obj.get("changeRoute")  # [ext] pre only; ignored (not validated) at post
        if route is not None:
            _change_route(route, permitted_hosts, out)


def _terminate(obj: dict[str, Any], out: _Collector) -> None:
    _status(obj["code"], "terminate.code", out)
    message = obj.get("message")
    if message is not None:
        _text(message, "terminate.message", out)
    _header_maps(obj, "terminate", out)
    _body(obj, "terminate", out)


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def output_problems(output: Any, point: str | None = None, *,
                    permitted_hosts: Iterable[str] | None = None) -> list[str]:
    """Every §4.3 defect of ``output`` (empty list: valid), read by the §4.4 precedence.

    ``point`` is the input's ``point`` (``"PreProcessor"``, ``"PostProcessor"``, ``"Preflight"``) or None
    (validate every point-specific member).  ``permitted_hosts``: the endpoint's backend authority and its
    ``route_hosts`` (lower-cased ``host[:port]``), to check ``changeRoute`` hosts; None skips that check.
    """
    if point is not None and point not in _POINTS:
        raise ValueError(f"point must be one of {_POINTS} or None, not {point!r}")
    out = _Collector()
    document = _as_json_document(output, out)
    if document is None:
        return out.problems
    terminate, modify = document.get("terminate"), document.get("modify")
    if terminate is not None and not isinstance(terminate, dict):
        out.add("terminate must be an object")
        return out.problems
    if terminate is not None and terminate.get("code") is not None:  # §4.4 step 1: terminate with code wins
        _terminate(terminate, out)
        return out.problems
    if modify is not None:
        if not isinstance(modify, dict):
            out.add("modify must be an object")
        else:
            hosts = None if permitted_hosts is None else frozenset(h.lower() for h in permitted_hosts)
            _modify(modify, point, hosts, out)
    return out.problems


def validate_output(output: Any, point: str | None = None, *, permitted_hosts: Iterable[str] | None = None) -> Any:
    """Return ``output`` unchanged when it is valid (§4.3), else raise ``InvalidOutput`` listing every defect."""
    problems = output_problems(output, point, permitted_hosts=permitted_hosts)
    if problems:
        raise InvalidOutput(problems)
    return output
