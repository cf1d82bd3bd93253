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
_SCHEMES = {"http": b"http", "https": b"https"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


_NOT_FORWARDED = HOP_BY_HOP | _FORWARDING  # dropped from the client's headers; the forwarding ones are re-set
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})  # the usual Connection values: they name no header


def _connection_named(value: bytes) -> set[bytes]:
    """The header names a ``Connection`` value lists (RFC 9110 §7.6.1), without those dropped anyway."""
    if value.lower() in _PLAIN_CONNECTION:
        return set()
    return {t.strip().lower() for t in value.split(b",")} - HOP_BY_HOP


def strip_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers without hop-by-hop fields (names lower-cased as given by ASGI / our client)."""
    out = []
    append = out.append
    named: set[bytes] | None = None
    for item in headers:
        if item[0] in HOP_BY_HOP:
            if item[0] == b"connection":
                extra = _connection_named(item[1])
                if extra:
                    named = extra if named is None else named | extra
            continue
        append(item)
    if named:
        return [item for item in out if item[0] not in named]
    return out


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
    authority, X-Forwarded-* set.  X-Mashery-Message-ID is added by the caller after pre-processing.
    One pass over the client's headers (the hot path of every call)."""
    out = []
    append = out.append
    named: set[bytes] | None = None
    prior: list[bytes] | None = None
    for item in headers:
        name = item[0]
        if name in _NOT_FORWARDED:
            if name == b"connection":
                extra = _connection_named(item[1])
                if extra:
                    named = extra if named is None else named | extra
            elif name == _XFF and peer_trusted:
                if prior is None:
                    prior = []
                prior.append(item[1])
            continue
        append(item)
    if named:
        out = [item for item in out if item[0] not in named]
    peer_b = peer.encode("latin-1")
    joined = b", ".join(prior) if prior else b""
    xff = joined + b", " + peer_b if joined else peer_b
    append = out.append
    append((b"host", backend_host))
    append((_XFF, xff))
    append((_XFP, _SCHEMES.get(scheme) or scheme.encode("latin-1")))
    if host:
        append((_XFH, host))
    return out
