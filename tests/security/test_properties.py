"""Property-based tests of the sans-IO cores against hostile input (issue 5; hypothesis).

* configuration: ``dialect.parse`` + ``compile_processor`` on arbitrary text never raise and return a plan
  exactly when no ERROR is reported (contract §2.2);
* input builder: any headers, body, query and plan flags give compact JSON that round-trips, or the
  documented ``ClientError`` ``InvalidJSONInputForAWSLambda`` (§3, §5.1 P8, §5.2 Q5);
* output interpreter: any bytes or JSON-ish document give a ``Verdict`` or a ``FunctionFailure`` named
  ``EMPTY_OUTPUT`` / ``INVALID_OUTPUT`` (§4.3, §5.3), nothing else;
* router: any raw path gives a ``Match`` whose remainder holds no dot segment (raw or encoded), no encoded
  slash or backslash and no broken escape, or a ``ClientError`` (gateway-config.md "Paths").
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar_gateway.config.dialect import parse
from sidecar_gateway.config.plan import (
    Application,
    AwsLambdaConnection,
    EndpointPlan,
    PackageKey,
    ProcessorPlan,
    SidecarSettings,
    Stack,
    Target,
)
from sidecar_gateway.config.processor import compile_processor
from sidecar_gateway.errors import ClientError, ErrorCode, FunctionFailure, Point
from sidecar_gateway.gateway.routing import Match, Router
from sidecar_gateway.sidecar.call import BackendRequest, BackendResponse, CallContext, ClientRequest
from sidecar_gateway.sidecar.input_builder import build_input
from sidecar_gateway.sidecar.output_interpreter import interpret_output
from sidecar_gateway.sidecar.verdict import Verdict

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------------------------
# Configuration text
# --------------------------------------------------------------------------------------------------------------

# Every key of §2.3–§2.5 except ``handler`` (compiling it imports a module: not something to do with random
# names), plus near-misses.
KEYS = [
    "region", "functionARN", "roleARN", "externalIdKey", "sessionName", "expirationDuration", "useAssumeRole",
    "synchronicity", "require-request-headers", "include-request-headers", "skip-request-headers",
    "include-response-headers", "skip-response-headers", "require-eavs", "include-eavs",
    "require-packageKey-eavs", "include-packageKey-eavs", "max-payload-size", "max-payload-condition",
    "expand-input", "sidecar-param-x", "sidecar-param-", "failSafe", "enable_error_set", "timeout", "stack", "url",
    "header.X-Auth", "header.Host", "when-httpVerb", "unless-path", "when-header.x", "output-cache", "preflight",
    "preflight-ttl", "shadow", "FAILSAFE", "time out", "",
]
VALUES = [
    "eu-west-1", "arn:aws:lambda:eu-west-1:123456789012:function:f", "arn:aws:iam::123456789012:role/r", "a/b",
    "true", "false", "TRUE", "event", "non-blocking", "request-response", "Authorization | X-A", "1mb", "1025kb",
    "0", "-1", "99999999999999999999", "http://h/x", "https://u@h/x", "ftp://h", "${NOPE}", "^(a", "GET | HEAD",
    "requestPayload, operation, bogus", "http", "python", "aws-lambda", "", "\x00", "é", "blocking", "filtering",
]

line = st.one_of(
    st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES) | st.text(max_size=20)).map(": ".join),
    st.text(max_size=40),
    st.sampled_from(["# comment", "", "   ", "no colon here", ":", "::", "\r", "\ufeffregion: eu-west-1"]),
)
config_text = st.one_of(st.lists(line, max_size=15).map("\n".join), st.text(max_size=300))


@EXAMPLES
@given(text=config_text, point=st.sampled_from([Point.PRE, Point.POST]))
def test_processor_configuration_never_raises_and_returns_plan_xor_errors(text: str, point: Point) -> None:
    """Any text compiles to (plan, problems) with a plan exactly when no problem is an ERROR."""
    if "handler" in text.lower():
        text = text.lower().replace("handler", "hand1er")
    entries, syntax_problems = parse(text)
    assert all(isinstance(e.key, str) for e in entries)
    plan, problems = compile_processor(text, point=point, service_id="s", endpoint_id="e", endpoint_timeout_s=30.0,
                                       settings=SidecarSettings(), environ={})
    assert (plan is None) == any(p.is_error for p in problems)
    assert {(p.key, p.message) for p in syntax_problems} <= {(p.key, p.message) for p in problems}
    assert all(isinstance(p.render(), str) for p in problems)


# --------------------------------------------------------------------------------------------------------------
# Input builder
# --------------------------------------------------------------------------------------------------------------

CONNECTION = AwsLambdaConnection(region="eu-west-1", function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f")
TARGET = Target(scheme="https", host="backend.internal", port=443, base_path="/v1")
header_name = st.sampled_from([b"authorization", b"content-type", b"content-encoding", b"x-a", b"connection",
                               b"transfer-encoding", b"host"]) | st.binary(min_size=1, max_size=12)
header_value = st.sampled_from([b"Bearer abc", b"bearer\t", b"application/json; charset=latin-1",
                                b"text/plain", b"gzip", b""]) | st.binary(max_size=40)
headers = st.lists(st.tuples(header_name, header_value), max_size=8)
selected = st.frozensets(header_name, max_size=4)


@st.composite
def input_case(draw: st.DrawFn) -> tuple[ProcessorPlan, CallContext, BackendRequest, BackendResponse]:
    point = draw(st.sampled_from([Point.PRE, Point.POST]))
    plan = ProcessorPlan(
        service_id=draw(st.text(max_size=8)), endpoint_id="e", point=point, stack=Stack.AWS_LAMBDA,
        connection=CONNECTION, request_headers=draw(selected),
        include_response_headers=draw(st.none() | selected), skip_response_headers=draw(selected),
        send_response_headers=draw(st.booleans()),
        eav_selection=tuple(draw(st.lists(st.text(max_size=5), max_size=3))),
        key_eav_selection=tuple(draw(st.lists(st.text(max_size=5), max_size=3))),
        expand_request_payload=draw(st.booleans()), expand_response_payload=point is Point.POST and draw(st.booleans()),
        expand_remote_address=draw(st.booleans()), expand_operation=draw(st.booleans()),
        expand_routing=draw(st.booleans()), params=draw(st.dictionaries(st.text(max_size=5), st.integers() | st.text(),
                                                                        max_size=3)),
    )
    endpoint = EndpointPlan(service_id=plan.service_id, endpoint_id="e", public_path="/my", target=TARGET)
    remainder = "/" + draw(st.text(max_size=20))
    request = ClientRequest(
        method=draw(st.sampled_from(["GET", "POST"])), scheme="https", host=draw(st.text(max_size=15)),
        raw_path="/my" + remainder, remainder=remainder, query_string=draw(st.text(max_size=40)),
        headers=draw(headers), client_addr=draw(st.sampled_from(["198.51.100.23", "::1", ""])),
        body=draw(st.none() | st.binary(max_size=64)),
    )
    key = None
    if draw(st.booleans()):
        app = Application(id="a", eavs=draw(st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3)))
        key = PackageKey(key=draw(st.text(min_size=1, max_size=20)), application=app,
                         eavs=draw(st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=3)))
    call = CallContext(message_id="m", endpoint=endpoint, request=request, package_key=key)
    routing = BackendRequest(method="GET", scheme="https", host="backend.internal", port=443,
                             path_qs="/v1" + remainder)
    response = BackendResponse(status=draw(st.integers(100, 599)), headers=draw(headers),
                               body=draw(st.none() | st.binary(max_size=64)))
    return plan, call, routing, response


@EXAMPLES
@given(case=input_case())
def test_input_is_always_json_that_round_trips_or_the_documented_error(
        case: tuple[ProcessorPlan, CallContext, BackendRequest, BackendResponse]) -> None:
    """build_input never raises anything but InvalidJSONInputForAWSLambda, and its bytes are compact JSON
    objects that serialise back to themselves."""
    plan, call, routing, response = case
    try:
        out = build_input(plan, call, routing=routing, response=response if plan.point is Point.POST else None)
    except ClientError as err:
        assert err.code is (ErrorCode.INPUT_PRE if plan.point is Point.PRE else ErrorCode.INPUT_POST)
        return
    doc = orjson.loads(out)
    assert isinstance(doc, dict) and orjson.dumps(doc) == out
    assert doc["point"] in ("PreProcessor", "PostProcessor")
    assert all(v not in (None, {}) for v in doc.values())  # §3: omitted, never null or empty


# --------------------------------------------------------------------------------------------------------------
# Output interpreter
# --------------------------------------------------------------------------------------------------------------

MEMBERS = ["terminate", "modify", "code", "message", "addHeaders", "headers", "dropHeaders", "payload",
           "base64Encoded", "json", "completeWithCode", "changeRoute", "uri", "httpVerb", "unchangedFor",
           "unchangedUntil", "X-A", "Host", "content-length", "x-a"]
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.sampled_from([200, 403, 599, "YQ==", "http://backend.internal/x", "GET", "2030-01-01T00:00:00Z",
                              "2030-01-01T00:00:00+01:00", "a\r\nb"]) | st.text(max_size=12))
json_docs = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                         | st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=6), children, max_size=5),
                         max_leaves=12)
DOCUMENTED = {ErrorCode.EMPTY_OUTPUT, ErrorCode.INVALID_OUTPUT}


def _interpret(raw: bytes, point: Point) -> Verdict | FunctionFailure:
    try:
        return interpret_output(raw, point, backend_authority="backend.internal",
                                route_hosts=frozenset({"other.internal"}), now=1_700_000_000.0)
    except FunctionFailure as failure:
        return failure


@EXAMPLES
@given(doc=json_docs, point=st.sampled_from([Point.PRE, Point.POST, Point.PREFLIGHT]))
def test_any_json_output_is_a_verdict_or_a_documented_failure(doc: Any, point: Point) -> None:
    """Every JSON document yields a Verdict or an EMPTY_OUTPUT / INVALID_OUTPUT failure, never another error."""
    outcome = _interpret(orjson.dumps(doc) if _json_safe(doc) else b"{}", point)
    assert isinstance(outcome, Verdict) or outcome.code in DOCUMENTED


member_values = scalars | st.dictionaries(st.sampled_from(MEMBERS) | st.text(max_size=4), scalars, max_size=4) \
    | st.lists(scalars, max_size=4)


@EXAMPLES
@given(doc=st.dictionaries(st.sampled_from(["terminate", "modify"]),
                           st.dictionaries(st.sampled_from(MEMBERS), member_values, max_size=6), max_size=2),
       point=st.sampled_from([Point.PRE, Point.POST]))
def test_shaped_output_is_a_verdict_or_a_documented_failure(doc: dict[str, Any], point: Point) -> None:
    """Documents shaped like real outputs (terminate/modify with real member names) reach the deep checks and
    still only yield a Verdict or a documented failure; applied header names are never forbidden."""
    outcome = _interpret(orjson.dumps(doc) if _json_safe(doc) else b"{}", point)
    if isinstance(outcome, Verdict):
        mod, term = outcome.modification, outcome.termination
        names = [n for n, _ in (mod.add_headers if mod else ())] + [n for n, _ in (term.headers if term else ())]
        assert not {n.lower() for n in names} & {b"host", b"content-length", b"transfer-encoding", b"connection"}
        assert all(re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", v) is None
                   for _, v in (mod.add_headers if mod else ()) + (term.headers if term else ()))
    else:
        assert outcome.code in DOCUMENTED


@EXAMPLES
@given(raw=st.binary(max_size=200) | st.sampled_from([b"", b" \n", b"null", b"[]", b"\xef\xbb\xbf{}", b"{\"a\":",
                                                      b"\xff", b"[" * 5000, b"{}" * 2, b"1e999"]),
       point=st.sampled_from([Point.PRE, Point.POST]))
def test_any_bytes_output_is_a_verdict_or_a_documented_failure(raw: bytes, point: Point) -> None:
    """Arbitrary bytes (invalid UTF-8, truncated JSON, deep nesting) yield a Verdict or a documented failure."""
    outcome = _interpret(raw, point)
    assert isinstance(outcome, Verdict) or outcome.code in DOCUMENTED


def _json_safe(doc: Any) -> bool:
    """orjson refuses integers beyond 64 bits and lone surrogates: such documents cannot be a function's output."""
    try:
        orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------------------------------------------


def _endpoint(eid: str, public_path: str, host: str | None = None) -> EndpointPlan:
    return EndpointPlan(service_id="s", endpoint_id=eid, public_path=public_path, target=TARGET, public_host=host,
                        methods=frozenset({"GET"}) if eid == "get-only" else None)


ROUTER = Router((_endpoint("root", "/"), _endpoint("a", "/a"), _endpoint("ab", "/a/b"),
                 _endpoint("get-only", "/g"), _endpoint("hosted", "/h", "api.acme.com")))
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
path_chars = st.sampled_from(["/", ".", "%", "2", "e", "E", "f", "F", "5", "c", "a", "b", "g", "h", "%2e", "%2E",
                              "%2f", "..", "./", "%25", "\\", "?", ";", "z"])
raw_paths = st.one_of(st.lists(path_chars, max_size=16).map(lambda parts: "/" + "".join(parts)),
                      st.text(max_size=30), st.text(max_size=30).map(lambda s: "/" + s))


def _dot_segment(segment: str) -> bool:
    return _ENCODED_DOT.sub(".", segment) in (".", "..")


@EXAMPLES
@given(path=raw_paths, host=st.sampled_from(["", "api.acme.com", "other"]),
       method=st.sampled_from(["GET", "POST"]))
def test_router_gives_a_clean_remainder_or_a_client_error(path: str, host: str, method: str) -> None:
    """A Match's remainder is the tail of the raw path after the public path, on a segment boundary, with no
    (encoded) dot segment, no encoded slash or backslash and no broken escape; anything else is a 4xx."""
    try:
        match = ROUTER.match(host, method, path)
    except ClientError as err:
        assert err.status in (400, 404, 405)
        return
    assert isinstance(match, Match)
    public = match.endpoint.public_path
    remainder = match.remainder
    assert path == (remainder if public == "/" else public + remainder)
    assert remainder == "" or remainder.startswith("/")
    assert not any(_dot_segment(seg) for seg in remainder.split("/"))
    assert re.search(r"%2f|%5c|%(?![0-9a-fA-F]{2})", remainder, re.IGNORECASE) is None
    assert match.endpoint.public_host in (None, host)
