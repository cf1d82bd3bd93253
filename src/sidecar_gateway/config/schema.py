"""Pydantic models of the gateway configuration file (gateway-config.md, "Configuration file (YAML)").

Rules of this file:

* These models describe the *file*, not the running gateway: the loader (``config/loader.py``) validates the
  YAML document against them and then builds the frozen ``plan.GatewayPlan``.  Pydantic is used at load time
  only; nothing on the request path imports this module.
* Every model forbids unknown keys (gateway-config.md: "Unknown keys anywhere in the YAML file are ERRORs")
  and is strict: a YAML value of the wrong type is refused, never coerced (an unquoted ``id: 0123`` would
  otherwise silently become the integer 83 under YAML 1.1).  The exceptions are documented at their type:
  EAV values accept any scalar (``_eav_value``) and ``max_request_body`` accepts a size with a unit.
* Value rules are ``PlainValidator`` functions that raise ``invalid(message)``; the message is the text after
  ``key:`` in the problem line (``Invalid URL``, ``Invalid value: HOST:PORT`` …), so the loader prints it
  verbatim.  Errors raised by pydantic itself (``missing``, ``extra_forbidden``, ``string_type`` …) are
  translated by the loader.
* Validators normalise as they go (lower-cased hosts, upper-cased methods, split target URL), so the loader
  only copies values into the plan.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from .plan import DEFAULT_MAX_INFLIGHT, Target

__all__ = [
    "ADMIN_TOKEN_REQUIRED",
    "DEFAULT_ADMIN_LISTEN",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_REQUEST_BODY",
    "DEFAULT_TIMEOUT_S",
    "GATEWAY_ERROR_TYPE",
    "HTTP_METHODS",
    "AdminSpec",
    "ApiKeySpec",
    "ApplicationSpec",
    "AwsSpec",
    "EndpointSpec",
    "ErrorSetEntrySpec",
    "GatewayFileSpec",
    "NonblockingSpec",
    "OutputCacheSpec",
    "PackageKeySpec",
    "PythonSpec",
    "ServiceSpec",
    "SidecarSpec",
    "invalid",
    "is_header_token",
    "is_loopback_host",
]

# Defaults written in gateway-config.md.
DEFAULT_LISTEN: tuple[str, int] = ("127.0.0.1", 8080)
DEFAULT_ADMIN_LISTEN: tuple[str, int] = ("127.0.0.1", 9901)
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_REQUEST_BODY = 50 * 1024 * 1024  # gateway-config.md "PayloadTooLarge": default 50 MB (1 MB = 1,048,576 B)

# RFC 9110 §9 methods plus PATCH (RFC 5789).  A closed list on purpose: a typo such as ``GTE`` must be an
# ERROR, not an endpoint that silently answers 405 to everyone.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})

GATEWAY_ERROR_TYPE = "gateway"  # pydantic error type of our own messages

_CTL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters except HTAB (RFC 9110 §5.5 field values)
_PORT = re.compile(r"[0-9]{1,5}")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 token (header names)
_SIZE = re.compile(r"\s*([0-9]+)\s*(b|kb|mb|gb)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1024, "mb": 1024 * 1024, "gb": 1024 * 1024 * 1024}


def invalid(message: str) -> NoReturn:
    """Fail validation with ``message`` as the whole problem text."""
    raise PydanticCustomError(GATEWAY_ERROR_TYPE, "{message}", {"message": message})


def is_header_token(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


# ---------------------------------------------------------------------------------------------------------------
# Hosts and addresses
# ---------------------------------------------------------------------------------------------------------------


def _split_host_port(text: str) -> tuple[str, str | None] | None:
    """``host[:port]`` or ``[v6]:port`` → (host without brackets, port text or None); None when malformed."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else None
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, ""
    elif not host:
        return None
    if ":" in host:  # an IPv6 address must be written in brackets
        return None
    if _HOSTNAME.fullmatch(host) is None:
        return None
    return host, (port if sep else None)


def _port(text: str, *, allow_zero: bool) -> int | None:
    if _PORT.fullmatch(text) is None:
        return None
    port = int(text)
    return port if (1 if not allow_zero else 0) <= port <= 65535 else None


def _url_host(host: str) -> str:
    """Host as written in a URL or a Host header: lower-cased, IPv6 compressed and bracketed."""
    if ":" in host:
        return f"[{ipaddress.IPv6Address(host).compressed}]"
    return host.lower()


def _listen(value: Any) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6).  The host is returned without brackets, ready to bind; port 0
    (an ephemeral port chosen by the system) is accepted, as tests use it."""
    if isinstance(value, str):
        split = _split_host_port(value.strip())
        if split is not None and split[1] is not None:
            port = _port(split[1], allow_zero=True)
            if port is not None:
                return split[0].lower(), port
    invalid("Invalid value: HOST:PORT")


def _public_host(value: Any) -> str:
    """The request's Host must equal this, port ignored (gateway-config.md): a port written here is dropped."""
    if isinstance(value, str):
        split = _split_host_port(value.strip())
        if split is not None and (split[1] is None or _port(split[1], allow_zero=False) is not None):
            return _url_host(split[0])
    invalid("Invalid value: a host name")


def _route_host(value: Any) -> str:
    """Contract §4.4 [ext]: ``host[:port]`` a pre-processor may re-route to; stored lower-cased, as written."""
    if isinstance(value, str):
        split = _split_host_port(value.strip())
        if split is not None:
            host = _url_host(split[0])
            if split[1] is None:
                return host
            port = _port(split[1], allow_zero=False)
            if port is not None:
                return f"{host}:{port}"
    invalid("Invalid value: host[:port]")


def _cidr(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR (``10.0.0.0/8``) or a single address (``10.1.2.3`` = ``/32``).  Host bits must be zero: a
    ``10.0.0.1/8`` is more likely a typo than a wish to trust the whole /8."""
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value.strip(), strict=True)
        except ValueError:
            pass
    invalid("Invalid CIDR")


# ---------------------------------------------------------------------------------------------------------------
# Endpoint values
# ---------------------------------------------------------------------------------------------------------------


def _identifier(value: Any) -> str:
    """serviceId, endpointId, application id: opaque non-blank strings.  Numbers must be quoted."""
    if not isinstance(value, str):
        invalid("Invalid value: a string (put numbers in quotes)")
    if not value.strip() or _CTL.search(value):
        invalid("Invalid value: a non-empty string without control characters")
    return value


def _package_key(value: Any) -> str:
    """A package key travels in a query string or a header: no whitespace or control characters."""
    if not isinstance(value, str):
        invalid("Invalid value: a string (put numbers in quotes)")
    if not value or _CTL_OR_SPACE.search(value):
        invalid("Invalid value: a non-empty string without spaces")
    return value


def _public_path(value: Any) -> str:
    """Leading '/', trailing '/' removed except for the root (gateway-config.md matching rules)."""
    if not isinstance(value, str) or not value.startswith("/"):
        invalid("Invalid value: a path starting with '/'")
    segments = value.split("/")
    if _CTL_OR_SPACE.search(value) or "?" in value or "#" in value or "." in segments or ".." in segments:
        invalid("Invalid value: a path without spaces, '?', '#' or dot segments")
    return value.rstrip("/") or "/"


def _method(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in HTTP_METHODS:
        return value.strip().upper()
    invalid(f"Invalid value: an HTTP method ({', '.join(sorted(HTTP_METHODS))})")


def _target(value: Any) -> Target:
    """An absolute http/https URL without userinfo or fragment, split once (plan.Target)."""
    if not isinstance(value, str) or _CTL_OR_SPACE.search(value) or "#" in value:
        invalid("Invalid URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        invalid("Invalid URL")
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if scheme not in ("http", "https") or not netloc or "@" in netloc or netloc.endswith(":") or port == 0:
        invalid("Invalid URL")
    split = _split_host_port(netloc)
    if split is None or not split[0]:
        invalid("Invalid URL")
    segments = parts.path.split("/")
    if "." in segments or ".." in segments:
        invalid("Invalid URL")
    return Target(
        scheme=scheme,
        host=_url_host(split[0]),
        port=port if port is not None else (443 if scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
        query=parts.query,
    )


def _positive_number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    invalid("Invalid value: a number greater than 0")


def _positive_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    invalid("Invalid value: an integer greater than 0")


def _byte_size(value: Any) -> int:
    """``max_request_body``: an integer number of bytes, or a string with a unit ``b``/``kb``/``mb``/``gb``
    (1 KB = 1,024 bytes, contract §0).  Must be greater than 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None:
            size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
            if size > 0:
                return size
    invalid("Invalid value: a size in bytes greater than 0 (e.g. 52428800 or '50mb')")


def _status(value: Any) -> int:
    """An ``error_set`` key: an HTTP status 100–599, written ``403`` or ``'403'``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    invalid("Invalid value: an HTTP status between 100 and 599")


def _header_value(value: Any) -> str:
    """Written into a response header by the error rendering (§6.2): no control characters."""
    if isinstance(value, str) and value.strip() and _CTL.search(value) is None:
        return value
    invalid("Invalid value: a non-empty string without control characters")


def _non_blank(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value
    invalid("Invalid value: a non-empty string")


def _redis_url(value: Any) -> str:
    if isinstance(value, str):
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is not None and parts.scheme in ("redis", "rediss", "unix") and (parts.netloc or parts.path):
            return value
    invalid("Invalid value: a redis://, rediss:// or unix:// URL")


# ---------------------------------------------------------------------------------------------------------------
# EAVs
# ---------------------------------------------------------------------------------------------------------------


def _eav_name(value: Any) -> str:
    """EAV names are case-sensitive strings (contract §1)."""
    if isinstance(value, str) and value.strip():
        return value
    invalid("Invalid value: an EAV name (a non-empty string)")


def _eav_value(value: Any) -> str | None:
    """EAV values are strings (contract §1).  Any YAML scalar is accepted and converted, because operators
    write ``tier: 2`` and mean ``"2"``: numbers with ``str()``, booleans as ``true``/``false``, null as absent.
    Lists and mappings are refused.  Blank values are dropped later (a blank EAV counts as absent, §1)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    invalid("Invalid value: a string")


Listen = Annotated[tuple[str, int], PlainValidator(_listen)]
Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, PlainValidator(_cidr)]
Identifier = Annotated[str, PlainValidator(_identifier)]
KeyText = Annotated[str, PlainValidator(_package_key)]
PublicPath = Annotated[str, PlainValidator(_public_path)]
PublicHost = Annotated[str, PlainValidator(_public_host)]
RouteHost = Annotated[str, PlainValidator(_route_host)]
Method = Annotated[str, PlainValidator(_method)]
TargetUrl = Annotated[Target, PlainValidator(_target)]
PositiveNumber = Annotated[float, PlainValidator(_positive_number)]
PositiveInt = Annotated[int, PlainValidator(_positive_int)]
ByteSize = Annotated[int, PlainValidator(_byte_size)]
Status = Annotated[int, PlainValidator(_status)]
HeaderValue = Annotated[str, PlainValidator(_header_value)]
NonBlank = Annotated[str, PlainValidator(_non_blank)]
RedisUrl = Annotated[str, PlainValidator(_redis_url)]
EavName = Annotated[str, PlainValidator(_eav_name)]
EavValue = Annotated[str | None, PlainValidator(_eav_value)]


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


ADMIN_TOKEN_REQUIRED = "admin.token is required when admin.listen is not a loopback address"


def is_loopback_host(host: str) -> bool:
    """A listen host that only this machine can reach: a loopback address (127.0.0.0/8, ::1) or ``localhost``
    (RFC 6761 §6.3).  Every other name or address (``0.0.0.0``, ``::``, a LAN address) is reachable from
    elsewhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminSpec(_Spec):
    listen: Listen = DEFAULT_ADMIN_LISTEN
    token: NonBlank | None = None  # bearer token; required when listen is not loopback (ADMIN_TOKEN_REQUIRED)


class ApiKeySpec(_Spec):
    in_: Literal["query", "header"] = Field(default="query", alias="in")
    name: NonBlank | None = None  # explicit name: the only one accepted (no alias)


class ErrorSetEntrySpec(_Spec):
    """Contract §6.2 rule 2."""

    body: str
    content_type: HeaderValue = "text/plain"
    status_message: HeaderValue | None = None
    detail_header: HeaderValue | None = None


class EndpointSpec(_Spec):
    id: Identifier
    name: str | None = None
    public_path: PublicPath
    public_host: PublicHost | None = None
    methods: list[Method] | None = Field(default=None, min_length=1)
    target: TargetUrl
    timeout: PositiveNumber = DEFAULT_TIMEOUT_S
    api_key: ApiKeySpec | None = None
    key_required: bool = True
    error_format: Literal["xml", "json"] = "xml"
    error_set: dict[Status, ErrorSetEntrySpec] | None = None
    route_hosts: list[RouteHost] | None = None
    pre_processing: str | None = None
    post_processing: str | None = None


class ServiceSpec(_Spec):
    id: Identifier
    name: str | None = None
    endpoints: list[EndpointSpec] | None = None


class AwsSpec(_Spec):
    ssm_cache_ttl_s: PositiveNumber = 600.0


class OutputCacheSpec(_Spec):
    local_entries: PositiveInt = 10_000
    redis_url: RedisUrl | None = None
    max_ttl_s: PositiveNumber = 3600.0
    redis_timeout_ms: PositiveInt = 50


class NonblockingSpec(_Spec):
    queue_size: PositiveInt = 1000
    workers: PositiveInt = 8
    drain_s: PositiveNumber = 5.0


class PythonSpec(_Spec):
    max_threads: PositiveInt = 32


class SidecarSpec(_Spec):
    """Contract §9.7."""

    allowed_role_prefixes: list[NonBlank] | None = None
    aws: AwsSpec | None = None
    output_cache: OutputCacheSpec | None = None
    nonblocking: NonblockingSpec | None = None
    python: PythonSpec | None = None


class PackageKeySpec(_Spec):
    key: KeyText
    eavs: dict[EavName, EavValue] | None = None
    status: Literal["active", "disabled"] = "active"


class ApplicationSpec(_Spec):
    id: Identifier
    name: str | None = None
    eavs: dict[EavName, EavValue] | None = None
    package_keys: list[PackageKeySpec] | None = None


class GatewayFileSpec(_Spec):
    listen: Listen = DEFAULT_LISTEN
    trusted_proxies: list[Cidr] | None = None
    admin: AdminSpec | None = None
    max_request_body: ByteSize = DEFAULT_MAX_REQUEST_BODY
    max_inflight: PositiveInt = DEFAULT_MAX_INFLIGHT
    services: list[ServiceSpec] | None = None
    sidecar: SidecarSpec | None = None
    applications: list[ApplicationSpec] | None = None
