"""The published JSON Schemas (draft 2020-12) tested against the implementation: every input ``build_input``
produces validates against the input schema; the output schema accepts every output ``interpret_output``
accepts (at the same point) and rejects the structurally invalid ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings

from sidecar_gateway import sdk
from sidecar_gateway.config.plan import (
    Application,
    AwsLambdaConnection,
    EndpointPlan,
    Mode,
    PackageKey,
    ProcessorPlan,
    Stack,
    Target,
)
from sidecar_gateway.errors import Point
from sidecar_gateway.sidecar.call import BackendRequest, BackendResponse, CallContext, ClientRequest, TokenInfo
from sidecar_gateway.sidecar.input_builder import build_input, build_preflight_input
from sidecar_gateway.sidecar.output_interpreter import FORBIDDEN_HEADERS
from support.sidecar_outputs import POINTS, gateway_accepts, has_repeated_header, outputs

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "schemas"
PACKAGED = Path(sdk.__file__).resolve().parent / "schemas"
SCHEMA_FILES = ("sidecar-input.schema.json", "sidecar-output.schema.json")

INPUT_VALIDATOR = jsonschema.Draft202012Validator(sdk.input_schema())
OUTPUT_VALIDATORS = {p: jsonschema.Draft202012Validator(sdk.output_schema(p.input_name)) for p in POINTS}


def schema_accepts(output: Any, point: Point) -> bool:
    return OUTPUT_VALIDATORS[point].is_valid(output)


# -- the files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_published_and_packaged_schemas_are_identical(name: str) -> None:
    """schemas/ (published) and sidecar_gateway/sdk/schemas/ (loaded by invoke) hold the same bytes."""
    assert (PUBLISHED / name).read_bytes() == (PACKAGED / name).read_bytes()


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    """Each file is a valid draft 2020-12 schema."""
    schema = json.loads((PUBLISHED / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_output_schema_forbids_exactly_the_interpreters_headers() -> None:
    """§4.3 rule 4: every forbidden name, in any case, is refused by the schema; its neighbours are not."""
    for name in FORBIDDEN_HEADERS:
        for spelling in (name, name.upper(), name.title()):
            assert not schema_accepts({"modify": {"addHeaders": {spelling: "v"}}}, Point.PRE), spelling
            assert not schema_accepts({"modify": {"dropHeaders": [spelling]}}, Point.POST), spelling
        assert schema_accepts({"modify": {"addHeaders": {f"x-{name}": "v", f"{name}s": "v"}}}, Point.PRE)


# -- input schema vs build_input ----------------------------------------------------------------------------------

SERVICE, ENDPOINT, KEY = "0123456789", "9876543210", "abc123def456ghi789"
MESSAGE_ID = "7632924a-8d8d-4d35-8a77-b57c4bb450af"
TARGET = Target(scheme="https", host="backend.internal", port=443, base_path="/v1")
CONNECTION = AwsLambdaConnection(region="eu-west-1", function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f")
HEADERS = [(b"host", b"api.acme.com"), (b"cache-control", b"no-cache"), (b"authorization", b"Bearer qwerty"),
           (b"x-multi", b"1"), (b"x-multi", b"2"), (b"connection", b"keep-alive"), (b"content-type", b"text/plain")]
RESPONSE_HEADERS = [(b"content-type", b"application/json"), (b"header_b", b"Value_B"), (b"set-cookie", b"a=1")]
TOKEN = TokenInfo(scope="orders:read", user_context="user-4711", grant_type="client_credentials",
                  expires="2025-03-24T13:48:09Z")
ALL_TOKENS = {"expand_request_payload": True, "expand_remote_address": True, "expand_operation": True,
              "expand_token": True, "expand_routing": True}


def _plan(point: Point, **fields: Any) -> ProcessorPlan:
    return ProcessorPlan(service_id=SERVICE, endpoint_id=ENDPOINT, point=point, stack=Stack.AWS_LAMBDA,
                         connection=CONNECTION, **fields)


def _call(*, headers: list[tuple[bytes, bytes]] = HEADERS, query: str = f"api_key={KEY}&tag=a&tag=b&flag",
          body: bytes | None = None, key: str | None = KEY, token: TokenInfo | None = None,
          remainder: str = "/op") -> CallContext:
    endpoint = EndpointPlan(service_id=SERVICE, endpoint_id=ENDPOINT, public_path="/my", target=TARGET)
    request = ClientRequest(method="POST", scheme="https", host="api.acme.com", raw_path="/my" + remainder,
                            remainder=remainder, query_string=query, headers=list(headers),
                            client_addr="2001:db8::17", body=body)
    package_key = None
    if key is not None:
        app = Application(id="app", eavs={"eav1": "eav_value", "blank": " "})
        package_key = PackageKey(key=key, application=app, eavs={"pkg_eav": "eav_value"})
    return CallContext(message_id=MESSAGE_ID, endpoint=endpoint, request=request, package_key=package_key,
                       token=token)


ROUTING = BackendRequest(method="POST", scheme="https", host="backend.internal", port=443, path_qs="/v1/op?x=1")

INPUT_CASES = [
    ("pre-default", _plan(Point.PRE), _call(), None),
    ("pre-params-eavs", _plan(Point.PRE, params={"n": 5, "b": True, "s": "x"}, eav_selection=("eav1", "blank"),
                              key_eav_selection=("pkg_eav", "missing")), _call(), None),
    ("pre-every-token-text-body", _plan(Point.PRE, **ALL_TOKENS), _call(body=b"hello", token=TOKEN), None),
    ("pre-binary-body", _plan(Point.PRE, expand_request_payload=True),
     _call(body=b"\xff\x00", headers=[(b"content-type", b"application/octet-stream")]), None),
    ("pre-anonymous-no-query", _plan(Point.PRE, expand_operation=True), _call(key=None, query="", remainder="/"),
     None),
    ("pre-event-no-headers", _plan(Point.PRE, mode=Mode.EVENT, request_headers=frozenset()), _call(), None),
    ("pre-include-headers", _plan(Point.PRE, request_headers=frozenset({b"x-multi", b"cache-control"})), _call(),
     None),
    ("pre-empty-body-not-sent", _plan(Point.PRE, expand_request_payload=True), _call(body=b""), None),
    ("post-code-only", _plan(Point.POST), _call(), BackendResponse(status=201, headers=RESPONSE_HEADERS)),
    ("post-include-response-headers", _plan(Point.POST, send_response_headers=True,
                                            include_response_headers=frozenset({b"header_b"})),
     _call(), BackendResponse(status=200, headers=RESPONSE_HEADERS)),
    ("post-skip-response-headers", _plan(Point.POST, send_response_headers=True,
                                         skip_response_headers=frozenset({b"set-cookie"})),
     _call(), BackendResponse(status=404, headers=RESPONSE_HEADERS)),
    ("post-all-skipped", _plan(Point.POST, send_response_headers=True,
                               include_response_headers=frozenset({b"header_b"}),
                               skip_response_headers=frozenset({b"header_b"})),
     _call(), BackendResponse(status=500, headers=RESPONSE_HEADERS)),
    ("post-json-and-binary-bodies", _plan(Point.POST, expand_response_payload=True, **ALL_TOKENS),
     _call(body=b'{"a":1}', token=TOKEN),
     BackendResponse(status=200, headers=[(b"content-type", b"image/png")], body=b"\x89PNG")),
    ("post-text-response", _plan(Point.POST, expand_response_payload=True, mode=Mode.NON_BLOCKING),
     _call(), BackendResponse(status=200, headers=RESPONSE_HEADERS, body='{"é":1}'.encode())),
]


@pytest.mark.parametrize(("plan", "call", "response"), [pytest.param(p, c, r, id=i) for i, p, c, r in INPUT_CASES])
def test_every_built_input_validates(plan: ProcessorPlan, call: CallContext, response: BackendResponse | None) -> None:
    """§3: what build_input sends is valid against the input schema."""
    document = json.loads(build_input(plan, call, routing=ROUTING if plan.expand_routing else None,
                                      response=response))
    errors = [e.message for e in INPUT_VALIDATOR.iter_errors(document)]
    assert not errors, (document, errors)


@pytest.mark.parametrize("key", [KEY, None])
def test_preflight_input_validates(key: str | None) -> None:
    """§9.3: the pre-flight input is valid too."""
    plan = _plan(Point.PRE, params={"p": 1}, eav_selection=("eav1",), key_eav_selection=("pkg_eav",),
                 preflight=True)
    document = json.loads(build_preflight_input(plan, _call(key=key)))
    assert INPUT_VALIDATOR.is_valid(document), document


@pytest.mark.parametrize("change", [
    {"point": "Other"}, {"synchronicity": "Sometimes"}, {"masheryMessageId": "not-a-uuid"},
    {"params": {}}, {"request": {}}, {"request": {"headers": {"Upper": "x"}}},
    {"request": {"payload": "x"}}, {"eavs": {"a": " "}}, {"response": {"code": 200}}, {"unknown": 1},
])
def test_input_schema_rejects_what_the_gateway_never_sends(change: dict[str, Any]) -> None:
    """Null-free, non-empty, lower-case, complete payload triples, response only at post (§3.1)."""
    document = {"point": "PreProcessor", "synchronicity": "RequestResponse", "masheryMessageId": MESSAGE_ID,
                "serviceId": "s", "endpointId": "e", **change}
    assert not INPUT_VALIDATOR.is_valid(document)


# -- output schema vs interpret_output ----------------------------------------------------------------------------

STRUCTURALLY_INVALID = [
    ("top-level-array", [], Point.PRE),
    ("top-level-null", None, Point.PRE),
    ("terminate-string", {"terminate": "stop"}, Point.PRE),
    ("modify-array", {"modify": []}, Point.POST),
    ("code-string", {"terminate": {"code": "403"}}, Point.PRE),
    ("code-range", {"terminate": {"code": 600}}, Point.PRE),
    ("code-bool", {"terminate": {"code": True}}, Point.POST),
    ("complete-with-code-range", {"modify": {"completeWithCode": 100}}, Point.POST),
    ("message-type", {"terminate": {"code": 400, "message": ["x"]}}, Point.PRE),
    ("payload-type", {"modify": {"payload": 1}}, Point.PRE),
    ("base64-flag-type", {"terminate": {"code": 200, "base64Encoded": 1}}, Point.PRE),
    ("base64-invalid", {"modify": {"payload": "QQ", "base64Encoded": True}}, Point.PRE),
    ("base64-line-break", {"modify": {"payload": "QUJD\n", "base64Encoded": True}}, Point.POST),
    ("headers-array", {"modify": {"addHeaders": ["x"]}}, Point.PRE),
    ("header-value-number", {"modify": {"headers": {"x": 1}}}, Point.PRE),
    ("header-name-space", {"modify": {"addHeaders": {"x y": "1"}}}, Point.PRE),
    ("header-name-trailing-newline", {"modify": {"addHeaders": {"x\n": "1"}}}, Point.PRE),
    ("header-forbidden", {"terminate": {"code": 401, "addHeaders": {"Proxy-Authenticate": "x"}}}, Point.PRE),
    ("header-value-cr", {"modify": {"addHeaders": {"x": "a\rb"}}}, Point.PRE),
    ("drop-string", {"modify": {"dropHeaders": "x"}}, Point.PREFLIGHT),
    ("drop-forbidden", {"modify": {"dropHeaders": ["host"]}}, Point.PREFLIGHT),
    ("route-empty", {"modify": {"changeRoute": {}}}, Point.PRE),
    ("route-relative", {"modify": {"changeRoute": {"uri": "/x"}}}, Point.PRE),
    ("route-userinfo", {"modify": {"changeRoute": {"uri": "http://u@backend.local/"}}}, Point.PRE),
    ("route-verb", {"modify": {"changeRoute": {"httpVerb": "G T"}}}, Point.PRE),
]


@pytest.mark.parametrize(("output", "point"), [pytest.param(o, p, id=i) for i, o, p in STRUCTURALLY_INVALID])
def test_output_schema_rejects_structurally_invalid_outputs(output: Any, point: Point) -> None:
    """§4.3 rules 1–6 as far as JSON Schema can express them; the gateway rejects them too."""
    assert not gateway_accepts(output, point)
    assert not schema_accepts(output, point)


INEXPRESSIBLE = [
    ("integral-float-code", {"terminate": {"code": 200.0}}, Point.PRE),
    ("repeated-header-name", {"modify": {"addHeaders": {"X-A": "1", "x-a": "2"}}}, Point.PRE),
    ("host-not-permitted", {"modify": {"changeRoute": {"uri": "http://evil.local/"}}}, Point.PRE),
    ("port-out-of-range", {"modify": {"changeRoute": {"uri": "http://backend.local:99999/"}}}, Point.PRE),
    ("lone-surrogate", {"modify": {"addHeaders": {"x": "\ud800"}}}, Point.PRE),
]


@pytest.mark.parametrize(("output", "point"), [pytest.param(o, p, id=i) for i, o, p in INEXPRESSIBLE])
def test_documented_inexpressible_rules_are_left_to_the_gateway(output: Any, point: Point) -> None:
    """The rules the schema's description lists as inexpressible: schema accepts, gateway refuses (invoke
    runs both)."""
    assert schema_accepts(output, point)
    assert not gateway_accepts(output, point)


NULL_MEMBERS = [  # §4.1: a member whose value is null is absent; found by the property test below
    ("route-verb-null-uri", {"modify": {"changeRoute": {"httpVerb": "GET", "uri": None}}}, Point.PRE),
    ("route-uri-null-verb", {"modify": {"changeRoute": {"uri": "http://backend.local/v2", "httpVerb": None}}},
     Point.PRE),
]


@pytest.mark.parametrize(("output", "point"), [pytest.param(o, p, id=i) for i, o, p in NULL_MEMBERS])
def test_null_members_are_absent_for_schema_and_gateway_alike(output: Any, point: Point) -> None:
    assert gateway_accepts(output, point)
    assert schema_accepts(output, point)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(output=outputs())
def test_output_schema_accepts_everything_the_gateway_accepts(output: Any) -> None:
    """interpret_output valid at a point ⇒ the point's schema accepts the output."""
    for point in POINTS:
        if gateway_accepts(output, point):
            assert schema_accepts(output, point), (point, output)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(output=outputs(exact=True))
def test_output_schema_matches_the_gateway_on_expressible_rules(output: Any) -> None:
    """Without the inexpressible features, schema valid ⇔ interpret_output valid."""
    assume(not has_repeated_header(output))
    for point in POINTS:
        assert schema_accepts(output, point) is gateway_accepts(output, point), (point, output)


BUILT_OUTPUTS = [
    sdk.allow(),
    sdk.modify(add_headers={"X-A": "1"}, drop_headers=["x-b"], json={"k": ["v"]}),
    sdk.modify(payload=b"\x00\xff", complete_with_code=204),
    sdk.modify(payload="text", change_route={"uri": "https://backend.local/v2", "httpVerb": "put"}),
    sdk.terminate(401, "Unauthorized", headers={"WWW-Authenticate": 'Bearer realm="api"'}),
    sdk.terminate(200, json={"ok": True}),
    sdk.terminate(503, payload="busy"),
    sdk.unchanged_for(60_000, sdk.modify(add_headers={"x-tier": "gold"})),
]


@pytest.mark.parametrize("output", BUILT_OUTPUTS)
def test_sdk_builders_round_trip_through_the_schema(output: dict[str, Any]) -> None:
    """Every builder output validates against the root output schema (JSON round trip included)."""
    document = json.loads(json.dumps(output))
    assert jsonschema.Draft202012Validator(sdk.output_schema()).is_valid(document)
