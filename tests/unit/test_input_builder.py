"""Input JSON (contract §3, §9.1 cache key, §9.3 pre-flight input): table tests with literal inputs."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import orjson
import pytest

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
from sidecar_gateway.errors import ClientError, ErrorCode, Point
from sidecar_gateway.sidecar.call import BackendRequest, BackendResponse, CallContext, ClientRequest, TokenInfo
from sidecar_gateway.sidecar.input_builder import build_input, build_preflight_input, cache_key

# -- §3.5 common setting ------------------------------------------------------------------------------------------
SERVICE, ENDPOINT = "0123456789", "9876543210"
MESSAGE_ID = "7632924a-8d8d-4d35-8a77-b57c4bb450af"
KEY = "abc123def456ghi789"
CLIENT_IP = "198.51.100.23"
BEARER = "qwertyuiopasdfghjklzxcvbnm"
CONNECTION = AwsLambdaConnection(region="eu-west-1", function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f")
TARGET = Target(scheme="https", host="backend.internal", port=443, base_path="/v1")
BASE_HEADERS = [(b"host", b"api.acme.com"), (b"cache-control", b"no-cache"), (b"content-length", b"0")]
AUTH_HEADER = (b"authorization", f"Bearer {BEARER}".encode())


def make_plan(point: Point = Point.PRE, **overrides: Any) -> ProcessorPlan:
    fields: dict[str, Any] = {"service_id": SERVICE, "endpoint_id": ENDPOINT}
    fields.update(overrides)
    return ProcessorPlan(point=point, stack=Stack.AWS_LAMBDA, connection=CONNECTION, **fields)


def make_call(
    *,
    method: str = "POST",
    public_path: str = "/my",
    remainder: str = "/op",
    query: str = f"api_key={KEY}",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    key: str | None = KEY,
    app_eavs: dict[str, str] | None = None,
    key_eavs: dict[str, str] | None = None,
    service_id: str = SERVICE,
    endpoint_id: str = ENDPOINT,
    message_id: str = MESSAGE_ID,
    client_addr: str = CLIENT_IP,
    token: TokenInfo | None = None,
) -> CallContext:
    endpoint = EndpointPlan(service_id=service_id, endpoint_id=endpoint_id, public_path=public_path, target=TARGET)
    request = ClientRequest(
        method=method,
        scheme="https",
        host="api.acme.com",
        raw_path=public_path + remainder,
        remainder=remainder,
        query_string=query,
        headers=list(BASE_HEADERS if headers is None else headers),
        client_addr=client_addr,
        body=body,
    )
    package_key = None
    if key is not None:
        app = Application(id="app-1", eavs={"eav1": "eav_value"} if app_eavs is None else app_eavs)
        pkg_eavs = {"pkg_eav": "eav_value"} if key_eavs is None else key_eavs
        package_key = PackageKey(key=key, application=app, eavs=pkg_eavs)
    return CallContext(message_id=message_id, endpoint=endpoint, request=request, package_key=package_key, token=token)


def build(plan: ProcessorPlan, call: CallContext, *, routing: BackendRequest | None = None,
          response: BackendResponse | None = None) -> dict[str, Any]:
    return orjson.loads(build_input(plan, call, routing=routing, response=response))


COMMON = {"masheryMessageId": MESSAGE_ID, "packageKey": KEY, "serviceId": SERVICE, "endpointId": ENDPOINT}
PARAMS_X = {"parameter_x": "value_x"}


# -- §3.5 worked examples -----------------------------------------------------------------------------------------

WORKED_PRE_EXAMPLES = [
    pytest.param(
        {"params": PARAMS_X},
        BASE_HEADERS,
        {"point": "PreProcessor", "synchronicity": "RequestResponse", **COMMON, "params": PARAMS_X},
        id="pre-example-1-no-request-member",
    ),
    pytest.param(
        {"params": PARAMS_X},
        [*BASE_HEADERS, AUTH_HEADER],
        {"point": "PreProcessor", "synchronicity": "RequestResponse", **COMMON, "params": PARAMS_X,
         "request": {"headers": {"authorization": BEARER}}},
        id="pre-example-2-default-authorization-and-params-Q24",
    ),
    pytest.param(
        {"request_headers": frozenset({b"authorization"}), "key_eav_selection": ("pkg_eav",),
         "expand_remote_address": True},
        [*BASE_HEADERS, AUTH_HEADER],
        {"point": "PreProcessor", "synchronicity": "RequestResponse", **COMMON,
         "request": {"headers": {"authorization": BEARER}}, "remoteAddr": CLIENT_IP,
         "packageKeyEAVs": {"pkg_eav": "eav_value"}},
        id="pre-example-3-remote-address-key-eav",
    ),
    pytest.param(
        {"request_headers": frozenset({b"authorization"}), "key_eav_selection": ("pkg_eav",),
         "eav_selection": ("eav1",)},
        [*BASE_HEADERS, AUTH_HEADER],
        {"point": "PreProcessor", "synchronicity": "RequestResponse", **COMMON,
         "request": {"headers": {"authorization": BEARER}}, "packageKeyEAVs": {"pkg_eav": "eav_value"},
         "eavs": {"eav1": "eav_value"}},
        id="pre-example-4-app-and-key-eavs",
    ),
]


@pytest.mark.parametrize(("plan_fields", "headers", "expected"), WORKED_PRE_EXAMPLES)
def test_worked_pre_examples(plan_fields: dict[str, Any], headers: list[tuple[bytes, bytes]],
                             expected: dict[str, Any]) -> None:
    """§3.5 pre examples 1–4 produce exactly the documented input."""
    assert build(make_plan(**plan_fields), make_call(headers=headers)) == expected


def test_worked_pre_example_5_event_sends_nothing_optional() -> None:
    """§3.5 pre example 5: event mode, unselected headers not sent, path '/' after the public path."""
    plan = make_plan(service_id="9yt9cgmu74rypb8stg5r67hh", endpoint_id="4xk6dfdx95x7ycj77eeyj6ta", mode=Mode.EVENT)
    call = make_call(
        method="GET", public_path="/aj1954/orders", remainder="/", query="apikey=b8664brqffa5zbe47hg6p2b3",
        headers=[(b"host", b"api.acme.com"), (b"x-debug-trace", b"1")], key="b8664brqffa5zbe47hg6p2b3",
        service_id="9yt9cgmu74rypb8stg5r67hh", endpoint_id="4xk6dfdx95x7ycj77eeyj6ta",
        message_id="c3949ec1-b980-4ee1-b3c5-ce1599435950",
    )
    assert build(plan, call) == {
        "point": "PreProcessor", "synchronicity": "Event",
        "masheryMessageId": "c3949ec1-b980-4ee1-b3c5-ce1599435950", "packageKey": "b8664brqffa5zbe47hg6p2b3",
        "serviceId": "9yt9cgmu74rypb8stg5r67hh", "endpointId": "4xk6dfdx95x7ycj77eeyj6ta",
    }


def test_worked_post_example_sends_code_and_included_header() -> None:
    """§3.5 post example: response.code always, response.headers only for the included header."""
    plan = make_plan(Point.POST, mode=Mode.EVENT, include_response_headers=frozenset({b"header_b"}),
                     send_response_headers=True)
    response = BackendResponse(status=201, headers=[(b"content-type", b"application/json"), (b"header_b", b"Value_B")])
    assert build(plan, make_call(), response=response) == {
        "point": "PostProcessor", "synchronicity": "Event", **COMMON,
        "response": {"code": 201, "headers": {"header_b": "Value_B"}},
    }


ROUND_TRIP_BODY = (
    b'{"stay": {"checkIn": "2016-08-15","checkOut": "2016-08-20","shiftDays": "2"},"dailyRate": true}'
)


def test_worked_round_trip_input_sends_text_payload() -> None:
    """§4.5 round trip: a 95-byte JSON body is sent as text with its byte length."""
    plan = make_plan(service_id="eq7mxju5k4hvmpzejpzax2ap", endpoint_id="8xbkgw5q387cs9juushwwrtv",
                     expand_request_payload=True, max_payload_bytes=20 * 1024)
    call = make_call(key="kxm48rvx9anypbcfq5fyjw5s", service_id="eq7mxju5k4hvmpzejpzax2ap",
                     endpoint_id="8xbkgw5q387cs9juushwwrtv", body=ROUND_TRIP_BODY,
                     headers=[(b"host", b"api.acme.com"), (b"content-type", b"application/json"),
                              (b"content-length", b"95")])
    assert len(ROUND_TRIP_BODY) == 95
    assert build(plan, call) == {
        "point": "PreProcessor", "synchronicity": "RequestResponse",
        "masheryMessageId": MESSAGE_ID, "packageKey": "kxm48rvx9anypbcfq5fyjw5s",
        "serviceId": "eq7mxju5k4hvmpzejpzax2ap", "endpointId": "8xbkgw5q387cs9juushwwrtv",
        "request": {"payload": ROUND_TRIP_BODY.decode(), "payloadLength": 95, "payloadBase64Encoded": False},
    }


def test_input_is_compact_utf8() -> None:
    """§3: compact JSON, non-ASCII written as UTF-8, never \\u-escaped."""
    raw = build_input(make_plan(params={"name": "Zoë"}), make_call(), routing=None, response=None)
    assert b" " not in raw and b"\\u" not in raw
    assert "Zoë".encode() in raw


# -- §3.2 header selection ----------------------------------------------------------------------------------------

TABLE_HEADERS = [
    (b"host", b"api.acme.com"),
    (b"cache-control", b"no-cache"),
    (b"authorization", b"Bearer abc"),
    (b"header1", b"Header1_Value"),
    (b"header2", b"Header2_Value"),
]


def selection(include: set[bytes] = frozenset(), require: set[bytes] = frozenset(),
              skip: set[bytes] = frozenset()) -> frozenset[bytes]:
    """§3.2 rules 1–3 as the compiler applies them: (include ∪ require, or {authorization}) − skip."""
    base = (set(include) | set(require)) if (include or require) else {b"authorization"}
    return frozenset(base - set(skip))


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        pytest.param(selection(), {"authorization": "abc"}, id="no-header-key"),
        pytest.param(selection(include={b"header2"}), {"header2": "Header2_Value"}, id="include-header2"),
        pytest.param(selection(require={b"authorization"}, include={b"header1", b"header2"},
                               skip={b"header1", b"authorization"}),
                     {"header2": "Header2_Value"}, id="require-include-skip"),
        pytest.param(selection(skip={b"authorization"}), None, id="skip-authorization-omits-member"),
    ],
)
def test_request_header_examples_table(selected: frozenset[bytes], expected: dict[str, str] | None) -> None:
    """§3.2 examples table."""
    doc = build(make_plan(request_headers=selected), make_call(headers=TABLE_HEADERS))
    if expected is None:
        assert "request" not in doc
    else:
        assert doc["request"] == {"headers": expected}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (b"Bearer abc", "abc"),
        (b"bearer abc", "abc"),
        (b"BEARER \t abc def", "abc def"),
        (b"Bearer\tabc", "abc"),
        (b"Bearer ", ""),
        (b"Bearerabc", "Bearerabc"),
        (b"Bearer", "Bearer"),
        (b"Basic dXNlcjpwYXNz", "Basic dXNlcjpwYXNz"),
        (b"xBearer abc", "xBearer abc"),
    ],
)
def test_authorization_bearer_scheme_is_removed(value: bytes, sent: str) -> None:
    """§3.2 rule 5 / §10 Q7: ``^bearer[ \\t]+(.*)$`` case-insensitive; other schemes unchanged."""
    doc = build(make_plan(), make_call(headers=[(b"authorization", value)]))
    assert doc["request"]["headers"] == {"authorization": sent}


def test_repeated_request_headers_are_joined_in_order() -> None:
    """§3.2: repeated fields joined with ', ' in the order received."""
    headers = [(b"x-a", b"1"), (b"x-b", b"b"), (b"x-a", b"2"), (b"x-a", b"3")]
    doc = build(make_plan(request_headers=frozenset({b"x-a", b"x-b"})), make_call(headers=headers))
    assert doc["request"]["headers"] == {"x-a": "1, 2, 3", "x-b": "b"}


CONNECTION_LEVEL = [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                    b"upgrade"]


def test_connection_level_request_headers_are_never_sent() -> None:
    """§3.2: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade are never sent."""
    headers = [(name, b"x") for name in CONNECTION_LEVEL] + [(b"x-ok", b"1")]
    plan = make_plan(request_headers=frozenset([*CONNECTION_LEVEL, b"x-ok"]))
    assert build(plan, make_call(headers=headers))["request"] == {"headers": {"x-ok": "1"}}


def test_connection_level_response_headers_are_never_sent() -> None:
    """§3.2: also with a skip-only response configuration (every header except the skipped)."""
    plan = make_plan(Point.POST, skip_response_headers=frozenset({b"x-skip"}), send_response_headers=True)
    headers = [(name, b"x") for name in CONNECTION_LEVEL] + [(b"x-skip", b"1"), (b"x-ok", b"2")]
    doc = build(plan, make_call(), response=BackendResponse(status=200, headers=headers))
    assert doc["response"] == {"code": 200, "headers": {"x-ok": "2"}}


RESPONSE_HEADERS = [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b"3")]


@pytest.mark.parametrize(
    ("plan_fields", "expected"),
    [
        pytest.param({}, None, id="neither-nothing"),
        pytest.param({"include_response_headers": frozenset({b"x-a", b"x-missing"}), "send_response_headers": True},
                     {"x-a": "1, 3"}, id="include-only-present"),
        pytest.param({"skip_response_headers": frozenset({b"x-a"}), "send_response_headers": True},
                     {"content-type": "text/plain", "x-b": "2"}, id="skip-only-all-but-skipped"),
        pytest.param({"include_response_headers": frozenset({b"x-a", b"x-b"}),
                      "skip_response_headers": frozenset({b"x-a"}), "send_response_headers": True},
                     {"x-b": "2"}, id="both-included-minus-skipped"),
        pytest.param({"include_response_headers": frozenset({b"x-missing"}), "send_response_headers": True},
                     None, id="include-absent-omits-member"),
    ],
)
def test_response_header_selection_table(plan_fields: dict[str, Any], expected: dict[str, str] | None) -> None:
    """§3.2 response-header table."""
    doc = build(make_plan(Point.POST, **plan_fields), make_call(),
                response=BackendResponse(status=200, headers=list(RESPONSE_HEADERS)))
    if expected is None:
        assert doc["response"] == {"code": 200}
    else:
        assert doc["response"] == {"code": 200, "headers": expected}


def test_post_request_headers_come_from_the_client_request() -> None:
    """§3.1: request describes the client request as received, at both points."""
    doc = build(make_plan(Point.POST), make_call(headers=[AUTH_HEADER]), response=BackendResponse(status=204))
    assert doc["request"] == {"headers": {"authorization": BEARER}}
    assert doc["response"] == {"code": 204}


# -- §3.3 payload encoding ----------------------------------------------------------------------------------------

TEXT = "héllo wörld".encode()


@pytest.mark.parametrize(
    ("headers", "body", "as_text"),
    [
        pytest.param([(b"content-type", b"text/plain")], TEXT, True, id="text-plain"),
        pytest.param([(b"content-type", b"TEXT/HTML; charset=UTF-8")], TEXT, True, id="text-html-utf8-any-case"),
        pytest.param([(b"content-type", b'text/csv; charset="utf-8"')], TEXT, True, id="quoted-charset"),
        pytest.param([(b"content-type", b"text/plain; charset=us-ascii")], b"abc", True, id="us-ascii"),
        pytest.param([(b"content-type", b"text/plain; charset=iso-8859-1")], b"abc", False, id="latin1-charset"),
        pytest.param([(b"content-type", b"application/json")], b"{}", True, id="json"),
        pytest.param([(b"content-type", b"application/vnd.api+json")], b"{}", True, id="plus-json"),
        pytest.param([(b"content-type", b"application/javascript")], b"x", True, id="javascript"),
        pytest.param([(b"content-type", b"application/xml")], b"<a/>", True, id="xml"),
        pytest.param([(b"content-type", b"application/atom+xml")], b"<a/>", True, id="plus-xml"),
        pytest.param([(b"content-type", b"application/x-www-form-urlencoded")], b"a=1", True, id="form"),
        pytest.param([(b"content-type", b"application/yaml")], b"a: 1", True, id="yaml"),
        pytest.param([(b"content-type", b"application/x-yaml")], b"a: 1", True, id="x-yaml"),
        pytest.param([(b"content-type", b"application/graphql")], b"{a}", True, id="graphql"),
        pytest.param([(b"content-type", b"application/octet-stream")], b"abc", False, id="octet-stream"),
        pytest.param([(b"content-type", b"image/png")], b"abc", False, id="image"),
        pytest.param([(b"content-type", b"application/jsonx")], b"abc", False, id="not-json"),
        pytest.param([], b"abc", False, id="no-content-type"),
        pytest.param([(b"content-type", b"text/plain"), (b"content-encoding", b"gzip")], b"abc", False,
                     id="content-encoding-gzip"),
        pytest.param([(b"content-type", b"text/plain"), (b"content-encoding", b"identity")], b"abc", True,
                     id="content-encoding-identity"),
        pytest.param([(b"content-type", b"text/plain"), (b"content-transfer-encoding", b"binary")], b"abc", False,
                     id="content-transfer-encoding"),
        pytest.param([(b"content-type", b"text/plain")], b"\xff\xfe", False, id="invalid-utf8"),
    ],
)
def test_payload_encoding_rules(headers: list[tuple[bytes, bytes]], body: bytes, as_text: bool) -> None:
    """§3.3: text only when media type, encodings, charset and UTF-8 validity all allow it, else base64."""
    doc = build(make_plan(expand_request_payload=True), make_call(headers=headers, body=body))
    expected_payload = body.decode() if as_text else base64.b64encode(body).decode()
    assert doc["request"] == {"payload": expected_payload, "payloadLength": len(body),
                              "payloadBase64Encoded": not as_text}


def test_payload_length_counts_bytes_not_characters() -> None:
    """§3.1: payloadLength is the byte count as received."""
    doc = build(make_plan(expand_request_payload=True),
                make_call(headers=[(b"content-type", b"text/plain")], body=TEXT))
    assert doc["request"]["payloadLength"] == len(TEXT) != len(TEXT.decode())


@pytest.mark.parametrize(
    ("expand", "body"),
    [(False, b"abc"), (True, b""), (True, None)],
    ids=["not-expanded", "empty-body", "no-body"],
)
def test_request_payload_omitted(expand: bool, body: bytes | None) -> None:
    """§3.1/§3.3: the body is sent only when expanded and non-empty."""
    doc = build(make_plan(expand_request_payload=expand), make_call(body=body))
    assert "request" not in doc


def test_response_payload_sent_when_expanded_at_post() -> None:
    """§3.1: response.payload, payloadLength, payloadBase64Encoded at post with responsePayload."""
    plan = make_plan(Point.POST, expand_response_payload=True)
    response = BackendResponse(status=200, headers=[(b"content-type", b"image/gif")], body=b"GIF89a")
    doc = build(plan, make_call(), response=response)
    assert doc["response"] == {"code": 200, "payload": base64.b64encode(b"GIF89a").decode(),
                               "payloadLength": 6, "payloadBase64Encoded": True}


# -- §3.4 operation / token / routing, remoteAddr, EAVs, params --------------------------------------------------


def test_operation_shape_of_section_3_4() -> None:
    """§3.4 example: decoded query, repeated name → array, name without '=' → ''."""
    call = make_call(query=f"api_key={KEY}&tag=a&tag=b&flag")
    assert build(make_plan(expand_operation=True), call)["operation"] == {
        "httpVerb": "POST",
        "path": "/op",
        "query": {"api_key": KEY, "tag": ["a", "b"], "flag": ""},
        "uri": f"https://api.acme.com/my/op?api_key={KEY}&tag=a&tag=b&flag",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("&", None),
        ("a=1&a=2&a=3", {"a": ["1", "2", "3"]}),
        ("q=hello%20world&p=a+b&e=", {"q": "hello world", "p": "a b", "e": ""}),
        ("x=%C3%A9&y=1=2", {"x": "é", "y": "1=2"}),
    ],
)
def test_operation_query_decoding(query: str, expected: dict[str, Any] | None) -> None:
    """§3.4 operation.query: decoded; omitted when there is no query."""
    operation = build(make_plan(expand_operation=True), make_call(query=query))["operation"]
    if expected is None:
        assert "query" not in operation
    else:
        assert operation["query"] == expected


def test_operation_path_is_slash_when_nothing_follows() -> None:
    """§3.4 operation.path: '/' when nothing follows the public path; verb upper-case."""
    call = make_call(method="get", remainder="/", query="")
    assert build(make_plan(expand_operation=True), call)["operation"] == {
        "httpVerb": "GET", "path": "/", "uri": "https://api.acme.com/my/"}


TOKEN_FULL = TokenInfo(scope="orders:read orders:write", user_context="user-4711", grant_type="client_credentials",
                       expires="2025-03-24T13:48:09Z")


@pytest.mark.parametrize(
    ("expand", "token", "expected"),
    [
        (True, TOKEN_FULL, {"scope": "orders:read orders:write", "userContext": "user-4711",
                            "grantType": "client_credentials", "expires": "2025-03-24T13:48:09Z"}),
        (True, TokenInfo(scope="read"), {"scope": "read"}),
        (True, TokenInfo(), None),
        (True, None, None),
        (False, TOKEN_FULL, None),
    ],
    ids=["full", "partial", "all-empty", "no-token", "not-expanded"],
)
def test_token_member(expand: bool, token: TokenInfo | None, expected: dict[str, str] | None) -> None:
    """§3.1/§3.4 token: only when expanded and the call carries a token; members without a value omitted."""
    doc = build(make_plan(expand_token=expand), make_call(token=token))
    assert doc.get("token") == expected


def test_routing_member_is_method_and_backend_uri() -> None:
    """§3.4 routing: method and absolute URI of the backend request."""
    routing = BackendRequest(method="POST", scheme="https", host="backend.internal", port=443,
                             path_qs=f"/v1/op?api_key={KEY}&tag=a&tag=b&flag")
    doc = build(make_plan(expand_routing=True), make_call(), routing=routing)
    assert doc["routing"] == {"httpVerb": "POST",
                              "uri": f"https://backend.internal/v1/op?api_key={KEY}&tag=a&tag=b&flag"}
    routing.port = 8443
    assert build(make_plan(expand_routing=True), make_call(), routing=routing)["routing"]["uri"].startswith(
        "https://backend.internal:8443/v1/op")


def test_remote_addr_member_name_Q19() -> None:
    """§10 Q19: token remoteAddress → member remoteAddr (IPv6 as given)."""
    doc = build(make_plan(expand_remote_address=True), make_call(client_addr="2001:db8::1"))
    assert doc["remoteAddr"] == "2001:db8::1"
    assert "remoteAddress" not in doc


def test_blank_and_absent_eavs_are_not_sent() -> None:
    """§3.1: only selected, non-blank EAVs; the member is omitted when none qualifies."""
    plan = make_plan(eav_selection=("a", "b", "c"), key_eav_selection=("k",))
    doc = build(plan, make_call(app_eavs={"a": "1", "b": "  ", "z": "9"}, key_eavs={"k": ""}))
    assert doc["eavs"] == {"a": "1"}
    assert "packageKeyEAVs" not in doc


def test_anonymous_call_has_no_package_key_or_eavs() -> None:
    """§3.1: packageKey only when the call carries one."""
    doc = build(make_plan(eav_selection=("eav1",), key_eav_selection=("pkg_eav",)), make_call(key=None))
    assert doc == {"point": "PreProcessor", "synchronicity": "RequestResponse", "masheryMessageId": MESSAGE_ID,
                   "serviceId": SERVICE, "endpointId": ENDPOINT}


def test_typed_params_are_sent_as_configured() -> None:
    """§2.4 typing table: the compiled typed values are sent as they are."""
    params = {"parameter_y": True, "tier": None, "parameter_z": 1234, "ratio": 0.75, "code": "2",
              "parameter_x": "This is string"}
    assert build(make_plan(params=params), make_call())["params"] == params


@pytest.mark.parametrize(
    ("point", "mode", "point_name", "sync_name"),
    [
        (Point.PRE, Mode.REQUEST_RESPONSE, "PreProcessor", "RequestResponse"),
        (Point.PRE, Mode.EVENT, "PreProcessor", "Event"),
        (Point.POST, Mode.NON_BLOCKING, "PostProcessor", "Event"),
    ],
)
def test_point_and_synchronicity_names(point: Point, mode: Mode, point_name: str, sync_name: str) -> None:
    """§3.1: non-blocking is sent as Event."""
    doc = build(make_plan(point, mode=mode), make_call(), response=BackendResponse(status=200))
    assert (doc["point"], doc["synchronicity"]) == (point_name, sync_name)


# -- input construction errors (§5.1 P8, §5.2 Q5) ----------------------------------------------------------------


def test_input_failure_at_pre_is_400() -> None:
    """§5.1 P8: InvalidJSONInputForAWSLambda, pre-process message, 400."""
    with pytest.raises(ClientError) as caught:
        build_input(make_plan(params={"bad": object()}), make_call(), routing=None, response=None)
    assert caught.value.code is ErrorCode.INPUT_PRE
    assert caught.value.status == 400
    assert caught.value.error_message == "Error while creating json input for AWS Lambda in pre-process"


def test_input_failure_at_post_is_500() -> None:
    """§5.2 Q5: post-process message, 500 (here: no backend response given)."""
    with pytest.raises(ClientError) as caught:
        build_input(make_plan(Point.POST), make_call(), routing=None, response=None)
    assert caught.value.code is ErrorCode.INPUT_POST
    assert caught.value.status == 500


# -- §9.3 pre-flight input ----------------------------------------------------------------------------------------


def test_preflight_input_minimal() -> None:
    """§9.3: nothing specific to the request, even when the plan expands request elements."""
    plan = make_plan(expand_request_payload=True, expand_operation=True, expand_remote_address=True,
                     mode=Mode.EVENT)
    doc = orjson.loads(build_preflight_input(plan, make_call(headers=[AUTH_HEADER], body=b"x")))
    assert doc == {"point": "Preflight", "synchronicity": "RequestResponse", **COMMON}


def test_preflight_input_with_params_and_eavs() -> None:
    """§9.3: params, eavs and packageKeyEAVs when configured."""
    plan = make_plan(params=PARAMS_X, eav_selection=("eav1",), key_eav_selection=("pkg_eav",))
    doc = orjson.loads(build_preflight_input(plan, make_call()))
    assert doc == {"point": "Preflight", "synchronicity": "RequestResponse", **COMMON, "params": PARAMS_X,
                   "eavs": {"eav1": "eav_value"}, "packageKeyEAVs": {"pkg_eav": "eav_value"}}


# -- §9.1 cache key -----------------------------------------------------------------------------------------------


def _reference_key(doc: dict[str, Any]) -> str:
    canonical = {k: v for k, v in doc.items() if k != "masheryMessageId"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_cache_key_is_sha256_of_canonical_input() -> None:
    """§9.1: without masheryMessageId, sorted keys (nested too), compact, UTF-8 unescaped."""
    raw = build_input(make_plan(params={"z": "é", "a": {"y": 1, "b": 2}}, eav_selection=("eav1",)), make_call(),
                      routing=None, response=None)
    assert cache_key(raw) == _reference_key(orjson.loads(raw))


def test_cache_key_ignores_message_id_but_not_authorization() -> None:
    """§9.1: the same call under another masheryMessageId hits; another bearer token does not."""
    plan = make_plan()
    first = build_input(plan, make_call(headers=[AUTH_HEADER]), routing=None, response=None)
    other_id = build_input(plan, make_call(headers=[AUTH_HEADER], message_id="00000000-0000-4000-8000-000000000000"),
                           routing=None, response=None)
    other_token = build_input(plan, make_call(headers=[(b"authorization", b"Bearer other")]), routing=None,
                              response=None)
    assert first != other_id
    assert cache_key(first) == cache_key(other_id)
    assert cache_key(first) != cache_key(other_token)
