"""Scope, conditions and payload limits (contract §9.2, §5.1 P4/P5/P7, §5.2 Q3/Q4, §10 Q9/Q28)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sidecar_gateway.config.plan import (
    Application,
    AwsLambdaConnection,
    EndpointPlan,
    PackageKey,
    ProcessorPlan,
    ScopeElement,
    ScopeFilter,
    Stack,
    Target,
)
from sidecar_gateway.errors import ClientError, ErrorCode, Point
from sidecar_gateway.sidecar.call import BackendResponse, CallContext, ClientRequest
from sidecar_gateway.sidecar.conditions import (
    MAX_PAYLOAD_HARD_LIMIT,
    check_conditions,
    check_payload_limits,
    in_scope,
)

CONNECTION = AwsLambdaConnection(region="eu-west-1", function_arn="arn:aws:lambda:eu-west-1:123456789012:function:f")
ENDPOINT = EndpointPlan(service_id="s", endpoint_id="e", public_path="/my",
                        target=Target(scheme="https", host="backend.internal", port=443, base_path=""))
KB = 1024


def make_plan(point: Point = Point.PRE, **fields: Any) -> ProcessorPlan:
    return ProcessorPlan(service_id="s", endpoint_id="e", point=point, stack=Stack.AWS_LAMBDA, connection=CONNECTION,
                         **fields)


def make_call(*, method: str = "POST", remainder: str = "/orders/17",
              headers: list[tuple[bytes, bytes]] | None = None, body: bytes | None = None, key: str | None = "k1",
              app_eavs: dict[str, str] | None = None, key_eavs: dict[str, str] | None = None) -> CallContext:
    request = ClientRequest(method=method, scheme="https", host="api.acme.com", raw_path="/my" + remainder,
                            remainder=remainder, query_string="", client_addr="198.51.100.23",
                            headers=[(b"content-type", b"application/vnd.acme+json; v=2"), (b"x-tier", b"gold")]
                            if headers is None else headers, body=body)
    package_key = None
    if key is not None:
        app = Application(id="a", eavs={"partner_tier": "sandbox"} if app_eavs is None else app_eavs)
        package_key = PackageKey(key=key, application=app, eavs={"region": "eu"} if key_eavs is None else key_eavs)
    return CallContext(message_id="m", endpoint=ENDPOINT, request=request, package_key=package_key)


def when(element: ScopeElement, argument: str | None = None, *, pattern: str | None = None, flags: int = 0,
         values: tuple[str, ...] = ()) -> ScopeFilter:
    return ScopeFilter(negate=False, element=element, argument=argument,
                       pattern=re.compile(pattern, flags) if pattern is not None else None, values=frozenset(values))


def unless(element: ScopeElement, argument: str | None = None, **kw: Any) -> ScopeFilter:
    f = when(element, argument, **kw)
    return ScopeFilter(negate=True, element=f.element, argument=f.argument, pattern=f.pattern, values=f.values)


# -- §9.2 scope ---------------------------------------------------------------------------------------------------

E = ScopeElement
SCOPE_CASES = [
    pytest.param((), {}, True, id="no-filters"),
    # the §9.2 example
    pytest.param((when(E.REQUEST_HEADER, "content-type", pattern=r"application/(.+\+)?json(;.*)?", flags=re.I),
                  unless(E.HTTP_VERB, values=("GET", "HEAD")), unless(E.EAV, "partner_tier", values=("sandbox",))),
                 {"app_eavs": {"partner_tier": "gold"}}, True, id="example-in-scope"),
    pytest.param((when(E.REQUEST_HEADER, "content-type", pattern=r"application/(.+\+)?json(;.*)?", flags=re.I),
                  unless(E.HTTP_VERB, values=("GET", "HEAD")), unless(E.EAV, "partner_tier", values=("sandbox",))),
                 {}, False, id="example-sandbox-out"),
    pytest.param((unless(E.HTTP_VERB, values=("GET", "HEAD")),), {"method": "head"}, False, id="verb-case-insensitive"),
    pytest.param((when(E.HTTP_VERB, pattern="P.*"),), {"method": "PATCH"}, True, id="verb-regex"),
    # regex must match the whole value
    pytest.param((when(E.REQUEST_HEADER, "x-tier", pattern="gol"),), {}, False, id="regex-full-match-only"),
    pytest.param((when(E.REQUEST_HEADER, "X-Tier", pattern="GOLD", flags=re.I),), {}, True, id="regex-i-flag"),
    pytest.param((when(E.REQUEST_HEADER, "x-tier", values=("GOLD",)),), {}, False, id="literal-exact"),
    pytest.param((when(E.REQUEST_HEADER, "x-tier", values=("silver", "gold")),), {}, True, id="literal-list"),
    pytest.param((when(E.REQUEST_HEADER, "x-many", values=("a, b",)),),
                 {"headers": [(b"x-many", b"a"), (b"x-many", b"b")]}, True, id="repeated-header-joined"),
    # absent value: fails when-, passes unless-
    pytest.param((when(E.REQUEST_HEADER, "x-absent", pattern=".*"),), {}, False, id="absent-fails-when"),
    pytest.param((unless(E.REQUEST_HEADER, "x-absent", pattern=".*"),), {}, True, id="absent-passes-unless"),
    pytest.param((when(E.REQUEST_HEADER, "x-empty", pattern=".*"),), {"headers": [(b"x-empty", b"")]}, True,
                 id="empty-header-is-present"),
    pytest.param((when(E.RESOURCE_PATH, pattern="/orders/[0-9]+"),), {}, True, id="resource-path"),
    pytest.param((when(E.RESOURCE_PATH, values=("/orders",)),), {}, False, id="resource-path-literal"),
    pytest.param((when(E.PACKAGE_KEY, values=("k1", "k2")),), {}, True, id="package-key"),
    pytest.param((when(E.PACKAGE_KEY, pattern=".*"),), {"key": None}, False, id="anonymous-no-package-key"),
    pytest.param((unless(E.PACKAGE_KEY, values=("k1",)),), {"key": None}, True, id="anonymous-passes-unless"),
    pytest.param((when(E.EAV, "partner_tier", values=("sandbox",)),), {}, True, id="app-eav"),
    pytest.param((when(E.EAV, "Partner_Tier", values=("sandbox",)),), {}, False, id="eav-name-case-sensitive"),
    pytest.param((when(E.EAV, "partner_tier", pattern=".*"),), {"app_eavs": {"partner_tier": "  "}}, False,
                 id="blank-eav-is-absent"),
    pytest.param((when(E.PACKAGE_KEY_EAV, "region", values=("eu",)),), {}, True, id="key-eav"),
    pytest.param((unless(E.PACKAGE_KEY_EAV, "region", values=("eu",)),), {}, False, id="key-eav-unless"),
    pytest.param((when(E.PACKAGE_KEY_EAV, "missing", values=("eu",)),), {}, False, id="key-eav-absent"),
    pytest.param((when(E.PACKAGE_KEY, values=("k1",)), when(E.HTTP_VERB, values=("GET",))), {}, False,
                 id="every-when-must-match"),
]


@pytest.mark.parametrize(("filters", "call_fields", "expected"), SCOPE_CASES)
def test_in_scope(filters: tuple[ScopeFilter, ...], call_fields: dict[str, Any], expected: bool) -> None:
    """§9.2: every when- matches, no unless- matches; whole-value regex; absent matches nothing."""
    assert in_scope(make_plan(scope=filters), make_call(**call_fields)) is expected


# -- §5.1 P5 conditions -------------------------------------------------------------------------------------------

REQUIRE = {
    "require_request_headers": (("Authorization", b"authorization"), ("X-Trace", b"x-trace")),
    "require_eavs": ("tier", "region_code"),
    "require_key_eavs": ("pkg_a", "pkg_b"),
}
ALL_PRESENT: dict[str, Any] = {
    "headers": [(b"authorization", b"Bearer t"), (b"x-trace", b"1")],
    "app_eavs": {"tier": "gold", "region_code": "eu"},
    "key_eavs": {"pkg_a": "1", "pkg_b": "2"},
}

CONDITION_CASES = [
    pytest.param({}, None, None, id="all-present"),
    pytest.param({"headers": []}, ErrorCode.REQUIRED_HEADER, "Authorization", id="Q28-headers-first"),
    pytest.param({"headers": [(b"authorization", b"t")]}, ErrorCode.REQUIRED_HEADER, "X-Trace",
                 id="second-header"),
    pytest.param({"headers": [(b"authorization", b" \t"), (b"x-trace", b"1")]}, ErrorCode.REQUIRED_HEADER,
                 "Authorization", id="blank-header"),
    pytest.param({"headers": [(b"authorization", b""), (b"authorization", b"t"), (b"x-trace", b"1")]}, None, None,
                 id="one-non-blank-field-suffices"),
    pytest.param({"app_eavs": {}, "key_eavs": {}}, ErrorCode.REQUIRED_APP_EAV, "tier", id="Q28-app-eavs-before-key"),
    pytest.param({"app_eavs": {"tier": "gold", "region_code": " "}}, ErrorCode.REQUIRED_APP_EAV, "region_code",
                 id="blank-app-eav"),
    pytest.param({"app_eavs": {"Tier": "gold", "region_code": "eu"}}, ErrorCode.REQUIRED_APP_EAV, "tier",
                 id="eav-name-case-sensitive"),
    pytest.param({"key_eavs": {"pkg_a": "1"}}, ErrorCode.REQUIRED_KEY_EAV, "pkg_b", id="key-eav-configured-order"),
    pytest.param({"headers": [], "app_eavs": {}, "key_eavs": {}}, ErrorCode.REQUIRED_HEADER, "Authorization",
                 id="Q28-all-missing-header-reported"),
]


@pytest.mark.parametrize(("overrides", "code", "name"), CONDITION_CASES)
def test_check_conditions(overrides: dict[str, Any], code: ErrorCode | None, name: str | None) -> None:
    """§5.1 P5 / §10 Q28: headers, then application EAVs, then package-key EAVs; first failure wins."""
    call = make_call(**{**ALL_PRESENT, **overrides})
    if code is None:
        check_conditions(make_plan(**REQUIRE), call)
        return
    with pytest.raises(ClientError) as caught:
        check_conditions(make_plan(**REQUIRE), call)
    assert caught.value.code is code
    assert caught.value.status == 400
    assert name in caught.value.error_message


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ({"require_request_headers": (("Authorization", b"authorization"),)}, ErrorCode.REQUIRED_HEADER,
         "Required Header - Authorization Unavailable"),
        ({"require_eavs": ("tier",)}, ErrorCode.REQUIRED_APP_EAV, "Required Application EAV - tier Unavailable"),
        ({"require_key_eavs": ("pkg",)}, ErrorCode.REQUIRED_KEY_EAV, "Required Package Key EAV - pkg Unavailable"),
    ],
)
def test_condition_messages(fields: dict[str, Any], code: ErrorCode, message: str) -> None:
    """§5.1 P5 / §6.1: the documented messages with the name as configured."""
    with pytest.raises(ClientError) as caught:
        check_conditions(make_plan(**fields), make_call(headers=[], app_eavs={}, key_eavs={}))
    assert (caught.value.code, caught.value.error_message) == (code, message)


@pytest.mark.parametrize(("fields", "code"), [({"require_eavs": ("tier",)}, ErrorCode.REQUIRED_APP_EAV),
                                              ({"require_key_eavs": ("pkg",)}, ErrorCode.REQUIRED_KEY_EAV)])
def test_anonymous_call_fails_required_eavs(fields: dict[str, Any], code: ErrorCode) -> None:
    """An anonymous call (no package key) has no EAVs, so every require-*eavs fails."""
    with pytest.raises(ClientError) as caught:
        check_conditions(make_plan(**fields), make_call(key=None))
    assert caught.value.code is code


def test_no_conditions_configured_passes_anonymous_call() -> None:
    """Nothing required, nothing checked."""
    check_conditions(make_plan(), make_call(key=None, headers=[]))


# -- §5.1 P7 / §5.2 Q4 payload limits -----------------------------------------------------------------------------

MB = MAX_PAYLOAD_HARD_LIMIT
PAYLOAD_CASES = [
    # (plan fields, request body, response body, expected: True/False or ErrorCode)
    pytest.param({}, b"x" * (MB + 1), None, True, id="not-expanded-never-checked"),
    pytest.param({"expand_request_payload": True}, b"", None, True, id="empty-body"),
    pytest.param({"expand_request_payload": True}, None, None, True, id="no-body"),
    pytest.param({"expand_request_payload": True}, b"x" * (10 * KB), None, True, id="at-default-limit"),
    pytest.param({"expand_request_payload": True}, b"x" * (10 * KB + 1), None, ErrorCode.PAYLOAD_OVER_LIMIT,
                 id="over-limit-blocking-413"),
    pytest.param({"expand_request_payload": True, "payload_blocking": False}, b"x" * (10 * KB + 1), None, False,
                 id="over-limit-filtering-skip"),
    pytest.param({"expand_request_payload": True, "payload_blocking": False}, b"x" * (MB + 1), None,
                 ErrorCode.PAYLOAD_OVER_1MB, id="over-1mb-always-413-filtering"),
    pytest.param({"expand_request_payload": True}, b"x" * (MB + 1), None, ErrorCode.PAYLOAD_OVER_1MB,
                 id="over-1mb-blocking"),
    pytest.param({"expand_request_payload": True, "max_payload_bytes": MB}, b"x" * MB, None, True,
                 id="exactly-1mb-allowed"),
    pytest.param({"expand_response_payload": True}, b"x" * MB, b"y" * (10 * KB + 1), ErrorCode.PAYLOAD_OVER_LIMIT,
                 id="post-response-only-expanded"),
    pytest.param({"expand_request_payload": True, "expand_response_payload": True}, b"x",
                 b"y" * (10 * KB + 1), ErrorCode.PAYLOAD_OVER_LIMIT, id="post-response-over"),
    pytest.param({"expand_request_payload": True, "expand_response_payload": True, "payload_blocking": False},
                 b"x" * (10 * KB + 1), b"y", False, id="post-request-over-filtering"),
    pytest.param({"expand_request_payload": True, "expand_response_payload": True, "payload_blocking": False},
                 b"x" * (10 * KB + 1), b"y" * (MB + 1), ErrorCode.PAYLOAD_OVER_1MB, id="post-1mb-beats-filtering"),
    pytest.param({"expand_response_payload": True}, None, b"", True, id="post-empty-response"),
]


@pytest.mark.parametrize(("fields", "request_body", "response_body", "expected"), PAYLOAD_CASES)
def test_check_payload_limits(fields: dict[str, Any], request_body: bytes | None, response_body: bytes | None,
                              expected: bool | ErrorCode) -> None:
    """§5.1 P7 / §5.2 Q4 / §10 Q9: blocking → 413, filtering → skip, > 1 MB → 413 always."""
    point = Point.POST if response_body is not None else Point.PRE
    plan = make_plan(point, **fields)
    call = make_call(body=request_body)
    response = BackendResponse(status=200, body=response_body) if response_body is not None else None
    if isinstance(expected, ErrorCode):
        with pytest.raises(ClientError) as caught:
            check_payload_limits(plan, call, response)
        assert caught.value.code is expected
        assert caught.value.status == 413
    else:
        assert check_payload_limits(plan, call, response) is expected


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (ErrorCode.PAYLOAD_OVER_LIMIT, "Payload length is more than max allowed payload"),
        (ErrorCode.PAYLOAD_OVER_1MB, "Payload length is more than 1MB."),
    ],
)
def test_payload_messages(code: ErrorCode, message: str) -> None:
    """§5.1 P7: documented messages."""
    size = MB + 1 if code is ErrorCode.PAYLOAD_OVER_1MB else 10 * KB + 1
    with pytest.raises(ClientError) as caught:
        check_payload_limits(make_plan(expand_request_payload=True), make_call(body=b"x" * size), None)
    assert caught.value.error_message == message
