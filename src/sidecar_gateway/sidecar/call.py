"""The per-call views the sidecar reads and changes (sans-IO; built by the gateway, style rule 2).

* ``ClientRequest`` is the client request **as received** (§3.1 ``request``): never modified.
* ``BackendRequest`` is what will be sent to the backend; a pre-processor's ``modify`` changes it (§4.4).
* ``BackendResponse`` is the backend answer as received, then changed by a post-processor's ``modify``.
Headers are ``list[tuple[bytes, bytes]]`` with lower-cased names, as ASGI gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config.plan import EMPTY_MAP, EndpointPlan, PackageKey

__all__ = ["BackendRequest", "BackendResponse", "CallContext", "ClientRequest", "TokenInfo"]


@dataclass(slots=True)
class ClientRequest:
    method: str  # upper-case, as received
    scheme: str  # scheme the client used ("http"/"https"; X-Forwarded-Proto only from trusted proxies)
    host: str  # Host header value as received (may include a port)
    raw_path: str  # full path as received, percent-encoding kept
    remainder: str  # path after the endpoint's public_path, starting with '/' ('/' when nothing follows)
    query_string: str  # raw query, without '?'
    headers: list[tuple[bytes, bytes]]
    client_addr: str  # §3.1 remoteAddr: TCP peer, or from X-Forwarded-For for trusted proxies
    body: bytes | None = None  # buffered body; None when it was not buffered (streams to the backend)

    def uri(self) -> str:
        """§3.4 ``operation.uri``: absolute URI the client addressed."""
        q = f"?{self.query_string}" if self.query_string else ""
        return f"{self.scheme}://{self.host}{self.raw_path}{q}"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """An OAuth access token known to the gateway (§3.4 ``token``).  Seam: the gateway has no OAuth server yet."""

    scope: str | None = None
    user_context: str | None = None
    grant_type: str | None = None
    expires: str | None = None  # ISO-8601 UTC with Z


@dataclass(slots=True)
class CallContext:
    """One client call (§1): the endpoint, the message id and the authenticated key."""

    message_id: str
    endpoint: EndpointPlan
    request: ClientRequest
    package_key: PackageKey | None = None  # None for anonymous calls (key_required: false)
    token: TokenInfo | None = None

    @property
    def app_eavs(self) -> Mapping[str, str]:
        return self.package_key.application.eavs if self.package_key is not None else EMPTY_MAP

    @property
    def key_eavs(self) -> Mapping[str, str]:
        return self.package_key.eavs if self.package_key is not None else EMPTY_MAP


@dataclass(slots=True)
class BackendRequest:
    method: str
    scheme: str
    host: str
    port: int
    path_qs: str  # raw path + ('?' + query if any)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # None: stream the client body unchanged
    body_replaced: bool = False

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def uri(self) -> str:
        """§3.4 ``routing.uri``."""
        return f"{self.scheme}://{self.authority}{self.path_qs}"


@dataclass(slots=True)
class BackendResponse:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | None = None  # None: still streaming from the backend (no post-processor needs it)
