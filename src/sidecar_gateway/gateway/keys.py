"""Package-key authentication (contract §5.1 P2, gateway-config.md "Keys").

The key is read from the endpoint's configured location (query parameter, by default ``api_key`` with the
alias ``apikey``; or a request header, by default ``X-Api-Key``).  Lookup is one dict access into the plan's
``keys`` map.  Missing → 403 ``Package Key Not Specified``; unknown or disabled → 403 ``Package Key Not
Recognised``; with ``key_required: false`` a call without a key is anonymous, a wrong key is still refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus

from ..config.plan import KeyLocation, PackageKey
from ..errors import ClientError, ErrorCode

__all__ = ["authenticate", "find_key", "mask_key"]


def find_key(location: KeyLocation, query_string: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key as presented, or None.  A blank value counts as missing."""
    if location.in_header:
        for name in location.names:
            bname = name.encode("latin-1")
            for k, v in headers:
                if k == bname:
                    value = v.decode("latin-1").strip()
                    if value:
                        return value
        return None
    if not query_string:
        return None
    found: dict[str, str] = {}
    names = location.names
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if name in names and name not in found:
            found[name] = unquote_plus(value).strip()
    for name in names:  # configured name first, then the alias
        value = found.get(name)
        if value:
            return value
    return None


def authenticate(presented: str | None, keys: Mapping[str, PackageKey], *, key_required: bool) -> PackageKey | None:
    if presented is None:
        if key_required:
            raise ClientError(ErrorCode.KEY_NOT_SPECIFIED)
        return None
    key = keys.get(presented)
    if key is None or not key.active:
        raise ClientError(ErrorCode.KEY_NOT_RECOGNISED)
    return key


def mask_key(key: str | None) -> str | None:
    """Keys are never logged in clear: the first 4 characters and an ellipsis."""
    if key is None:
        return None
    return key[:4] + "…"
