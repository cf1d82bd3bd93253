"""The function author's SDK (contract §3 input, §4 output): parsing, builders, the decorator, and a validator
that agrees with the gateway's ``interpret_output`` on valid versus invalid."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from sidecar_gateway import sdk
from sidecar_gateway.errors import Point
from support.sidecar_outputs import BACKEND, POINTS, ROUTE_HOSTS, gateway_accepts, outputs

PACKAGE = Path(sdk.__file__).resolve().parent
PERMITTED = sorted(ROUTE_HOSTS | {BACKEND})

PRE_EVENT: dict[str, Any] = {
    "point": "PreProcessor", "synchronicity": "RequestResponse",
    "masheryMessageId": "7632924a-8d8d-4d35-8a77-b57c4bb450af", "packageKey": "abc123def456ghi789",
    "serviceId": "0123456789", "endpointId": "9876543210", "params": {"parameter_x": "value_x"},
    "request": {"headers": {"authorization": "qwertyuiopasdfghjklzxcvbnm", "x-api-version": "2"},
                "payload": '{"a": 1}', "payloadLength": 8, "payloadBase64Encoded": False},
    "remoteAddr": "198.51.100.23", "eavs": {"eav1": "eav_value"}, "packageKeyEAVs": {"pkg_eav": "eav_value"},
    "operation": {"httpVerb": "POST", "path": "/op", "query": {"api_key": "abc", "tag": ["a", "b"]},
                  "uri": "https://api.acme.com/my/op?api_key=abc&tag=a&tag=b"},
    "token": {"scope": "orders:read", "userContext": "user-4711"},
    "routing": {"httpVerb": "POST", "uri": "https://backend.internal/v1/op"},
}
POST_EVENT: dict[str, Any] = {
    "point": "PostProcessor", "synchronicity": "Event",
    "masheryMessageId": "7632924a-8d8d-4d35-8a77-b57c4bb450af", "serviceId": "s", "endpointId": "e",
    "response": {"code": 201, "headers": {"header_b": "Value_B"},
                 "payload": base64.b64encode(b"\x00\xffbin").decode(), "payloadLength": 5,
                 "payloadBase64Encoded": True},
}


# -- standard library only --------------------------------------------------------------------------------------


def test_sdk_modules_import_only_the_standard_library() -> None:
    """Every import in sidecar_gateway/sdk is relative or a standard-library module (it is zipped into Lambdas)."""
    foreign = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            foreign += [f"{path.name}: {n}" for n in names
                        if n.split(".")[0] not in sys.stdlib_module_names and n != "__future__"]
    assert not foreign


def test_sdk_runs_from_a_zip_without_site_packages(tmp_path: Path) -> None:
    """Zipped with sidecar_gateway/__init__.py only, the SDK imports, builds, validates and loads its schemas
    under ``python -I -S`` and loads no module outside the standard library."""
    bundle = tmp_path / "function.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(PACKAGE.parent / "__init__.py", "sidecar_gateway/__init__.py")
        for path in PACKAGE.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, f"sidecar_gateway/sdk/{path.relative_to(PACKAGE).as_posix()}")
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(bundle)!r})\n"
        "from sidecar_gateway import sdk\n"
        "assert sdk.modify(add_headers={'X-A': '1'}) == {'modify': {'addHeaders': {'X-A': '1'}}}\n"
        "assert sdk.output_schema('PreProcessor')['$ref'] == '#/$defs/preOutput'\n"
        "assert sdk.input_schema()['title']\n"
        "foreign = sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names\n"
        "                 and m.split('.')[0] not in ('sidecar_gateway', '__main__'))\n"
        "print(foreign)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- SidecarInput (§3) ------------------------------------------------------------------------------------------


def test_pre_input_is_parsed_into_typed_members() -> None:
    """Every §3.1 member of a pre input lands in its typed field."""
    inp = sdk.SidecarInput.from_event(PRE_EVENT)
    assert inp.point is sdk.Point.PRE and inp.is_pre and not inp.is_post
    assert (inp.synchronicity, inp.message_id, inp.package_key) == (
        "RequestResponse", "7632924a-8d8d-4d35-8a77-b57c4bb450af", "abc123def456ghi789")
    assert (inp.service_id, inp.endpoint_id, dict(inp.params)) == ("0123456789", "9876543210",
                                                                 {"parameter_x": "value_x"})
    assert inp.request_headers["Authorization"] == "qwertyuiopasdfghjklzxcvbnm"
    assert "X-API-Version" in inp.request_headers and inp.request_headers.get("missing") is None
    assert inp.request_body is not None and inp.request_body.json() == {"a": 1}
    assert inp.request_body.text == '{"a": 1}' and inp.request_body.length == 8
    assert inp.response_code is None and inp.response_body is None and len(inp.response_headers) == 0
    assert inp.remote_addr == "198.51.100.23"
    assert dict(inp.eavs) == {"eav1": "eav_value"} and dict(inp.package_key_eavs) == {"pkg_eav": "eav_value"}
    assert inp.operation is not None and inp.operation.query["tag"] == ["a", "b"] and inp.operation.path == "/op"
    assert inp.token == sdk.Token(scope="orders:read", user_context="user-4711")
    assert inp.routing == sdk.Routing(http_verb="POST", uri="https://backend.internal/v1/op")
    assert inp.raw["serviceId"] == "0123456789"


def test_post_input_decodes_a_base64_payload() -> None:
    """§3.3: a payload flagged payloadBase64Encoded is decoded to the body bytes."""
    inp = sdk.SidecarInput.from_event(POST_EVENT)
    assert inp.point is sdk.Point.POST and inp.response_code == 201
    assert inp.response_body == sdk.Payload(data=b"\x00\xffbin", length=5, base64_encoded=True)
    assert inp.response_headers == {"Header_B": "Value_B"}
    assert inp.package_key is None and inp.request_body is None and inp.operation is None


def test_minimal_input_has_empty_optional_members() -> None:
    """§3.5 example 5: absent members are None or empty mappings."""
    inp = sdk.SidecarInput.from_event({"point": "Preflight", "synchronicity": "RequestResponse",
                                       "masheryMessageId": "m", "serviceId": "s", "endpointId": "e"})
    assert inp.point == "Preflight" and not inp.params and not inp.eavs and not inp.request_headers
    assert (inp.token, inp.routing, inp.remote_addr) == (None, None, None)


@pytest.mark.parametrize(("change", "message"), [
    ({"point": "Nope"}, "point"),
    ({"masheryMessageId": None}, "masheryMessageId is required"),
    ({"serviceId": 3}, "serviceId must be a string"),
    ({"request": {"headers": {"a": 1}}}, "headers must be an object of strings"),
    ({"request": {"payload": "@@", "payloadBase64Encoded": True}}, "not valid base64"),
    ({"eavs": []}, "eavs must be an object"),
])
def test_malformed_events_raise_invalid_input(change: dict[str, Any], message: str) -> None:
    """A member with the wrong type is an InvalidInput naming it."""
    with pytest.raises(sdk.InvalidInput, match=message):
        sdk.SidecarInput.from_event({**PRE_EVENT, **change})


def test_post_input_without_response_code_is_invalid() -> None:
    """§3.1: response.code is always present at post."""
    with pytest.raises(sdk.InvalidInput, match=r"response\.code"):
        sdk.SidecarInput.from_event({**POST_EVENT, "response": {}})


# -- builders (§4.2) --------------------------------------------------------------------------------------------


def test_builders_write_the_contract_member_names() -> None:
    """snake_case arguments become the §4.2 member names."""
    assert sdk.allow() == {}
    assert sdk.modify(add_headers={"X-A": "1"}, drop_headers=["x-b"], json={"k": "v"}, complete_with_code=201,
                      change_route={"httpVerb": "PUT"}) == {"modify": {
                          "dropHeaders": ["x-b"], "addHeaders": {"X-A": "1"}, "json": {"k": "v"},
                          "completeWithCode": 201, "changeRoute": {"httpVerb": "PUT"}}}
    assert sdk.terminate(401, "no", headers={"WWW-Authenticate": "Bearer"}) == {
        "terminate": {"code": 401, "message": "no", "addHeaders": {"WWW-Authenticate": "Bearer"}}}
    assert sdk.modify(payload="Q3VzdG9t", base64_encoded=True) == {
        "modify": {"payload": "Q3VzdG9t", "base64Encoded": True}}


def test_bytes_payload_is_sent_base64_encoded() -> None:
    """§4.4 step 4: a bytes payload travels as base64 with base64Encoded true."""
    output = sdk.terminate(200, payload=b"\x00\x01")
    assert output == {"terminate": {"code": 200, "payload": "AAE=", "base64Encoded": True}}
    with pytest.raises(sdk.InvalidOutput):
        sdk.modify(payload=b"x", base64_encoded=False)


def test_builders_refuse_invalid_outputs_at_once() -> None:
    """A forbidden header or a bad status fails where the output is built, listing every defect."""
    with pytest.raises(sdk.InvalidOutput) as caught:
        sdk.terminate(700, headers={"Host": "x", "ok": "bad\nvalue"})
    assert len(caught.value.problems) == 3
    assert "terminate.code" in str(caught.value) and "'Host' is forbidden" in str(caught.value)


def test_hints_are_added_to_a_copy() -> None:
    """[ext] §9.1: unchangedFor / unchangedUntil are top-level members."""
    base = sdk.modify(add_headers={"x-tier": "gold"})
    assert sdk.unchanged_for(60_000, base) == {**base, "unchangedFor": 60_000}
    assert "unchangedFor" not in base
    assert sdk.unchanged_for(5) == {"unchangedFor": 5}
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert sdk.unchanged_until(when)["unchangedUntil"] == "2030-01-01T00:00:00+00:00"
    with pytest.raises(ValueError):
        sdk.unchanged_until(datetime(2030, 1, 1))
    with pytest.raises(ValueError):
        sdk.unchanged_for(0)


# -- the @sidecar decorator -------------------------------------------------------------------------------------


@sdk.sidecar
def _version_handler(inp: sdk.SidecarInput, context: Any) -> dict[str, Any]:
    version = inp.request_headers.get("X-Api-Version")
    if version is None:
        return sdk.terminate(400, "X-Api-Version is required")
    return sdk.modify(add_headers={"X-Backend-Version": version})


@sdk.sidecar(raw_event=True)
def _raw_handler(event: dict[str, Any], context: Any) -> Any:
    return event.get("answer")


@sdk.sidecar
async def _async_handler(inp: sdk.SidecarInput, context: Any) -> dict[str, Any]:
    return sdk.modify(add_headers={"X-Point": inp.point.value})


def test_decorated_handler_receives_a_sidecar_input() -> None:
    """@sidecar parses the event and returns the handler's (valid) output unchanged."""
    assert _version_handler(PRE_EVENT, None) == {"modify": {"addHeaders": {"X-Backend-Version": "2"}}}
    no_header = {**PRE_EVENT, "request": {}}
    assert _version_handler(no_header, None)["terminate"]["code"] == 400


def test_decorated_coroutine_handler_is_awaitable() -> None:
    """Coroutine handlers stay coroutines (the python stack awaits them, §8.2)."""
    assert asyncio.run(_async_handler(POST_EVENT, None)) == {"modify": {"addHeaders": {"X-Point": "PostProcessor"}}}


@pytest.mark.parametrize("answer", [None, [], {"modify": {"dropHeaders": ["Content-Length"]}},
                                    {"terminate": {"code": 200, "payload": "%%", "base64Encoded": True}}])
def test_decorator_raises_invalid_output_before_returning(answer: Any) -> None:
    """An invalid output (None included: 'not returned', §5.3) raises InvalidOutput, a function error."""
    with pytest.raises(sdk.InvalidOutput, match=r"contract §4\.3"):
        _raw_handler({**PRE_EVENT, "answer": answer}, None)


def test_decorator_validates_for_the_input_point() -> None:
    """completeWithCode is ignored at pre (§10 Q27) but validated at post; changeRoute the other way round."""
    bad_code = {"modify": {"completeWithCode": "soon"}}
    assert _raw_handler({**PRE_EVENT, "answer": bad_code}, None) == bad_code
    with pytest.raises(sdk.InvalidOutput):
        _raw_handler({**POST_EVENT, "answer": bad_code}, None)
    bad_route = {"modify": {"changeRoute": {}}}
    assert _raw_handler({**POST_EVENT, "answer": bad_route}, None) == bad_route
    with pytest.raises(sdk.InvalidOutput):
        _raw_handler({**PRE_EVENT, "answer": bad_route}, None)


# -- agreement with interpret_output: one table row per §4.3 rule -----------------------------------------------

BIG = "x" * (6 * 1024 * 1024)
RULE_CASES = [
    # rule 1: JSON object, ≤ 6 MB (null is "not returned", also a failure)
    ("r1-allow", {}, Point.PRE, True),
    ("r1-null", None, Point.PRE, False),
    ("r1-array", [], Point.PRE, False),
    ("r1-string", "ok", Point.POST, False),
    ("r1-too-large", {"modify": {"payload": BIG}}, Point.PRE, False),
    ("r1-lone-surrogate", {"extra": "\ud800"}, Point.PRE, False),
    # rule 2: terminate / modify must be objects
    ("r2-terminate-array", {"terminate": [403]}, Point.PRE, False),
    ("r2-modify-string", {"modify": "x"}, Point.POST, False),
    ("r2-modify-ignored-when-terminate-wins", {"terminate": {"code": 403}, "modify": "x"}, Point.PRE, True),
    ("r2-null-is-absent", {"terminate": None, "modify": None}, Point.PRE, True),
    # rule 3: member types
    ("r3-code-float", {"terminate": {"code": 200.5}}, Point.PRE, False),
    ("r3-code-bool", {"terminate": {"code": True}}, Point.PRE, False),
    ("r3-code-range-low", {"terminate": {"code": 199}}, Point.PRE, False),
    ("r3-code-range-high", {"terminate": {"code": 600}}, Point.POST, False),
    ("r3-code-bounds", {"terminate": {"code": 599}}, Point.POST, True),
    ("r3-terminate-without-code-ignored", {"terminate": {"message": 5}}, Point.PRE, True),
    ("r3-message-type", {"terminate": {"code": 400, "message": 5}}, Point.PRE, False),
    ("r3-payload-type", {"modify": {"payload": 5}}, Point.PRE, False),
    ("r3-base64-flag-type", {"modify": {"base64Encoded": "yes"}}, Point.POST, False),
    ("r3-headers-not-object", {"modify": {"addHeaders": ["x"]}}, Point.PRE, False),
    ("r3-header-value-type", {"terminate": {"code": 401, "headers": {"x": 1}}}, Point.PRE, False),
    ("r3-drop-not-array", {"modify": {"dropHeaders": "x-a"}}, Point.PRE, False),
    ("r3-drop-item-type", {"modify": {"dropHeaders": [1]}}, Point.PREFLIGHT, False),
    ("r3-base64-invalid", {"modify": {"payload": "QQ=", "base64Encoded": True}}, Point.PRE, False),
    ("r3-base64-valid", {"modify": {"payload": "Q3VzdG9tIHBheWxvYWQ=", "base64Encoded": True}}, Point.POST, True),
    ("r3-base64-unchecked-when-false", {"modify": {"payload": "QQ=", "base64Encoded": False}}, Point.PRE, True),
    ("r3-complete-with-code-post", {"modify": {"completeWithCode": 99}}, Point.POST, False),
    ("r3-complete-with-code-ignored-at-pre", {"modify": {"completeWithCode": 99}}, Point.PRE, True),
    ("r3-preflight-ignores-body", {"modify": {"payload": 5}}, Point.PREFLIGHT, True),
    # rule 4: header names
    ("r4-not-token", {"modify": {"addHeaders": {"a b": "1"}}}, Point.PRE, False),
    ("r4-forbidden-any-case", {"modify": {"addHeaders": {"CONTENT-LENGTH": "5"}}}, Point.PRE, False),
    ("r4-forbidden-drop", {"modify": {"dropHeaders": ["Transfer-Encoding"]}}, Point.POST, False),
    ("r4-repeated-case-insensitively", {"modify": {"headers": {"X-A": "1", "x-a": "2"}}}, Point.PRE, False),
    ("r4-same-name-in-both-maps", {"modify": {"headers": {"X-A": "1"}, "addHeaders": {"x-a": "2"}}}, Point.PRE, True),
    ("r4-repeated-drop-ok", {"modify": {"dropHeaders": ["x-a", "X-A"]}}, Point.PRE, True),
    # rule 5: header values
    ("r5-lf", {"modify": {"addHeaders": {"x-a": "a\nb"}}}, Point.PRE, False),
    ("r5-nul", {"terminate": {"code": 403, "addHeaders": {"x-a": "\x00"}}}, Point.POST, False),
    ("r5-c1", {"modify": {"addHeaders": {"x-a": "\x85"}}}, Point.PRE, False),
    ("r5-tab-ok", {"modify": {"addHeaders": {"x-a": "a\tb é"}}}, Point.PRE, True),
    # rule 6: changeRoute (pre)
    ("r6-not-object", {"modify": {"changeRoute": "x"}}, Point.PRE, False),
    ("r6-empty", {"modify": {"changeRoute": {}}}, Point.PRE, False),
    ("r6-relative", {"modify": {"changeRoute": {"uri": "/v2"}}}, Point.PRE, False),
    ("r6-host-not-permitted", {"modify": {"changeRoute": {"uri": "http://evil.local/"}}}, Point.PRE, False),
    ("r6-route-host", {"modify": {"changeRoute": {"uri": "http://alt.local:8080/x"}}}, Point.PRE, True),
    ("r6-verb-not-token", {"modify": {"changeRoute": {"httpVerb": "GE T"}}}, Point.PRE, False),
    ("r6-ignored-at-post", {"modify": {"changeRoute": "x"}}, Point.POST, True),
    # hints never invalidate (§4.3 last sentence)
    ("hint-malformed", {"unchangedFor": "soon", "unchangedUntil": 5}, Point.PRE, True),
]


@pytest.mark.parametrize(("output", "point", "valid"), [pytest.param(o, p, v, id=i) for i, o, p, v in RULE_CASES])
def test_validator_and_interpreter_agree_on_every_rule(output: Any, point: Point, valid: bool) -> None:
    """Each §4.3 rule: the SDK validator and the gateway give the documented verdict."""
    assert gateway_accepts(output, point) is valid
    problems = sdk.output_problems(output, point.input_name, permitted_hosts=PERMITTED)
    assert (not problems) is valid, problems


def test_changeroute_host_is_not_checked_without_permitted_hosts() -> None:
    """The host permission depends on the endpoint: without permitted_hosts only the URL shape is checked."""
    output = {"modify": {"changeRoute": {"uri": "http://evil.local/"}}}
    assert sdk.output_problems(output, "PreProcessor") == []
    assert sdk.output_problems(output, "PreProcessor", permitted_hosts=["backend.local"])


def test_non_string_keys_are_refused() -> None:
    """The python stack serialises with orjson, which refuses non-string keys (§8.2)."""
    assert sdk.output_problems({"modify": {"addHeaders": {1: "x"}}}, "PreProcessor")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(output=outputs())
def test_validator_agrees_with_interpret_output(output: Any) -> None:
    """For generated outputs (valid and broken), at every point, SDK valid ⇔ interpret_output valid."""
    json.dumps(output)  # the strategies only produce JSON values
    for point in POINTS:
        sdk_valid = not sdk.output_problems(output, point.input_name, permitted_hosts=PERMITTED)
        assert sdk_valid is gateway_accepts(output, point), (point, output)
