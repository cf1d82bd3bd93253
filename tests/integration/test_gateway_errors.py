"""Gateway-made errors (gateway-config.md "Gateway-made errors", contract §6.2): Mashery XML by default
(``<h1>Name</h1>``, Content-Type application/xml, message in X-Error-Detail-Header), problem+json with
``error_format: json``, 502 for an unreachable backend, 504 after the endpoint timeout, 413 over
max_request_body; backend statuses themselves pass through untouched."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import requests

from support.gateway_proc import ACTIVE_KEY, config, endpoint, raw_request, service

LIMIT = 1024


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend, dead_port):
    b = backend.url
    dead = f"http://127.0.0.1:{dead_port}/x"
    anon = {"key_required": False}
    cfg = config(
        service(
            "svc-err",
            endpoint("ep-x", "/x", b("/be/x")),
            endpoint("ep-j", "/j", b("/be/j"), error_format="json"),
            endpoint("ep-m", "/mm", b("/be/mm"), methods=["GET"], **anon),
            endpoint("ep-dead", "/dead", dead, **anon),
            endpoint("ep-deadj", "/deadj", dead, error_format="json", **anon),
            endpoint("ep-slow", "/slow", b("/slow/3"), timeout=1, **anon),
            endpoint("ep-slowj", "/slowj", b("/slow/3"), timeout=1, error_format="json", **anon),
            endpoint("ep-slowlong", "/slowlong", b("/slow/3"), timeout=10, **anon),
            endpoint("ep-reset", "/reset", b("/reset"), **anon),
            endpoint("ep-close", "/close", b("/close"), **anon),
            endpoint("ep-resetmid", "/resetmid", b("/resetmid"), **anon),
            endpoint("ep-status", "/st", b("/status/503"), **anon),
            endpoint("ep-body", "/body", b("/be/body"), **anon),
        ),
        max_request_body=LIMIT,
    )
    return module_gateway_factory.start(cfg)


def xml_rendering(r):
    """(status, media type, X-Error-Detail-Header, body) of a requests response."""
    media = r.headers.get("Content-Type", "").split(";")[0].strip()
    return r.status_code, media, r.headers.get("X-Error-Detail-Header"), r.content


def json_rendering(r):
    media = r.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        body = r.json()
    except ValueError:
        body = r.text
    return r.status_code, media, body


def problem(name, status, detail):
    return (
        status,
        "application/problem+json",
        {"type": f"urn:sidecar-gateway:error:{name}", "title": name, "status": status, "detail": detail},
    )


# -- XML (default) -----------------------------------------------------------------------------------------------


def test_not_found_renders_mashery_xml(http, gw):
    """No endpoint: 404, application/xml, <h1>NotFound</h1>, detail No endpoint matches the request."""
    r = http.get(gw.base_url + "/nowhere", timeout=10)
    assert xml_rendering(r) == (404, "application/xml", "No endpoint matches the request", b"<h1>NotFound</h1>")


def test_method_not_allowed_renders_mashery_xml(http, gw):
    """405: <h1>MethodNotAllowed</h1> with detail Method not allowed on this endpoint."""
    r = http.post(gw.base_url + "/mm/x", data=b"x", timeout=10)
    assert xml_rendering(r) == (
        405,
        "application/xml",
        "Method not allowed on this endpoint",
        b"<h1>MethodNotAllowed</h1>",
    )


def test_bad_request_renders_mashery_xml(gw):
    """A dot-segment remainder: 400 <h1>BadRequest</h1> with detail Malformed request."""
    r = raw_request(gw.port, "GET", f"/x/../y?api_key={ACTIVE_KEY}")
    media = (r.header("Content-Type") or "").split(";")[0].strip()
    assert (r.status, media, r.header("X-Error-Detail-Header"), r.body) == (
        400,
        "application/xml",
        "Malformed request",
        b"<h1>BadRequest</h1>",
    )


def test_missing_key_renders_mashery_xml(http, gw):
    """Missing key: 403 <h1>AuthenticationFailure</h1> with detail Package Key Not Specified."""
    r = http.get(gw.base_url + "/x/y", timeout=10)
    assert xml_rendering(r) == (403, "application/xml", "Package Key Not Specified", b"<h1>AuthenticationFailure</h1>")


def test_refused_backend_renders_502_xml(http, gw):
    """Backend port refusing connections: 502 <h1>BackendUnavailable</h1>, Backend could not be reached."""
    r = http.get(gw.base_url + "/dead/x", timeout=10)
    assert xml_rendering(r) == (502, "application/xml", "Backend could not be reached", b"<h1>BackendUnavailable</h1>")


@pytest.mark.parametrize("path", ["/reset/x", "/close/x"])
def test_backend_dropping_connection_before_answer_answers_502(http, gw, path):
    """A backend that resets or closes the connection without answering: 502 BackendUnavailable."""
    r = http.get(gw.base_url + path, timeout=10)
    assert xml_rendering(r) == (502, "application/xml", "Backend could not be reached", b"<h1>BackendUnavailable</h1>")


def test_slow_backend_renders_504_xml(http, gw):
    """Backend slower than the 1 s endpoint timeout: 504 <h1>BackendTimeout</h1>."""
    r = http.get(gw.base_url + "/slow/x", timeout=10)
    assert xml_rendering(r) == (
        504,
        "application/xml",
        "Backend did not answer within the endpoint timeout",
        b"<h1>BackendTimeout</h1>",
    )


def test_slow_backend_is_cut_at_endpoint_timeout(http, gw):
    """The 504 comes after about the endpoint timeout (1 s), not after the backend's 3 s."""
    t0 = time.monotonic()
    http.get(gw.base_url + "/slow/x", timeout=10)
    assert 0.8 <= time.monotonic() - t0 < 2.5


def test_oversized_body_renders_413_xml(http, gw):
    """A Content-Length body over max_request_body: 413 <h1>PayloadTooLarge</h1>."""
    r = http.post(gw.base_url + "/body/x", data=b"a" * (4 * LIMIT), timeout=10)
    assert xml_rendering(r) == (
        413,
        "application/xml",
        "Request body exceeds the gateway limit",
        b"<h1>PayloadTooLarge</h1>",
    )


def test_oversized_body_never_reaches_backend(http, gw, backend):
    """A body announced over the limit is refused without calling the backend."""
    token = uuid.uuid4().hex
    r = http.post(f"{gw.base_url}/body/{token}", data=b"a" * (4 * LIMIT), timeout=10)
    assert (r.status_code, backend.matching(token)) == (413, [])


def test_oversized_chunked_body_answers_413(http, gw):
    """A chunked body that grows over max_request_body answers 413."""

    def chunks():
        for _ in range(8):
            yield b"a" * 512

    r = http.post(gw.base_url + "/body/x", data=chunks(), timeout=10)
    assert r.status_code == 413


def test_body_at_limit_is_forwarded(http, gw):
    """A body of exactly max_request_body bytes is not too large and reaches the backend whole."""
    r = http.post(gw.base_url + "/body/x", data=b"a" * LIMIT, timeout=10)
    assert (r.status_code, r.json()["body_length"]) == (200, LIMIT)


# -- problem+json ------------------------------------------------------------------------------------------------


def test_json_format_renders_403_as_problem_json(http, gw):
    """error_format json: missing key gives the problem+json document of §6.2."""
    r = http.get(gw.base_url + "/j/y", timeout=10)
    assert json_rendering(r) == problem("AuthenticationFailure", 403, "Package Key Not Specified")


def test_json_format_renders_502_as_problem_json(http, gw):
    """error_format json: refused backend gives problem+json BackendUnavailable."""
    r = http.get(gw.base_url + "/deadj/y", timeout=10)
    assert json_rendering(r) == problem("BackendUnavailable", 502, "Backend could not be reached")


def test_json_format_renders_504_as_problem_json(http, gw):
    """error_format json: endpoint timeout gives problem+json BackendTimeout."""
    r = http.get(gw.base_url + "/slowj/y", timeout=10)
    assert json_rendering(r) == problem("BackendTimeout", 504, "Backend did not answer within the endpoint timeout")


def test_json_format_problem_body_is_compact(http, gw):
    """The problem+json body is compact (no spaces after separators), in the order type, title, status, detail."""
    r = http.get(gw.base_url + "/j/y", timeout=10)
    assert r.content == (
        b'{"type":"urn:sidecar-gateway:error:AuthenticationFailure","title":"AuthenticationFailure",'
        b'"status":403,"detail":"Package Key Not Specified"}'
    )


def test_not_found_uses_xml_next_to_json_endpoints(http, gw):
    """A path near a json endpoint but matching none (/jx) is rendered in XML."""
    r = http.get(gw.base_url + "/jx", timeout=10)
    assert xml_rendering(r)[:2] == (404, "application/xml")


# -- what is not a gateway-made error ----------------------------------------------------------------------------


def test_backend_error_status_is_passed_through(http, gw):
    """A backend 503 reaches the client unchanged (status and body), not re-rendered."""
    r = http.get(gw.base_url + "/st/x", timeout=10)
    assert (r.status_code, r.content) == (503, b"status 503")


def test_backend_reset_mid_body_is_not_delivered_as_complete(gw):
    """A backend resetting after part of the body: the client must not get a clean, complete (short) response."""
    s = requests.Session()
    s.trust_env = False
    try:
        r = s.get(gw.base_url + "/resetmid/x", timeout=10)
    except requests.RequestException:
        return  # aborted connection: correct
    assert r.status_code == 502, f"got a complete {r.status_code} response of {len(r.content)} bytes"


def test_client_disconnect_cancels_upstream_call(gw, backend):
    """A client hanging up while the backend works makes the gateway drop the backend call promptly."""
    token = uuid.uuid4().hex
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(f"GET /slowlong/{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert backend.wait_for(token, timeout=5), "the call never reached the backend"
        time.sleep(0.2)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and backend.matching(token)[0].gone_after is None:
        time.sleep(0.05)
    gone_after = backend.matching(token)[0].gone_after
    assert gone_after is not None and gone_after < 2.0, gone_after
