"""AWS Signature Version 4, one pure function per step of the AWS page (style rule 8, botocore ``auth.py``).

Rules of this file:

* Every step of the "Create a signed AWS API request" page is one function named with the page's own term:
  ``canonical_uri``, ``canonical_query_string``, ``canonical_headers``, ``signed_headers``, ``hashed_payload``,
  ``canonical_request``, ``credential_scope``, ``string_to_sign``, ``signing_key``, ``signature``,
  ``authorization``.  ``sign`` composes them and returns the headers to add; it mutates nothing.
* No clock is read here: the caller passes the ``timestamp`` once and it is used for ``X-Amz-Date`` and the
  scope alike (one clock read per signing, as botocore).
* The output is byte-identical to ``botocore.auth.SigV4Auth`` for the same request and instant (contract §7.1
  allows our own signer only on that condition); ``tests/unit/test_sigv4.py`` proves it against botocore and
  against vectors of the official AWS test suite.  Where botocore differs from the AWS page we follow botocore
  (e.g. the query string taken from a URL is sorted but not re-encoded).
* The derived signing key changes once a day per (region, service, secret); it is cached (``SIGNING_KEY_CACHE``).
* Secret keys, security tokens and the ``Authorization`` value never reach a log line.  The canonical request
  and the string to sign are debug-logged (what you need when AWS answers ``SignatureDoesNotMatch``), with the
  security token replaced by ``<redacted>``.

Theory of operation for a Lambda Invoke (§7.1): botocore puts ``FunctionName`` into the path percent-encoded
once (``my-func:prod`` → ``my-func%3Aprod``); the canonical URI encodes the path once more
(``my-func%253Aprod``): the "double encoding" AWS expects of every service except S3.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256_HASH",
    "PreparedSigner",
    "amz_date",
    "authorization",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "hashed_payload",
    "headers_to_sign",
    "host_from_url",
    "sign",
    "signature",
    "signed_headers",
    "signing_key",
    "string_to_sign",
]

logger = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"  # last element of the credential scope and of the key derivation
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"  # ISO 8601 basic format, UTC (the ``X-Amz-Date`` value)
EMPTY_SHA256_HASH = hashlib.sha256(b"").hexdigest()  # precomputed: most signed GETs and empty Invokes
# Headers never signed: hop-by-hop and proxy headers a proxy may rewrite, plus ``user-agent`` and the X-Ray
# trace id, which SDK layers add after signing.  Verbatim botocore ``SIGNED_HEADERS_BLACKLIST``.
UNSIGNED_HEADERS = frozenset({
    "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})
# Headers ``sign`` produces itself; a caller passing one is a bug (botocore silently drops and re-adds them,
# ``Date`` even switches botocore to a different date header, which we do not support).
RESERVED_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "date"})
# One derived key per (secret, day, region, service).  A gateway signs for a handful of regions and the
# assumed-role secrets rotate about hourly; 64 keys cover that with room and cost ~10 kB.
SIGNING_KEY_CACHE = 64
# The canonical pieces of a URL are cached per URL: a gateway invokes a few hundred functions at most.
URL_PARTS_CACHE = 1024
_SHA256_BLOCK = 64  # bytes: the HMAC pads' length for SHA-256
_PATH_SAFE = "/~"  # botocore ``_normalize_url_path``: RFC 3986 unreserved chars besides alnum and '-._' are safe
_DEFAULT_PORTS = {"http": 80, "https": 443}


def amz_date(timestamp: datetime) -> str:
    """``X-Amz-Date``: the instant in UTC, basic ISO 8601 (``SIGV4_TIMESTAMP``).  A naive ``timestamp`` is taken
    as UTC.  Formatted by hand: ``strftime`` plus ``astimezone`` cost ~5 µs, this ~1 µs (once per Invoke)."""
    tz = timestamp.tzinfo
    if tz is not None and tz is not UTC:
        timestamp = timestamp.astimezone(UTC)
    t = timestamp
    return f"{t.year:04d}{t.month:02d}{t.day:02d}T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"


def host_from_url(url: str) -> str:
    """The ``host`` value signed when the caller gives none: lower-case host, port only when not the
    scheme's default, IPv6 literals bracketed (botocore ``_host_from_url``; it is what HTTP clients send)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, and consecutive slashes collapsed as AWS services require (botocore)."""
    if not path:
        return "/"
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
        else:
            segments.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and segments else ""
    return first + "/".join(segments) + last


def canonical_uri(path: str) -> str:
    """CanonicalURI: the normalised, already percent-encoded path, URI-encoded once more."""
    return quote(_remove_dot_segments(path), safe=_PATH_SAFE)


def canonical_query_string(query: str) -> str:
    """CanonicalQueryString from the (already encoded) query of the URL: pairs sorted by name, then value.
    Like botocore for URL queries, names and values are not re-encoded."""
    if not query:
        return ""
    pairs = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        pairs.append((name, value))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def headers_to_sign(headers: Iterable[tuple[str, str]], url: str, host: str | None = None) -> dict[str, list[str]]:
    """Lower-cased name → values in order, without ``UNSIGNED_HEADERS``; ``host`` added from the URL when
    the caller did not give one (``host``: that value when the caller already has it)."""
    selected: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname not in UNSIGNED_HEADERS:
            selected.setdefault(lname, []).append(value)
    if "host" not in selected:
        selected["host"] = [host if host is not None else host_from_url(url)]
    return selected


@functools.lru_cache(maxsize=URL_PARTS_CACHE)
def _url_parts(url: str) -> tuple[str, str, str]:
    """(CanonicalURI, CanonicalQueryString, host) of a URL: the same for every call to one function, so
    computed once per URL (style rule 3)."""
    parts = urlsplit(url)
    return canonical_uri(parts.path), canonical_query_string(parts.query), host_from_url(url)


def canonical_headers(headers: dict[str, list[str]]) -> str:
    """CanonicalHeaders: ``name:value`` lines sorted by name; each value trimmed with runs of white space
    collapsed to one space; repeated headers joined with ``,``.  No trailing newline (added by the caller)."""
    return "\n".join(f"{name}:{','.join(' '.join(v.split()) for v in headers[name])}" for name in sorted(headers))


def signed_headers(headers: dict[str, list[str]]) -> str:
    """SignedHeaders: the sorted, lower-case header names joined with ``;``."""
    return ";".join(sorted(headers))


def hashed_payload(body: bytes) -> str:
    """HashedPayload: hex SHA-256 of the body (always signed; Lambda does not use ``UNSIGNED-PAYLOAD``)."""
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256_HASH


def canonical_request(method: str, uri: str, query: str, canonical_headers_: str, signed_headers_: str,
                      payload_hash: str) -> str:
    """CanonicalRequest: the six parts joined with newlines (the headers block ends with its own newline)."""
    return "\n".join((method.upper(), uri, query, canonical_headers_ + "\n", signed_headers_, payload_hash))


def credential_scope(date: str, region: str, service: str) -> str:
    """CredentialScope: ``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/{TERMINATOR}"


def string_to_sign(request_date_time: str, scope: str, canonical_request_: str) -> str:
    """StringToSign: algorithm, request date-time, credential scope, hex SHA-256 of the canonical request."""
    digest = hashlib.sha256(canonical_request_.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{request_date_time}\n{scope}\n{digest}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


@functools.lru_cache(maxsize=SIGNING_KEY_CACHE)
def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived signing key: HMAC chain over date, region, service and ``aws4_request`` (cached)."""
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, TERMINATOR)


def signature(key: bytes, string_to_sign_: str) -> str:
    """Signature: hex HMAC-SHA256 of the string to sign with the derived signing key.  RFC 2104 spelled out over
    SHA-256 states that already absorbed the key's inner and outer pads (cached per key: it changes once a
    day): ~1.7 µs instead of ~4.3 µs for ``hmac.new`` (the same bytes; tests/unit/test_sigv4.py)."""
    inner_pad, outer_pad = _pads(key)
    inner = inner_pad.copy()
    inner.update(string_to_sign_.encode("utf-8"))
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


@functools.lru_cache(maxsize=SIGNING_KEY_CACHE)
def _pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after absorbing ``key ^ ipad`` and ``key ^ opad`` (RFC 2104; a 32-byte key needs no
    hashing, and a longer one is hashed first as the RFC says)."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def authorization(access_key: str, scope: str, signed_headers_: str, signature_: str) -> str:
    """The ``Authorization`` header value, formatted exactly as botocore does."""
    return f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed_headers_}, Signature={signature_}"


def sign(method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes, *, access_key: str,
         secret_key: str, session_token: str | None, region: str, service: str,
         timestamp: datetime) -> list[tuple[str, str]]:
    """Sign a request; return the headers to add, in botocore's order: ``X-Amz-Date``,
    ``X-Amz-Security-Token`` (only with a session token), ``Authorization``.

    ``url`` is absolute and already percent-encoded, exactly as it will be sent; ``headers`` are the headers
    that will be sent besides ``Host`` and the framing headers (``Content-Length`` is not signed, as in
    botocore).  An ``X-Amz-Content-SHA256`` header given by the caller is used as the payload hash.
    """
    given = _given_headers(headers)
    request_date_time = amz_date(timestamp)
    added = [("X-Amz-Date", request_date_time)]
    if session_token:
        added.append(("X-Amz-Security-Token", session_token))
    path, query, host = _url_parts(url)
    to_sign = headers_to_sign([*given, *added], url, host)
    payload_hash = to_sign["x-amz-content-sha256"][0] if "x-amz-content-sha256" in to_sign else hashed_payload(body)
    signed = signed_headers(to_sign)
    creq = canonical_request(method, path, query, canonical_headers(to_sign), signed, payload_hash)
    added.append(_authorization_header(creq, request_date_time, signed, access_key=access_key, secret_key=secret_key,
                                       session_token=session_token, region=region, service=service))
    return added


def _given_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    given = list(headers)
    for name, _ in given:
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"sign() adds {name!r} itself; do not pass it")
    return given


def _authorization_header(creq: str, request_date_time: str, signed: str, *, access_key: str, secret_key: str,
                          session_token: str | None, region: str, service: str) -> tuple[str, str]:
    """From the canonical request to the ``Authorization`` header (the steps after CanonicalRequest)."""
    scope = credential_scope(request_date_time[:8], region, service)
    sts = string_to_sign(request_date_time, scope, creq)
    if logger.isEnabledFor(logging.DEBUG):
        shown = creq.replace(session_token, "<redacted>") if session_token else creq
        logger.debug("SigV4 CanonicalRequest:\n%s", shown)
        logger.debug("SigV4 StringToSign:\n%s", sts)
    sig = signature(signing_key(secret_key, request_date_time[:8], region, service), sts)
    return "Authorization", authorization(access_key, scope, signed, sig)


class PreparedSigner:
    """``sign`` for one method, URL and set of headers — a Lambda transport's Invoke — with everything that is the
    same on every call computed once: the canonical URI and query, the sorted signed-header names, the canonical
    lines of the fixed headers.  Per call only the date, the token, the payload hash, two SHA-256 and one HMAC
    remain (measured on a busy machine: ~18 µs instead of ~28 µs).  Same output as ``sign`` byte for byte
    (tests/unit/test_sigv4.py)."""

    __slots__ = ("_fixed", "_given", "_host", "_method", "_path", "_query", "_url")

    def __init__(self, method: str, url: str, headers: Iterable[tuple[str, str]]) -> None:
        given = _given_headers(headers)
        if any(name.lower() == "x-amz-content-sha256" for name, _ in given):
            raise ValueError("PreparedSigner signs the payload hash itself; use sign() for a given one")
        self._method = method.upper()
        self._url = url
        self._given = given
        self._path, self._query, self._host = _url_parts(url)
        # per "with a session token": (fixed canonical-header text around the variable values, SignedHeaders)
        self._fixed = {with_token: self._template(with_token) for with_token in (False, True)}

    def _template(self, with_token: bool) -> tuple[tuple[str, ...], str]:
        """The canonical headers as fixed text around the variable lines (x-amz-date, then the token: they sort
        in that order), and SignedHeaders."""
        names = ["X-Amz-Date", *(["X-Amz-Security-Token"] if with_token else [])]
        to_sign = headers_to_sign([*self._given, *((n, "") for n in names)], self._url, self._host)
        parts: list[str] = []
        fixed: list[str] = []
        for name in sorted(to_sign):
            if name in ("x-amz-date", "x-amz-security-token"):
                parts.append("".join(line + "\n" for line in fixed) + name + ":")
                fixed = []
            else:
                fixed.append(canonical_headers({name: to_sign[name]}))
        parts.append("".join("\n" + line for line in fixed))
        return tuple(parts), signed_headers(to_sign)

    def canonical_parts(self, session_token: str | None) -> tuple[str, str, str]:
        """(P1, P2, SignedHeaders) such that the CanonicalRequest of ``sign`` is ``P1 + X-Amz-Date + P2 +
        HashedPayload`` — what the native lane signs with (native/_lane.c ``function_request``)."""
        date, digest = "D" * 16, "H" * 64
        if session_token:
            (before, between, after), signed = self._fixed[True]
            canonical = f"{before}{date}\n{between}{' '.join(session_token.split())}{after}"
        else:
            (before, after), signed = self._fixed[False]
            canonical = f"{before}{date}{after}"
        creq = canonical_request(self._method, self._path, self._query, canonical, signed, digest)
        at = creq.index(date)
        if not creq.endswith(digest) or creq.count(date) != 1:
            raise ValueError("unexpected canonical request layout")
        return creq[:at], creq[at + 16: -64], signed

    def sign(self, body: bytes, *, access_key: str, secret_key: str, session_token: str | None, region: str,
             service: str, timestamp: datetime) -> list[tuple[str, str]]:
        """The headers to add, as ``sign(method, url, headers, body, ...)`` returns them."""
        request_date_time = amz_date(timestamp)
        if session_token:
            (before, between, after), signed = self._fixed[True]
            canonical = (f"{before}{request_date_time}\n{between}{' '.join(session_token.split())}{after}")
            added = [("X-Amz-Date", request_date_time), ("X-Amz-Security-Token", session_token)]
        else:
            (before, after), signed = self._fixed[False]
            canonical = f"{before}{request_date_time}{after}"
            added = [("X-Amz-Date", request_date_time)]
        creq = canonical_request(self._method, self._path, self._query, canonical, signed, hashed_payload(body))
        added.append(_authorization_header(creq, request_date_time, signed, access_key=access_key,
                                           secret_key=secret_key, session_token=session_token, region=region,
                                           service=service))
        return added
