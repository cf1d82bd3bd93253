"""End to end: the gateway as a subprocess, a real backend, sidecar functions on the http and python stacks.

One gateway serves every endpoint of this module (each endpoint is one scenario); the function server answers
per path with a scripted behaviour and records what the gateway sent.  Covers the §4.5 examples, every §5.3
outcome sure-fire and fail-safe at pre and post, the §5.1 conditions and payload limits, event mode, the §3.5
input examples as sent on the wire, and the §6.2 renderings.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.backend import BackendServer
from support.function_server import Behavior, FunctionServer
from support.gateway_proc import ACTIVE_KEY, GatewayProcess, config, endpoint, service, session

SID = "0123456789"
FN_ERROR_DOC = {"errorMessage": "An error occurred during JSON parsing", "errorType": "java.lang.RuntimeException",
                "stackTrace": ["at x"]}

BEHAVIORS: dict[str, Behavior] = {
    "/allow": Behavior({}),
    "/modify-payload": Behavior({"modify": {"payload": "Custom Payload", "addHeaders": {"x-acme-error": "B0-932-K"}}}),
    "/terminate-403": Behavior({"terminate": {"code": 403}}),
    "/terminate-400": Behavior({"terminate": {"code": 400, "message": "Bad Request"}}),
    "/post-json-500": Behavior({"modify": {"base64Encoded": True, "completeWithCode": 500, "json": {"a": "b", "c": "d"},
                                           "dropHeaders": ["x-backend-secret"]}}),
    "/post-b64-201": Behavior({"modify": {"completeWithCode": 201, "payload": "Q3VzdG9tIHBheWxvYWQ=",
                                          "base64Encoded": True}}),
    "/terminate-nocode": Behavior({"terminate": {"message": "x"}, "modify": {"addHeaders": {"x-a": "1"}}}),
    "/forbidden-header": Behavior({"modify": {"addHeaders": {"Content-Length": "5"}}}),
    "/slow": Behavior({}, delay_s=2.0),
    "/function-error": Behavior(FN_ERROR_DOC, headers={"X-Amz-Function-Error": "Unhandled"}),
    "/null": Behavior(b"null"),
    "/status-503": Behavior(b"oops", status=503),
    "/terminate-json": Behavior({"terminate": {"code": 429, "json": {"retry": True},
                                               "addHeaders": {"Retry-After": "3"}}}),
    "/event-500": Behavior(b"boom", status=500),
    "/garbage": Behavior(b"<html>not json"),
    "/cache-hint": Behavior({"unchangedFor": 60000, "modify": {"addHeaders": {"x-tier": "gold"}}}),
    "/preflight": Behavior(respond=lambda i: {"modify": {"addHeaders": {"x-preflight": "yes"}}}
                           if i["point"] == "Preflight" else {"modify": {"addHeaders": {"x-pre": "yes"}}}),
    "/preflight-deny": Behavior(respond=lambda i: {"terminate": {"code": 402, "message": "Plan exhausted"}}
                                if i["point"] == "Preflight" else {}),
    "/slow-nb": Behavior({}, delay_s=2.0),
    "/shadow-400": Behavior({"terminate": {"code": 400, "message": "Bad Request"}}),
}


def _pre(url: str, extra: str = "") -> str:
    return f"stack: http\nurl: {url}\n{extra}"


@pytest.fixture(scope="module")
def functions() -> Any:
    server = FunctionServer(BEHAVIORS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def dead_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/fn"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, functions: FunctionServer,
       dead_url: str) -> Any:
    f = functions.url
    b = backend.url("/")
    eps = [
        endpoint("allow", "/allow", b, pre_processing=_pre(f("/allow"), "sidecar-param-parameter_x: value_x")),
        endpoint("modify", "/modify", b, pre_processing=_pre(f("/modify-payload"))),
        endpoint("term403", "/term403", b, pre_processing=_pre(f("/terminate-403"))),
        endpoint("term400", "/term400", b, pre_processing=_pre(f("/terminate-400"))),
        endpoint("post500", "/post500", b, post_processing=_pre(f("/post-json-500"))),
        endpoint("post201", "/post201", b, post_processing=_pre(f("/post-b64-201"))),
        endpoint("nocode", "/nocode", b, pre_processing=_pre(f("/terminate-nocode"))),
        endpoint("forbidden", "/forbidden", b, pre_processing=_pre(f("/forbidden-header"))),
        endpoint("termjson", "/termjson", b, pre_processing=_pre(f("/terminate-json"))),
        # §5.3 outcomes, sure-fire then fail-safe, at pre
        endpoint("timeout", "/timeout", b, timeout=5, pre_processing=_pre(f("/slow"), "timeout: 300")),
        endpoint("fnerror", "/fnerror", b, pre_processing=_pre(f("/function-error"))),
        endpoint("empty", "/empty", b, pre_processing=_pre(f("/null"))),
        endpoint("status", "/status", b, pre_processing=_pre(f("/status-503"))),
        endpoint("garbage", "/garbage", b, pre_processing=_pre(f("/garbage"))),
        endpoint("connfail", "/connfail", b, pre_processing=_pre(dead_url)),
        endpoint("fs-timeout", "/fs-timeout", b, pre_processing=_pre(f("/slow"), "timeout: 300\nfailSafe: true")),
        endpoint("fs-fnerror", "/fs-fnerror", b, pre_processing=_pre(f("/function-error"), "failSafe: true")),
        endpoint("fs-empty", "/fs-empty", b, pre_processing=_pre(f("/null"), "failSafe: true")),
        endpoint("fs-status", "/fs-status", b, pre_processing=_pre(f("/status-503"), "failSafe: true")),
        endpoint("fs-connfail", "/fs-connfail", b, pre_processing=_pre(dead_url, "failSafe: true")),
        # post failures
        endpoint("post-fnerror", "/post-fnerror", b, post_processing=_pre(f("/function-error"))),
        endpoint("post-fs-null", "/post-fs-null", b, post_processing=_pre(f("/null"), "failSafe: true")),
        endpoint("post-null", "/post-null", b, post_processing=_pre(f("/null"))),
        # conditions and payload limits
        endpoint("req-header", "/req-header", b,
                 pre_processing=_pre(f("/allow"), "require-request-headers: Authorization")),
        endpoint("req-eav", "/req-eav", b, pre_processing=_pre(f("/allow"), "require-eavs: eav1, tier")),
        endpoint("req-keav", "/req-keav", b, pre_processing=_pre(f("/allow"), "require-packageKey-eavs: gold")),
        endpoint("limit", "/limit", b, pre_processing=_pre(f("/allow"),
                                                            "expand-input: requestPayload\nmax-payload-size: 20b")),
        endpoint("filter", "/filter", b,
                 pre_processing=_pre(f("/allow"), "expand-input: requestPayload\n"
                                     "max-payload-size: 20b\nmax-payload-condition: filtering")),
        endpoint("onemb", "/onemb", b,
                 pre_processing=_pre(f("/allow"), "expand-input: requestPayload\nmax-payload-size: 1mb")),
        # event mode: a failing function never blocks the call
        endpoint("event", "/event", b, pre_processing=_pre(f("/event-500"), "synchronicity: event")),
        # inputs as sent (§3.5 examples 3, post example), pre and post on one call
        endpoint("inputs", "/my", b,
                 pre_processing=_pre(f("/allow"), "include-request-headers: Authorization\n"
                                     "include-packageKey-eavs: pkg_eav\ninclude-eavs: eav1\n"
                                     "expand-input: remoteAddress, operation, routing"),
                 post_processing=_pre(f("/allow"), "synchronicity: event\ninclude-response-headers: x-echo, "
                                      "content-type")),
        # renderings
        endpoint("json-errors", "/json-errors", b, error_format="json",
                 pre_processing=_pre(f("/allow"), "require-request-headers: Authorization")),
        endpoint("error-set", "/error-set", b,
                 error_set={400: {"body": '{"error":"bad"}', "content_type": "application/json"}},
                 pre_processing=_pre(f("/allow"), "require-request-headers: X-Needed\nenable_error_set: true")),
        # §9 extensions
        endpoint("cached", "/cached", b, pre_processing=_pre(f("/cache-hint"))),
        endpoint("preflight", "/preflight", b, pre_processing=_pre(f("/preflight"), "preflight: true")),
        endpoint("preflight-deny", "/preflight-deny", b, pre_processing=_pre(f("/preflight-deny"), "preflight: true")),
        endpoint("scoped", "/scoped", b, pre_processing=_pre(f("/terminate-403"), "unless-httpVerb: GET | HEAD")),
        endpoint("nonblocking", "/nonblocking", b, pre_processing=_pre(f("/slow-nb"), "synchronicity: non-blocking")),
        endpoint("shadow", "/shadow", b, pre_processing=_pre(f("/shadow-400"), "shadow: true")),
        endpoint("python", "/python", b, pre_processing="stack: python\nhandler: sidecar_functions:pre_add_user"),
        endpoint("python-raise", "/python-raise", b, pre_processing="stack: python\nhandler: sidecar_functions:boom"),
    ]
    cfg = config(service(SID, *eps))
    support = str(Path(__file__).resolve().parent.parent / "support")
    env = dict(os.environ, PYTHONPATH=support + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = GatewayProcess(tmp_path_factory.mktemp("sidecar-http"), cfg, env=env)
    proc.wait_ready()
    yield proc
    proc.stop()


def call(gw: GatewayProcess, method: str, path: str, **kw: Any) -> Any:
    with session() as s:
        sep = "&" if "?" in path else "?"
        return s.request(method, f"{gw.base_url}{path}{sep}api_key={ACTIVE_KEY}", timeout=15, **kw)


def _backend_calls(backend: BackendServer, token: str) -> int:
    return len(backend.matching(token))


# ---------------------------------------------------------------------------------------------------------------
# §4.5 examples
# ---------------------------------------------------------------------------------------------------------------


def test_allow_sends_message_id_to_function_and_backend(gw: Any, functions: FunctionServer,
                                                        backend: BackendServer) -> None:
    """{} lets the call through; the function input and the backend share one masheryMessageId (§1, Q18)."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/allow/{token}")
    assert r.status_code == 200
    sent = backend.wait_for(token)[0]
    msg_id = sent.header_values("X-Mashery-Message-ID")[0]
    inputs = [c.input for c in functions.calls_to("/allow") if c.input["masheryMessageId"] == msg_id]
    assert inputs and inputs[0]["params"] == {"parameter_x": "value_x"}
    assert inputs[0]["point"] == "PreProcessor" and inputs[0]["synchronicity"] == "RequestResponse"
    assert uuid.UUID(msg_id).version == 4


def test_pre_modify_replaces_backend_body_and_adds_header(gw: Any, backend: BackendServer) -> None:
    """§4.5 #4: the backend receives 'Custom Payload' (Content-Length 14) and x-acme-error."""
    token = uuid.uuid4().hex
    r = call(gw, "POST", f"/modify/{token}", data=b"original body")
    assert r.status_code == 200
    sent = backend.wait_for(token)[0]
    assert sent.body_length == 14
    assert sent.header_values("Content-Length") == ["14"]
    assert sent.header_values("x-acme-error") == ["B0-932-K"]


def test_terminate_without_message_renders_default_text(gw: Any, backend: BackendServer) -> None:
    """§4.5 #2: 403, application/xml, the default message; the backend is not called."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/term403/{token}")
    assert r.status_code == 403
    assert r.headers["Content-Type"] == "application/xml"
    assert r.text == "<h1>Service cannot be provided, code 0x000003BB</h1>"
    assert "X-Error-Detail-Header" not in r.headers
    assert _backend_calls(backend, token) == 0


def test_terminate_with_message(gw: Any) -> None:
    """§4.5 #3: 400 with <h1>Bad Request</h1>."""
    r = call(gw, "GET", "/term400")
    assert (r.status_code, r.text) == (400, "<h1>Bad Request</h1>")


def test_post_json_and_complete_with_code(gw: Any) -> None:
    """§4.5 #5: the client gets 500 with the JSON body and the dropped header removed."""
    r = call(gw, "GET", "/post500/hopresp")
    assert r.status_code == 500
    assert r.content == b'{"a":"b","c":"d"}'
    assert r.headers["Content-Type"] == "application/json"


def test_post_base64_payload_with_code(gw: Any) -> None:
    """§4.5 #6: 201 with the decoded body 'Custom payload'."""
    r = call(gw, "GET", "/post201")
    assert (r.status_code, r.content) == (201, b"Custom payload")


def test_terminate_without_code_is_ignored_and_modify_applies(gw: Any, backend: BackendServer) -> None:
    """§4.5 #7: the terminate has no code; the backend gets x-a: 1."""
    token = uuid.uuid4().hex
    assert call(gw, "GET", f"/nocode/{token}").status_code == 200
    assert backend.wait_for(token)[0].header_values("x-a") == ["1"]


def test_forbidden_header_is_invalid_output(gw: Any, backend: BackendServer) -> None:
    """§4.5 #8: Content-Length from a function → 500 invalid output; the backend is not called."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/forbidden/{token}")
    assert r.status_code == 500
    assert r.text == "<h1>InvalidResponseFromAWSLambdaInPreProcess</h1>"
    assert r.headers["X-Error-Detail-Header"] == "Invalid output from AWS Lambda function"
    assert _backend_calls(backend, token) == 0


def test_terminate_with_json_body_and_headers(gw: Any) -> None:
    """Q12: terminate with json and addHeaders: body serialised, Content-Type application/json, header set."""
    r = call(gw, "GET", "/termjson")
    assert r.status_code == 429
    assert r.content == b'{"retry":true}'
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Retry-After"] == "3"


# ---------------------------------------------------------------------------------------------------------------
# §5.3 outcomes, sure-fire and fail-safe
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status", "name", "message"), [
    ("/timeout", 504, "Gateway Timeout", "Timeout occured while connecting to AWS Service"),
    ("/empty", 500, "InvalidResponseFromAWSLambdaInPreProcess", "AWS Lambda Response is not returned"),
    ("/status", 500, "InvalidResponseFromAWSLambdaInPreProcess", "Success Response not returned from AWS Lambda"),
    ("/garbage", 500, "InvalidResponseFromAWSLambdaInPreProcess", "Invalid output from AWS Lambda function"),
    ("/connfail", 500, "InvalidResponseFromAWSLambdaInPreProcess", "Error while connecting to AWS lambda."),
])
def test_sure_fire_failure_answers_catalogue_error(gw: Any, backend: BackendServer, path: str, status: int,
                                                   name: str, message: str) -> None:
    """Sure-fire: the §5.3 status, name and message; the backend is not called."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"{path}/{token}")
    assert r.status_code == status
    assert r.text == f"<h1>{name}</h1>"
    assert r.headers["X-Error-Detail-Header"] == message
    assert _backend_calls(backend, token) == 0


def test_function_error_answers_502_json(gw: Any) -> None:
    """§5.3: 502 with exactly the documented JSON body and no detail header."""
    r = call(gw, "GET", "/fnerror")
    assert r.status_code == 502
    assert r.headers["Content-Type"] == "application/json"
    assert r.content == (b'{"code":502,"message":{"detail":"An error occurred during JSON parsing",'
                         b'"title":"java.lang.RuntimeException"}}')
    assert "X-Error-Detail-Header" not in r.headers


@pytest.mark.parametrize("path", ["/fs-timeout", "/fs-fnerror", "/fs-empty", "/fs-status", "/fs-connfail"])
def test_fail_safe_failure_continues_to_backend(gw: Any, backend: BackendServer, path: str) -> None:
    """§5.4: with failSafe every invocation failure is treated as {}: the backend answers."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"{path}/{token}")
    assert r.status_code == 200
    assert len(backend.wait_for(token)) == 1


def test_post_function_error_replaces_backend_response(gw: Any) -> None:
    """Q7 sure-fire: the 502 function-error body replaces the backend response."""
    r = call(gw, "GET", "/post-fnerror")
    assert r.status_code == 502
    assert json.loads(r.content)["message"]["title"] == "java.lang.RuntimeException"


def test_post_empty_output_uses_post_names(gw: Any) -> None:
    """§5.3 at post: InvalidResponseFromAWSLambdaInPostProcess."""
    r = call(gw, "GET", "/post-null")
    assert r.status_code == 500
    assert r.text == "<h1>InvalidResponseFromAWSLambdaInPostProcess</h1>"


def test_post_fail_safe_sends_backend_response_unchanged(gw: Any) -> None:
    """Q7 fail-safe: the backend's own answer reaches the client."""
    r = call(gw, "GET", "/post-fs-null/status/418")
    assert r.status_code == 418
    assert r.text == "status 418"


# ---------------------------------------------------------------------------------------------------------------
# Conditions and payload limits (§5.1 P5, P7)
# ---------------------------------------------------------------------------------------------------------------


def test_required_header_missing_answers_400(gw: Any, functions: FunctionServer) -> None:
    """P5: 400 RequiredHeaderConditionFailure naming the header as configured."""
    r = call(gw, "GET", "/req-header")
    assert r.status_code == 400
    assert r.text == "<h1>RequiredHeaderConditionFailure</h1>"
    assert r.headers["X-Error-Detail-Header"] == "Required Header - Authorization Unavailable"


def test_blank_required_header_counts_as_missing(gw: Any) -> None:
    """P5: a whitespace-only value is blank."""
    import http.client

    conn = http.client.HTTPConnection(gw.base_url.split("//")[1], timeout=10)
    conn.putrequest("GET", f"/req-header?api_key={ACTIVE_KEY}")
    conn.putheader("Authorization", " \t ")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()


def test_required_application_eav_missing(gw: Any) -> None:
    """P5: the first missing EAV in configured order is reported (eav1 is set, tier is not)."""
    r = call(gw, "GET", "/req-eav")
    assert r.status_code == 400
    assert r.headers["X-Error-Detail-Header"] == "Required Application EAV - tier Unavailable"


def test_required_package_key_eav_missing(gw: Any) -> None:
    r = call(gw, "GET", "/req-keav")
    assert r.status_code == 400
    assert r.headers["X-Error-Detail-Header"] == "Required Package Key EAV - gold Unavailable"


def test_payload_one_byte_over_limit_is_blocked(gw: Any, backend: BackendServer) -> None:
    """P7 blocking: 21 bytes against 20b → 413; exactly 20 bytes passes."""
    token = uuid.uuid4().hex
    r = call(gw, "POST", f"/limit/{token}", data=b"x" * 21, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert r.headers["X-Error-Detail-Header"] == "Payload length is more than max allowed payload"
    assert _backend_calls(backend, token) == 0
    assert call(gw, "POST", "/limit", data=b"x" * 20).status_code == 200


def test_payload_over_limit_filtering_skips_function(gw: Any, functions: FunctionServer,
                                                     backend: BackendServer) -> None:
    """P7 filtering: the function is not called and the call continues unchanged."""
    token = uuid.uuid4().hex
    before = len(functions.calls_to("/allow"))
    r = call(gw, "POST", f"/filter/{token}", data=b"y" * 21)
    assert r.status_code == 200
    assert len(backend.wait_for(token)) == 1
    assert len(functions.calls_to("/allow")) == before


def test_payload_over_one_megabyte_always_413(gw: Any) -> None:
    """P7: 1 MB + 1 byte → 413 'Payload length is more than 1MB.' even with max-payload-size 1mb."""
    r = call(gw, "POST", "/onemb", data=b"z" * (1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.headers["X-Error-Detail-Header"] == "Payload length is more than 1MB."
    assert call(gw, "POST", "/onemb", data=b"z" * (1024 * 1024)).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Modes, inputs, renderings
# ---------------------------------------------------------------------------------------------------------------


def test_event_mode_failure_never_blocks(gw: Any, functions: FunctionServer) -> None:
    """P9 event: the function answers 500, the call still reaches the backend; the input says Event."""
    r = call(gw, "GET", "/event")
    assert r.status_code == 200
    inv = functions.wait_calls("/event-500")[-1]
    assert inv.input["synchronicity"] == "Event"
    assert inv.headers["X-Sidecar-Invocation-Type"] == "Event"


def test_pre_and_post_inputs_as_sent(gw: Any, functions: FunctionServer, backend: BackendServer) -> None:
    """§3.5 example 3 shape plus operation/routing; the post input carries the same masheryMessageId and
    the selected response headers (lower-cased)."""
    r = call(gw, "GET", "/my/op?tag=a&tag=b&flag", headers={"Authorization": "Bearer qwerty", "Cache-Control": "x"})
    assert r.status_code == 200
    msg_id = backend.matching("/op")[-1].header_values("X-Mashery-Message-ID")[0]
    pre = next(c.input for c in functions.calls_to("/allow") if c.input.get("masheryMessageId") == msg_id
               and c.input["point"] == "PreProcessor")
    assert pre["request"] == {"headers": {"authorization": "qwerty"}}
    assert pre["packageKey"] == ACTIVE_KEY and pre["serviceId"] == SID and pre["endpointId"] == "inputs"
    assert pre["remoteAddr"] == "127.0.0.1"
    assert pre["packageKeyEAVs"] == {"pkg_eav": "pkg_value"} and pre["eavs"] == {"eav1": "eav_value"}
    assert pre["operation"]["httpVerb"] == "GET" and pre["operation"]["path"] == "/op"
    assert pre["operation"]["query"] == {"tag": ["a", "b"], "flag": "", "api_key": ACTIVE_KEY}
    assert pre["routing"]["uri"].startswith(backend.url("/op"))
    functions.wait_calls("/allow", n=1)
    post = None
    for _ in range(100):
        post = next((c.input for c in functions.calls_to("/allow") if c.input.get("masheryMessageId") == msg_id
                     and c.input["point"] == "PostProcessor"), None)
        if post:
            break
        import time
        time.sleep(0.05)
    assert post is not None
    assert post["synchronicity"] == "Event"
    assert post["response"]["code"] == 200
    assert post["response"]["headers"]["content-type"].startswith("application/json")


def test_problem_json_rendering(gw: Any) -> None:
    """§6.2 rule 3: error_format json → application/problem+json."""
    r = call(gw, "GET", "/json-errors")
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json() == {"type": "urn:sidecar-gateway:error:RequiredHeaderConditionFailure",
                        "title": "RequiredHeaderConditionFailure", "status": 400,
                        "detail": "Required Header - X-Needed Unavailable".replace("X-Needed", "Authorization")}


def test_error_set_rendering(gw: Any) -> None:
    """§6.2 rule 2: enable_error_set uses the endpoint's entry for the status."""
    r = call(gw, "GET", "/error-set")
    assert r.status_code == 400
    assert r.content == b'{"error":"bad"}'
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Error-Detail-Header"] == "Required Header - X-Needed Unavailable"


def test_python_stack_modifies_backend_request(gw: Any, backend: BackendServer) -> None:
    """§8.2: an in-process handler's modify reaches the backend."""
    token = uuid.uuid4().hex
    assert call(gw, "GET", f"/python/{token}").status_code == 200
    assert backend.wait_for(token)[0].header_values("x-user") == ["alice"]


def test_python_exception_is_function_error(gw: Any) -> None:
    """§8.2: an exception is a function error: 502 with errorType = the class name."""
    r = call(gw, "GET", "/python-raise")
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": {"detail": "no luck", "title": "ValueError"}}


def test_base64_output_payload_is_decoded_only_when_flagged(gw: Any) -> None:
    """Q13 sanity: the b64 example decodes to the documented text."""
    assert base64.b64decode("Q3VzdG9tIHBheWxvYWQ=") == b"Custom payload"


# ---------------------------------------------------------------------------------------------------------------
# §9 extensions: output cache, pre-flight, scope, non-blocking, shadow
# ---------------------------------------------------------------------------------------------------------------


def test_output_cache_hint_skips_second_invocation(gw: Any, functions: FunctionServer,
                                                   backend: BackendServer) -> None:
    """§9.1: an output with unchangedFor is reused for an identical input; the modify still applies."""
    before = len(functions.calls_to("/cache-hint"))
    for _ in range(3):
        assert call(gw, "GET", "/cached/same").status_code == 200
    assert len(functions.calls_to("/cache-hint")) == before + 1
    assert backend.matching("/same")[-1].header_values("x-tier") == ["gold"]


def test_preflight_headers_then_pre_modify(gw: Any, functions: FunctionServer, backend: BackendServer) -> None:
    """§9.3: the pre-flight's addHeaders and the pre-processor's modify both reach the backend."""
    token = uuid.uuid4().hex
    assert call(gw, "GET", f"/preflight/{token}").status_code == 200
    sent = backend.wait_for(token)[0]
    assert sent.header_values("x-preflight") == ["yes"] and sent.header_values("x-pre") == ["yes"]
    points = {c.input["point"] for c in functions.calls_to("/preflight")}
    assert points == {"Preflight", "PreProcessor"}


def test_preflight_terminate_ends_the_call(gw: Any, backend: BackendServer) -> None:
    """§9.3: a pre-flight terminate answers the client like a pre terminate."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/preflight-deny/{token}")
    assert (r.status_code, r.text) == (402, "<h1>Plan exhausted</h1>")
    assert _backend_calls(backend, token) == 0


def test_scope_filter_skips_out_of_scope_calls(gw: Any) -> None:
    """§9.2: unless-httpVerb GET → a GET is not sent to the function; a POST is (and terminated)."""
    assert call(gw, "GET", "/scoped").status_code == 200
    assert call(gw, "POST", "/scoped", data=b"x").status_code == 403


def test_non_blocking_mode_answers_before_the_function(gw: Any, functions: FunctionServer) -> None:
    """§9.4: the call does not wait for a 2 s function; the function still gets an Event input."""
    import time

    started = time.monotonic()
    assert call(gw, "GET", "/nonblocking").status_code == 200
    assert time.monotonic() - started < 1.5
    inv = functions.wait_calls("/slow-nb", timeout=5)[-1]
    assert inv.input["synchronicity"] == "Event"


def test_shadow_mode_never_applies_the_verdict(gw: Any, functions: FunctionServer) -> None:
    """§9.5: the function would terminate 400; the call still reaches the backend and the would-be verdict is
    logged with the message id."""
    import time

    r = call(gw, "GET", "/shadow")
    assert r.status_code == 200
    inv = functions.wait_calls("/shadow-400", timeout=5)[-1]
    assert inv.input["synchronicity"] == "RequestResponse"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and '"shadow_verdict"' not in gw.stderr():
        time.sleep(0.05)
    line = next(json.loads(x) for x in gw.stderr().splitlines() if '"shadow_verdict"' in x)
    assert line["verdict"] == "terminate" and line["terminate_code"] == 400
    assert line["message_id"] == inv.input["masheryMessageId"]


# ---------------------------------------------------------------------------------------------------------------
# Metrics (§9.6) and reload rejection (§2.2) — kept last: they read what the calls above did
# ---------------------------------------------------------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_verdict_and_error_metrics_are_counted(gw: Any) -> None:
    """§9.6: sidecar_verdicts_total and sidecar_errors_total by name, after one call of each kind."""
    call(gw, "GET", "/term403")
    call(gw, "GET", "/timeout")
    call(gw, "GET", "/fs-empty")
    with session() as s:
        text = s.get(gw.admin_url + "/metrics", timeout=5).text
    assert _metric(text, "sidecar_verdicts_total", endpoint_id="term403", point="pre", verdict="terminate",
                   mode="live") >= 1
    assert _metric(text, "sidecar_errors_total", endpoint_id="timeout", error_name="Gateway Timeout") >= 1
    assert _metric(text, "sidecar_verdicts_total", endpoint_id="fs-empty", verdict="error") >= 1
    assert _metric(text, "sidecar_errors_total", endpoint_id="fs-empty",
                   error_name="InvalidResponseFromAWSLambdaInPreProcess") >= 1
    assert _metric(text, "sidecar_invocation_duration_seconds_count", endpoint_id="allow", stack="http") >= 1
    assert _metric(text, "gateway_requests_total", endpoint_id="term403", status="403") >= 1


def test_reload_with_invalid_processor_configuration_is_rejected(gw: Any, backend: BackendServer) -> None:
    """§2.2: a SIGHUP whose file has a processor error is rejected whole; the running configuration serves on."""
    import signal
    import time

    import yaml

    original = gw.config_path.read_text()
    doc = yaml.safe_load(original)
    doc["services"][0]["endpoints"][0]["pre_processing"] += "\nfailsafe: maybe\n"
    gw.config_path.write_text(yaml.safe_dump(doc))
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "failSafe: Invalid value" not in gw.stderr():
        time.sleep(0.05)
    assert "ERROR" in gw.stderr() and "failSafe: Invalid value" in gw.stderr()
    assert call(gw, "GET", "/allow").status_code == 200
    gw.config_path.write_text(original)
