"""The ``FunctionName`` path parameter of Invoke: names, partial ARNs and full ARNs (sans-IO).

Lambda accepts, for ``POST /2015-03-31/functions/{FunctionName}/invocations`` (Invoke API reference):

* a name: ``my-function`` (optionally ``my-function:qualifier``),
* a partial ARN: ``123456789012:function:my-function[:qualifier]``,
* a full ARN: ``arn:aws:lambda:us-west-2:123456789012:function:my-function[:qualifier]``.

SDKs URL-encode the segment (botocore sends ``:`` as ``%3A``; its SigV4 canonical URI then encodes it a second
time, ``%253A``).  A proxy or hand-written client may send either form, so the segment is percent-decoded until it
no longer changes; a function name never contains ``%``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["FunctionRef", "InvalidFunctionName", "decode_segment", "function_arn", "parse_function_name"]

# Two rounds cover a double-encoded ':' (%253A); a third round is allowed for proxies that encode once more.
MAX_DECODE_ROUNDS = 3
_NAME = r"(?P<name>[A-Za-z0-9_-]{1,64})"
_QUALIFIER = r"(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?"
_FULL_ARN_RE = re.compile(
    r"arn:(?P<partition>aws[a-zA-Z-]*):lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d):(?P<account>\d{12}):function:"
    + _NAME + _QUALIFIER
)
_PARTIAL_ARN_RE = re.compile(r"(?P<account>\d{12}):function:" + _NAME + _QUALIFIER)
_PLAIN_RE = re.compile(_NAME + _QUALIFIER)
# The full-ARN pattern is tried first: a partial ARN never starts with "arn:", and a plain name has no "function:".
_PATTERNS = (_FULL_ARN_RE, _PARTIAL_ARN_RE, _PLAIN_RE)


class InvalidFunctionName(ValueError):
    """The segment is none of the accepted forms (Lambda answers 400 ValidationException)."""


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """What the caller named.  ``region``/``account_id`` are set only when an ARN carried them."""

    name: str
    qualifier: str | None = None
    region: str | None = None
    account_id: str | None = None


def decode_segment(raw: str) -> str:
    """Percent-decode a path segment until stable (at most ``MAX_DECODE_ROUNDS`` rounds)."""
    text = raw
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def parse_function_name(segment: str, qualifier: str | None = None) -> FunctionRef:
    """Parse a decoded ``FunctionName``; ``qualifier`` is the ``Qualifier`` query parameter, if any."""
    for pattern in _PATTERNS:
        match = pattern.fullmatch(segment)
        if match is not None:
            groups = match.groupdict()
            in_name = groups.get("qualifier")
            if in_name and qualifier and in_name != qualifier:
                raise InvalidFunctionName(
                    f"The derived qualifier from the function name does not match the specified qualifier."
                    f" ({in_name} != {qualifier})"
                )
            return FunctionRef(
                name=groups["name"],
                qualifier=in_name or qualifier or None,
                region=groups.get("region"),
                account_id=groups.get("account"),
            )
    raise InvalidFunctionName(
        f"1 validation error detected: Value '{segment}' at 'functionName' failed to satisfy constraint:"
        " Member must satisfy regular expression pattern:"
        r" (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?"
        r"([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
    )


def function_arn(region: str, account_id: str, name: str, qualifier: str | None = None) -> str:
    """The function's ARN, with ``:qualifier`` appended when given (the invoked-function ARN of the context)."""
    arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn
