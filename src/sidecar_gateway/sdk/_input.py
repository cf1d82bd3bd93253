"""``SidecarInput``: the input JSON of contract §3, parsed into a typed, read-only value.

Rules of this file:

* Standard library only (the package is zipped into Lambda functions).
* Parsing is tolerant of what the contract lets the gateway omit (§3: a member is omitted, never ``null``,
  when its condition does not hold): an absent optional member becomes ``None`` or an empty mapping.  A
  member present with the wrong type is an ``InvalidInput`` — the function is being called by something
  that does not speak the contract.
* Header names are lower-case in the input (§3.2); ``Headers`` looks names up case-insensitively anyway.
* A payload is decoded from base64 only when ``payloadBase64Encoded`` is true (§3.3); ``Payload.data`` is
  always the body bytes as the gateway received them.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Headers", "InvalidInput", "Operation", "Payload", "Point", "Routing", "SidecarInput", "Token"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class InvalidInput(ValueError):
    """The event is not a contract §3 input (a required member is missing or a member has the wrong type)."""


class Point(enum.StrEnum):
    """§3.1 ``point``.  A ``str`` enum: ``inp.point == "PreProcessor"`` holds."""

    PRE = "PreProcessor"
    POST = "PostProcessor"
    PREFLIGHT = "Preflight"  # [ext] §9.3


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive view of ``request.headers`` / ``response.headers`` (§3.2)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items: dict[str, str] = {name.lower(): value for name, value in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Payload:
    """A request or response body sent in the input (§3.1 ``payload``, §3.3 encoding)."""

    data: bytes  # the body bytes (decoded from base64 when it was sent as base64)
    length: int  # ``payloadLength``: byte count as received by the gateway
    base64_encoded: bool  # how it travelled in the input

    @property
    def text(self) -> str:
        """The body as UTF-8 text (invalid bytes replaced)."""
        return self.data.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it is not JSON)."""
        return json.loads(self.data)


@dataclass(frozen=True, slots=True)
class Operation:
    """§3.4 ``operation``: the client's call."""

    http_verb: str
    path: str  # after the endpoint's public path, starting with '/'
    uri: str
    query: Mapping[str, str | list[str]] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Token:
    """§3.4 ``token``: the OAuth access token's attributes (never the token itself)."""

    scope: str | None = None
    user_context: str | None = None
    grant_type: str | None = None
    expires: str | None = None  # ISO-8601 UTC, 'Z' suffix


@dataclass(frozen=True, slots=True)
class Routing:
    """§3.4 ``routing``: the backend request (pre: before modification; post: as sent)."""

    http_verb: str
    uri: str


# ---------------------------------------------------------------------------------------------------------------
# Member readers
# ---------------------------------------------------------------------------------------------------------------


def _object(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if value is None:
        return _EMPTY
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be an object")
    return value


def _string(doc: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    return value


def _strings(doc: Mapping[str, Any], name: str) -> Mapping[str, str]:
    value = _object(doc, name)
    if any(not isinstance(v, str) for v in value.values()):
        raise InvalidInput(f"{name} must be an object of strings")
    return MappingProxyType(dict(value))


def _payload(part: Mapping[str, Any], where: str) -> Payload | None:
    """§3.3: ``payload`` text, or base64 when ``payloadBase64Encoded`` is true."""
    text = _string(part, "payload")
    if text is None:
        return None
    encoded = part.get("payloadBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise InvalidInput(f"{where}.payloadBase64Encoded must be a boolean")
    if encoded:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}.payload is not valid base64") from None
    else:
        data = text.encode("utf-8")
    length = part.get("payloadLength", len(data))
    if type(length) is not int:
        raise InvalidInput(f"{where}.payloadLength must be an integer")
    return Payload(data=data, length=length, base64_encoded=encoded)


def _operation(doc: Mapping[str, Any]) -> Operation | None:
    if doc.get("operation") is None:
        return None
    op = _object(doc, "operation")
    query = op.get("query") or {}
    if not isinstance(query, Mapping):
        raise InvalidInput("operation.query must be an object")
    return Operation(http_verb=_string(op, "httpVerb") or "", path=_string(op, "path") or "/",
                     uri=_string(op, "uri") or "", query=MappingProxyType(dict(query)))


def _token(doc: Mapping[str, Any]) -> Token | None:
    if doc.get("token") is None:
        return None
    tok = _object(doc, "token")
    return Token(scope=_string(tok, "scope"), user_context=_string(tok, "userContext"),
                 grant_type=_string(tok, "grantType"), expires=_string(tok, "expires"))


def _routing(doc: Mapping[str, Any]) -> Routing | None:
    if doc.get("routing") is None:
        return None
    route = _object(doc, "routing")
    return Routing(http_verb=_string(route, "httpVerb") or "", uri=_string(route, "uri") or "")


# ---------------------------------------------------------------------------------------------------------------
# SidecarInput
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SidecarInput:
    """One input (§3.1), typed.  Build it with ``SidecarInput.from_event(event)``.

    Absent optional members are ``None`` (single values) or empty mappings (``params``, headers, EAVs).
    ``raw`` is the event exactly as received.
    """

    point: Point
    synchronicity: str  # "RequestResponse" | "Event"
    message_id: str  # masheryMessageId (§1)
    service_id: str
    endpoint_id: str
    package_key: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    request_headers: Headers = field(default_factory=Headers)
    request_body: Payload | None = None
    response_code: int | None = None  # post only
    response_headers: Headers = field(default_factory=Headers)
    response_body: Payload | None = None
    remote_addr: str | None = None
    eavs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    package_key_eavs: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    operation: Operation | None = None
    token: Token | None = None
    routing: Routing | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @property
    def is_pre(self) -> bool:
        return self.point is Point.PRE

    @property
    def is_post(self) -> bool:
        return self.point is Point.POST

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> SidecarInput:
        """Parse a §3 input (the Lambda ``event`` dict).  Raises ``InvalidInput`` when it is not one."""
        if not isinstance(event, Mapping):
            raise InvalidInput(f"the event must be a JSON object, not {type(event).__name__}")
        point_text = _string(event, "point", required=True)
        try:
            point = Point(point_text)
        except ValueError:
            raise InvalidInput(f"point must be one of {[p.value for p in Point]}, not {point_text!r}") from None
        request = _object(event, "request")
        response = _object(event, "response")
        response_code = response.get("code")
        if response_code is not None and type(response_code) is not int:
            raise InvalidInput("response.code must be an integer")
        if point is Point.POST and response_code is None:
            raise InvalidInput("response.code is required at PostProcessor (§3.1)")
        return cls(
            point=point,
            synchronicity=_string(event, "synchronicity", required=True) or "",
            message_id=_string(event, "masheryMessageId", required=True) or "",
            service_id=_string(event, "serviceId", required=True) or "",
            endpoint_id=_string(event, "endpointId", required=True) or "",
            package_key=_string(event, "packageKey"),
            params=MappingProxyType(dict(_object(event, "params"))),
            request_headers=Headers(_strings(request, "headers")),
            request_body=_payload(request, "request"),
            response_code=response_code,
            response_headers=Headers(_strings(response, "headers")),
            response_body=_payload(response, "response"),
            remote_addr=_string(event, "remoteAddr"),
            eavs=_strings(event, "eavs"),
            package_key_eavs=_strings(event, "packageKeyEAVs"),
            operation=_operation(event),
            token=_token(event),
            routing=_routing(event),
            raw=MappingProxyType(dict(event)),
        )
