"""Applying a Modification (contract §4.4 steps 2.1–2.6, Content-Type rules) and terminate headers."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar_gateway.sidecar.apply import apply_to_request, apply_to_response, terminate_headers
from sidecar_gateway.sidecar.call import BackendRequest, BackendResponse
from sidecar_gateway.sidecar.verdict import ChangeRoute, Modification, Termination

Headers = list[tuple[bytes, bytes]]


def request(headers: Headers | None = None, **fields: Any) -> BackendRequest:
    base: dict[str, Any] = {"method": "POST", "scheme": "https", "host": "backend.internal", "port": 443,
                            "path_qs": "/v1/op?a=1"}
    base.update(fields)
    default = [(b"host", b"backend.internal"), (b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked"),
               (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"b")]
    return BackendRequest(headers=default if headers is None else headers, **base)


def response(status: int = 200, headers: Headers | None = None, body: bytes | None = b"hello") -> BackendResponse:
    default = [(b"content-type", b"text/plain"), (b"content-length", b"5"), (b"content-encoding", b"gzip"),
               (b"x-a", b"1")]
    return BackendResponse(status=status, headers=default if headers is None else headers, body=body)


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [v for n, v in headers if n == name]


# -- headers (§4.4 steps 2.1–2.2) ---------------------------------------------------------------------------------

HEADER_CASES = [
    pytest.param(Modification(drop_headers=frozenset({b"x-a"})), {b"x-a": [], b"x-b": [b"b"]}, id="drop-every-value"),
    pytest.param(Modification(add_headers=((b"x-a", b"3"),)), {b"x-a": [b"3"], b"x-b": [b"b"]},
                 id="add-replaces-every-value"),
    pytest.param(Modification(drop_headers=frozenset({b"x-a"}), add_headers=((b"x-a", b"9"),)), {b"x-a": [b"9"]},
                 id="dropped-and-added-is-present"),
    pytest.param(Modification(add_headers=((b"x-new", b"n"),)), {b"x-new": [b"n"], b"x-a": [b"1", b"2"]},
                 id="add-new"),
    pytest.param(Modification(drop_headers=frozenset({b"x-missing"})), {b"x-a": [b"1", b"2"]}, id="drop-absent"),
]


@pytest.mark.parametrize(("mod", "expected"), HEADER_CASES)
def test_request_headers_drop_then_add(mod: Modification, expected: dict[bytes, list[bytes]]) -> None:
    """§4.4: drop, then add (replacing every value); a name both dropped and added ends up present."""
    req = request()
    apply_to_request(mod, req)
    for name, expected_values in expected.items():
        assert values(req.headers, name) == expected_values
    assert req.body is None and not req.body_replaced  # headers only: the body still streams unchanged
    assert values(req.headers, b"transfer-encoding") == [b"chunked"]


@pytest.mark.parametrize(("mod", "expected"), HEADER_CASES)
def test_response_headers_drop_then_add(mod: Modification, expected: dict[bytes, list[bytes]]) -> None:
    """§4.4 at post: same header rules on the client response; body and framing untouched."""
    resp = response(headers=[(b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"b"), (b"content-length", b"5")])
    apply_to_response(mod, resp)
    for name, expected_values in expected.items():
        assert values(resp.headers, name) == expected_values
    assert (resp.status, resp.body) == (200, b"hello")
    assert values(resp.headers, b"content-length") == [b"5"]


# -- body and framing (§4.4 steps 2.4, 2.6; §10 Q14) -------------------------------------------------------------

BODY_CASES = [
    pytest.param(Modification(body=b"Custom Payload"), b"text/plain", None, id="payload-keeps-content-type"),
    pytest.param(Modification(body=b"{}", body_is_json=True), b"application/json", None, id="json-content-type"),
    pytest.param(Modification(body=b"{}", body_is_json=True, add_headers=((b"content-type", b"application/x+json"),)),
                 b"application/x+json", None, id="json-add-headers-content-type-wins"),
    pytest.param(Modification(body=b"x", add_headers=((b"content-type", b"text/csv"),)), b"text/csv", None,
                 id="payload-with-added-content-type"),
    pytest.param(Modification(body=b"x", add_headers=((b"content-encoding", b"br"),)), b"text/plain", b"br",
                 id="content-encoding-kept-when-added"),
    pytest.param(Modification(body=b""), b"text/plain", None, id="empty-replacement"),
]


@pytest.mark.parametrize(("mod", "content_type", "content_encoding"), BODY_CASES)
def test_request_body_replacement_reframes(mod: Modification, content_type: bytes,
                                           content_encoding: bytes | None) -> None:
    """§4.4 step 6: Content-Length recomputed, Transfer-Encoding removed, Content-Encoding removed unless added."""
    req = request(headers=[(b"host", b"backend.internal"), (b"content-type", b"text/plain"),
                           (b"content-length", b"999"), (b"transfer-encoding", b"chunked"),
                           (b"content-encoding", b"gzip")])
    apply_to_request(mod, req)
    assert req.body == mod.body and req.body_replaced
    assert values(req.headers, b"content-length") == [str(len(mod.body)).encode()]
    assert values(req.headers, b"transfer-encoding") == []
    assert values(req.headers, b"content-type") == [content_type]
    assert values(req.headers, b"content-encoding") == ([content_encoding] if content_encoding else [])


@pytest.mark.parametrize(("mod", "content_type", "content_encoding"), BODY_CASES)
def test_response_body_replacement_reframes(mod: Modification, content_type: bytes,
                                            content_encoding: bytes | None) -> None:
    """§4.4 step 6 at post."""
    resp = response()
    apply_to_response(mod, resp)
    assert resp.body == mod.body
    assert values(resp.headers, b"content-length") == [str(len(mod.body)).encode()]
    assert values(resp.headers, b"content-type") == [content_type]
    assert values(resp.headers, b"content-encoding") == ([content_encoding] if content_encoding else [])


def test_streaming_response_body_replaced() -> None:
    """A response still streaming (body None) gets the replacement and its framing."""
    resp = response(body=None, headers=[(b"transfer-encoding", b"chunked")])
    apply_to_response(Modification(body=b"abc"), resp)
    assert resp.body == b"abc"
    assert resp.headers == [(b"content-length", b"3")]


# -- completeWithCode (§4.4 step 2.5) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mod", "status", "body", "content_length"),
    [
        pytest.param(Modification(complete_with_code=201), 201, b"hello", [b"5"], id="status-only"),
        pytest.param(Modification(complete_with_code=500, body=b"oops"), 500, b"oops", [b"4"], id="status-and-body"),
        pytest.param(Modification(complete_with_code=204), 204, b"", [], id="204-body-removed"),
        pytest.param(Modification(complete_with_code=304, body=b"{}", body_is_json=True), 304, b"", [],
                     id="304-body-removed"),
    ],
)
def test_complete_with_code(mod: Modification, status: int, body: bytes, content_length: list[bytes]) -> None:
    """§4.4 step 5: completeWithCode becomes the status; for 204 and 304 the body is removed."""
    resp = response()
    apply_to_response(mod, resp)
    assert (resp.status, resp.body) == (status, body)
    assert values(resp.headers, b"content-length") == content_length


def test_body_set_on_backend_204_is_removed() -> None:
    """A 204/304 response cannot carry content, even when the function replaced the body without a status."""
    resp = response(status=204, headers=[], body=b"")
    apply_to_response(Modification(body=b"x"), resp)
    assert (resp.status, resp.body, resp.headers) == (204, b"", [])


# -- changeRoute (§4.4 step 2.3) ----------------------------------------------------------------------------------

ROUTE_CASES = [
    pytest.param(ChangeRoute(scheme="https", host="backend.internal", port=443, path_qs="/v2/x"),
                 ("POST", "https", "backend.internal", 443, "/v2/x"), b"backend.internal", id="path-only"),
    pytest.param(ChangeRoute(scheme="http", host="alt.internal", port=8080, path_qs="/", method="PUT"),
                 ("PUT", "http", "alt.internal", 8080, "/"), b"alt.internal:8080", id="authority-port-and-verb"),
    pytest.param(ChangeRoute(scheme="http", host="2001:db8::1", port=80, path_qs="/x"),
                 ("POST", "http", "2001:db8::1", 80, "/x"), b"[2001:db8::1]", id="ipv6-bracketed-host-header"),
    pytest.param(ChangeRoute(method="DELETE"), ("DELETE", "https", "backend.internal", 443, "/v1/op?a=1"),
                 b"backend.internal", id="verb-only"),
]


@pytest.mark.parametrize(("route", "expected", "host_header"), ROUTE_CASES)
def test_change_route(route: ChangeRoute, expected: tuple[Any, ...], host_header: bytes) -> None:
    """§4.4 step 3: uri replaces scheme/host/port/path/query, Host follows, httpVerb replaces the method."""
    req = request()
    apply_to_request(Modification(change_route=route), req)
    assert (req.method, req.scheme, req.host, req.port, req.path_qs) == expected
    assert values(req.headers, b"host") == [host_header]
    assert req.headers[0][0] == b"host"  # replaced in place


def test_change_route_adds_missing_host_header() -> None:
    """The Host header is set even when the backend request had none yet."""
    req = request(headers=[])
    apply_to_request(Modification(change_route=ChangeRoute(scheme="https", host="alt", port=8443, path_qs="/")), req)
    assert req.headers == [(b"host", b"alt:8443")]


def test_round_trip_order_drop_add_route_body() -> None:
    """§4.4 order: headers, route, body, framing together."""
    mod = Modification(drop_headers=frozenset({b"x-b"}), add_headers=((b"x-c", b"c"),), body=b"{}", body_is_json=True,
                       change_route=ChangeRoute(scheme="https", host="alt", port=443, path_qs="/p"))
    req = request()
    apply_to_request(mod, req)
    assert req.uri() == "https://alt/p"
    assert sorted(req.headers) == sorted([(b"host", b"alt"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-c", b"c"),
                                          (b"content-type", b"application/json"), (b"content-length", b"2")])


# -- terminate headers (§4.4 terminate table) ---------------------------------------------------------------------

TERMINATE_CASES = [
    pytest.param(Termination(code=200, body=b"{}", body_is_json=True), [(b"content-type", b"application/json")],
                 id="json-gets-application-json"),
    pytest.param(Termination(code=200, body=b"{}", body_is_json=True, headers=((b"content-type", b"text/json"),)),
                 [(b"content-type", b"text/json")], id="json-own-content-type"),
    pytest.param(Termination(code=200, body=b"raw"), [], id="payload-no-content-type"),
    pytest.param(Termination(code=200, body=b"raw", headers=((b"content-type", b"text/plain"), (b"x-a", b"1"))),
                 [(b"content-type", b"text/plain"), (b"x-a", b"1")], id="payload-own-content-type"),
    pytest.param(Termination(code=403, headers=((b"x-a", b"1"),)), [(b"x-a", b"1")], id="message-only"),
]


@pytest.mark.parametrize(("term", "expected"), TERMINATE_CASES)
def test_terminate_headers(term: Termination, expected: Headers) -> None:
    """§4.4: json → application/json unless set; payload → no Content-Type unless set."""
    assert terminate_headers(term) == expected
