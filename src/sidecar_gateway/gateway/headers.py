"""Header hygiene in one place (style rule 10): hop-by-hop removal, forwarding headers, client address.

* Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded, in either direction, including every header
  named in ``Connection``.
* ``X-Forwarded-For`` is replaced by the peer address (untrusted peer) or appended to (trusted peer);
  ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set (gateway-config.md "Forwarding headers").
* ``X-Mashery-Message-ID`` is set on the backend request last, replacing any client value (contract §1, §4.4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = [
    "HOP_BY_HOP",
    "MESSAGE_ID",
    "client_address",
    "forward_request_headers",
    "strip_hop_by_hop",
]

# RFC 9110 §7.6.1 plus the legacy names every proxy drops (nginx, Envoy, HAProxy).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authenticate", b"proxy-authorization",
})
MESSAGE_ID = b"x-mashery-message-id"
_XFF = b"x-forwarded-for"
_XFP = b"x-forwarded-proto"
_XFH = b"x-forwarded-host"
_FORWARDING = frozenset({_XFF, _XFP, _XFH, MESSAGE_ID, b"host"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _connection_named(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return frozenset(named)


def strip_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers without hop-by-hop fields (names lower-cased as given by ASGI / our client)."""
    drop = HOP_BY_HOP
    if any(k == b"connection" for k, _ in headers):
        drop = drop | _connection_named(headers)
    return [(k, v) for k, v in headers if k not in drop]


def _trusted(addr: str, trusted: Sequence[Network]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(peer: str, headers: list[tuple[bytes, bytes]], trusted: Sequence[Network]) -> str:
    """The client address: the TCP peer, or (peer trusted) the right-most untrusted X-Forwarded-For entry."""
    if not trusted or not _trusted(peer, trusted):
        return peer
    chain: list[str] = []
    for k, v in headers:
        if k == _XFF:
            chain.extend(p.strip() for p in v.decode("latin-1").split(","))
    for addr in reversed(chain):
        if addr and not _trusted(addr, trusted):
            return addr
    return chain[0] if chain and chain[0] else peer


def forward_request_headers(headers: list[tuple[bytes, bytes]], *, peer: str, peer_trusted: bool,
                            scheme: str, host: bytes, backend_host: bytes) -> list[tuple[bytes, bytes]]:
    """The backend request's headers before pre-processing: hop-by-hop removed, Host set to the backend
    authority, X-Forwarded-* set.  X-Mashery-Message-ID is added by the caller after pre-processing."""
    out = [(k, v) for k, v in strip_hop_by_hop(headers) if k not in _FORWARDING]
    prior = b", ".join(v for k, v in headers if k == _XFF) if peer_trusted else b""
    xff = prior + b", " + peer.encode("latin-1") if prior else peer.encode("latin-1")
    out.append((b"host", backend_host))
    out.append((_XFF, xff))
    out.append((_XFP, scheme.encode("latin-1")))
    if host:
        out.append((_XFH, host))
    return out
