"""The compiled, immutable plan: what the loader produces and the request path reads.

Rules of this file:

* Everything here is frozen and slotted; nothing on the request path parses or derives a value that could
  have been derived here (style rule 3).  Header names are stored lower-cased as ``bytes`` because the ASGI
  server hands us ``list[tuple[bytes, bytes]]`` with lower-cased names.
* This module imports nothing from the rest of the package except ``errors.Point`` (imports point rightwards:
  gateway, sidecar and transports read the plan; the plan knows none of them).
* Contract key names (``functionARN``, ``failSafe`` …) are mapped to these snake_case fields in exactly one
  place: ``config/processor.py``.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import Point

__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "EMPTY_MAP",
    "Application",
    "AwsLambdaConnection",
    "EndpointPlan",
    "ErrorFormat",
    "ErrorSetEntry",
    "GatewayPlan",
    "HttpConnection",
    "KeyLocation",
    "Mode",
    "PackageKey",
    "Point",
    "ProcessorPlan",
    "PythonConnection",
    "ScopeFilter",
    "SidecarSettings",
    "Stack",
    "Target",
]

EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})
# Admission control: calls in progress per worker before new ones are answered 503 ServiceUnavailable (Envoy's
# circuit-breaker default is 1,024 requests per cluster; ours covers a whole worker, with slow backends).
DEFAULT_MAX_INFLIGHT = 4096


class Stack(enum.Enum):
    """Transport of a function (§2.5 ``stack``)."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    AWS_LAMBDA = "aws-lambda"
    HTTP = "http"
    PYTHON = "python"


class Mode(enum.Enum):
    """``synchronicity`` (§2.4).  ``NON_BLOCKING`` is [ext] §9.4."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    REQUEST_RESPONSE = "request-response"
    EVENT = "event"
    NON_BLOCKING = "non-blocking"

    @property
    def input_name(self) -> str:
        """The ``synchronicity`` member of the input JSON (§3.1)."""
        return "RequestResponse" if self is Mode.REQUEST_RESPONSE else "Event"


class ErrorFormat(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    XML = "xml"
    JSON = "json"


# ---------------------------------------------------------------------------------------------------------------
# Processor connection (one per stack)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwsLambdaConnection:
    """§2.3, normalised.  ``role_arn`` is the normalised IAM ARN (§7.3); role fields are None when
    ``use_assume_role`` is false."""

    region: str
    function_arn: str
    use_assume_role: bool = True
    role_arn: str | None = None
    external_id_key: str | None = None  # SSM parameter *name* (not yet '/'-prefixed; §7.4 is applied by transport)
    session_name: str = "sidecar-gateway"
    expiration_minutes: int = 60


@dataclass(frozen=True, slots=True)
class HttpConnection:
    """§8.1: ``url`` and the static ``header.<name>`` values (``${VAR}`` already expanded)."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PythonConnection:
    """§8.2: ``handler`` text (``package.module:function``) and the callable imported at load time."""

    handler: str
    function: Callable[..., Any]


Connection = AwsLambdaConnection | HttpConnection | PythonConnection


# ---------------------------------------------------------------------------------------------------------------
# Scope filters (§9.2)
# ---------------------------------------------------------------------------------------------------------------


class ScopeElement(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    REQUEST_HEADER = "requestheader"
    HTTP_VERB = "httpverb"
    RESOURCE_PATH = "resourcepath"
    PACKAGE_KEY = "packagekey"
    EAV = "eav"
    PACKAGE_KEY_EAV = "packagekeyeav"


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """One ``when-``/``unless-`` line.  ``argument`` is the header name (lower-cased) or EAV name (as written);
    exactly one of ``pattern`` (whole-value regex) and ``values`` (literal list) is set.  For ``httpVerb``
    the literal values are stored upper-cased and compared against the upper-cased method."""

    negate: bool  # True for unless-
    element: ScopeElement
    argument: str | None
    pattern: re.Pattern[str] | None = None
    values: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------------------------------
# Processor plan (§2.4, §2.5 compiled)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessorPlan:
    """One processor (pre or post) of one endpoint, compiled.

    Header name sets are lower-cased ``bytes``.  ``require_request_headers`` keeps the configured spelling
    (for the error message, §5.1 P5) next to its lower-cased bytes name.
    """

    service_id: str
    endpoint_id: str
    point: Point
    stack: Stack
    connection: Connection
    mode: Mode = Mode.REQUEST_RESPONSE
    # §3.2 request header selection: (include ∪ require) − skip, or {authorization} − skip when neither is set.
    request_headers: frozenset[bytes] = frozenset({b"authorization"})
    require_request_headers: tuple[tuple[str, bytes], ...] = ()  # (as configured, lower-cased bytes)
    # §3.2 response headers (post only): None = "include not configured".
    include_response_headers: frozenset[bytes] | None = None
    skip_response_headers: frozenset[bytes] = frozenset()
    send_response_headers: bool = False  # include or skip configured at post
    # EAVs, in configured order, deduplicated; "selection" = include ∪ require (require first).
    require_eavs: tuple[str, ...] = ()
    eav_selection: tuple[str, ...] = ()
    require_key_eavs: tuple[str, ...] = ()
    key_eav_selection: tuple[str, ...] = ()
    # Payload (§2.4, §5.1 P7)
    max_payload_bytes: int = 10 * 1024
    payload_blocking: bool = True
    # expand-input tokens (§2.4), one bool each.
    expand_request_payload: bool = False
    expand_response_payload: bool = False  # always False at pre
    expand_remote_address: bool = False
    expand_token: bool = False
    expand_operation: bool = False
    expand_routing: bool = False
    params: Mapping[str, Any] = field(default_factory=lambda: EMPTY_MAP)  # name -> typed value, configured order
    fail_safe: bool = False
    enable_error_set: bool = False
    timeout_ms: int | None = None  # as configured
    deadline_s: float = 30.0  # effective: timeout_ms / 1000 or the endpoint timeout
    # [ext]
    scope: tuple[ScopeFilter, ...] = ()
    output_cache: bool = True
    preflight: bool = False
    preflight_ttl_s: int = 300
    shadow: bool = False

    @property
    def label(self) -> str:
        return f"{self.service_id}/{self.endpoint_id} {self.point.value}"


# ---------------------------------------------------------------------------------------------------------------
# Endpoint plan
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The endpoint's backend URL, split once.  ``base_path`` has no trailing slash ('' for a root target)."""

    scheme: str  # "http" | "https"
    host: str
    port: int
    base_path: str
    query: str = ""  # a query string written in the target itself (rare); prepended to the client's

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> bytes:
        return self.authority.encode("ascii")


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where the package key is read (gateway-config.md ``api_key``).  ``names`` are tried in order:
    the configured name, then the alias (``apikey``) unless an explicit name was given.  For ``in: header``
    the names are lower-cased bytes-comparable strings."""

    in_header: bool = False
    names: tuple[str, ...] = ("api_key", "apikey")


@dataclass(frozen=True, slots=True)
class ErrorSetEntry:
    """gateway-config ``error_set`` / contract §6.2 rule 2."""

    body: str
    content_type: str = "text/plain"
    status_message: str | None = None
    detail_header: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    service_id: str
    endpoint_id: str
    public_path: str  # normalised: leading '/', no trailing '/' (except the root '/')
    target: Target
    service_name: str = ""
    name: str = ""
    public_host: str | None = None  # lower-cased, without port
    methods: frozenset[str] | None = None  # upper-cased; None = any
    timeout_s: float = 30.0
    key_location: KeyLocation = KeyLocation()
    key_required: bool = True
    error_format: ErrorFormat = ErrorFormat.XML
    error_set: Mapping[int, ErrorSetEntry] = field(default_factory=lambda: EMPTY_MAP)
    route_hosts: frozenset[str] = frozenset()  # lower-cased host[:port]; the target's own authority included
    pre: ProcessorPlan | None = None
    post: ProcessorPlan | None = None


# ---------------------------------------------------------------------------------------------------------------
# Applications and package keys
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    name: str = ""
    # blank values already removed (a blank EAV counts as absent, §1)
    eavs: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAP)


@dataclass(frozen=True, slots=True)
class PackageKey:
    key: str
    application: Application
    eavs: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAP)  # blank values already removed
    active: bool = True


# ---------------------------------------------------------------------------------------------------------------
# Gateway-wide
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SidecarSettings:
    """Contract §9.7 with the gateway-config defaults."""

    allowed_role_prefixes: tuple[str, ...] = ()
    ssm_cache_ttl_s: float = 600.0
    output_cache_local_entries: int = 10_000
    output_cache_redis_url: str | None = None
    output_cache_max_ttl_s: float = 3600.0
    output_cache_redis_timeout_ms: int = 50
    nonblocking_queue_size: int = 1000
    nonblocking_workers: int = 8
    nonblocking_drain_s: float = 5.0
    python_max_threads: int = 32


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    source: str  # the file it was loaded from
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    admin_token: str | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_request_body: int = 50 * 1024 * 1024
    max_inflight: int = DEFAULT_MAX_INFLIGHT  # calls in progress per worker; more are answered 503 at once
    endpoints: tuple[EndpointPlan, ...] = ()
    keys: Mapping[str, PackageKey] = field(default_factory=lambda: EMPTY_MAP)
    sidecar: SidecarSettings = SidecarSettings()
