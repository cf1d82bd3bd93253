"""SigV4 verification of incoming Invoke requests, by recomputing the signature with botocore.

Theory of operation: the ``Authorization`` header names the access key, the credential scope (date, region,
service) and the signed headers.  We rebuild a botocore ``AWSRequest`` from exactly those headers, the raw
(still percent-encoded) path and query, and the body; set its timestamp to the request's own ``X-Amz-Date``;
and run botocore's ``SigV4Auth`` steps (``canonical_request`` → ``string_to_sign`` → ``signature``) with the
secret we know for that key.  botocore is the reference the gateway's own signer is tested against (contract
§7.1), so a request that passes here is one AWS would accept.

Nothing here does I/O or reads the clock: callers pass ``now``.  Secrets never appear in an error message.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

__all__ = [
    "Authorization",
    "SignatureRejected",
    "parse_authorization",
    "verify_signature",
]

_log = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
# AWS refuses a request whose X-Amz-Date is more than 5 minutes from its clock ("Signature expired";
# SigV4 documentation, "Elements of an AWS API request signature").
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
_AUTHORIZATION_RE = re.compile(
    ALGORITHM
    + r"\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;_.-]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*"
)
_MISMATCH_MESSAGE = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access"
    " Key and signing method. Consult the service documentation for details."
)


class SignatureRejected(Exception):
    """The request is refused; ``error_type`` goes into ``x-amzn-ErrorType``, ``status`` is the HTTP status."""

    def __init__(self, error_type: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parsed ``Authorization`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> Authorization | None:
    """Parse a SigV4 ``Authorization`` header; ``None`` when absent or not SigV4."""
    if not value:
        return None
    match = _AUTHORIZATION_RE.fullmatch(value.strip())
    if match is None:
        return None
    return Authorization(
        access_key=match["key"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=tuple(match["signed"].split(";")),
        signature=match["signature"],
    )


def verify_signature(
    *,
    method: str,
    host: str,
    raw_path_qs: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    secrets: Mapping[str, str],
    now: dt.datetime,
) -> Authorization:
    """Return the verified ``Authorization``, or raise ``SignatureRejected`` the way Lambda would answer."""
    header_list = list(headers)
    lookup: dict[str, list[str]] = {}
    for name, value in header_list:
        lookup.setdefault(name.lower(), []).append(value)
    raw_authorization = ",".join(lookup.get("authorization", []))
    if not raw_authorization:
        raise SignatureRejected("MissingAuthenticationTokenException", "Missing Authentication Token")
    authorization = parse_authorization(raw_authorization)
    if authorization is None:
        raise SignatureRejected(
            "IncompleteSignatureException",
            f"Authorization header requires '{ALGORITHM}' with Credential, SignedHeaders and Signature.",
            status=400,
        )
    amz_date = ",".join(lookup.get("x-amz-date", []))
    timestamp = _parse_timestamp(amz_date)
    if timestamp is None or amz_date[:8] != authorization.date:
        raise SignatureRejected("IncompleteSignatureException", "X-Amz-Date is missing or does not match the scope.",
                                status=400)
    if abs(now - timestamp) > MAX_CLOCK_SKEW:
        raise SignatureRejected(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {(now - MAX_CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)}"
            f" ({now.strftime(SIGV4_TIMESTAMP)} - 5 min.)",
        )
    secret = secrets.get(authorization.access_key)
    if secret is None:
        raise SignatureRejected("UnrecognizedClientException", "The security token included in the request is invalid.")
    content_sha256 = lookup.get("x-amz-content-sha256")
    if content_sha256 and content_sha256[0] != "UNSIGNED-PAYLOAD" and content_sha256[0] != sha256(body).hexdigest():
        raise SignatureRejected("InvalidSignatureException", "The provided 'x-amz-content-sha256' header does not"
                                " match what was computed.", status=400)
    missing = [name for name in authorization.signed_headers if name not in lookup]
    if "host" not in authorization.signed_headers or missing:
        raise SignatureRejected("InvalidSignatureException", _MISMATCH_MESSAGE)

    token = lookup.get("x-amz-security-token")
    request = AWSRequest(
        method=method,
        url=f"http://{host}{raw_path_qs}",
        headers={name: ",".join(lookup[name]) for name in authorization.signed_headers},
        data=body,
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(authorization.access_key, secret, token[0] if token else None),
        authorization.service,
        authorization.region,
    )
    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    expected = signer.signature(string_to_sign, request)
    if not hmac.compare_digest(expected, authorization.signature):
        # What one needs when a signature mismatches (botocore logs the same two texts); no secret in either.
        _log.debug("SigV4 mismatch\nCanonicalRequest:\n%s\nStringToSign:\n%s", canonical_request, string_to_sign)
        raise SignatureRejected("InvalidSignatureException", _MISMATCH_MESSAGE)
    return authorization


def _parse_timestamp(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, SIGV4_TIMESTAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
