"""The one error catalogue of sidecar-gateway.

Rules of this file:

* Every error a client can see is a row of ``CATALOGUE``: a stable code (our name for the row), the contract's
  *Error Name*, the *Error Message*, the HTTP status and the log level.  Sidecar rows come from
  sidecar-contract.md §6.1 and §5.3, gateway rows from gateway-config.md ("Gateway-made errors").  Documented
  messages are verbatim, including the spelling ``occured`` (§6.1: clients may match on them).
* Exceptions are split by *who is at fault* (style rule 5): ``ConfigError`` (our configuration is wrong;
  never reaches a client), ``ClientError`` (the client's call is refused), ``FunctionFailure`` (the function
  or its transport misbehaved; subject to ``failSafe``), ``BackendFailure`` (the backend failed).
  Every one of them carries the catalogue ``Entry`` it answers with, so rendering never guesses.
* Nothing here does I/O; rendering to bytes lives in ``gateway/responses.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CATALOGUE",
    "BackendFailure",
    "ClientError",
    "ConfigError",
    "Entry",
    "ErrorCode",
    "FunctionFailure",
    "GatewayError",
    "InternalError",
    "InvocationError",
    "Point",
    "entry_for",
]


class Point(enum.Enum):
    """A processing point (§1).  ``PREFLIGHT`` is the [ext] pre-flight call (§9.3); it uses the pre names."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    PRE = "pre"
    POST = "post"
    PREFLIGHT = "preflight"

    @property
    def input_name(self) -> str:
        """The ``point`` member of the input JSON (§3.1)."""
        return _POINT_INPUT_NAMES[self]

    @property
    def error_suffix(self) -> str:
        """``InPreProcess`` / ``InPostProcess`` of the §5.3 error names (pre-flight uses the pre names)."""
        return "InPostProcess" if self is Point.POST else "InPreProcess"


_POINT_INPUT_NAMES = {Point.PRE: "PreProcessor", Point.POST: "PostProcessor", Point.PREFLIGHT: "Preflight"}


class ErrorCode(enum.Enum):
    """Our stable identifiers for catalogue rows (used in logs and the ``sidecar_errors_total`` metric)."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    # Gateway-made (gateway-config.md)
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BAD_REQUEST = "bad_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_TIMEOUT = "backend_timeout"
    INTERNAL = "internal"
    OVERLOADED = "overloaded"
    # Key authentication (§5.1 P2)
    KEY_NOT_SPECIFIED = "key_not_specified"
    KEY_NOT_RECOGNISED = "key_not_recognised"
    # Conditions (§5.1 P5)
    REQUIRED_HEADER = "required_header"
    HEADERS_UNREADABLE = "headers_unreadable"
    REQUIRED_APP_EAV = "required_app_eav"
    APP_EAVS_UNREADABLE = "app_eavs_unreadable"
    REQUIRED_KEY_EAV = "required_key_eav"
    KEY_EAVS_UNREADABLE = "key_eavs_unreadable"
    # Payload limits (§5.1 P7)
    PAYLOAD_OVER_LIMIT = "payload_over_limit"
    PAYLOAD_OVER_1MB = "payload_over_1mb"
    # Input construction (§5.1 P8, §5.2 Q5)
    INPUT_PRE = "input_pre"
    INPUT_POST = "input_post"
    # Invocation outcomes (§5.3)
    FUNCTION_TIMEOUT = "function_timeout"
    FUNCTION_ERROR = "function_error"
    EMPTY_OUTPUT = "empty_output"
    INVALID_OUTPUT = "invalid_output"
    AWS_ERROR = "aws_error"
    UNEXPECTED_STATUS = "unexpected_status"
    CONNECTION_FAILURE = "connection_failure"


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalogue row.  ``message`` may contain ``{name}`` / ``{detail}`` placeholders."""

    code: ErrorCode
    name: str
    message: str
    status: int
    log_level: str = "info"
    point_suffixed: bool = False  # the name takes ``InPreProcess`` / ``InPostProcess`` (§5.3)


_E = Entry
_INVALID_RESPONSE = "InvalidResponseFromAWSLambda"

CATALOGUE: dict[ErrorCode, Entry] = {
    e.code: e
    for e in (
        _E(ErrorCode.NOT_FOUND, "NotFound", "No endpoint matches the request", 404),
        _E(ErrorCode.METHOD_NOT_ALLOWED, "MethodNotAllowed", "Method not allowed on this endpoint", 405),
        _E(ErrorCode.BAD_REQUEST, "BadRequest", "Malformed request", 400),
        _E(ErrorCode.PAYLOAD_TOO_LARGE, "PayloadTooLarge", "Request body exceeds the gateway limit", 413),
        _E(ErrorCode.BACKEND_UNAVAILABLE, "BackendUnavailable", "Backend could not be reached", 502, "warning"),
        _E(ErrorCode.BACKEND_TIMEOUT, "BackendTimeout", "Backend did not answer within the endpoint timeout", 504,
           "warning"),
        _E(ErrorCode.INTERNAL, "InternalError", "The gateway failed to process the request", 500, "error"),
        _E(ErrorCode.OVERLOADED, "ServiceUnavailable", "The gateway is at its limit of calls in progress", 503,
           "warning"),
        _E(ErrorCode.KEY_NOT_SPECIFIED, "AuthenticationFailure", "Package Key Not Specified", 403),
        _E(ErrorCode.KEY_NOT_RECOGNISED, "AuthenticationFailure", "Package Key Not Recognised", 403),
        _E(ErrorCode.REQUIRED_HEADER, "RequiredHeaderConditionFailure", "Required Header - {name} Unavailable", 400),
        _E(ErrorCode.HEADERS_UNREADABLE, "RequiredHeaderConditionFailure", "Header Information Unavailable", 400),
        _E(ErrorCode.REQUIRED_APP_EAV, "RequiredApplicationEAVConditionFailure",
           "Required Application EAV - {name} Unavailable", 400),
        _E(ErrorCode.APP_EAVS_UNREADABLE, "RequiredApplicationEAVConditionFailure",
           "Error occurred while fetching application data", 400),
        _E(ErrorCode.REQUIRED_KEY_EAV, "RequiredPackageKeyEAVConditionFailure",
           "Required Package Key EAV - {name} Unavailable", 400),
        _E(ErrorCode.KEY_EAVS_UNREADABLE, "RequiredPackageKeyEAVConditionFailure",
           "Error occurred while fetching package key data", 400),
        _E(ErrorCode.PAYLOAD_OVER_LIMIT, "MaxPayloadConditionFailure",
           "Payload length is more than max allowed payload", 413),
        _E(ErrorCode.PAYLOAD_OVER_1MB, "MaxPayloadConditionFailure", "Payload length is more than 1MB.", 413),
        _E(ErrorCode.INPUT_PRE, "InvalidJSONInputForAWSLambda",
           "Error while creating json input for AWS Lambda in pre-process", 400, "error"),
        _E(ErrorCode.INPUT_POST, "InvalidJSONInputForAWSLambda",
           "Error while creating json input for AWS Lambda in post-process", 500, "error"),
        _E(ErrorCode.FUNCTION_TIMEOUT, "Gateway Timeout", "Timeout occured while connecting to AWS Service", 504,
           "warning"),
        _E(ErrorCode.FUNCTION_ERROR, "FunctionError", "{detail}", 502, "warning"),
        _E(ErrorCode.EMPTY_OUTPUT, _INVALID_RESPONSE, "AWS Lambda Response is not returned", 500, "warning", True),
        _E(ErrorCode.INVALID_OUTPUT, _INVALID_RESPONSE, "Invalid output from AWS Lambda function", 500, "warning",
           True),
        _E(ErrorCode.AWS_ERROR, _INVALID_RESPONSE, "{detail}", 500, "warning", True),
        _E(ErrorCode.UNEXPECTED_STATUS, _INVALID_RESPONSE, "Success Response not returned from AWS Lambda", 500,
           "warning", True),
        _E(ErrorCode.CONNECTION_FAILURE, _INVALID_RESPONSE, "Error while connecting to AWS lambda.", 500, "warning",
           True),
    )
}


def entry_for(code: ErrorCode) -> Entry:
    return CATALOGUE[code]


class GatewayError(Exception):
    """Base of every error that ends a client call with a catalogue answer."""

    def __init__(self, code: ErrorCode, *, name: str = "", detail: str = "", point: Point | None = None,
                 title: str = "") -> None:
        entry = CATALOGUE[code]
        self.code = code
        self.entry = entry
        self.point = point
        self.status = entry.status
        self.error_name = entry.name + (point.error_suffix if entry.point_suffixed and point is not None else "")
        self.error_message = entry.message.format(name=name, detail=detail) if "{" in entry.message else entry.message
        # FunctionError only (§5.3): ``title`` is the function's errorType.
        self.title = title
        super().__init__(f"{self.error_name}: {self.error_message}")


class ClientError(GatewayError):
    """The client's call is refused (404/405/400/403/413, conditions, payload limits). Not covered by failSafe."""


class FunctionFailure(GatewayError):
    """The function or its transport failed (§5.3). Covered by ``failSafe: true`` (§5.4)."""


class BackendFailure(GatewayError):
    """The backend could not be reached or did not answer in time."""


class InternalError(GatewayError):
    """A bug or an unexpected state inside the gateway; answered 500 and logged at error level."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(ErrorCode.INTERNAL)
        self.detail = detail


class ConfigError(Exception):
    """Configuration cannot be used. Raised only at load time; carries the problem lines."""

    def __init__(self, problems: list[object]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} configuration problem(s)")


class InvocationError(Exception):
    """Raised by a transport (§5.3 failure rows) before the point is known; the decision procedure turns it
    into a ``FunctionFailure`` for its point.  ``detail`` is the AWS error message for ``AWS_ERROR``."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code.value}: {detail}" if detail else code.value)

    def for_point(self, point: Point) -> FunctionFailure:
        return FunctionFailure(self.code, point=point, detail=self.detail)
