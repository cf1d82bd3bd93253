"""Endpoint matching (gateway-config.md "Matching" and "Paths"), compiled once per configuration.

Theory of operation: endpoints are grouped by normalised ``public_path`` in a dict.  A request path is
tried from its longest segment-boundary prefix down to ``/`` (``/a/b/c``, ``/a/b``, ``/a``, ``/``), so the
first group that has a candidate for the request's host is the longest match: O(depth) dict lookups, no
regex.  Among the candidates sharing that path, the first whose ``methods`` accept the method wins;
none → 405 with the union as ``Allow``.

Matching is done on the **raw** (still percent-encoded) path, so ``%2f`` and ``%2e`` can be recognised in
the remainder and rejected (400) before anything else; nothing is ever normalised into a path outside the
target.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from ..config.plan import EndpointPlan
from ..errors import ClientError, ErrorCode

__all__ = ["Match", "Router", "check_remainder"]

# A remainder segment that is '.' or '..' raw or percent-encoded in any case mix, or any encoded slash or
# backslash, or an invalid percent escape.  (RFC 3986 §5.2.4 dot segments; '%5c' because some backends treat
# '\' as a separator.)
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)
_BAD_ESCAPE = re.compile(r"%(?![0-9a-fA-F]{2})|%2f|%5c", re.IGNORECASE)


class Match(NamedTuple):  # immutable; a tuple is built in ~0.2 µs, a frozen dataclass in ~1 µs
    endpoint: EndpointPlan
    remainder: str  # raw, '' or starting with '/'


def check_remainder(remainder: str) -> None:
    """Reject dot segments, encoded slashes and broken escapes in the remainder (gateway-config "Paths")."""
    if "\\" in remainder:  # some backends (IIS, Windows file servers) treat '\' as '/': never forward it
        raise ClientError(ErrorCode.BAD_REQUEST)
    if ("." in remainder or "%" in remainder) and (_DOT_SEGMENT.search(remainder) or _BAD_ESCAPE.search(remainder)):
        raise ClientError(ErrorCode.BAD_REQUEST)


class Router:
    __slots__ = ("_by_path", "endpoints")

    def __init__(self, endpoints: tuple[EndpointPlan, ...]) -> None:
        self.endpoints = endpoints
        by_path: dict[str, list[EndpointPlan]] = {}
        for ep in endpoints:
            by_path.setdefault(ep.public_path, []).append(ep)
        # per path: its endpoints, and whether any is bound to a public_host (else no per-request host filter)
        self._by_path = {k: (tuple(v), any(ep.public_host is not None for ep in v)) for k, v in by_path.items()}

    def match(self, host: str, method: str, raw_path: str) -> Match:
        """Return the endpoint for the request or raise ``ClientError`` (404/405/400)."""
        if not raw_path.startswith("/"):
            raise ClientError(ErrorCode.BAD_REQUEST)
        by_path = self._by_path
        prefix = raw_path.rstrip("/") or "/"
        while True:
            entry = by_path.get(prefix)
            if entry is not None:
                group, host_bound = entry
                candidates = [ep for ep in group if ep.public_host is None or ep.public_host == host] \
                    if host_bound else group
                if candidates:
                    remainder = raw_path if prefix == "/" else raw_path[len(prefix):]
                    check_remainder(remainder)
                    for ep in candidates:
                        if ep.methods is None or method in ep.methods:
                            return Match(ep, remainder)
                    raise _method_not_allowed(candidates)
            if prefix == "/":
                raise ClientError(ErrorCode.NOT_FOUND)
            prefix = prefix[: prefix.rfind("/")] or "/"


class MethodNotAllowed(ClientError):
    def __init__(self, allow: str) -> None:
        super().__init__(ErrorCode.METHOD_NOT_ALLOWED)
        self.allow = allow


def _method_not_allowed(candidates: Sequence[EndpointPlan]) -> MethodNotAllowed:
    methods: set[str] = set()
    for ep in candidates:
        methods |= ep.methods or set()
    return MethodNotAllowed(", ".join(sorted(methods)))
