"""Validation and compilation of processor configurations into ``ProcessorPlan`` (contract §2, §7.3, §9.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar_gateway.config.plan import (
    AwsLambdaConnection,
    HttpConnection,
    Mode,
    ProcessorPlan,
    PythonConnection,
    ScopeElement,
    SidecarSettings,
    Stack,
)
from sidecar_gateway.config.problems import Level, Problem
from sidecar_gateway.config.processor import check_timeout_sum, compile_processor
from sidecar_gateway.errors import Point

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE, ENDPOINT = "orders-svc", "create-order"
WHERE = f"{SERVICE}/{ENDPOINT}"
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:orders-authz"
ROLE = "arn:aws:iam::123456789012:role/tibco_sidecar_connector_orders"
# A valid aws-lambda connection signed with the gateway's own credentials (no role keys needed).
LAMBDA = f"region: eu-west-1\nfunctionARN: {ARN}\nuseAssumeRole: false\n"
# A valid aws-lambda connection with an assumed role.
LAMBDA_ROLE = f"region: eu-west-1\nfunctionARN: {ARN}\nroleARN: {ROLE}\nexternalIdKey: acme/prod/trustKey\n"
HTTP = "stack: http\nurl: https://sidecar.internal/authz\n"
PYTHON = "stack: python\nhandler: tests.support.handlers:allow\n"

EXAMPLE_2_5 = """\
# authorisation sidecar for POST /orders
region: eu-west-1
functionARN: arn:aws:lambda:eu-west-1:123456789012:function:orders-authz
roleARN: arn:aws:iam::123456789012:role/tibco_sidecar_connector_orders
externalIdKey: acme/prod/trustKey
synchronicity: request-response
require-request-headers: Authorization
include-eavs: tier | region_code
expand-input: operation, requestPayload
max-payload-size: 50
sidecar-param-maxItems: 25
timeout: 800
failSafe: false
"""


@pytest.fixture(autouse=True)
def _handlers_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tests.support.handlers` is importable whatever directory pytest was started from."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))


def compile_text(
    text: str,
    point: Point = Point.PRE,
    *,
    settings: SidecarSettings | None = None,
    environ: dict[str, str] | None = None,
    endpoint_timeout_s: float = 30.0,
) -> tuple[ProcessorPlan | None, list[Problem]]:
    return compile_processor(
        text,
        point=point,
        service_id=SERVICE,
        endpoint_id=ENDPOINT,
        endpoint_timeout_s=endpoint_timeout_s,
        settings=settings or SidecarSettings(),
        environ=environ or {},
    )


def compile_ok(text: str, point: Point = Point.PRE, **kwargs: Any) -> ProcessorPlan:
    plan, problems = compile_text(text, point, **kwargs)
    assert problems == [], [p.render() for p in problems]
    assert plan is not None
    return plan


def triples(problems: list[Problem]) -> list[tuple[Level, str, str]]:
    return [(p.level, p.key, p.message) for p in problems]


def error(key: str, message: str) -> tuple[Level, str, str]:
    return (Level.ERROR, key, message)


def warning(key: str, message: str) -> tuple[Level, str, str]:
    return (Level.WARNING, key, message)


def assert_only_problem(text: str, expected: tuple[Level, str, str], point: Point = Point.PRE, **kwargs: Any) -> None:
    plan, problems = compile_text(text, point, **kwargs)
    assert triples(problems) == [expected]
    assert (plan is None) == (expected[0] is Level.ERROR)
    assert all(p.where == WHERE and p.point == point.value for p in problems)


# ---------------------------------------------------------------------------------------------------------------
# §2.2 messages, one test each
# ---------------------------------------------------------------------------------------------------------------


def test_missing_region_is_reported_as_documented() -> None:
    """§2.2 row 1: `region: AWS Region Not Specified`, rendered in the `check` format."""
    plan, problems = compile_text(f"functionARN: {ARN}\nuseAssumeRole: false")
    assert plan is None
    assert [p.render() for p in problems] == ["ERROR   orders-svc/create-order  pre   region: AWS Region Not Specified"]


def test_missing_function_arn_is_reported_as_documented() -> None:
    """§2.2 row 2."""
    assert_only_problem("region: eu-west-1\nuseAssumeRole: false", error("functionARN", "Function ARN Not Specified"))


def test_missing_role_arn_is_an_error_while_assume_role_is_on() -> None:
    """§2.2 row 3: useAssumeRole defaults to true, so roleARN is required."""
    text = f"region: eu-west-1\nfunctionARN: {ARN}\nexternalIdKey: acme/prod/trustKey"
    assert_only_problem(text, error("roleARN", "Role ARN Not Specified"))


def test_missing_external_id_key_is_an_error_while_assume_role_is_on() -> None:
    """§2.2 row 4."""
    text = f"region: eu-west-1\nfunctionARN: {ARN}\nroleARN: {ROLE}\nuseAssumeRole: TRUE"
    assert_only_problem(text, error("externalIdKey", "External ID Not Specified"))


def test_undefined_key_is_reported_as_written() -> None:
    """§2.1 rule 9, §2.2: `Unknown key` with the key as written."""
    assert_only_problem(LAMBDA + "Max-Payload-Sise: 10", error("Max-Payload-Sise", "Unknown key"))


def test_repeated_key_is_a_duplicate() -> None:
    """§2.1 rule 5, §2.2: `Duplicate key`."""
    assert_only_problem(LAMBDA + "failSafe: true\nfailsafe: false", error("failsafe", "Duplicate key"))


def test_line_without_colon_is_malformed() -> None:
    """§2.2: `line <n>: Malformed line, expected key: value`."""
    assert_only_problem(LAMBDA + "failSafe true", error("line 4", "Malformed line, expected key: value"))


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("timeout: 0", "timeout", "integer number of milliseconds, at least 1"),
        ("timeout: 1.5", "timeout", "integer number of milliseconds, at least 1"),
        ("timeout: -5", "timeout", "integer number of milliseconds, at least 1"),
        ("failSafe: yes", "failSafe", "true or false"),
        ("enable_error_set: 1", "enable_error_set", "true or false"),
        ("output-cache: on", "output-cache", "true or false"),
        ("shadow: maybe", "shadow", "true or false"),
        ("preflight: no", "preflight", "true or false"),
        ("useAssumeRole: no", "useAssumeRole", "true or false"),
        ("max-payload-size: 0", "max-payload-size",
         "size from 1 byte to 1024 KB, as KB (50) or with unit b, kb or mb (512b, 20kb, 1mb)"),
        ("max-payload-size: 10 gb", "max-payload-size",
         "size from 1 byte to 1024 KB, as KB (50) or with unit b, kb or mb (512b, 20kb, 1mb)"),
        ("max-payload-size: ten", "max-payload-size",
         "size from 1 byte to 1024 KB, as KB (50) or with unit b, kb or mb (512b, 20kb, 1mb)"),
        ("max-payload-condition: drop", "max-payload-condition", "blocking or filtering"),
        ("preflight-ttl: 86401", "preflight-ttl", "integer number of seconds from 0 to 86400"),
        ("preflight-ttl: -1", "preflight-ttl", "integer number of seconds from 0 to 86400"),
        ("stack: grpc", "stack", "aws-lambda, http or python"),
        ("include-request-headers: X Trace", "include-request-headers", "list of header names (RFC 9110 tokens)"),
        ("sidecar-param-bad name: 1", "sidecar-param-bad name",
         "parameter name of 1-64 characters from A-Z a-z 0-9 _ . -"),
        ("sidecar-param-: 1", "sidecar-param-", "parameter name of 1-64 characters from A-Z a-z 0-9 _ . -"),
        (f"sidecar-param-{'p' * 65}: 1", f"sidecar-param-{'p' * 65}",
         "parameter name of 1-64 characters from A-Z a-z 0-9 _ . -"),
    ],
)
def test_value_breaking_its_rule_is_invalid(line: str, key: str, expected: str) -> None:
    """§2.2: `Invalid value: <what was expected>` under the key's contract spelling."""
    text = LAMBDA + line if not line.startswith("useAssumeRole") else f"region: eu-west-1\nfunctionARN: {ARN}\n{line}"
    assert_only_problem(text, error(key, f"Invalid value: {expected}"))


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("region: EU-WEST-1", "region", "AWS region such as eu-west-1"),
        ("sessionName: a", "sessionName", "2-64 characters from A-Z a-z 0-9 _ + = , . @ -"),
        ("sessionName: has space", "sessionName", "2-64 characters from A-Z a-z 0-9 _ + = , . @ -"),
        (f"sessionName: {'s' * 65}", "sessionName", "2-64 characters from A-Z a-z 0-9 _ + = , . @ -"),
        ("expirationDuration: 14", "expirationDuration", "integer number of minutes from 15 to 60"),
        ("expirationDuration: 61", "expirationDuration", "integer number of minutes from 15 to 60"),
    ],
)
def test_connection_value_breaking_its_rule_is_invalid(line: str, key: str, expected: str) -> None:
    """§2.3 value rules for region, sessionName and expirationDuration."""
    base = LAMBDA_ROLE.replace("region: eu-west-1\n", "") if key == "region" else LAMBDA_ROLE
    text = base + line
    plan, problems = compile_text(text)
    assert plan is None
    assert error(key, f"Invalid value: {expected}") in triples(problems)


@pytest.mark.parametrize("value", ["acme prod", "", "a" * 2049, "acme:prod"])
def test_external_id_key_outside_its_charset_is_invalid(value: str) -> None:
    """§2.3 externalIdKey: 1–2048 characters from A-Z a-z 0-9 _ . - /."""
    text = f"region: eu-west-1\nfunctionARN: {ARN}\nroleARN: {ROLE}\nexternalIdKey: {value}"
    expected = (
        error("externalIdKey", "External ID Not Specified") if value == ""
        else error("externalIdKey", "Invalid value: 1-2048 characters from A-Z a-z 0-9 _ . - /")
    )
    assert_only_problem(text, expected)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:lambda:eu-west-1:12345678901:function:fn",  # 11 digits
        "arn:aws:lambda:eu-west-1:123456789012:fn",
        "arn:aws:s3:eu-west-1:123456789012:function:fn",
        "arn:aws:lambda:eu-west-1:123456789012:function:" + "f" * 65,
        "arn:aws:lambda:eu-west-1:123456789012:function:fn:bad.qualifier",
        "orders-authz",
    ],
)
def test_function_arn_of_wrong_shape_is_invalid(arn: str) -> None:
    """§2.3 functionARN grammar → `Invalid Function ARN`."""
    assert_only_problem(f"region: eu-west-1\nfunctionARN: {arn}\nuseAssumeRole: false",
                        error("functionARN", "Invalid Function ARN"))


def test_function_arn_in_another_region_is_refused() -> None:
    """§2.3: the ARN's region MUST equal `region`."""
    text = f"region: eu-central-1\nfunctionARN: {ARN}\nuseAssumeRole: false"
    assert_only_problem(text, error("functionARN", "Function ARN region does not match region"))


@pytest.mark.parametrize(
    "role",
    [
        "arn:aws:iam::123456789012:user/someone",
        "arn:aws:iam::12345678901:role/r",
        "arn:aws:lambda:eu-west-1:123456789012:function:fn",
        "tibco_sidecar_connector_orders",
    ],
)
def test_role_arn_that_is_not_an_iam_role_is_invalid(role: str) -> None:
    """§7.3: after normalisation the ARN must be an IAM role ARN."""
    text = LAMBDA_ROLE.replace(ROLE, role)
    assert_only_problem(text, error("roleARN", "Invalid Role ARN"))


def test_role_name_without_permitted_prefix_is_refused() -> None:
    """§7.3 allowed_role_prefixes: the message lists the prefixes joined with ', '."""
    settings = SidecarSettings(allowed_role_prefixes=("Boomi_sidecar_connector", "acme_"))
    plan, problems = compile_text(LAMBDA_ROLE, settings=settings)
    assert plan is None
    assert [p.render() for p in problems] == [
        "ERROR   orders-svc/create-order  pre   roleARN: "
        "Role name must start with one of: Boomi_sidecar_connector, acme_"
    ]


def test_role_name_prefix_check_is_case_sensitive_and_uses_the_last_path_segment() -> None:
    """§7.3: prefix compared case-sensitively against the role name (last segment)."""
    settings = SidecarSettings(allowed_role_prefixes=("tibco_sidecar_connector",))
    assert compile_ok(LAMBDA_ROLE.replace("role/", "role/team/a/"), settings=settings)
    text = LAMBDA_ROLE.replace("tibco_sidecar", "TIBCO_sidecar")
    assert_only_problem(text, error("roleARN", "Role name must start with one of: tibco_sidecar_connector"),
                        settings=settings)


@pytest.mark.parametrize("size", ["1025", "1025kb", "2mb", "1048577b", "1025 KB"])
def test_payload_size_above_one_megabyte_has_its_own_message(size: str) -> None:
    """§2.2: `max-payload-size must not exceed 1024 KB`."""
    assert_only_problem(LAMBDA + f"max-payload-size: {size}",
                        error("max-payload-size", "max-payload-size must not exceed 1024 KB"))


def test_unknown_expand_input_tokens_are_each_reported() -> None:
    """§2.2: `Unknown expand-input element: <token>`, once per unknown token."""
    plan, problems = compile_text(LAMBDA + "expand-input: operation, headers | requestPayload, remoteAddr")
    assert plan is None
    assert triples(problems) == [
        error("expand-input", "Unknown expand-input element: headers"),
        error("expand-input", "Unknown expand-input element: remoteAddr"),
    ]


@pytest.mark.parametrize(
    ("text", "key", "stack"),
    [
        (HTTP + "region: eu-west-1", "region", "http"),
        (HTTP + f"functionARN: {ARN}", "functionARN", "http"),
        (PYTHON + "useAssumeRole: false", "useAssumeRole", "python"),
        (PYTHON + "sessionName: abc", "sessionName", "python"),
        (LAMBDA + "url: https://x", "url", "aws-lambda"),
        (LAMBDA + "header.X-Api-Key: k", "header.X-Api-Key", "aws-lambda"),
        (LAMBDA + "handler: tests.support.handlers:allow", "handler", "aws-lambda"),
        (HTTP + "handler: tests.support.handlers:allow", "handler", "http"),
        (PYTHON + "url: https://x", "url", "python"),
    ],
)
def test_key_of_another_stack_is_refused(text: str, key: str, stack: str) -> None:
    """§2.5 stack: connection keys only with aws-lambda, url/header.* only with http, handler only with python."""
    assert_only_problem(text, error(key, f"Key not used by stack {stack}"))


@pytest.mark.parametrize("line", ["preflight: true", "preflight-ttl: 60", "Preflight-TTL: 60"])
def test_preflight_keys_are_refused_at_post(line: str) -> None:
    """§2.5: preflight and preflight-ttl are pre-only."""
    key = "preflight" if line.startswith("preflight:") else "preflight-ttl"
    assert_only_problem(LAMBDA + line, error(key, "Key not allowed at post-processing"), Point.POST)


def test_http_stack_without_url_is_refused() -> None:
    """§2.5: `URL Not Specified`."""
    assert_only_problem("stack: http", error("url", "URL Not Specified"))


def test_python_stack_without_handler_is_refused() -> None:
    """§2.5: `Handler Not Specified`."""
    assert_only_problem("stack: python\nhandler:", error("handler", "Handler Not Specified"))


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        ("tests.support.no_such_module:allow", "ModuleNotFoundError: No module named 'tests.support.no_such_module'"),
        ("tests.support.handlers:missing",
         "AttributeError: module 'tests.support.handlers' has no attribute 'missing'"),
        ("tests.support.handlers:NOT_CALLABLE", "tests.support.handlers:NOT_CALLABLE is not callable"),
    ],
)
def test_handler_that_cannot_be_imported_or_called_is_refused(handler: str, reason: str) -> None:
    """§2.5 handler: imported at load time; the attribute MUST be callable."""
    assert_only_problem(f"stack: python\nhandler: {handler}", error("handler", f"Handler cannot be loaded: {reason}"))


def test_handler_not_in_module_colon_function_form_is_invalid() -> None:
    """§2.5 handler: `package.module:function`."""
    assert_only_problem("stack: python\nhandler: tests.support.handlers.allow",
                        error("handler", "Invalid value: package.module:function"))


def test_scope_regex_that_does_not_compile_is_refused() -> None:
    """§2.2: `Invalid regular expression: <reason>` under the key."""
    plan, problems = compile_text(LAMBDA + "when-requestHeader(Content-Type): ~/application/(json/i")
    assert plan is None
    [problem] = problems
    assert (problem.level, problem.key) == (Level.ERROR, "when-requestHeader(Content-Type)")
    assert problem.message.startswith("Invalid regular expression: missing ), unterminated subpattern")


def test_unset_environment_variable_in_static_header_is_refused() -> None:
    """§2.5 header.<name>: each `${VAR}` must be set at load time."""
    text = HTTP + "header.Authorization: Bearer ${SIDECAR_TOKEN}"
    assert_only_problem(text, error("header.Authorization", "Environment variable SIDECAR_TOKEN is not set"))


@pytest.mark.parametrize("mode", ["event", "Event", "non-blocking"])
def test_shadow_needs_request_response(mode: str) -> None:
    """§2.5 shadow: requires request-response synchronicity."""
    text = LAMBDA + f"shadow: true\nsynchronicity: {mode}"
    assert_only_problem(text, error("shadow", "Shadow mode requires request-response synchronicity"))


def test_unknown_synchronicity_warns_and_falls_back_to_request_response() -> None:
    """§2.2 warning, §10 Q3: the plan is still built, in request-response mode."""
    plan, problems = compile_text(LAMBDA + "synchronicity: fire-and-forget")
    assert [p.render() for p in problems] == [
        "WARNING orders-svc/create-order  pre   synchronicity: Unknown synchronicity, request-response will be used"
    ]
    assert plan is not None
    assert plan.mode is Mode.REQUEST_RESPONSE


def test_response_header_key_at_pre_warns_and_is_ignored() -> None:
    """§2.2 example line, §10 Q5: response-header keys are ignored at pre."""
    plan, problems = compile_text(LAMBDA + "include-response-headers: header_b")
    assert [p.render() for p in problems] == [
        "WARNING orders-svc/create-order  pre   include-response-headers: Key ignored at pre-processing"
    ]
    assert plan is not None
    assert plan.include_response_headers is None
    assert plan.send_response_headers is False


def test_skip_response_headers_at_pre_warns() -> None:
    """§2.4: skip-response-headers is ignored at pre, even with a value that would be invalid at post."""
    assert_only_problem(LAMBDA + "skip-response-headers: not a token",
                        warning("skip-response-headers", "Key ignored at pre-processing"))


def test_response_payload_at_pre_warns_and_is_not_expanded() -> None:
    """§2.4 expand-input, §10 Q5: responsePayload is a post token."""
    plan, problems = compile_text(LAMBDA + "expand-input: responsePayload, requestPayload")
    assert triples(problems) == [warning("expand-input", "Key ignored at pre-processing")]
    assert plan is not None
    assert (plan.expand_response_payload, plan.expand_request_payload) == (False, True)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (f"roleARN: {ROLE}", "roleARN"),
        ("externalIdKey: acme/prod/trustKey", "externalIdKey"),
        ("sessionName: my-session", "sessionName"),
        ("expirationDuration: 30", "expirationDuration"),
    ],
)
def test_role_keys_warn_while_assume_role_is_off(line: str, key: str) -> None:
    """§2.3 useAssumeRole false: role keys are ignored with a warning."""
    plan, problems = compile_text(LAMBDA + line)
    assert triples(problems) == [warning(key, "Key ignored when useAssumeRole is false")]
    assert plan is not None
    assert isinstance(plan.connection, AwsLambdaConnection)
    assert plan.connection.role_arn is None and plan.connection.external_id_key is None


def test_role_key_ignored_while_assume_role_is_off_is_not_validated() -> None:
    """An ignored key's value is not checked (it is not used)."""
    assert_only_problem(LAMBDA + "roleARN: not-an-arn", warning("roleARN", "Key ignored when useAssumeRole is false"))


# ---------------------------------------------------------------------------------------------------------------
# Timeout sum (§2.2)
# ---------------------------------------------------------------------------------------------------------------


def plan_with_timeout(point: Point, timeout_ms: int | None) -> ProcessorPlan:
    line = f"timeout: {timeout_ms}\n" if timeout_ms is not None else ""
    return compile_ok(LAMBDA + line, point)


def sum_problems(pre: ProcessorPlan | None, post: ProcessorPlan | None, endpoint_timeout_s: float) -> list[Problem]:
    return check_timeout_sum(pre, post, endpoint_timeout_s=endpoint_timeout_s, service_id=SERVICE,
                             endpoint_id=ENDPOINT)


def test_timeout_sum_above_endpoint_timeout_is_reported_on_post_when_both_are_set() -> None:
    """§2.2: reported on post when both pre and post have a timeout."""
    pre, post = plan_with_timeout(Point.PRE, 600), plan_with_timeout(Point.POST, 600)
    assert [p.render() for p in sum_problems(pre, post, 1.0)] == [
        "ERROR   orders-svc/create-order  post  timeout: Sidecar Connector timeout is greater than endpoint timeout"
    ]


@pytest.mark.parametrize(("pre_ms", "post_ms", "point"), [(1500, None, "pre"), (None, 1500, "post")])
def test_timeout_sum_is_reported_on_the_point_that_has_a_timeout(pre_ms: int | None, post_ms: int | None,
                                                                   point: str) -> None:
    """§2.2: a point without timeout adds nothing; the problem goes to the point that has one."""
    problems = sum_problems(plan_with_timeout(Point.PRE, pre_ms), plan_with_timeout(Point.POST, post_ms), 1.0)
    assert [(p.key, p.point, p.message) for p in problems] == [
        ("timeout", point, "Sidecar Connector timeout is greater than endpoint timeout")
    ]


@pytest.mark.parametrize(
    ("pre_ms", "post_ms", "endpoint_s"),
    [(500, 500, 1.0), (None, None, 0.001), (1000, None, 1.0), (None, None, 30.0)],
)
def test_timeout_sum_within_endpoint_timeout_is_accepted(pre_ms: int | None, post_ms: int | None,
                                                         endpoint_s: float) -> None:
    """§2.2: equal to the endpoint timeout is fine; unset timeouts add nothing."""
    pre, post = plan_with_timeout(Point.PRE, pre_ms), plan_with_timeout(Point.POST, post_ms)
    assert sum_problems(pre, post, endpoint_s) == []


def test_timeout_sum_with_a_missing_processor_counts_only_the_other() -> None:
    """An endpoint may have only one processor (§1)."""
    assert sum_problems(None, plan_with_timeout(Point.POST, 2000), 1.0)[0].point == "post"
    assert sum_problems(None, None, 1.0) == []


# ---------------------------------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------------------------------


def test_contract_example_compiles_to_the_expected_plan() -> None:
    """§2.5 worked example: every key lands in its plan field."""
    plan = compile_ok(EXAMPLE_2_5, endpoint_timeout_s=5.0)
    assert plan.service_id == SERVICE and plan.endpoint_id == ENDPOINT and plan.point is Point.PRE
    assert plan.stack is Stack.AWS_LAMBDA
    assert plan.connection == AwsLambdaConnection(
        region="eu-west-1",
        function_arn=ARN,
        use_assume_role=True,
        role_arn=ROLE,
        external_id_key="acme/prod/trustKey",
        session_name="sidecar-gateway",
        expiration_minutes=60,
    )
    assert plan.mode is Mode.REQUEST_RESPONSE
    assert plan.request_headers == frozenset({b"authorization"})
    assert plan.require_request_headers == (("Authorization", b"authorization"),)
    assert plan.eav_selection == ("tier", "region_code")
    assert plan.require_eavs == () and plan.key_eav_selection == ()
    assert (plan.expand_operation, plan.expand_request_payload) == (True, True)
    assert (plan.expand_remote_address, plan.expand_token, plan.expand_routing) == (False, False, False)
    assert plan.max_payload_bytes == 50 * 1024 and plan.payload_blocking
    assert dict(plan.params) == {"maxItems": 25}
    assert (plan.timeout_ms, plan.deadline_s) == (800, 0.8)
    assert plan.fail_safe is False
    assert (plan.output_cache, plan.preflight, plan.preflight_ttl_s, plan.shadow) == (True, False, 300, False)


def test_defaults_when_only_connection_keys_are_given() -> None:
    """§2.4/§2.5 defaults; deadline is the endpoint timeout without `timeout` (§5.3)."""
    plan = compile_ok(LAMBDA, endpoint_timeout_s=12.5)
    assert plan.mode is Mode.REQUEST_RESPONSE
    assert plan.request_headers == frozenset({b"authorization"})
    assert plan.max_payload_bytes == 10 * 1024 and plan.payload_blocking
    assert (plan.timeout_ms, plan.deadline_s) == (None, 12.5)
    assert dict(plan.params) == {} and plan.scope == ()
    assert (plan.fail_safe, plan.enable_error_set, plan.output_cache) == (False, False, True)


def test_compilation_returns_no_plan_and_every_problem() -> None:
    """§2.2: every problem is reported, and one ERROR is enough to refuse the plan."""
    text = "\n".join([
        "region: eu-west-1",
        "timeout: soon",
        "failSafe: perhaps",
        "whatever: 1",
        "no colon",
        "synchronicity: sometimes",
    ])
    plan, problems = compile_text(text)
    assert plan is None
    assert set(triples(problems)) == {
        error("line 5", "Malformed line, expected key: value"),
        error("timeout", "Invalid value: integer number of milliseconds, at least 1"),
        error("failSafe", "Invalid value: true or false"),
        error("whatever", "Unknown key"),
        warning("synchronicity", "Unknown synchronicity, request-response will be used"),
        error("functionARN", "Function ARN Not Specified"),
        error("roleARN", "Role ARN Not Specified"),
        error("externalIdKey", "External ID Not Specified"),
    }
    assert len(problems) == 8


def test_invalid_point_is_a_programming_error() -> None:
    """Only pre and post have processor configurations (§1)."""
    with pytest.raises(ValueError):
        compile_text(LAMBDA, Point.PREFLIGHT)


@pytest.mark.parametrize(
    ("line", "attribute", "value"),
    [
        ("failSafe: true", "fail_safe", True),
        ("failsafe: TRUE", "fail_safe", True),
        ("FAILSAFE: False", "fail_safe", False),
        ("Synchronicity: Event", "mode", Mode.EVENT),
        ("synchronicity: RequestResponse", "mode", Mode.REQUEST_RESPONSE),
        ("synchronicity: EVENT", "mode", Mode.EVENT),
        ("synchronicity: Non-Blocking", "mode", Mode.NON_BLOCKING),
        ("Max-Payload-Condition: Filtering", "payload_blocking", False),
        ("max-payload-condition: BLOCKING", "payload_blocking", True),
        ("Enable_Error_Set: true", "enable_error_set", True),
        ("OUTPUT-CACHE: false", "output_cache", False),
        ("Preflight: True", "preflight", True),
        ("preflight-TTL: 0", "preflight_ttl_s", 0),
        ("preflight-ttl: 86400", "preflight_ttl_s", 86400),
        ("Shadow: true", "shadow", True),
        ("TimeOut: 250", "timeout_ms", 250),
        ("EXPAND-INPUT: REMOTEADDRESS", "expand_remote_address", True),
    ],
)
def test_keys_and_enumerated_values_are_case_insensitive(line: str, attribute: str, value: Any) -> None:
    """§2.1 rules 4 and 6 (§10 Q23)."""
    assert getattr(compile_ok(LAMBDA + line), attribute) == value


def test_external_id_key_spelling_variants_are_the_same_key() -> None:
    """§10 Q23: externalIdKey = externalIDKey; the value keeps its spelling."""
    text = f"region: eu-west-1\nfunctionARN: {ARN}\nroleARN: {ROLE}\nexternalIDKey: Acme/Trust_Key.1"
    connection = compile_ok(text).connection
    assert isinstance(connection, AwsLambdaConnection) and connection.external_id_key == "Acme/Trust_Key.1"


def test_enable_error_set_with_hyphens_is_an_unknown_key() -> None:
    """§10 Q23: `enable_error_set` is spelled with underscores."""
    assert_only_problem(LAMBDA + "enable-error-set: true", error("enable-error-set", "Unknown key"))


def test_empty_value_is_the_same_as_an_absent_key() -> None:
    """§2.1 rule 8: `timeout:` is no timeout; `region:` is a missing region."""
    plan = compile_ok(LAMBDA + "timeout:\nfailSafe:   \ninclude-request-headers:", endpoint_timeout_s=3.0)
    assert (plan.timeout_ms, plan.deadline_s, plan.fail_safe) == (None, 3.0, False)
    assert plan.request_headers == frozenset({b"authorization"})
    assert_only_problem(f"region:\nfunctionARN: {ARN}\nuseAssumeRole: false",
                        error("region", "AWS Region Not Specified"))


@pytest.mark.parametrize(
    ("lines", "selected", "required"),
    [
        ("", {b"authorization"}, ()),
        ("include-request-headers: Header2", {b"header2"}, ()),
        (
            "require-request-headers: Authorization\ninclude-request-headers: Header1, Header2\n"
            "skip-request-headers: Header1, Authorization",
            {b"header2"},
            (("Authorization", b"authorization"),),
        ),
        ("skip-request-headers: Authorization", set(), ()),
        ("include-request-headers: X-A | x-a, X-B,, |X-C ", {b"x-a", b"x-b", b"x-c"}, ()),
        (
            "require-request-headers: X-Trace, x-trace, X-Tenant",
            {b"x-trace", b"x-tenant"},
            (("X-Trace", b"x-trace"), ("X-Tenant", b"x-tenant")),
        ),
        ("include-request-headers: , |", {b"authorization"}, ()),
    ],
)
def test_request_header_selection(lines: str, selected: set[bytes], required: tuple[tuple[str, bytes], ...]) -> None:
    """§3.2: (include ∪ require) − skip, default {authorization}; lists split on , and |, deduplicated caselessly."""
    plan = compile_ok(LAMBDA + lines)
    assert plan.request_headers == frozenset(selected)
    assert plan.require_request_headers == required


@pytest.mark.parametrize(
    ("lines", "include", "skip", "send"),
    [
        ("", None, frozenset(), False),
        ("include-response-headers: header_b, Content-Type", frozenset({b"header_b", b"content-type"}), frozenset(),
         True),
        ("skip-response-headers: Set-Cookie", None, frozenset({b"set-cookie"}), True),
        ("include-response-headers: A, B\nskip-response-headers: b", frozenset({b"a", b"b"}), frozenset({b"b"}), True),
    ],
)
def test_response_header_selection_at_post(lines: str, include: frozenset[bytes] | None, skip: frozenset[bytes],
                                           send: bool) -> None:
    """§3.2 response headers table (post only)."""
    plan = compile_ok(LAMBDA + lines, Point.POST)
    assert (plan.include_response_headers, plan.skip_response_headers, plan.send_response_headers) == (
        include, skip, send)


def test_response_payload_is_expanded_at_post() -> None:
    """§2.4 expand-input: responsePayload works at post."""
    assert compile_ok(LAMBDA + "expand-input: responsepayload", Point.POST).expand_response_payload


def test_eav_lists_keep_order_and_case_and_put_required_first() -> None:
    """§2.4, §2.1 rule 7: EAV names are deduplicated exactly; selection = require ∪ include, require first."""
    text = LAMBDA + "\n".join([
        "include-eavs: tier, Tier | region_code, tier",
        "require-eavs: partner, region_code",
        "include-packageKey-eavs: b | a",
        "require-packageKey-eavs: a, A",
    ])
    plan = compile_ok(text)
    assert plan.require_eavs == ("partner", "region_code")
    assert plan.eav_selection == ("partner", "region_code", "tier", "Tier")
    assert plan.require_key_eavs == ("a", "A")
    assert plan.key_eav_selection == ("a", "A", "b")


def test_expand_input_tokens_map_to_flags() -> None:
    """§2.4: every token, split on , and |, any case."""
    plan = compile_ok(LAMBDA + "expand-input: requestPayload|REMOTEADDRESS, token , Operation,routing,,", Point.POST)
    assert (plan.expand_request_payload, plan.expand_remote_address, plan.expand_token, plan.expand_operation,
            plan.expand_routing, plan.expand_response_payload) == (True, True, True, True, True, False)


@pytest.mark.parametrize(
    ("size", "expected_bytes"),
    [
        ("50", 50 * 1024),
        ("1", 1024),
        ("1024", 1024 * 1024),
        ("512b", 512),
        ("1b", 1),
        ("20kb", 20 * 1024),
        ("20 KB", 20 * 1024),
        ("1mb", 1024 * 1024),
        ("1 MB", 1024 * 1024),
        ("1048576B", 1024 * 1024),
        ("007", 7 * 1024),
    ],
)
def test_payload_size_units(size: str, expected_bytes: int) -> None:
    """§2.1 size: KB by default, units b/kb/mb in any case, optional space; 1 byte – 1024 KB."""
    assert compile_ok(LAMBDA + f"max-payload-size: {size}").max_payload_bytes == expected_bytes


@pytest.mark.parametrize(
    ("value", "typed"),
    [
        ("true", True),
        ("FALSE", False),
        ("True", True),
        ("null", None),
        ("NULL", None),
        ("1234", 1234),
        ("0", 0),
        ("-7", -7),
        ("0.75", 0.75),
        ("-12.5", -12.5),
        ('"2"', "2"),
        ('"true"', "true"),
        ('""', ""),
        ("0123", "0123"),
        ("00.5", "00.5"),
        ("1.", "1."),
        (".5", ".5"),
        ("1e3", "1e3"),
        ("This is string", "This is string"),
        ('"unbalanced', '"unbalanced'),
        ("", ""),
    ],
)
def test_sidecar_param_typing(value: str, typed: Any) -> None:
    """§2.4 typing table, first match wins; an empty value is the empty string (§2.1 rule 8)."""
    params = compile_ok(LAMBDA + f"sidecar-param-p: {value}").params
    assert params == {"p": typed}
    assert type(params["p"]) is type(typed)


def test_sidecar_param_names_keep_their_spelling_and_order() -> None:
    """§2.4: `params.<name>`, name as written; prefix case-insensitive; exact names are distinct."""
    text = LAMBDA + "sidecar-param-parameter_x: value_x\nSIDECAR-PARAM-Tier: gold\nsidecar-param-tier: silver"
    plan = compile_ok(text)
    assert list(plan.params.items()) == [("parameter_x", "value_x"), ("Tier", "gold"), ("tier", "silver")]


def test_params_are_read_only() -> None:
    """Style rule 3: the compiled plan cannot be changed on the request path."""
    params = compile_ok(LAMBDA + "sidecar-param-a: 1").params
    with pytest.raises(TypeError):
        params["b"] = 2  # type: ignore[index]


@pytest.mark.parametrize(
    ("written", "normalised"),
    [
        ("arn:aws:sts::680833432085:role/ tibco_sidecar_connector_fn1",
         "arn:aws:iam::680833432085:role/tibco_sidecar_connector_fn1"),
        ("arn:aws:iam::680833432085:role/tibco_sidecar_connector_fn1",
         "arn:aws:iam::680833432085:role/tibco_sidecar_connector_fn1"),
        ("arn:aws-cn:sts::680833432085:role/path/ to/r", "arn:aws-cn:iam::680833432085:role/path/to/r"),
        ("arn: aws-us-gov :iam::680833432085:role/r", "arn:aws-us-gov:iam::680833432085:role/r"),
    ],
)
def test_role_arn_is_normalised(written: str, normalised: str) -> None:
    """§7.3 example: whitespace removed, sts rewritten to iam; the normalised ARN is kept."""
    connection = compile_ok(LAMBDA_ROLE.replace(ROLE, written)).connection
    assert isinstance(connection, AwsLambdaConnection) and connection.role_arn == normalised


def test_assumed_role_connection_keeps_session_settings() -> None:
    """§2.3: sessionName and expirationDuration reach the connection."""
    connection = compile_ok(LAMBDA_ROLE + "sessionName: gw@acme.com\nexpirationDuration: 15").connection
    assert isinstance(connection, AwsLambdaConnection)
    assert (connection.session_name, connection.expiration_minutes) == ("gw@acme.com", 15)


def test_function_arn_with_qualifier_is_accepted() -> None:
    """§2.3: `:<qualifier>` is allowed ($LATEST, aliases, versions)."""
    for qualifier in ("$LATEST", "prod", "7"):
        connection = compile_ok(LAMBDA.replace(ARN, f"{ARN}:{qualifier}")).connection
        assert isinstance(connection, AwsLambdaConnection) and connection.function_arn.endswith(qualifier)


def test_http_stack_compiles_url_and_expanded_headers() -> None:
    """§2.5 url and header.<name>, `${VAR}` replaced from the passed environment, configured order."""
    text = HTTP + "header.Authorization: Bearer ${TOKEN}\nHEADER.X-Tenant: ${TENANT}-${TENANT}\nheader.X-Lit: $HOME"
    plan = compile_ok(text, environ={"TOKEN": "s3cr3t", "TENANT": "acme"})
    assert plan.stack is Stack.HTTP
    assert plan.connection == HttpConnection(
        url="https://sidecar.internal/authz",
        headers=(("Authorization", "Bearer s3cr3t"), ("X-Tenant", "acme-acme"), ("X-Lit", "$HOME")),
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://sidecar.internal/x",
        "/relative/path",
        "https://user:pw@sidecar.internal/",
        "https://sidecar.internal/x#frag",
        "https://sidecar.internal:99999/",
        "https:///no-host",
        "https://side car/",
    ],
)
def test_url_must_be_absolute_http_without_userinfo_or_fragment(url: str) -> None:
    """§2.5 url."""
    assert_only_problem(f"stack: http\nurl: {url}",
                        error("url", "Invalid value: absolute http or https URL without user-info or fragment"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/fn", "HTTPS://sidecar.internal", "http://[::1]:9000/x?q=1"])
def test_url_absolute_http_or_https_is_accepted(url: str) -> None:
    """§2.5 url: http and https, ports, IPv6 literals, queries."""
    connection = compile_ok(f"stack: http\nurl: {url}").connection
    assert isinstance(connection, HttpConnection) and connection.url == url


@pytest.mark.parametrize("name", ["Host", "content-length", "Content-Type", "Transfer-Encoding", "Connection",
                                  "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization", "X-Sidecar-Invocation-Type",
                                  "x-mashery-message-id"])
def test_static_header_reserved_name_is_invalid(name: str) -> None:
    """§2.5 header.<name>: names the gateway sets itself or hop-by-hop names are refused."""
    plan, problems = compile_text(HTTP + f"header.{name}: v")
    assert plan is None
    [problem] = problems
    assert (problem.key, problem.message.startswith("Invalid value: header name the gateway does not set")) == (
        f"header.{name}", True)


def test_static_header_name_must_be_a_token() -> None:
    """§2.5 header.<name>: RFC 9110 token."""
    assert_only_problem(HTTP + "header.X(bad): v",
                        error("header.X(bad)", "Invalid value: header name that is an RFC 9110 token"))


def test_static_header_value_with_carriage_return_is_invalid() -> None:
    """§2.5: the value MUST NOT contain CR or LF, also after `${VAR}` expansion."""
    assert_only_problem(HTTP + "header.X-A: a\rb", error("header.X-A", "Invalid value: header value without CR or LF"))
    assert_only_problem(HTTP + "header.X-A: ${V}", error("header.X-A", "Invalid value: header value without CR or LF"),
                        environ={"V": "a\nb"})


def test_static_header_value_outside_latin1_is_invalid() -> None:
    """A value HTTP/1.1 cannot carry as bytes is refused at load, not when the transport is built."""
    assert_only_problem(HTTP + "header.X-A: 5 €", error("header.X-A", "Invalid value: header value without CR or LF"))


def test_static_headers_with_same_name_in_other_case_are_duplicates() -> None:
    """§2.1 rule 5: header names compare case-insensitively."""
    assert_only_problem(HTTP + "header.X-Api-Key: a\nheader.x-api-key: b", error("header.x-api-key", "Duplicate key"))


def test_python_stack_imports_the_handler_at_load_time() -> None:
    """§2.5 handler, §8.2: the callable is imported once, at compile time."""
    from tests.support import handlers

    plan = compile_ok(PYTHON)
    assert plan.stack is Stack.PYTHON
    assert plan.connection == PythonConnection(handler="tests.support.handlers:allow", function=handlers.allow)


def test_python_stack_accepts_a_coroutine_function_handler() -> None:
    """§8.2: a coroutine function is a valid handler (awaited by the transport)."""
    connection = compile_ok("stack: python\nhandler: tests.support.handlers:allow_async").connection
    assert isinstance(connection, PythonConnection) and connection.function.__name__ == "allow_async"


def test_stack_value_is_case_insensitive_and_http_needs_no_lambda_keys() -> None:
    """§2.5 stack: enum, any case; aws-lambda keys are not required on other stacks."""
    assert compile_ok("STACK: HTTP\nurl: http://x/").stack is Stack.HTTP


def test_invalid_stack_does_not_add_stack_rule_problems() -> None:
    """With an unknown stack, keys are still validated but no stack-dependent rule is guessed."""
    plan, problems = compile_text("stack: lambda\nurl: https://x/\nregion: nowhere")
    assert plan is None
    assert triples(problems) == [
        error("stack", "Invalid value: aws-lambda, http or python"),
        error("region", "Invalid value: AWS region such as eu-west-1"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Scope filters (§9.2)
# ---------------------------------------------------------------------------------------------------------------


def test_contract_scope_example_compiles() -> None:
    """§9.2 example: regex with /i, a literal verb list, an EAV literal."""
    text = LAMBDA + "\n".join([
        r"when-requestHeader(content-type): ~/application/(.+\+)?json(;.*)?/i",
        "unless-httpVerb: GET | HEAD",
        "unless-eav(partner_tier): sandbox",
    ])
    first, second, third = compile_ok(text).scope
    assert (first.negate, first.element, first.argument, first.values) == (
        False, ScopeElement.REQUEST_HEADER, "content-type", frozenset())
    assert first.pattern is not None
    assert first.pattern.fullmatch("Application/Problem+JSON; charset=utf-8")
    assert not first.pattern.fullmatch("text/plain")
    assert (second.negate, second.element, second.argument, second.pattern, second.values) == (
        True, ScopeElement.HTTP_VERB, None, None, frozenset({"GET", "HEAD"}))
    assert (third.negate, third.element, third.argument, third.pattern, third.values) == (
        True, ScopeElement.EAV, "partner_tier", None, frozenset({"sandbox"}))


@pytest.mark.parametrize(
    ("key", "element", "argument"),
    [
        ("when-requestHeader(X-Trace)", ScopeElement.REQUEST_HEADER, "x-trace"),
        ("WHEN-REQUESTHEADER(X-Trace)", ScopeElement.REQUEST_HEADER, "x-trace"),
        ("when-httpverb", ScopeElement.HTTP_VERB, None),
        ("unless-ResourcePath", ScopeElement.RESOURCE_PATH, None),
        ("when-packageKey", ScopeElement.PACKAGE_KEY, None),
        ("when-EAV(Partner_Tier)", ScopeElement.EAV, "Partner_Tier"),
        ("Unless-packageKeyEAV(Plan)", ScopeElement.PACKAGE_KEY_EAV, "Plan"),
    ],
)
def test_scope_element_names_are_case_insensitive(key: str, element: ScopeElement, argument: str | None) -> None:
    """§9.2: element names any case; header argument lower-cased, EAV argument kept."""
    [scope] = compile_ok(LAMBDA + f"{key}: x").scope
    assert (scope.element, scope.argument, scope.negate) == (element, argument, key.lower().startswith("unless-"))


@pytest.mark.parametrize(
    "key",
    ["when-requestBody", "when-httpVerb(GET)", "when-requestHeader", "when-eav()", "when-requestHeader(a b)",
     "unless-eav(x", "when-", "unless-eav(a)(b)"],
)
def test_scope_key_with_unknown_or_malformed_element_is_an_unknown_key(key: str) -> None:
    """§9.2: only the six elements exist, with a name exactly where they take one."""
    assert_only_problem(LAMBDA + f"{key}: x", error(key, "Unknown key"))


def test_scope_regex_must_match_the_whole_value() -> None:
    """§9.2: full match; inner slashes need no escape; the value is not list-split."""
    [scope] = compile_ok(LAMBDA + "when-resourcePath: ~/\\/orders\\/[0-9]+|/health/").scope
    assert scope.pattern is not None and scope.values == frozenset()
    assert scope.pattern.fullmatch("/orders/12")
    assert scope.pattern.match("/health")
    assert not scope.pattern.match("/orders/12/items")
    assert not scope.pattern.match("/healthz")
    [scope] = compile_ok(LAMBDA + "when-resourcePath: ~/a/b, c/").scope
    assert scope.pattern is not None and scope.pattern.match("a/b, c")


def test_scope_regex_is_case_sensitive_without_i_flag() -> None:
    """§9.2: `~/regex/` is case-sensitive; `~/regex/i` is not."""
    [scope] = compile_ok(LAMBDA + "when-packageKey: ~/abc/").scope
    assert scope.pattern is not None and not scope.pattern.fullmatch("ABC")


def test_scope_regex_keeps_leading_inline_flags() -> None:
    """A regex written with `(?i)` or verbose comments still compiles and anchors."""
    [scope] = compile_ok(LAMBDA + "when-packageKey: ~/(?x) abc  # comment/").scope
    assert scope.pattern is not None and scope.pattern.match("abc") and not scope.pattern.match("abcd")
    [scope] = compile_ok(LAMBDA + "when-packageKey: ~/(?i)abc/").scope
    assert scope.pattern is not None and scope.pattern.match("ABC") and not scope.pattern.match("ABCD")


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("when-httpVerb: get, Post | post", {"GET", "POST"}),
        ("when-packageKey: k1 | k2, k1", {"k1", "k2"}),
        ("unless-eav(tier): Gold, gold", {"Gold", "gold"}),
        ("when-resourcePath: ~/x", {"~/x"}),
        ("when-resourcePath: ~/x/y", {"~/x/y"}),
    ],
)
def test_scope_literal_lists(line: str, values: set[str]) -> None:
    """§9.2: non-regex matchers are lists (rule 7); httpVerb compared upper-cased; others exactly."""
    [scope] = compile_ok(LAMBDA + line).scope
    assert (scope.pattern, scope.values) == (None, frozenset(values))


def test_scope_key_with_empty_value_is_absent() -> None:
    """§2.1 rule 8."""
    assert compile_ok(LAMBDA + "when-httpVerb:\nunless-packageKey: ,|").scope == ()


def test_same_element_in_when_and_unless_is_allowed() -> None:
    """`when-x` and `unless-x` are different keys."""
    plan = compile_ok(LAMBDA + "when-httpVerb: POST\nunless-httpVerb: GET")
    assert [s.negate for s in plan.scope] == [False, True]
