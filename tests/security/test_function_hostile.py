"""Hostile function output, end to end (contract §4.3, §4.4, §5.3; issue 5 "Hostile input", function side).

One gateway, one scripted http-stack function (contract §8.1).  The function reads ``operation.path`` from its
input (``expand-input: operation``): the first segment names the case, whose output is looked up in
``OUTPUTS``; the second segment is a per-test token, so a test can tell whether the backend was reached.
Endpoint ``/pre`` runs the function at pre-processing, ``/post`` at post-processing.

Every invalid output must answer 500 ``Invalid output from AWS Lambda function`` (sure-fire) and nothing the
function wrote may reach the backend (pre) or the client (post).

Decision where the contract is silent: the number of headers an output may set is not capped by the contract;
10,000 ``addHeaders`` are a *valid* output.  At pre they go to the backend, whose own header limits answer
(aiohttp: 400, passed through); at post the client receives them.  Either way the gateway answers within the
endpoint timeout and keeps serving other calls.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar_gateway.sidecar.output_interpreter import FORBIDDEN_HEADERS
from support.backend import BackendServer
from support.function_server import Behavior, FunctionServer
from support.gateway_proc import GatewayProcess, config, endpoint, raw_request, service

INVALID = "Invalid output from AWS Lambda function"
MARK = "leaked-6f1e"  # a value that must never reach backend or client
ROUTE_HOST = "127.0.0.2:9"  # listed in route_hosts: a permitted re-route target
MANY = 10_000

OUTPUTS: dict[str, Any] = {}


def case(name: str, output: Any) -> str:
    OUTPUTS[name] = output
    return name


def _script(inp: Any) -> Any:
    name = inp["operation"]["path"].split("/")[1]
    return OUTPUTS[name]


# -- forbidden headers (§4.3 rule 4) in every member, any case --------------------------------------------------
FORBIDDEN_CASES = []
for _name in sorted(FORBIDDEN_HEADERS):
    for _spelling in (_name, _name.upper()):
        FORBIDDEN_CASES += [
            case(f"fb-add-{_spelling}", {"modify": {"addHeaders": {_spelling: MARK}}}),
            case(f"fb-alias-{_spelling}", {"modify": {"headers": {_spelling: MARK}}}),
            case(f"fb-drop-{_spelling}", {"modify": {"dropHeaders": [_spelling]}}),
            case(f"fb-term-{_spelling}", {"terminate": {"code": 403, "addHeaders": {_spelling: MARK}}}),
        ]

# -- control characters and non-tokens in names and values (§4.3 rules 4, 5) -----------------------------------
BAD_NAMES = {
    "crlf": f"X-A\r\nX-Injected: {MARK}", "lf": "X-A\nX-B", "cr": "X-A\rX-B", "nul": "X-A\x00", "space": "X A",
    "colon": "X-A:", "empty": "", "non-ascii": "X-Ä", "tab": "X-A\t", "del": "X\x7f",
}
BAD_VALUES = {
    "crlf": f"a\r\nX-Injected: {MARK}", "lf": f"a\n{MARK}", "cr": f"a\r{MARK}", "nul": f"a\x00{MARK}",
    "del": f"a\x7f{MARK}", "esc": f"a\x1b{MARK}", "nel": f"a\x85{MARK}", "vt": f"a\x0b{MARK}",
}
CONTROL_CASES = (
    [case(f"name-{k}", {"modify": {"addHeaders": {v: MARK}}}) for k, v in BAD_NAMES.items()]
    + [case(f"dropname-{k}", {"modify": {"dropHeaders": [v]}}) for k, v in BAD_NAMES.items()]
    + [case(f"value-{k}", {"modify": {"addHeaders": {"X-Fn": v}}}) for k, v in BAD_VALUES.items()]
    + [case(f"termvalue-{k}", {"terminate": {"code": 403, "headers": {"X-Fn": v}}}) for k, v in BAD_VALUES.items()]
)
case("value-htab", {"modify": {"addHeaders": {"X-Fn": "a\tb"}}})  # HTAB is allowed (§4.3 rule 5)
case("dup-name", {"modify": {"addHeaders": {"X-Fn": "1", "x-fn": MARK}}})  # listed twice (§4.3 rule 4)

# -- enormous header counts ---------------------------------------------------------------------------------------
case("many-headers", {"modify": {"addHeaders": {f"X-Many-{i}": "v" for i in range(MANY)}}})
case("many-drops", {"modify": {"dropHeaders": [f"X-Many-{i}" for i in range(MANY)]}})

# -- completeWithCode / terminate.code (§4.3 rule 3) --------------------------------------------------------------
BAD_CODES: dict[str, Any] = {
    "199": 199, "600": 600, "0": 0, "neg": -200, "float": 200.5, "float-int": 200.0, "exp": 2e2, "string": "200",
    "bool": True, "huge": 2**64, "list": [200], "object": {"code": 200},
}
CODE_CASES = [case(f"cwc-{k}", {"modify": {"completeWithCode": v}}) for k, v in BAD_CODES.items()]
TERM_CODE_CASES = [case(f"tcode-{k}", {"terminate": {"code": v}}) for k, v in BAD_CODES.items()]

# -- base64 junk (§4.3 rule 3) ------------------------------------------------------------------------------------
BAD_BASE64 = {"bang": "!!!not base64!!!", "short": "abc", "no-pad": "YQ", "newline": "YQ==\nYQ==", "space": " YQ==",
              "non-ascii": "éé==", "url-safe": "-_-_", "nul": "YQ\x00=", "b64-flag-string": None}
B64_CASES = [
    case(f"b64-{k}", {"modify": {"payload": v, "base64Encoded": True}} if v is not None
         else {"modify": {"payload": "YQ==", "base64Encoded": "true"}})
    for k, v in BAD_BASE64.items()
]
TERM_B64_CASES = [case(f"tb64-{k}", {"terminate": {"code": 403, "payload": v, "base64Encoded": True}})
                  for k, v in BAD_BASE64.items() if v is not None]


@pytest.fixture(scope="module")
def functions() -> Iterator[FunctionServer]:
    server = FunctionServer({"/script": Behavior(respond=_script)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(module_gateway_factory: Any, backend: BackendServer, functions: FunctionServer) -> GatewayProcess:
    proc = f"stack: http\nurl: {functions.url('/script')}\nexpand-input: operation\n"
    b = backend.url("/be")
    cfg = config(service(
        "svc-fn-hostile",
        endpoint("pre", "/pre", b, key_required=False, pre_processing=proc, route_hosts=[ROUTE_HOST]),
        endpoint("post", "/post", b, key_required=False, post_processing=proc),
        endpoint("plain", "/plain", b, key_required=False),
    ))
    return module_gateway_factory.start(cfg)


def call(gw: GatewayProcess, point: str, name: str) -> tuple[Any, str]:
    t = uuid.uuid4().hex
    return raw_request(gw.port, "GET", f"/{point}/{name}/{t}"), t


def assert_invalid_and_contained(gw: GatewayProcess, backend: BackendServer, point: str, name: str) -> None:
    r, t = call(gw, point, name)
    assert (r.status, r.header("X-Error-Detail-Header")) == (500, INVALID), (name, r.status, r.body[:200])
    assert MARK not in repr(r.headers) and MARK.encode() not in r.body
    sent = backend.matching(t)
    if point == "pre":
        assert sent == [], name
    else:  # post: the backend was called before the function; the function's output went nowhere
        assert all(MARK not in repr(s.headers) for s in sent)


def _ids(names: list[str]) -> list[Any]:
    return [pytest.param(n, id=n) for n in names]


@pytest.mark.parametrize("point", ["pre", "post"])
@pytest.mark.parametrize("name", _ids(FORBIDDEN_CASES))
def test_forbidden_header_is_invalid_output(gw: GatewayProcess, backend: BackendServer, point: str, name: str) -> None:
    """A forbidden header in addHeaders / headers / dropHeaders / terminate headers → 500 invalid output."""
    assert_invalid_and_contained(gw, backend, point, name)


@pytest.mark.parametrize("point", ["pre", "post"])
@pytest.mark.parametrize("name", _ids(CONTROL_CASES))
def test_control_characters_in_header_names_and_values_are_invalid_output(gw: GatewayProcess,
                                                                          backend: BackendServer, point: str,
                                                                          name: str) -> None:
    """CR, LF, NUL and other controls, or a non-token name, → 500; nothing is injected anywhere."""
    assert_invalid_and_contained(gw, backend, point, name)


@pytest.mark.parametrize("point", ["pre", "post"])
def test_header_name_listed_twice_is_invalid_output(gw: GatewayProcess, backend: BackendServer, point: str) -> None:
    """One name twice in addHeaders (case-insensitively) → 500 (§4.3 rule 4)."""
    assert_invalid_and_contained(gw, backend, point, "dup-name")


def test_horizontal_tab_in_header_value_is_applied(gw: GatewayProcess, backend: BackendServer) -> None:
    """Control: HTAB is the one control character allowed in a value (§4.3 rule 5)."""
    r, t = call(gw, "pre", "value-htab")
    assert r.status == 200
    assert backend.wait_for(t)[0].header_values("x-fn") == ["a\tb"]


@pytest.mark.parametrize("name", _ids(CODE_CASES))
def test_complete_with_code_out_of_range_or_not_integer_is_invalid_at_post(gw: GatewayProcess,
                                                                           backend: BackendServer, name: str) -> None:
    """completeWithCode outside 200–599, a float, a string, a boolean … → 500 at post."""
    assert_invalid_and_contained(gw, backend, "post", name)


@pytest.mark.parametrize("name", _ids(CODE_CASES))
def test_complete_with_code_is_ignored_at_pre(gw: GatewayProcess, backend: BackendServer, name: str) -> None:
    """At pre completeWithCode is ignored and not validated (§4.3): the call goes through unchanged."""
    r, t = call(gw, "pre", name)
    assert r.status == 200 and len(backend.wait_for(t)) == 1


@pytest.mark.parametrize("point", ["pre", "post"])
@pytest.mark.parametrize("name", _ids(TERM_CODE_CASES))
def test_terminate_code_out_of_range_or_not_integer_is_invalid(gw: GatewayProcess, backend: BackendServer,
                                                               point: str, name: str) -> None:
    """terminate.code outside 200–599 or not a JSON integer → 500; the backend is not called at pre."""
    assert_invalid_and_contained(gw, backend, point, name)


@pytest.mark.parametrize("point", ["pre", "post"])
@pytest.mark.parametrize("name", _ids(B64_CASES + TERM_B64_CASES))
def test_base64_junk_is_invalid_output(gw: GatewayProcess, backend: BackendServer, point: str, name: str) -> None:
    """base64Encoded with a payload that is not strict padded standard base64 (or a non-boolean flag) → 500."""
    assert_invalid_and_contained(gw, backend, point, name)


# -- changeRoute (§4.3 rule 6, §4.4 step 3) -----------------------------------------------------------------------


def _route_cases(backend_port: int) -> dict[str, Any]:
    here = f"127.0.0.1:{backend_port}"
    return {
        "other-host": {"uri": "http://evil.example/x"},
        "other-port": {"uri": "http://127.0.0.1:1/x"},
        "userinfo": {"uri": f"http://{here}@evil.example/x"},
        "userinfo-permitted": {"uri": f"http://evil@{here}/x"},
        "scheme-relative": {"uri": "//evil.example/x"},
        "relative": {"uri": "/x"},
        "file": {"uri": "file:///etc/passwd"},
        "gopher": {"uri": f"gopher://{here}/x"},
        "ipv6-loopback": {"uri": f"http://[::1]:{backend_port}/x"},
        "localhost-alias": {"uri": f"http://localhost:{backend_port}/x"},
        "decimal-ip": {"uri": f"http://2130706433:{backend_port}/x"},
        "crlf": {"uri": f"http://{here}/x\r\nX-Injected: {MARK}"},
        "space": {"uri": f"http://{here}/x y"},
        "port-zero": {"uri": "http://127.0.0.1:0/x"},
        "port-huge": {"uri": "http://127.0.0.1:99999/x"},
        "verb-crlf": {"httpVerb": f"GET\r\nX-Injected: {MARK}"},
        "verb-space": {"httpVerb": "G ET"},
        "empty": {},
        "not-object": "http://evil.example/",
        "uri-not-string": {"uri": ["http://evil.example/"]},
    }


@pytest.fixture(scope="module")
def route_cases(backend: BackendServer) -> dict[str, Any]:
    cases = _route_cases(backend.port)
    for k, v in cases.items():
        case(f"route-{k}", {"modify": {"changeRoute": v, "addHeaders": {"X-Fn": MARK}}})
    case("route-permitted", {"modify": {"changeRoute": {"uri": f"http://127.0.0.1:{backend.port}/be/rerouted"}}})
    case("route-listed", {"modify": {"changeRoute": {"uri": f"http://{ROUTE_HOST}/x"}}})
    return cases


@pytest.mark.parametrize("key", list(_route_cases(0)))
def test_change_route_to_a_non_permitted_target_is_invalid(gw: GatewayProcess, backend: BackendServer,
                                                           route_cases: dict[str, Any], key: str) -> None:
    """A changeRoute to another host, port, scheme, a user-info trick or with control characters → 500;
    the backend (and the other host) is never called."""
    assert_invalid_and_contained(gw, backend, "pre", f"route-{key}")


def test_change_route_to_the_backend_host_is_applied(gw: GatewayProcess, backend: BackendServer,
                                                     route_cases: dict[str, Any]) -> None:
    """Control: the endpoint's own backend authority is permitted; the path is replaced."""
    r, _ = call(gw, "pre", "route-permitted")
    assert r.status == 200 and r.json()["path"] == "/be/rerouted"


def test_change_route_is_ignored_at_post(gw: GatewayProcess, backend: BackendServer,
                                         route_cases: dict[str, Any]) -> None:
    """At post changeRoute is ignored, not validated (§4.3): even a forbidden host does not fail the call."""
    r, _ = call(gw, "post", "route-other-host")
    assert r.status == 200 and r.header("x-fn") == MARK  # the rest of modify applies


# -- enormous header counts ---------------------------------------------------------------------------------------


def _raw_get(port: int, target: str, timeout: float = 20.0) -> tuple[int, int, float]:
    """(status, number of header fields, seconds) for GET target, read off a raw socket."""
    started = time.monotonic()
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        while piece := s.recv(1 << 16):
            data += piece
    head = bytes(data).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = int(re.match(rb"HTTP/1\.1 (\d{3})", head[0]).group(1))  # type: ignore[union-attr]
    return status, len(head) - 1, time.monotonic() - started


def test_ten_thousand_headers_at_pre_are_bounded_by_the_backend(gw: GatewayProcess, backend: BackendServer) -> None:
    """10,000 addHeaders at pre are a valid output; the backend's own limit answers (aiohttp: 400), promptly,
    and the gateway keeps serving."""
    t = uuid.uuid4().hex
    status, _, seconds = _raw_get(gw.port, f"/pre/many-headers/{t}")
    assert status in (200, 400, 431, 502) and seconds < 10
    assert raw_request(gw.port, "GET", "/plain/after").status == 200


def test_ten_thousand_headers_at_post_reach_the_client(gw: GatewayProcess) -> None:
    """10,000 addHeaders at post are applied: the client receives them all, and the gateway keeps serving."""
    status, fields, seconds = _raw_get(gw.port, f"/post/many-headers/{uuid.uuid4().hex}")
    assert status == 200 and fields >= MANY and seconds < 10
    assert raw_request(gw.port, "GET", "/plain/after").status == 200


@pytest.mark.parametrize("point", ["pre", "post"])
def test_ten_thousand_drop_headers_are_applied(gw: GatewayProcess, point: str) -> None:
    """10,000 dropHeaders names (none present) are a valid no-op."""
    status, _, seconds = _raw_get(gw.port, f"/{point}/many-drops/{uuid.uuid4().hex}")
    assert status == 200 and seconds < 10
