"""Validation and compilation of one processor configuration into a frozen ``ProcessorPlan`` (contract §2).

Rules of this file:

* This is the **one place** where contract key names (``functionARN``, ``failSafe``, ``require-packageKey-eavs``
  …) are mapped to the snake_case fields of ``plan.py`` (style rule 13).  ``_build_plan`` is that mapping.
* Everything is decided at load time (§2.2): an invalid configuration yields ``plan=None`` and the full list of
  problems; nothing is left for the request path to check.  Every problem is reported, never only the first.
* Sans-IO apart from two documented inputs: the ``environ`` mapping passed by the caller (read for
  ``header.<name>`` ``${VAR}`` expansion, §2.5) and ``importlib`` for the ``python`` stack's ``handler``, which
  the contract requires to be imported at load time (§2.5, §8.2).  No file, socket or clock.
* Messages of the §2.2 table are module constants and are used verbatim.

Theory of operation:

1. ``dialect.parse`` turns the text into entries (key as written, value) and syntax problems (malformed
   lines, duplicate keys; §2.1).
2. Each entry is *classified*: a fixed key of ``_FIXED_KEYS`` (matched case-insensitively, §2.1 rule 4) or a
   key with a variable part (``sidecar-param-``, ``header.``, ``when-``, ``unless-``).  Anything else is
   ``Unknown key`` (§2.1 rule 9).  An empty value makes the key absent (§2.1 rule 8) except for
   ``sidecar-param-<name>``.
3. *Applicability* is checked before the value, in this order: does the key belong to the configured stack
   (§2.5 ``stack``: ``Key not used by stack <stack>``); may it be used at this point (pre-only keys at post are
   errors, response-side keys at pre are ignored with a warning, §2.4/§2.5/§10 Q5); is it a role key while
   ``useAssumeRole`` is false (ignored with a warning, §2.3).  A key that does not apply is not validated.
4. The value is parsed by the key's parser (one per value type; looked up in the table, no if/elif ladder).
   A parser returns the typed value or raises ``_Reject`` carrying the §2.2 message(s).
5. Cross-key rules: required keys per stack (§2.3, §2.5), ``functionARN`` region = ``region`` (§2.3),
   ``shadow`` requires ``request-response`` (§2.5).
6. With no ERROR, ``_build_plan`` computes every derived value once (style rule 3): header selections as
   lower-cased bytes (§3.2), EAV selections (§2.4), ``expand-input`` booleans, typed params, the effective
   deadline (§5.3), scope filters (§9.2) and the connection of the stack.

The sum of the pre and post ``timeout`` values against the endpoint timeout (§2.2) needs both processors and
is checked separately by ``check_timeout_sum``.
"""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ..errors import Point
from .dialect import (
    EXACT_ARGUMENT_ELEMENTS,
    HEADER_PREFIX,
    PARAM_PREFIX,
    UNLESS_PREFIX,
    WHEN_PREFIX,
    Entry,
    parse,
    split_element,
)
from .plan import (
    AwsLambdaConnection,
    Connection,
    HttpConnection,
    Mode,
    ProcessorPlan,
    PythonConnection,
    ScopeElement,
    ScopeFilter,
    SidecarSettings,
    Stack,
)
from .problems import Level, Problem

__all__ = ["check_timeout_sum", "compile_processor"]

# ---------------------------------------------------------------------------------------------------------------
# §2.2 messages (verbatim)
# ---------------------------------------------------------------------------------------------------------------

REGION_NOT_SPECIFIED = "AWS Region Not Specified"
FUNCTION_ARN_NOT_SPECIFIED = "Function ARN Not Specified"
ROLE_ARN_NOT_SPECIFIED = "Role ARN Not Specified"
EXTERNAL_ID_NOT_SPECIFIED = "External ID Not Specified"
TIMEOUT_SUM_EXCEEDED = "Sidecar Connector timeout is greater than endpoint timeout"
UNKNOWN_KEY = "Unknown key"
INVALID_VALUE = "Invalid value: {expected}"
INVALID_FUNCTION_ARN = "Invalid Function ARN"
FUNCTION_ARN_REGION_MISMATCH = "Function ARN region does not match region"
INVALID_ROLE_ARN = "Invalid Role ARN"
ROLE_PREFIX_REQUIRED = "Role name must start with one of: {prefixes}"
PAYLOAD_SIZE_ABOVE_LIMIT = "max-payload-size must not exceed 1024 KB"
UNKNOWN_EXPAND_INPUT = "Unknown expand-input element: {token}"
KEY_NOT_USED_BY_STACK = "Key not used by stack {stack}"
KEY_NOT_ALLOWED_AT_POST = "Key not allowed at post-processing"
URL_NOT_SPECIFIED = "URL Not Specified"
HANDLER_NOT_SPECIFIED = "Handler Not Specified"
HANDLER_NOT_LOADED = "Handler cannot be loaded: {reason}"
INVALID_REGEX = "Invalid regular expression: {reason}"
ENV_VAR_NOT_SET = "Environment variable {name} is not set"
SHADOW_NEEDS_REQUEST_RESPONSE = "Shadow mode requires request-response synchronicity"
UNKNOWN_SYNCHRONICITY = "Unknown synchronicity, request-response will be used"
KEY_IGNORED_AT_PRE = "Key ignored at pre-processing"
KEY_IGNORED_WITHOUT_ASSUME_ROLE = "Key ignored when useAssumeRole is false"

# What "Invalid value: <what was expected>" says, per rule.
EXPECT_BOOLEAN = "true or false"
EXPECT_REGION = "AWS region such as eu-west-1"
EXPECT_EXTERNAL_ID_KEY = "1-2048 characters from A-Z a-z 0-9 _ . - /"
EXPECT_SESSION_NAME = "2-64 characters from A-Z a-z 0-9 _ + = , . @ -"
EXPECT_EXPIRATION = "integer number of minutes from 15 to 60"
EXPECT_HEADER_NAMES = "list of header names (RFC 9110 tokens)"
EXPECT_SIZE = "size from 1 byte to 1024 KB, as KB (50) or with unit b, kb or mb (512b, 20kb, 1mb)"
EXPECT_PAYLOAD_CONDITION = "blocking or filtering"
EXPECT_TIMEOUT = "integer number of milliseconds, at least 1"
EXPECT_STACK = "aws-lambda, http or python"
EXPECT_URL = "absolute http or https URL without user-info or fragment"
EXPECT_HANDLER = "package.module:function"
EXPECT_PREFLIGHT_TTL = "integer number of seconds from 0 to 86400"
EXPECT_PARAM_NAME = "parameter name of 1-64 characters from A-Z a-z 0-9 _ . -"
EXPECT_HEADER_NAME = "header name that is an RFC 9110 token"
EXPECT_HEADER_VALUE = "header value without CR or LF"  # and ISO-8859-1 text: HTTP/1.1 field values are bytes
EXPECT_UNRESERVED_HEADER = (
    "header name the gateway does not set itself (not Host, Content-Length, Content-Type, Transfer-Encoding, "
    "Connection, a hop-by-hop name, X-Sidecar-Invocation-Type or X-Mashery-Message-ID)"
)

# ---------------------------------------------------------------------------------------------------------------
# Bounds and defaults (each with its section)
# ---------------------------------------------------------------------------------------------------------------

KB = 1024  # §0: 1 KB = 1,024 bytes
MB = 1024 * KB  # §0: 1 MB = 1,048,576 bytes
SIZE_UNITS = {"b": 1, "kb": KB, "mb": MB}  # §2.1 "size"; a bare integer means KB
SIZE_DEFAULT_UNIT = KB
MIN_PAYLOAD_BYTES = 1  # §2.4 max-payload-size: 1 byte – 1024 KB
MAX_PAYLOAD_BYTES = 1024 * KB  # §2.4; also the hard 1 MB cap of §5.1 P7
DEFAULT_MAX_PAYLOAD_BYTES = 10 * KB  # §2.4 default `10` (KB)
MIN_EXPIRATION_MINUTES = 15  # §2.3; STS DurationSeconds 900–3600 (§7.3)
MAX_EXPIRATION_MINUTES = 60
DEFAULT_EXPIRATION_MINUTES = 60  # §2.3
DEFAULT_SESSION_NAME = "sidecar-gateway"  # §2.3, §7.3 RoleSessionName
MIN_TIMEOUT_MS = 1  # §2.4 timeout ≥ 1
MS_PER_SECOND = 1000
MIN_PREFLIGHT_TTL_S = 0  # §2.5: 0 = no caching
MAX_PREFLIGHT_TTL_S = 86_400  # §2.5: one day
DEFAULT_PREFLIGHT_TTL_S = 300  # §2.5
DEFAULT_REQUEST_HEADERS = frozenset({b"authorization"})  # §3.2 rule 1, §10 Q6
ROLE_PREFIX_SEPARATOR = ", "  # "Role name must start with one of: a, b"

# ---------------------------------------------------------------------------------------------------------------
# Value grammars
# ---------------------------------------------------------------------------------------------------------------

# §2.1 "integer": decimal digits only (ASCII; str.isdigit would accept other scripts' digits).
INTEGER_RE = re.compile(r"[0-9]+")
# §2.1 "size": integer, optional space, optional unit (case-insensitive).
SIZE_RE = re.compile(r"(?P<number>[0-9]+)[ \t]*(?P<unit>b|kb|mb)?", re.IGNORECASE)
# §2.1 rule 7: list separators.
LIST_SPLIT_RE = re.compile(r"[,|]")
# §2.3 region.
REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
# §2.3 functionARN: arn:<partition>:lambda:<region>:<12 digits>:function:<name>[:<qualifier>].
FUNCTION_ARN_RE = re.compile(
    r"arn:[a-z][a-z0-9-]*:lambda:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+):[0-9]{12}:function:"
    r"[A-Za-z0-9_-]{1,64}(?::[A-Za-z0-9_$-]{1,128})?"
)
# §7.3 normalisation: a leading arn:<partition>:sts:: becomes arn:<partition>:iam:: (after whitespace removal).
ROLE_ARN_STS_RE = re.compile(r"^arn:(?P<partition>[^:]*):sts::")
ROLE_ARN_RE = re.compile(r"arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}")
WHITESPACE_RE = re.compile(r"\s+")
# §2.3 externalIdKey, sessionName; §2.4 sidecar-param name.
EXTERNAL_ID_KEY_RE = re.compile(r"[A-Za-z0-9_./-]{1,2048}")
SESSION_NAME_RE = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}")
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# RFC 9110 §5.6.2 token (header names, §2.4 header lists, §2.5 header.<name>).
TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# §2.5 header.<name>: names the gateway sets itself or that are hop-by-hop (§4.3 forbidden list).
FORBIDDEN_STATIC_HEADERS = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "trailer", "upgrade", "proxy-authenticate", "proxy-authorization",
    "x-sidecar-invocation-type", "x-mashery-message-id",
})
# §2.5 header.<name>: ${VAR} is replaced by environment variable VAR at load time.
ENV_REFERENCE_RE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}")
HEADER_VALUE_FORBIDDEN = ("\r", "\n")  # §2.5: the value MUST NOT contain CR or LF
# §2.5 handler: package.module:function (a dotted attribute path after the colon is accepted).
HANDLER_RE = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attribute>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
URL_SCHEMES = frozenset({"http", "https"})  # §2.5 url
# §2.4 typing of sidecar-param values, first match wins.
PARAM_INTEGER_RE = re.compile(r"-?(0|[1-9][0-9]*)")
PARAM_FLOAT_RE = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")
PARAM_BOOLEANS = {"true": True, "false": False}
PARAM_NULL = "null"
QUOTE = '"'  # [ext] a value wrapped in double quotes is a string without the quotes
# §9.2 matcher ~/<regex>/ or ~/<regex>/i; the regex is the text between "~/" and the last "/".
REGEX_MATCHER_OPEN = "~/"
REGEX_MATCHER_CLOSE = "/"
REGEX_MATCHER_CASELESS = "/i"
# Leading inline global flags such as (?i) must stay at the start of an expression (an error in Python 3.11
# otherwise), so they are moved in front of the anchoring group.
LEADING_FLAGS_RE = re.compile(r"(?:\(\?[aiLmsux]+\))+")

BOOLEANS = {"true": True, "false": False}  # §2.1 rule 6: case-insensitive
SYNCHRONICITY = {  # §2.4, §10 Q3 (lower-cased value → mode)
    "request-response": Mode.REQUEST_RESPONSE,
    "requestresponse": Mode.REQUEST_RESPONSE,
    "event": Mode.EVENT,
    "non-blocking": Mode.NON_BLOCKING,
}
PAYLOAD_CONDITIONS = {"blocking": True, "filtering": False}  # value → payload_blocking
STACKS = {stack.value: stack for stack in Stack}
# §2.4 expand-input tokens (lower-cased → contract spelling).
REQUEST_PAYLOAD = "requestPayload"
RESPONSE_PAYLOAD = "responsePayload"
REMOTE_ADDRESS = "remoteAddress"
TOKEN = "token"
OPERATION = "operation"
ROUTING = "routing"
EXPAND_INPUT_TOKENS = {
    t.lower(): t for t in (REQUEST_PAYLOAD, RESPONSE_PAYLOAD, REMOTE_ADDRESS, TOKEN, OPERATION, ROUTING)
}
# §9.2 scope elements (lower-cased name → element, takes an argument?).
SCOPE_ELEMENTS: dict[str, tuple[ScopeElement, bool]] = {
    "requestheader": (ScopeElement.REQUEST_HEADER, True),
    "httpverb": (ScopeElement.HTTP_VERB, False),
    "resourcepath": (ScopeElement.RESOURCE_PATH, False),
    "packagekey": (ScopeElement.PACKAGE_KEY, False),
    "eav": (ScopeElement.EAV, True),
    "packagekeyeav": (ScopeElement.PACKAGE_KEY_EAV, True),
}


# ---------------------------------------------------------------------------------------------------------------
# Value parsers: text → typed value, or _Reject
# ---------------------------------------------------------------------------------------------------------------


class _Reject(Exception):
    """A value that does not satisfy its rule (control flow inside this module; never escapes it).

    With ``has_fallback``, ``fallback`` is used as the value anyway: that is how a WARNING-level rejection such
    as an unknown ``synchronicity`` still yields a plan."""

    def __init__(self, *messages: str, level: Level = Level.ERROR, fallback: Any = None,
                 has_fallback: bool = False) -> None:
        super().__init__(*messages)
        self.messages = messages
        self.level = level
        self.fallback = fallback
        self.has_fallback = has_fallback


def _invalid(expected: str) -> _Reject:
    return _Reject(INVALID_VALUE.format(expected=expected))


@dataclass(frozen=True, slots=True)
class _Context:
    """What a parser may consult besides the text."""

    settings: SidecarSettings
    environ: Mapping[str, str]


Parser = Callable[[str, _Context], Any]


def _parse_boolean(text: str, ctx: _Context) -> bool:
    """§2.1 boolean, case-insensitive (rule 6)."""
    try:
        return BOOLEANS[text.lower()]
    except KeyError:
        raise _invalid(EXPECT_BOOLEAN) from None


def _bounded_integer(text: str, low: int, high: int | None, expected: str) -> int:
    if INTEGER_RE.fullmatch(text) is None:
        raise _invalid(expected)
    number = int(text)
    if number < low or (high is not None and number > high):
        raise _invalid(expected)
    return number


def _parse_region(text: str, ctx: _Context) -> str:
    """§2.3 region."""
    if REGION_RE.fullmatch(text) is None:
        raise _invalid(EXPECT_REGION)
    return text


def _parse_function_arn(text: str, ctx: _Context) -> str:
    """§2.3 functionARN (its region is compared with ``region`` in ``_check_cross_keys``)."""
    if FUNCTION_ARN_RE.fullmatch(text) is None:
        raise _Reject(INVALID_FUNCTION_ARN)
    return text


def normalise_role_arn(text: str) -> str:
    """§7.3: remove every whitespace character, then rewrite a leading ``arn:<partition>:sts::`` to ``iam``."""
    compact = WHITESPACE_RE.sub("", text)
    return ROLE_ARN_STS_RE.sub(lambda m: f"arn:{m.group('partition')}:iam::", compact, count=1)


def _parse_role_arn(text: str, ctx: _Context) -> str:
    """§2.3 roleARN, normalised and checked as in §7.3 (prefix check only with allowed_role_prefixes)."""
    arn = normalise_role_arn(text)
    if ROLE_ARN_RE.fullmatch(arn) is None:
        raise _Reject(INVALID_ROLE_ARN)
    prefixes = ctx.settings.allowed_role_prefixes
    role_name = arn.rsplit("/", 1)[-1]
    if prefixes and not role_name.startswith(tuple(prefixes)):  # case-sensitive (§7.3)
        raise _Reject(ROLE_PREFIX_REQUIRED.format(prefixes=ROLE_PREFIX_SEPARATOR.join(prefixes)))
    return arn


def _parse_external_id_key(text: str, ctx: _Context) -> str:
    """§2.3 externalIdKey: the SSM parameter *name* (§7.4 adds the leading '/' later)."""
    if EXTERNAL_ID_KEY_RE.fullmatch(text) is None:
        raise _invalid(EXPECT_EXTERNAL_ID_KEY)
    return text


def _parse_session_name(text: str, ctx: _Context) -> str:
    """§2.3 sessionName (STS RoleSessionName)."""
    if SESSION_NAME_RE.fullmatch(text) is None:
        raise _invalid(EXPECT_SESSION_NAME)
    return text


def _parse_expiration(text: str, ctx: _Context) -> int:
    """§2.3 expirationDuration, minutes."""
    return _bounded_integer(text, MIN_EXPIRATION_MINUTES, MAX_EXPIRATION_MINUTES, EXPECT_EXPIRATION)


def _parse_synchronicity(text: str, ctx: _Context) -> Mode:
    """§2.4 synchronicity; an unknown value is a warning and means request-response (§10 Q3)."""
    try:
        return SYNCHRONICITY[text.lower()]
    except KeyError:
        raise _Reject(UNKNOWN_SYNCHRONICITY, level=Level.WARNING, fallback=Mode.REQUEST_RESPONSE,
                      has_fallback=True) from None


def split_list(text: str) -> list[str]:
    """§2.1 rule 7: split on ',' and '|', trim, drop empty items (deduplication is per list type)."""
    return [item for item in (part.strip() for part in LIST_SPLIT_RE.split(text)) if item]


def _dedup(items: list[str], *, caseless: bool) -> tuple[str, ...]:
    """Keep the first occurrence of each item; compare case-insensitively when ``caseless`` (§2.1 rule 7)."""
    seen: set[str] = set()
    kept: list[str] = []
    for item in items:
        probe = item.lower() if caseless else item
        if probe not in seen:
            seen.add(probe)
            kept.append(item)
    return tuple(kept)


def _parse_header_list(text: str, ctx: _Context) -> tuple[str, ...]:
    """§2.4 list of header names, deduplicated case-insensitively; first spelling kept."""
    names = split_list(text)
    if any(TOKEN_RE.fullmatch(name) is None for name in names):
        raise _invalid(EXPECT_HEADER_NAMES)
    return _dedup(names, caseless=True)


def _parse_eav_list(text: str, ctx: _Context) -> tuple[str, ...]:
    """§2.4 list of EAV names, deduplicated exactly (EAV names are case-sensitive, §1)."""
    return _dedup(split_list(text), caseless=False)


def _parse_size(text: str, ctx: _Context) -> int:
    """§2.1 size → bytes; §2.4 range 1 byte – 1024 KB with its own message above 1 MB (§2.2)."""
    match = SIZE_RE.fullmatch(text)
    if match is None:
        raise _invalid(EXPECT_SIZE)
    unit = match.group("unit")
    size = int(match.group("number")) * (SIZE_UNITS[unit.lower()] if unit else SIZE_DEFAULT_UNIT)
    if size > MAX_PAYLOAD_BYTES:
        raise _Reject(PAYLOAD_SIZE_ABOVE_LIMIT)
    if size < MIN_PAYLOAD_BYTES:
        raise _invalid(EXPECT_SIZE)
    return size


def _parse_payload_condition(text: str, ctx: _Context) -> bool:
    """§2.4 max-payload-condition → ``payload_blocking``."""
    try:
        return PAYLOAD_CONDITIONS[text.lower()]
    except KeyError:
        raise _invalid(EXPECT_PAYLOAD_CONDITION) from None


def _parse_expand_input(text: str, ctx: _Context) -> frozenset[str]:
    """§2.4 expand-input: case-insensitive tokens; each unknown token is its own error."""
    tokens = split_list(text)
    unknown = _dedup([t for t in tokens if t.lower() not in EXPAND_INPUT_TOKENS], caseless=False)
    if unknown:
        raise _Reject(*(UNKNOWN_EXPAND_INPUT.format(token=token) for token in unknown))
    return frozenset(EXPAND_INPUT_TOKENS[t.lower()] for t in tokens)


def _parse_timeout(text: str, ctx: _Context) -> int:
    """§2.4 timeout, milliseconds, ≥ 1."""
    return _bounded_integer(text, MIN_TIMEOUT_MS, None, EXPECT_TIMEOUT)


def _parse_stack(text: str, ctx: _Context) -> Stack:
    """§2.5 stack."""
    try:
        return STACKS[text.lower()]
    except KeyError:
        raise _invalid(EXPECT_STACK) from None


def _parse_url(text: str, ctx: _Context) -> str:
    """§2.5 url: absolute http/https with a host; no user-info, no fragment, no whitespace or controls."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text) or "#" in text:
        raise _invalid(EXPECT_URL)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise _invalid(EXPECT_URL) from None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname or "@" in parts.netloc:
        raise _invalid(EXPECT_URL)
    return text


def load_handler(text: str) -> Callable[..., Any]:
    """§2.5 handler: import ``package.module`` and resolve ``function``; the result must be callable.

    Raises ``_Reject`` with ``Handler cannot be loaded: <reason>``.  Importing runs the module's code, as the
    contract demands (load time, §8.2); any exception it raises is a reason.
    """
    match = HANDLER_RE.fullmatch(text)
    if match is None:
        raise _invalid(EXPECT_HANDLER)
    try:
        target: Any = importlib.import_module(match.group("module"))
        for attribute in match.group("attribute").split("."):
            target = getattr(target, attribute)
    except Exception as exc:  # any failure of foreign code (import error, module-level raise) is a load failure
        raise _Reject(HANDLER_NOT_LOADED.format(reason=f"{type(exc).__name__}: {exc}")) from None
    if not callable(target):
        raise _Reject(HANDLER_NOT_LOADED.format(reason=f"{text} is not callable"))
    return target


def _parse_handler(text: str, ctx: _Context) -> PythonConnection:
    return PythonConnection(handler=text, function=load_handler(text))


def _parse_preflight_ttl(text: str, ctx: _Context) -> int:
    """§2.5 preflight-ttl, seconds, 0–86400."""
    return _bounded_integer(text, MIN_PREFLIGHT_TTL_S, MAX_PREFLIGHT_TTL_S, EXPECT_PREFLIGHT_TTL)


def type_param(text: str) -> Any:
    """§2.4 typing of a ``sidecar-param-<name>`` value (already trimmed), first match wins."""
    lowered = text.lower()
    if lowered in PARAM_BOOLEANS:
        return PARAM_BOOLEANS[lowered]
    if lowered == PARAM_NULL:
        return None
    if PARAM_INTEGER_RE.fullmatch(text):
        return int(text)
    if PARAM_FLOAT_RE.fullmatch(text):
        return float(text)
    if len(text) >= 2 and text.startswith(QUOTE) and text.endswith(QUOTE):  # [ext]
        return text[1:-1]
    return text


def expand_environment(text: str, environ: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """§2.5: replace each ``${VAR}`` by ``environ[VAR]``; return the text and the names that are unset."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name in environ:
            return environ[name]
        if name not in missing:
            missing.append(name)
        return match.group(0)

    return ENV_REFERENCE_RE.sub(substitute, text), tuple(missing)


def compile_matcher(text: str) -> tuple[re.Pattern[str] | None, tuple[str, ...]]:
    """§9.2 matcher → (whole-value pattern, ()) or (None, literal values).

    The pattern is compiled as ``(?:<regex>)\\Z`` so ``.match`` and ``.fullmatch`` both require the whole value
    to match; evaluators SHOULD call ``.fullmatch``.  Raises ``_Reject`` for a regex that does not compile.
    """
    caseless = text.endswith(REGEX_MATCHER_CASELESS)
    close = REGEX_MATCHER_CASELESS if caseless else REGEX_MATCHER_CLOSE
    is_regex = text.startswith(REGEX_MATCHER_OPEN) and text.endswith(close) and \
        len(text) >= len(REGEX_MATCHER_OPEN) + len(close)
    if not is_regex:
        return None, tuple(split_list(text))
    regex = text[len(REGEX_MATCHER_OPEN):len(text) - len(close)]
    flags = re.IGNORECASE if caseless else 0
    try:
        re.compile(regex, flags)  # reasons are reported against the text as written
        leading = LEADING_FLAGS_RE.match(regex)
        prefix = leading.group(0) if leading else ""
        body = regex[len(prefix):]
        verbose = "x" in prefix  # a trailing '# comment' must not swallow the anchor
        anchored = f"{prefix}(?:{body}{chr(10) if verbose else ''})\\Z"
        return re.compile(anchored, flags), ()
    except re.error as exc:
        raise _Reject(INVALID_REGEX.format(reason=exc)) from None


# ---------------------------------------------------------------------------------------------------------------
# The key table (§2.3–§2.5)
# ---------------------------------------------------------------------------------------------------------------


class _Use(enum.Enum):
    """How a key is treated at a point."""

    ALLOWED = "allowed"
    IGNORED = "ignored"  # warning "Key ignored at pre-processing" (§2.4, §10 Q5)
    FORBIDDEN = "forbidden"  # error "Key not allowed at post-processing" (§2.5)


_LAMBDA_ONLY = frozenset({Stack.AWS_LAMBDA})
_HTTP_ONLY = frozenset({Stack.HTTP})
_PYTHON_ONLY = frozenset({Stack.PYTHON})


@dataclass(frozen=True, slots=True)
class _KeySpec:
    name: str  # contract spelling, also the key reported in problems
    parser: Parser
    stacks: frozenset[Stack] | None = None  # None = every stack
    at_pre: _Use = _Use.ALLOWED
    at_post: _Use = _Use.ALLOWED
    role: bool = False  # §2.3: ignored (warning) while useAssumeRole is false


REGION = "region"
FUNCTION_ARN = "functionARN"
ROLE_ARN = "roleARN"
EXTERNAL_ID_KEY = "externalIdKey"
SESSION_NAME = "sessionName"
EXPIRATION_DURATION = "expirationDuration"
USE_ASSUME_ROLE = "useAssumeRole"
SYNCHRONICITY_KEY = "synchronicity"
REQUIRE_REQUEST_HEADERS = "require-request-headers"
INCLUDE_REQUEST_HEADERS = "include-request-headers"
SKIP_REQUEST_HEADERS = "skip-request-headers"
INCLUDE_RESPONSE_HEADERS = "include-response-headers"
SKIP_RESPONSE_HEADERS = "skip-response-headers"
REQUIRE_EAVS = "require-eavs"
INCLUDE_EAVS = "include-eavs"
REQUIRE_KEY_EAVS = "require-packageKey-eavs"
INCLUDE_KEY_EAVS = "include-packageKey-eavs"
MAX_PAYLOAD_SIZE = "max-payload-size"
MAX_PAYLOAD_CONDITION = "max-payload-condition"
EXPAND_INPUT = "expand-input"
FAIL_SAFE = "failSafe"
ENABLE_ERROR_SET = "enable_error_set"
TIMEOUT = "timeout"
STACK = "stack"
URL = "url"
HANDLER = "handler"
OUTPUT_CACHE = "output-cache"
PREFLIGHT = "preflight"
PREFLIGHT_TTL = "preflight-ttl"
SHADOW = "shadow"

_FIXED_KEYS: dict[str, _KeySpec] = {
    spec.name.lower(): spec
    for spec in (
        # §2.3 connection keys
        _KeySpec(REGION, _parse_region, _LAMBDA_ONLY),
        _KeySpec(FUNCTION_ARN, _parse_function_arn, _LAMBDA_ONLY),
        _KeySpec(ROLE_ARN, _parse_role_arn, _LAMBDA_ONLY, role=True),
        _KeySpec(EXTERNAL_ID_KEY, _parse_external_id_key, _LAMBDA_ONLY, role=True),
        _KeySpec(SESSION_NAME, _parse_session_name, _LAMBDA_ONLY, role=True),
        _KeySpec(EXPIRATION_DURATION, _parse_expiration, _LAMBDA_ONLY, role=True),
        _KeySpec(USE_ASSUME_ROLE, _parse_boolean, _LAMBDA_ONLY),
        # §2.4 behaviour keys
        _KeySpec(SYNCHRONICITY_KEY, _parse_synchronicity),
        _KeySpec(REQUIRE_REQUEST_HEADERS, _parse_header_list),
        _KeySpec(INCLUDE_REQUEST_HEADERS, _parse_header_list),
        _KeySpec(SKIP_REQUEST_HEADERS, _parse_header_list),
        _KeySpec(INCLUDE_RESPONSE_HEADERS, _parse_header_list, at_pre=_Use.IGNORED),
        _KeySpec(SKIP_RESPONSE_HEADERS, _parse_header_list, at_pre=_Use.IGNORED),
        _KeySpec(REQUIRE_EAVS, _parse_eav_list),
        _KeySpec(INCLUDE_EAVS, _parse_eav_list),
        _KeySpec(REQUIRE_KEY_EAVS, _parse_eav_list),
        _KeySpec(INCLUDE_KEY_EAVS, _parse_eav_list),
        _KeySpec(MAX_PAYLOAD_SIZE, _parse_size),
        _KeySpec(MAX_PAYLOAD_CONDITION, _parse_payload_condition),
        _KeySpec(EXPAND_INPUT, _parse_expand_input),
        _KeySpec(FAIL_SAFE, _parse_boolean),
        _KeySpec(ENABLE_ERROR_SET, _parse_boolean),
        _KeySpec(TIMEOUT, _parse_timeout),
        # §2.5 extension keys
        _KeySpec(STACK, _parse_stack),
        _KeySpec(URL, _parse_url, _HTTP_ONLY),
        _KeySpec(HANDLER, _parse_handler, _PYTHON_ONLY),
        _KeySpec(OUTPUT_CACHE, _parse_boolean),
        _KeySpec(PREFLIGHT, _parse_boolean, at_post=_Use.FORBIDDEN),
        _KeySpec(PREFLIGHT_TTL, _parse_preflight_ttl, at_post=_Use.FORBIDDEN),
        _KeySpec(SHADOW, _parse_boolean),
    )
}

# §2.3/§2.5: keys a stack cannot do without, with their "Not Specified" message.
_REQUIRED_BY_STACK: dict[Stack, tuple[tuple[str, str], ...]] = {
    Stack.AWS_LAMBDA: ((REGION, REGION_NOT_SPECIFIED), (FUNCTION_ARN, FUNCTION_ARN_NOT_SPECIFIED)),
    Stack.HTTP: ((URL, URL_NOT_SPECIFIED),),
    Stack.PYTHON: ((HANDLER, HANDLER_NOT_SPECIFIED),),
}
# Keys settled before the others because they decide which keys apply (§2.3, §2.5).
_SETTLED_FIRST = frozenset({STACK, USE_ASSUME_ROLE})
# §2.3: required unless useAssumeRole is false (§10 Q25).
_REQUIRED_FOR_ASSUME_ROLE = ((ROLE_ARN, ROLE_ARN_NOT_SPECIFIED), (EXTERNAL_ID_KEY, EXTERNAL_ID_NOT_SPECIFIED))


# ---------------------------------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Collected:
    """Parsed values of one configuration, before the plan is built (keys are contract spellings)."""

    values: dict[str, Any]
    params: dict[str, Any]
    static_headers: list[tuple[str, str]]
    scope: list[ScopeFilter]


class _Compiler:
    """One compilation: holds the problem list so each check can report and carry on (§2.2)."""

    def __init__(self, *, point: Point, where: str, ctx: _Context) -> None:
        self.point = point
        self.where = where
        self.ctx = ctx
        self.problems: list[Problem] = []
        self.collected = _Collected({}, {}, [], [])

    def report(self, level: Level, key: str, message: str) -> None:
        self.problems.append(Problem(level, key, message, where=self.where, point=self.point.value))

    def error(self, key: str, message: str) -> None:
        self.report(Level.ERROR, key, message)

    def run_parser(self, key: str, parser: Parser, text: str) -> tuple[bool, Any]:
        """Parse ``text``; report any rejection under ``key``.  Returns (usable, value)."""
        try:
            return True, parser(text, self.ctx)
        except _Reject as reject:
            for message in reject.messages:
                self.report(reject.level, key, message)
            return reject.has_fallback, reject.fallback

    # -- step 2: classify --------------------------------------------------------------------------------------

    def compile(self, entries: list[Entry]) -> None:
        # §2.1 rule 8: an empty value is an absent key (sidecar-param-<name> aside, handled by its own step).
        fixed = {spec.name: entry for entry in entries
                 if (spec := _FIXED_KEYS.get(entry.key.lower())) is not None and entry.value}
        stack = self._settle_stack(fixed)  # decides which keys apply, so it goes first
        assume_role = self._settle_assume_role(fixed, stack)
        variable_steps = {
            PARAM_PREFIX: self._param,
            HEADER_PREFIX: self._static_header,
            WHEN_PREFIX: self._scope_filter,
            UNLESS_PREFIX: self._scope_filter,
        }
        for entry in entries:  # text order, so problems follow the configuration
            lowered = entry.key.lower()
            spec = _FIXED_KEYS.get(lowered)
            if spec is not None:
                if spec.name in fixed and spec.name not in _SETTLED_FIRST:
                    self._fixed(spec, entry, stack, assume_role)
                continue
            prefix = next((p for p in variable_steps if lowered.startswith(p)), None)
            if prefix is None:
                self.error(entry.key, UNKNOWN_KEY)  # §2.1 rule 9: the key as written
            else:
                variable_steps[prefix](prefix, entry, stack)
        self._check_required(fixed, stack, assume_role)
        self._check_cross_keys()

    def _settle_stack(self, fixed: dict[str, Entry]) -> Stack | None:
        """§2.5 stack (default aws-lambda).  None when the value is invalid: stack rules are then not applied."""
        entry = fixed.get(STACK)
        if entry is None:
            return Stack.AWS_LAMBDA
        ok, stack = self.run_parser(STACK, _parse_stack, entry.value)
        if ok:
            self.collected.values[STACK] = stack
            return stack
        return None

    def _settle_assume_role(self, fixed: dict[str, Entry], stack: Stack | None) -> bool | None:
        """§2.3 useAssumeRole (default true).  None when invalid or not applicable (role rules not applied)."""
        entry = fixed.get(USE_ASSUME_ROLE)
        if entry is None:
            return True if stack is Stack.AWS_LAMBDA else None
        if stack is not None and stack is not Stack.AWS_LAMBDA:
            self.error(USE_ASSUME_ROLE, KEY_NOT_USED_BY_STACK.format(stack=stack.value))
            return None
        ok, value = self.run_parser(USE_ASSUME_ROLE, _parse_boolean, entry.value)
        if ok:
            self.collected.values[USE_ASSUME_ROLE] = value
            return value
        return None

    # -- step 3 + 4: one key -----------------------------------------------------------------------------------

    def _applies(self, key: str, stacks: frozenset[Stack] | None, stack: Stack | None) -> bool:
        """§2.5 stack membership."""
        if stacks is None or stack is None or stack in stacks:
            return True
        self.error(key, KEY_NOT_USED_BY_STACK.format(stack=stack.value))
        return False

    def _fixed(self, spec: _KeySpec, entry: Entry, stack: Stack | None, assume_role: bool | None) -> None:
        if not self._applies(spec.name, spec.stacks, stack):
            return
        use = spec.at_pre if self.point is Point.PRE else spec.at_post
        if use is _Use.IGNORED:
            self.report(Level.WARNING, spec.name, KEY_IGNORED_AT_PRE)
            return
        if use is _Use.FORBIDDEN:
            self.error(spec.name, KEY_NOT_ALLOWED_AT_POST)
            return
        if spec.role and assume_role is False:
            self.report(Level.WARNING, spec.name, KEY_IGNORED_WITHOUT_ASSUME_ROLE)
            return
        ok, value = self.run_parser(spec.name, spec.parser, entry.value)
        if ok:
            self.collected.values[spec.name] = value

    def _param(self, prefix: str, entry: Entry, stack: Stack | None) -> None:
        """§2.4 sidecar-param-<name>: name kept as written, value typed; an empty value is ``""``."""
        name = entry.key[len(prefix):]
        key = prefix + name
        if PARAM_NAME_RE.fullmatch(name) is None:
            self.error(key, INVALID_VALUE.format(expected=EXPECT_PARAM_NAME))
            return
        self.collected.params[name] = type_param(entry.value)

    def _static_header(self, prefix: str, entry: Entry, stack: Stack | None) -> None:
        """§2.5 header.<name> (http stack): token name, not reserved, ${VAR} expanded, no CR/LF."""
        name = entry.key[len(prefix):]
        key = prefix + name
        if not entry.value or not self._applies(key, _HTTP_ONLY, stack):
            return
        if TOKEN_RE.fullmatch(name) is None:
            self.error(key, INVALID_VALUE.format(expected=EXPECT_HEADER_NAME))
            return
        if name.lower() in FORBIDDEN_STATIC_HEADERS:
            self.error(key, INVALID_VALUE.format(expected=EXPECT_UNRESERVED_HEADER))
            return
        value, missing = expand_environment(entry.value, self.ctx.environ)
        for variable in missing:
            self.error(key, ENV_VAR_NOT_SET.format(name=variable))
        if any(ch in value for ch in HEADER_VALUE_FORBIDDEN) or not _latin1(value):
            self.error(key, INVALID_VALUE.format(expected=EXPECT_HEADER_VALUE))
            return
        if not missing:
            self.collected.static_headers.append((name, value))

    def _scope_filter(self, prefix: str, entry: Entry, stack: Stack | None) -> None:
        """§9.2 when-<element> / unless-<element>; an unknown or malformed element is an unknown key."""
        rest = entry.key[len(prefix):]
        key = prefix + rest
        parts = split_element(rest)
        known = SCOPE_ELEMENTS.get(parts[0].lower()) if parts is not None else None
        if parts is None or known is None or not _scope_argument_ok(known, parts[1]):
            self.error(entry.key, UNKNOWN_KEY)
            return
        element, _ = known
        argument = parts[1]
        if not entry.value:
            return  # §2.1 rule 8
        ok, matcher = self.run_parser(key, lambda text, ctx: compile_matcher(text), entry.value)
        if not ok:
            return
        pattern, literals = matcher
        if argument is not None and parts[0].lower() not in EXACT_ARGUMENT_ELEMENTS:
            argument = argument.lower()  # header names compare case-insensitively
        if element is ScopeElement.HTTP_VERB:
            literals = tuple(value.upper() for value in literals)
        if pattern is None and not literals:
            return  # only separators: no values, same as an empty value
        self.collected.scope.append(ScopeFilter(
            negate=prefix == UNLESS_PREFIX, element=element, argument=argument, pattern=pattern,
            values=frozenset(literals),
        ))

    # -- step 5: cross-key rules -------------------------------------------------------------------------------

    def _check_required(self, fixed: dict[str, Entry], stack: Stack | None, assume_role: bool | None) -> None:
        if stack is None:
            return
        required = _REQUIRED_BY_STACK[stack]
        if stack is Stack.AWS_LAMBDA and assume_role:
            required += _REQUIRED_FOR_ASSUME_ROLE
        for key, message in required:
            if key not in fixed:
                self.error(key, message)

    def _check_cross_keys(self) -> None:
        values = self.collected.values
        region, arn = values.get(REGION), values.get(FUNCTION_ARN)
        if region is not None and arn is not None:
            match = FUNCTION_ARN_RE.fullmatch(arn)
            if match is not None and match.group("region") != region:
                self.error(FUNCTION_ARN, FUNCTION_ARN_REGION_MISMATCH)
        if values.get(SHADOW) and values.get(SYNCHRONICITY_KEY, Mode.REQUEST_RESPONSE) is not Mode.REQUEST_RESPONSE:
            self.error(SHADOW, SHADOW_NEEDS_REQUEST_RESPONSE)
        expand = values.get(EXPAND_INPUT, frozenset())
        if self.point is Point.PRE and RESPONSE_PAYLOAD in expand:
            self.report(Level.WARNING, EXPAND_INPUT, KEY_IGNORED_AT_PRE)  # §2.4, §10 Q5


def _scope_argument_ok(known: tuple[ScopeElement, bool], argument: str | None) -> bool:
    """§9.2: requestHeader/eav/packageKeyEAV take a non-empty name (a header name must be a token); the other
    elements take none.  Anything else is not a defined key."""
    element, takes_argument = known
    if not takes_argument:
        return argument is None
    if not argument:
        return False
    return element is not ScopeElement.REQUEST_HEADER or TOKEN_RE.fullmatch(argument) is not None


def _header_bytes(names: tuple[str, ...]) -> frozenset[bytes]:
    """Header names are tokens (ASCII), stored lower-cased as bytes like ASGI gives them (plan.py)."""
    return frozenset(name.lower().encode("ascii") for name in names)


def _build_connection(stack: Stack, values: Mapping[str, Any], static_headers: list[tuple[str, str]]) -> Connection:
    """The contract → plan mapping of the connection of each stack (§2.3, §2.5)."""
    if stack is Stack.HTTP:
        return HttpConnection(url=values[URL], headers=tuple(static_headers))
    if stack is Stack.PYTHON:
        connection: PythonConnection = values[HANDLER]
        return connection
    assume_role = values.get(USE_ASSUME_ROLE, True)
    return AwsLambdaConnection(
        region=values[REGION],
        function_arn=values[FUNCTION_ARN],
        use_assume_role=assume_role,
        role_arn=values[ROLE_ARN] if assume_role else None,
        external_id_key=values[EXTERNAL_ID_KEY] if assume_role else None,
        session_name=values.get(SESSION_NAME, DEFAULT_SESSION_NAME) if assume_role else DEFAULT_SESSION_NAME,
        expiration_minutes=values.get(EXPIRATION_DURATION, DEFAULT_EXPIRATION_MINUTES) if assume_role
        else DEFAULT_EXPIRATION_MINUTES,
    )


def _build_plan(collected: _Collected, *, point: Point, service_id: str, endpoint_id: str,
                endpoint_timeout_s: float) -> ProcessorPlan:
    """The contract-key → ``ProcessorPlan`` field mapping (style rule 13), with every derivation done once."""
    values = collected.values
    stack: Stack = values.get(STACK, Stack.AWS_LAMBDA)

    # §3.2 request headers: (include ∪ require) − skip, or {authorization} − skip when neither is configured.
    include = values.get(INCLUDE_REQUEST_HEADERS)
    require: tuple[str, ...] = values.get(REQUIRE_REQUEST_HEADERS, ())
    skip = _header_bytes(values.get(SKIP_REQUEST_HEADERS, ()))
    selected = DEFAULT_REQUEST_HEADERS if not include and not require else _header_bytes((*require, *(include or ())))
    # §3.2 response headers, post only (the keys were ignored with a warning at pre and never collected).
    include_response = values.get(INCLUDE_RESPONSE_HEADERS) or None  # a list of separators only = absent
    skip_response = values.get(SKIP_RESPONSE_HEADERS) or None
    # §2.4 EAV selections: require first, then include, in configured order, each name once.
    require_eavs: tuple[str, ...] = values.get(REQUIRE_EAVS, ())
    require_key_eavs: tuple[str, ...] = values.get(REQUIRE_KEY_EAVS, ())
    expand: frozenset[str] = values.get(EXPAND_INPUT, frozenset())
    timeout_ms: int | None = values.get(TIMEOUT)

    return ProcessorPlan(
        service_id=service_id,
        endpoint_id=endpoint_id,
        point=point,
        stack=stack,
        connection=_build_connection(stack, values, collected.static_headers),
        mode=values.get(SYNCHRONICITY_KEY, Mode.REQUEST_RESPONSE),
        request_headers=selected - skip,
        require_request_headers=tuple((name, name.lower().encode("ascii")) for name in require),
        include_response_headers=_header_bytes(include_response) if include_response is not None else None,
        skip_response_headers=_header_bytes(skip_response or ()),
        send_response_headers=point is Point.POST and (include_response is not None or skip_response is not None),
        require_eavs=require_eavs,
        eav_selection=_dedup([*require_eavs, *values.get(INCLUDE_EAVS, ())], caseless=False),
        require_key_eavs=require_key_eavs,
        key_eav_selection=_dedup([*require_key_eavs, *values.get(INCLUDE_KEY_EAVS, ())], caseless=False),
        max_payload_bytes=values.get(MAX_PAYLOAD_SIZE, DEFAULT_MAX_PAYLOAD_BYTES),
        payload_blocking=values.get(MAX_PAYLOAD_CONDITION, True),
        expand_request_payload=REQUEST_PAYLOAD in expand,
        expand_response_payload=point is Point.POST and RESPONSE_PAYLOAD in expand,
        expand_remote_address=REMOTE_ADDRESS in expand,
        expand_token=TOKEN in expand,
        expand_operation=OPERATION in expand,
        expand_routing=ROUTING in expand,
        params=MappingProxyType(dict(collected.params)),
        fail_safe=values.get(FAIL_SAFE, False),
        enable_error_set=values.get(ENABLE_ERROR_SET, False),
        timeout_ms=timeout_ms,
        deadline_s=timeout_ms / MS_PER_SECOND if timeout_ms is not None else endpoint_timeout_s,  # §5.3
        scope=tuple(collected.scope),
        output_cache=values.get(OUTPUT_CACHE, True),
        preflight=values.get(PREFLIGHT, False),
        preflight_ttl_s=values.get(PREFLIGHT_TTL, DEFAULT_PREFLIGHT_TTL_S),
        shadow=values.get(SHADOW, False),
    )


def compile_processor(text: str, *, point: Point, service_id: str, endpoint_id: str, endpoint_timeout_s: float,
                      settings: SidecarSettings, environ: Mapping[str, str]) -> tuple[ProcessorPlan | None,
                                                                                        list[Problem]]:
    """Validate one processor configuration text (§2) and compile it.

    Returns ``(plan, problems)``; ``plan`` is None when any problem is an ERROR.  Problems carry
    ``where = "serviceId/endpointId"`` and ``point = "pre"|"post"`` and the key as reported by §2.2.
    The ``timeout`` sum rule needs both points: see ``check_timeout_sum``.
    """
    if point not in (Point.PRE, Point.POST):
        raise ValueError(f"a processor configuration is for pre or post, not {point.value}")
    where = f"{service_id}/{endpoint_id}"
    entries, problems = parse(text, where=where, point=point.value)
    compiler = _Compiler(point=point, where=where, ctx=_Context(settings=settings, environ=environ))
    compiler.compile(entries)
    problems += compiler.problems
    if any(problem.is_error for problem in problems):
        return None, problems
    plan = _build_plan(compiler.collected, point=point, service_id=service_id, endpoint_id=endpoint_id,
                       endpoint_timeout_s=endpoint_timeout_s)
    return plan, problems


def check_timeout_sum(pre: ProcessorPlan | None, post: ProcessorPlan | None, *, endpoint_timeout_s: float,
                      service_id: str, endpoint_id: str) -> list[Problem]:
    """§2.2: the sum of the *configured* pre and post ``timeout`` values must not exceed the endpoint timeout.

    A point without ``timeout`` (or without a plan) adds nothing.  The problem is reported on ``post`` when both
    are set, else on the point that has one.
    """
    configured = [plan for plan in (pre, post) if plan is not None and plan.timeout_ms is not None]
    if not configured:
        return []
    total_ms = sum(plan.timeout_ms or 0 for plan in configured)
    if total_ms <= endpoint_timeout_s * MS_PER_SECOND:
        return []
    reported_on = configured[-1].point  # post when both are set (pre is listed first)
    return [Problem(Level.ERROR, TIMEOUT, TIMEOUT_SUM_EXCEEDED, where=f"{service_id}/{endpoint_id}",
                    point=reported_on.value)]


def _latin1(value: str) -> bool:
    """HTTP/1.1 sends field values as bytes; text outside ISO-8859-1 cannot be sent as-is (RFC 9110 §5.5)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
