"""Output interpretation (contract §4, §5.3, §9.1 hints): table tests with literal outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sidecar_gateway.errors import ErrorCode, FunctionFailure, Point
from sidecar_gateway.sidecar.apply import apply_to_request, apply_to_response, terminate_headers
from sidecar_gateway.sidecar.call import BackendRequest, BackendResponse
from sidecar_gateway.sidecar.output_interpreter import (
    FORBIDDEN_HEADERS,
    MAX_OUTPUT_BYTES,
    function_failure,
    interpret_output,
)
from sidecar_gateway.sidecar.verdict import ALLOW, ChangeRoute, Modification, Termination, Verdict, VerdictKind

BACKEND = "backend.internal"
ROUTE_HOSTS = frozenset({"backend.internal", "alt.internal:8443", "[2001:db8::1]"})
NOW = datetime(2025, 3, 24, 12, 0, 0, tzinfo=UTC).timestamp()


def interpret(output: bytes | str | dict[str, Any], point: Point = Point.PRE) -> Verdict:
    if isinstance(output, dict):
        raw = orjson.dumps(output)
    elif isinstance(output, str):
        raw = output.encode()
    else:
        raw = output
    return interpret_output(raw, point, backend_authority=BACKEND, route_hosts=ROUTE_HOSTS, now=NOW)


def invalid(output: bytes | str | dict[str, Any], point: Point = Point.PRE) -> FunctionFailure:
    with pytest.raises(FunctionFailure) as caught:
        interpret(output, point)
    return caught.value


def backend_request() -> BackendRequest:
    return BackendRequest(method="POST", scheme="https", host=BACKEND, port=443, path_qs="/v1/op?api_key=k",
                          headers=[(b"host", b"backend.internal"), (b"content-type", b"application/json"),
                                   (b"content-length", b"2"), (b"authorization", b"Bearer t")])


def backend_response() -> BackendResponse:
    return BackendResponse(status=200, headers=[(b"content-type", b"text/plain"), (b"content-length", b"5"),
                                                (b"authorization", b"x")], body=b"hello")


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


# -- §4.5 examples table ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", [Point.PRE, Point.POST, Point.PREFLIGHT])
def test_example_1_empty_object_is_allow(point: Point) -> None:
    """§4.5 #1: {} → unchanged."""
    assert interpret("{}", point) is ALLOW


@pytest.mark.parametrize("point", [Point.PRE, Point.POST])
def test_example_2_terminate_with_code_only(point: Point) -> None:
    """§4.5 #2: terminate 403 with the default message (rendered by the gateway, §6.2)."""
    verdict = interpret('{"terminate":{"code":403}}', point)
    assert verdict == Verdict(VerdictKind.TERMINATE, termination=Termination(code=403))
    assert terminate_headers(verdict.termination) == []


@pytest.mark.parametrize("point", [Point.PRE, Point.POST])
def test_example_3_terminate_with_message(point: Point) -> None:
    """§4.5 #3: terminate 400 with message 'Bad Request'."""
    verdict = interpret('{"terminate":{"code":400,"message":"Bad Request"}}', point)
    assert verdict.termination == Termination(code=400, message="Bad Request")


def test_example_4_pre_payload_and_header() -> None:
    """§4.5 #4: the backend receives 'Custom Payload' (Content-Length 14) and x-acme-error."""
    verdict = interpret('{"modify":{"payload":"Custom Payload","addHeaders":{"x-acme-error":"B0-932-K"}}}')
    assert verdict.kind is VerdictKind.MODIFY
    req = backend_request()
    apply_to_request(verdict.modification, req)
    assert req.body == b"Custom Payload" and req.body_replaced
    assert header_values(req.headers, b"content-length") == [b"14"]
    assert header_values(req.headers, b"x-acme-error") == [b"B0-932-K"]
    assert header_values(req.headers, b"content-type") == [b"application/json"]  # payload keeps Content-Type


def test_example_5_post_json_wins_and_complete_with_code() -> None:
    """§4.5 #5: 500, body {"a":"b","c":"d"}, application/json, no authorization (base64Encoded irrelevant)."""
    verdict = interpret('{"modify":{"base64Encoded":true,"completeWithCode":500,"json":{"a":"b","c":"d"},'
                        '"dropHeaders":["authorization"]}}', Point.POST)
    resp = backend_response()
    apply_to_response(verdict.modification, resp)
    assert resp.status == 500
    assert resp.body == b'{"a":"b","c":"d"}'
    assert header_values(resp.headers, b"content-type") == [b"application/json"]
    assert header_values(resp.headers, b"authorization") == []
    assert header_values(resp.headers, b"content-length") == [b"17"]


def test_example_6_post_base64_payload() -> None:
    """§4.5 #6: 201 with body 'Custom payload'."""
    verdict = interpret('{"modify":{"completeWithCode":201,"payload":"Q3VzdG9tIHBheWxvYWQ=","base64Encoded":true}}',
                        Point.POST)
    resp = backend_response()
    apply_to_response(verdict.modification, resp)
    assert (resp.status, resp.body) == (201, b"Custom payload")


def test_example_7_terminate_without_code_is_ignored() -> None:
    """§4.5 #7 / §10 Q12: terminate without code ignored; the modify applies."""
    verdict = interpret('{"terminate":{"message":"x"},"modify":{"addHeaders":{"x-a":"1"}}}')
    assert verdict == Verdict(VerdictKind.MODIFY, modification=Modification(add_headers=((b"x-a", b"1"),)))
    req = backend_request()
    apply_to_request(verdict.modification, req)
    assert header_values(req.headers, b"x-a") == [b"1"]


def test_example_8_forbidden_header_is_invalid() -> None:
    """§4.5 #8: Content-Length is forbidden → invalid output (§5.3, 500 sure-fire)."""
    failure = invalid('{"modify":{"addHeaders":{"Content-Length":"5"}}}')
    assert failure.code is ErrorCode.INVALID_OUTPUT
    assert failure.status == 500
    assert failure.error_name == "InvalidResponseFromAWSLambdaInPreProcess"
    assert failure.error_message == "Invalid output from AWS Lambda function"


def test_example_9_unchanged_for_is_applied_and_cacheable() -> None:
    """§4.5 #9: modify applied, cache TTL 60 s."""
    verdict = interpret('{"unchangedFor":60000,"modify":{"addHeaders":{"x-tier":"gold"}}}')
    assert verdict.cache_ttl_ms == 60000
    assert verdict.modification == Modification(add_headers=((b"x-tier", b"gold"),))


def test_round_trip_output() -> None:
    """§4.5 round trip: body 'Set replacement payload' (Content-Length 23), both headers, completeWithCode ignored."""
    raw = ('{"modify":{"payload":"Set replacement payload","base64Encoded":false,'
           '"addHeaders":{"x-acme-level":"44","x-acme-bearing":"326 degrees"},'
           '"dropHeaders":["x-acme-level"],"completeWithCode":201}}')
    verdict = interpret(raw)
    assert verdict.modification.complete_with_code is None  # §10 Q27
    req = backend_request()
    apply_to_request(verdict.modification, req)
    assert req.body == b"Set replacement payload"
    assert header_values(req.headers, b"content-length") == [b"23"]
    assert header_values(req.headers, b"x-acme-level") == [b"44"]
    assert header_values(req.headers, b"x-acme-bearing") == [b"326 degrees"]


# -- empty output (§5.3, §10 Q16) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t\r ", b"null", b" null\n"])
@pytest.mark.parametrize(("point", "suffix"), [(Point.PRE, "InPreProcess"), (Point.POST, "InPostProcess"),
                                               (Point.PREFLIGHT, "InPreProcess")])
def test_empty_or_null_output_is_not_returned(raw: bytes, point: Point, suffix: str) -> None:
    """§10 Q16: empty/whitespace body or JSON null → 'AWS Lambda Response is not returned'."""
    failure = invalid(raw, point)
    assert failure.code is ErrorCode.EMPTY_OUTPUT
    assert failure.error_name == "InvalidResponseFromAWSLambda" + suffix
    assert failure.error_message == "AWS Lambda Response is not returned"
    assert failure.status == 500


# -- §4.3 invalid rules -------------------------------------------------------------------------------------------

INVALID_OUTPUTS = [
    # rule 1: not UTF-8 JSON, not an object, > 6 MB
    pytest.param(b"not json", Point.PRE, id="r1-not-json"),
    pytest.param(b'{"modify":', Point.PRE, id="r1-truncated"),
    pytest.param(b"[]", Point.PRE, id="r1-array"),
    pytest.param(b'"allow"', Point.PRE, id="r1-string"),
    pytest.param(b"42", Point.PRE, id="r1-number"),
    pytest.param(b"true", Point.PRE, id="r1-boolean"),
    pytest.param(b'{"modify":{"payload":"\xff"}}', Point.PRE, id="r1-not-utf8"),
    pytest.param(b"\xef\xbb\xbf{}", Point.PRE, id="r1-bom"),
    pytest.param(b'{"a":NaN}', Point.PRE, id="r1-nan"),
    # rule 2: terminate/modify not objects
    pytest.param('{"terminate":[]}', Point.PRE, id="r2-terminate-array"),
    pytest.param('{"terminate":"403"}', Point.PRE, id="r2-terminate-string"),
    pytest.param('{"terminate":403}', Point.POST, id="r2-terminate-number"),
    pytest.param('{"modify":[]}', Point.PRE, id="r2-modify-array"),
    pytest.param('{"modify":true}', Point.POST, id="r2-modify-bool"),
    # rule 3: wrong member types
    pytest.param('{"terminate":{"code":"403"}}', Point.PRE, id="r3-code-string"),
    pytest.param('{"terminate":{"code":403.0}}', Point.PRE, id="r3-code-fraction"),
    pytest.param('{"terminate":{"code":4.03e2}}', Point.PRE, id="r3-code-exponent"),
    pytest.param('{"terminate":{"code":true}}', Point.PRE, id="r3-code-bool"),
    pytest.param('{"terminate":{"code":199}}', Point.PRE, id="r3-code-199"),
    pytest.param('{"terminate":{"code":600}}', Point.PRE, id="r3-code-600"),
    pytest.param('{"terminate":{"code":-403}}', Point.PRE, id="r3-code-negative"),
    pytest.param('{"modify":{"completeWithCode":"201"}}', Point.POST, id="r3-cwc-string"),
    pytest.param('{"modify":{"completeWithCode":false}}', Point.POST, id="r3-cwc-bool"),
    pytest.param('{"modify":{"completeWithCode":100}}', Point.POST, id="r3-cwc-100"),
    pytest.param('{"modify":{"completeWithCode":201.5}}', Point.POST, id="r3-cwc-fraction"),
    pytest.param('{"terminate":{"code":400,"message":400}}', Point.PRE, id="r3-message"),
    pytest.param('{"terminate":{"code":400,"payload":{}}}', Point.PRE, id="r3-terminate-payload"),
    pytest.param('{"modify":{"payload":1}}', Point.PRE, id="r3-modify-payload"),
    pytest.param('{"modify":{"base64Encoded":"true"}}', Point.PRE, id="r3-base64encoded-string"),
    pytest.param('{"terminate":{"code":400,"base64Encoded":1}}', Point.PRE, id="r3-terminate-base64encoded"),
    pytest.param('{"modify":{"addHeaders":[]}}', Point.PRE, id="r3-addheaders-array"),
    pytest.param('{"modify":{"headers":"x-a: 1"}}', Point.PRE, id="r3-headers-string"),
    pytest.param('{"modify":{"addHeaders":{"x-a":1}}}', Point.PRE, id="r3-header-value-number"),
    pytest.param('{"modify":{"addHeaders":{"x-a":null}}}', Point.PRE, id="r3-header-value-null"),
    pytest.param('{"terminate":{"code":400,"headers":{"x-a":["1"]}}}', Point.PRE, id="r3-terminate-header-value"),
    pytest.param('{"modify":{"dropHeaders":"x-a"}}', Point.PRE, id="r3-dropheaders-string"),
    pytest.param('{"modify":{"dropHeaders":["x-a",1]}}', Point.PRE, id="r3-dropheaders-number"),
    pytest.param('{"modify":{"dropHeaders":{"x-a":"1"}}}', Point.PRE, id="r3-dropheaders-object"),
    pytest.param('{"modify":{"payload":"!!!","base64Encoded":true}}', Point.PRE, id="r3-base64-alphabet"),
    pytest.param('{"modify":{"payload":"QQ","base64Encoded":true}}', Point.PRE, id="r3-base64-padding"),
    pytest.param('{"modify":{"payload":"QQ==QQ==","base64Encoded":true}}', Point.PRE, id="r3-base64-excess"),
    pytest.param('{"modify":{"payload":"Q Q==","base64Encoded":true}}', Point.PRE, id="r3-base64-space"),
    pytest.param('{"modify":{"payload":"é===","base64Encoded":true}}', Point.PRE, id="r3-base64-non-ascii"),
    pytest.param('{"terminate":{"code":200,"payload":"%%","base64Encoded":true}}', Point.POST,
                 id="r3-terminate-base64"),
    # rule 4: header names
    pytest.param('{"modify":{"addHeaders":{"x a":"1"}}}', Point.PRE, id="r4-name-space"),
    pytest.param('{"modify":{"addHeaders":{"x:a":"1"}}}', Point.PRE, id="r4-name-colon"),
    pytest.param('{"modify":{"addHeaders":{"":"1"}}}', Point.PRE, id="r4-name-empty"),
    pytest.param('{"modify":{"addHeaders":{"x-é":"1"}}}', Point.PRE, id="r4-name-non-ascii"),
    pytest.param('{"modify":{"headers":{"x(a)":"1"}}}', Point.PRE, id="r4-name-parens"),
    pytest.param('{"modify":{"dropHeaders":["x/a"]}}', Point.PRE, id="r4-drop-name-slash"),
    pytest.param('{"terminate":{"code":400,"addHeaders":{"x\\na":"1"}}}', Point.PRE, id="r4-terminate-name-lf"),
    pytest.param('{"modify":{"addHeaders":{"X-A":"1","x-a":"2"}}}', Point.PRE, id="r4-twice-in-addheaders"),
    pytest.param('{"modify":{"headers":{"X-A":"1","x-A":"2"}}}', Point.PRE, id="r4-twice-in-headers"),
    pytest.param('{"terminate":{"code":400,"addHeaders":{"a":"1","A":"2"}}}', Point.PRE,
                 id="r4-twice-in-terminate"),
    # rule 5: header values
    pytest.param('{"modify":{"addHeaders":{"x-a":"1\\r\\nx-b: 2"}}}', Point.PRE, id="r5-crlf"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"1\\n"}}}', Point.PRE, id="r5-lf"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"1\\r"}}}', Point.PRE, id="r5-cr"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"\\u0000"}}}', Point.PRE, id="r5-nul"),
    pytest.param('{"modify":{"headers":{"x-a":"\\u0001"}}}', Point.PRE, id="r5-soh"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"\\u001b[0m"}}}', Point.POST, id="r5-esc"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"\\u007f"}}}', Point.PRE, id="r5-del"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"\\u0085"}}}', Point.PRE, id="r5-c1-nel"),
    pytest.param('{"terminate":{"code":400,"headers":{"x-a":"a\\nb"}}}', Point.POST, id="r5-terminate-lf"),
    # rule 6: changeRoute at pre
    pytest.param('{"modify":{"changeRoute":"https://backend.internal/x"}}', Point.PRE, id="r6-not-object"),
    pytest.param('{"modify":{"changeRoute":{}}}', Point.PRE, id="r6-empty"),
    pytest.param('{"modify":{"changeRoute":{"uri":null,"httpVerb":null}}}', Point.PRE, id="r6-nulls"),
    pytest.param('{"modify":{"changeRoute":{"uri":"/v2/op"}}}', Point.PRE, id="r6-relative"),
    pytest.param('{"modify":{"changeRoute":{"uri":"ftp://backend.internal/x"}}}', Point.PRE, id="r6-ftp"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https:///x"}}}', Point.PRE, id="r6-no-host"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://evil.example/x"}}}', Point.PRE, id="r6-host-not-permitted"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://backend.internal:8443/x"}}}', Point.PRE,
                 id="r6-port-not-permitted"),
    pytest.param('{"modify":{"changeRoute":{"uri":"http://alt.internal/x"}}}', Point.PRE,
                 id="r6-route-host-needs-its-port"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://u:p@backend.internal/x"}}}', Point.PRE,
                 id="r6-userinfo"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://backend.internal/a b"}}}', Point.PRE, id="r6-space"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://backend.internal/\\r\\n"}}}', Point.PRE, id="r6-crlf"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://backend.internal:99999/"}}}', Point.PRE,
                 id="r6-bad-port"),
    pytest.param('{"modify":{"changeRoute":{"uri":"https://backend.internal:0/"}}}', Point.PRE, id="r6-port-0"),
    pytest.param('{"modify":{"changeRoute":{"uri":42}}}', Point.PRE, id="r6-uri-number"),
    pytest.param('{"modify":{"changeRoute":{"httpVerb":"GE T"}}}', Point.PRE, id="r6-verb-space"),
    pytest.param('{"modify":{"changeRoute":{"httpVerb":""}}}', Point.PRE, id="r6-verb-empty"),
    pytest.param('{"modify":{"changeRoute":{"httpVerb":7}}}', Point.PRE, id="r6-verb-number"),
]


@pytest.mark.parametrize(("output", "point"), INVALID_OUTPUTS)
def test_invalid_outputs(output: str | bytes, point: Point) -> None:
    """§4.3 rules 1–6: invalid output → 'Invalid output from AWS Lambda function'."""
    failure = invalid(output, point)
    assert failure.code is ErrorCode.INVALID_OUTPUT
    assert failure.point is point


def test_output_over_6_mb_is_invalid() -> None:
    """§4.3 rule 1: larger than 6 MB (6 × 1,048,576 bytes)."""
    prefix, suffix = b'{"modify":{"payload":"', b'"}}'
    filler = MAX_OUTPUT_BYTES - len(prefix) - len(suffix)
    at_limit = prefix + b"a" * filler + suffix
    assert len(at_limit) == MAX_OUTPUT_BYTES
    assert interpret(at_limit).modification.body == b"a" * filler
    assert invalid(prefix + b"a" * (filler + 1) + suffix).code is ErrorCode.INVALID_OUTPUT


FORBIDDEN = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive", "Proxy-Connection", "TE",
             "Trailer", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization"]


def test_forbidden_list_matches_the_contract() -> None:
    """§4.3 rule 4: exactly these eleven names."""
    assert frozenset(n.lower() for n in FORBIDDEN) == FORBIDDEN_HEADERS


@pytest.mark.parametrize("name", [*FORBIDDEN, "HOST", "content-length", "tE"])
@pytest.mark.parametrize(
    "template",
    [
        '{{"modify":{{"addHeaders":{{"{0}":"1"}}}}}}',
        '{{"modify":{{"headers":{{"{0}":"1"}}}}}}',
        '{{"modify":{{"dropHeaders":["{0}"]}}}}',
        '{{"terminate":{{"code":403,"addHeaders":{{"{0}":"1"}}}}}}',
        '{{"terminate":{{"code":403,"headers":{{"{0}":"1"}}}}}}',
    ],
    ids=["modify.addHeaders", "modify.headers", "modify.dropHeaders", "terminate.addHeaders", "terminate.headers"],
)
def test_forbidden_headers_are_invalid_anywhere(name: str, template: str) -> None:
    """§4.3 rule 4 (§10 Q8): a forbidden name in any header map or dropHeaders, any case."""
    assert invalid(template.format(name), Point.POST).code is ErrorCode.INVALID_OUTPUT


# -- ignored members are not validated (§4.3) ---------------------------------------------------------------------

IGNORED = [
    pytest.param('{"terminate":{"message":5,"addHeaders":{"Host":"x"}}}', Point.PRE, ALLOW,
                 id="terminate-without-code"),
    pytest.param('{"terminate":{"code":null,"message":5}}', Point.POST, ALLOW, id="terminate-code-null"),
    pytest.param('{"terminate":null,"modify":null}', Point.PRE, ALLOW, id="null-members"),
    pytest.param('{"modify":{"completeWithCode":"nonsense"}}', Point.PRE, ALLOW, id="Q27-cwc-at-pre"),
    pytest.param('{"modify":{"completeWithCode":201}}', Point.PRE, ALLOW, id="Q27-valid-cwc-at-pre"),
    pytest.param('{"modify":{"changeRoute":"nonsense"}}', Point.POST, ALLOW, id="changeroute-at-post"),
    pytest.param('{"unknown":[1],"modify":{"unknown":{"x":1}}}', Point.PRE, ALLOW, id="unknown-members"),
    pytest.param('{"terminate":{"code":418},"modify":"nonsense"}', Point.PRE,
                 Verdict(VerdictKind.TERMINATE, termination=Termination(code=418)), id="modify-when-terminate-wins"),
    pytest.param('{"terminate":{"code":418},"modify":{"addHeaders":{"Host":"x"}}}', Point.POST,
                 Verdict(VerdictKind.TERMINATE, termination=Termination(code=418)), id="modify-headers-ignored"),
    pytest.param('{"modify":{"payload":5,"json":null,"changeRoute":{},"addHeaders":{"x-a":"1"}}}', Point.PREFLIGHT,
                 Verdict(VerdictKind.MODIFY, modification=Modification(add_headers=((b"x-a", b"1"),))),
                 id="preflight-only-header-members"),
    pytest.param('{"modify":{"dropHeaders":["x-a","X-A","x-a"]}}', Point.PRE,
                 Verdict(VerdictKind.MODIFY, modification=Modification(drop_headers=frozenset({b"x-a"}))),
                 id="dropheaders-repeated-is-fine"),
    pytest.param('{"modify":{"payload":null,"json":null,"base64Encoded":null,"addHeaders":null}}', Point.POST,
                 ALLOW, id="modify-without-effect-is-allow"),
    pytest.param('{"modify":{"addHeaders":{"x-a":"tab\\there"}}}', Point.PRE,
                 Verdict(VerdictKind.MODIFY, modification=Modification(add_headers=((b"x-a", b"tab\there"),))),
                 id="r5-htab-allowed"),
]


@pytest.mark.parametrize(("output", "point", "expected"), IGNORED)
def test_ignored_members_are_not_validated(output: str, point: Point, expected: Verdict) -> None:
    """§4.3: terminate without code, completeWithCode at pre, changeRoute at post, unknown members and the
    modify beaten by a terminate are ignored and not validated; null = absent (§4.1)."""
    assert interpret(output, point) == expected


# -- precedence and members (§4.2, §4.4, §10 Q12/Q13/Q14) ---------------------------------------------------------


def test_headers_and_add_headers_union_add_headers_wins() -> None:
    """§4.2: union of headers and addHeaders, addHeaders winning case-insensitively; names lower-cased."""
    verdict = interpret('{"modify":{"headers":{"X-A":"1","X-B":"2"},"addHeaders":{"x-a":"3","X-C":"é"}}}')
    assert dict(verdict.modification.add_headers) == {b"x-a": b"3", b"x-b": b"2", b"x-c": "é".encode()}


def test_terminate_accepts_headers_payload_and_json_Q12() -> None:
    """§10 Q12: terminate takes code, message, addHeaders/headers, payload, base64Encoded, json."""
    verdict = interpret('{"terminate":{"code":401,"message":"m","headers":{"WWW-Authenticate":"Bearer"},'
                        '"addHeaders":{"x-a":"1"},"payload":"aGk=","base64Encoded":true}}', Point.POST)
    assert verdict.termination == Termination(code=401, message="m",
                                              headers=((b"www-authenticate", b"Bearer"), (b"x-a", b"1")),
                                              body=b"hi")
    assert terminate_headers(verdict.termination) == [(b"www-authenticate", b"Bearer"), (b"x-a", b"1")]


def test_terminate_json_wins_and_gets_content_type_Q14() -> None:
    """§4.4 terminate table: json wins over payload; application/json unless the headers set Content-Type."""
    verdict = interpret('{"terminate":{"code":200,"payload":"p","json":{"z":1,"a":["é",null]}}}')
    assert verdict.termination.body == '{"z":1,"a":["é",null]}'.encode()
    assert verdict.termination.body_is_json
    assert terminate_headers(verdict.termination) == [(b"content-type", b"application/json")]
    own_type = interpret('{"terminate":{"code":200,"json":[],"addHeaders":{"Content-Type":"application/x+json"}}}')
    assert terminate_headers(own_type.termination) == [(b"content-type", b"application/x+json")]


@pytest.mark.parametrize(
    ("modify", "body", "is_json"),
    [
        ({"payload": "Q3VzdG9tIHBheWxvYWQ="}, b"Q3VzdG9tIHBheWxvYWQ=", False),
        ({"payload": "Q3VzdG9tIHBheWxvYWQ=", "base64Encoded": False}, b"Q3VzdG9tIHBheWxvYWQ=", False),
        ({"payload": "Q3VzdG9tIHBheWxvYWQ=", "base64Encoded": True}, b"Custom payload", False),
        ({"payload": "", "base64Encoded": True}, b"", False),
        ({"payload": "héllo"}, "héllo".encode(), False),
        ({"json": {"b": 1, "a": {"c": [1.5, True, None]}}}, b'{"b":1,"a":{"c":[1.5,true,null]}}', True),
        ({"json": "text"}, b'"text"', True),
        ({"json": 0}, b"0", True),
        ({"json": False, "payload": "p"}, b"false", True),
    ],
    ids=["Q13-plain-by-default", "Q13-false", "Q13-true-decoded", "empty-base64", "utf8-text", "Q14-json-compact",
         "json-string", "json-zero", "json-false-wins"],
)
def test_modify_body(modify: dict[str, Any], body: bytes, is_json: bool) -> None:
    """§4.4 step 4: json (compact, order kept) wins; payload decoded only when base64Encoded is true."""
    mod = interpret({"modify": modify}).modification
    assert (mod.body, mod.body_is_json) == (body, is_json)


def test_terminate_with_code_wins_over_modify() -> None:
    """§4.4 step 1."""
    verdict = interpret('{"modify":{"addHeaders":{"x-a":"1"}},"terminate":{"code":503,"message":"down"}}')
    assert verdict == Verdict(VerdictKind.TERMINATE, termination=Termination(code=503, message="down"))


@pytest.mark.parametrize("code", [200, 204, 304, 599])
def test_complete_with_code_at_post(code: int) -> None:
    """§4.2: completeWithCode 200–599 at post."""
    assert interpret({"modify": {"completeWithCode": code}}, Point.POST).modification == Modification(
        complete_with_code=code)


CHANGE_ROUTES = [
    pytest.param({"uri": "https://backend.internal/v2/op?x=1"},
                 ChangeRoute(scheme="https", host="backend.internal", port=443, path_qs="/v2/op?x=1"),
                 id="same-host"),
    pytest.param({"uri": "HTTPS://Backend.Internal:443"},
                 ChangeRoute(scheme="https", host="backend.internal", port=443, path_qs="/"),
                 id="case-and-default-port"),
    pytest.param({"uri": "https://alt.internal:8443/a#frag", "httpVerb": "put"},
                 ChangeRoute(scheme="https", host="alt.internal", port=8443, path_qs="/a", method="PUT"),
                 id="route-host-with-port-and-verb"),
    pytest.param({"uri": "http://[2001:db8::1]/x"},
                 ChangeRoute(scheme="http", host="2001:db8::1", port=80, path_qs="/x"), id="ipv6"),
    pytest.param({"httpVerb": "PATCH"}, ChangeRoute(method="PATCH"), id="verb-only"),
    pytest.param({"httpVerb": "m-search", "uri": None}, ChangeRoute(method="M-SEARCH"), id="verb-token"),
]


@pytest.mark.parametrize(("route", "expected"), CHANGE_ROUTES)
def test_change_route_at_pre(route: dict[str, Any], expected: ChangeRoute) -> None:
    """§4.4 step 3: permitted host (backend or route_hosts), default port omitted, verb upper-cased."""
    assert interpret({"modify": {"changeRoute": route}}).modification.change_route == expected


def test_change_route_backend_authority_with_port() -> None:
    """§4.4 step 3: the endpoint's backend authority may carry a port."""
    verdict = interpret_output(b'{"modify":{"changeRoute":{"uri":"http://b.local:8080/x"}}}', Point.PRE,
                               backend_authority="B.local:8080", route_hosts=frozenset(), now=NOW)
    assert verdict.modification.change_route == ChangeRoute(scheme="http", host="b.local", port=8080, path_qs="/x")


# -- §9.1 hints ---------------------------------------------------------------------------------------------------

HINTS = [
    pytest.param({"unchangedFor": 60000}, 60000, id="for"),
    pytest.param({"unchangedUntil": "2025-03-24T12:00:30Z"}, 30000, id="until-z"),
    pytest.param({"unchangedUntil": "2025-03-24T13:00:30+01:00"}, 30000, id="until-offset"),
    pytest.param({"unchangedFor": 60000, "unchangedUntil": "2025-03-24T12:00:10Z"}, 10000, id="both-earlier-until"),
    pytest.param({"unchangedFor": 5000, "unchangedUntil": "2025-03-24T12:00:10Z"}, 5000, id="both-earlier-for"),
    pytest.param({"unchangedFor": 0}, None, id="zero"),
    pytest.param({"unchangedFor": -5}, None, id="negative"),
    pytest.param({"unchangedUntil": "2025-03-24T11:00:00Z"}, None, id="past"),
    pytest.param({"unchangedFor": 60000, "unchangedUntil": "2025-03-24T11:00:00Z"}, None, id="earlier-is-past"),
    pytest.param({"unchangedFor": "60000"}, None, id="for-string"),
    pytest.param({"unchangedFor": 1.5}, None, id="for-float"),
    pytest.param({"unchangedFor": True}, None, id="for-bool"),
    pytest.param({"unchangedUntil": "soon"}, None, id="until-garbage"),
    pytest.param({"unchangedUntil": "2025-03-24T12:00:30"}, None, id="until-without-offset"),
    pytest.param({"unchangedUntil": 1742817630}, None, id="until-number"),
    pytest.param({"unchangedFor": 7000, "unchangedUntil": "bad"}, 7000, id="malformed-other-ignored"),
]


@pytest.mark.parametrize(("hints", "ttl"), HINTS)
def test_cache_hints(hints: dict[str, Any], ttl: int | None) -> None:
    """§9.1: earlier expiry wins; malformed hints ignored (never invalid); non-positive → no caching."""
    verdict = interpret(hints)
    assert verdict.kind is VerdictKind.ALLOW
    assert verdict.cache_ttl_ms == ttl


def test_hint_on_terminate() -> None:
    """§9.1: any valid output may carry a hint."""
    assert interpret({"terminate": {"code": 403}, "unchangedFor": 1000}).cache_ttl_ms == 1000


# -- §5.3 function error ------------------------------------------------------------------------------------------

FUNCTION_ERRORS = [
    pytest.param(b'{"errorMessage":"An error occurred during JSON parsing","errorType":"java.lang.RuntimeException",'
                 b'"stackTrace":["a"],"cause":{"errorMessage":"inner"}}', "Unhandled",
                 "An error occurred during JSON parsing", "java.lang.RuntimeException", id="documented"),
    pytest.param(b'{"errorMessage":"boom"}', "Unhandled", "boom", "Unhandled", id="no-errortype"),
    pytest.param(b'{"errorMessage":"boom","errorType":null}', "Handled", "boom", "Handled", id="errortype-null"),
    pytest.param(b'{"errorMessage":42,"errorType":"E"}', "Unhandled", "Function error", "E", id="message-not-string"),
    pytest.param(b'{"errorType":7}', "Unhandled", "Function error", "7", id="errortype-stringified"),
    pytest.param(b"not json", "Unhandled", "Function error", "Unhandled", id="not-json"),
    pytest.param(b"", "Handled", "Function error", "Handled", id="empty"),
    pytest.param(b'["x"]', "Unhandled", "Function error", "Unhandled", id="not-object"),
]


@pytest.mark.parametrize(("body", "header", "detail", "title"), FUNCTION_ERRORS)
@pytest.mark.parametrize("point", [Point.PRE, Point.POST])
def test_function_failure(body: bytes, header: str, detail: str, title: str, point: Point) -> None:
    """§5.3: 502 FunctionError; detail = errorMessage or 'Function error'; title = errorType or the header."""
    failure = function_failure(body, header, point)
    assert failure.code is ErrorCode.FUNCTION_ERROR
    assert failure.status == 502
    assert failure.error_name == "FunctionError"
    assert failure.error_message == detail
    assert failure.title == title
    assert failure.point is point
