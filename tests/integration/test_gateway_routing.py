"""Routing (gateway-config.md "Matching"): public_path prefixes on segment boundaries, longest match, root,
public_host with the port ignored, method-based routing between endpoints sharing a path, 405 and 404."""

from __future__ import annotations

import uuid

import pytest

from support.gateway_proc import config, endpoint, service


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    b = backend.url
    cfg = config(
        service(
            "svc-route",
            endpoint("ep-my", "/my", b("/be/my"), key_required=False),
            endpoint("ep-myop", "/my/op", b("/be/myop"), key_required=False),
            endpoint("ep-solo", "/solo/op", b("/be/solo"), key_required=False),
            endpoint("ep-hosted", "/hosted", b("/be/hosted"), public_host="api.acme.test", key_required=False),
            endpoint("ep-root", "/", b("/be/root"), public_host="root.test", key_required=False),
            endpoint("ep-m-get", "/m", b("/be/m-get"), methods=["GET"], key_required=False),
            endpoint("ep-m-write", "/m", b("/be/m-write"), methods=["POST", "PUT"], key_required=False),
            endpoint("ep-any", "/any", b("/be/any"), key_required=False),
        )
    )
    return module_gateway_factory.start(cfg)


def backend_path(http, gw, path, method="GET", **kw):
    r = http.request(method, gw.base_url + path, timeout=10, **kw)
    assert r.status_code == 200, (r.status_code, r.headers, r.text)
    return r.json()["path"]


def test_exact_public_path_routes_to_its_endpoint(http, gw):
    """GET /my/op reaches the /my/op endpoint's target path exactly."""
    assert backend_path(http, gw, "/my/op") == "/be/myop"


def test_public_path_with_trailing_slash_routes_to_its_endpoint(http, gw):
    """/my/op/ matches /my/op (segment boundary) and keeps the trailing slash as remainder."""
    assert backend_path(http, gw, "/my/op/") == "/be/myop/"


def test_longest_public_path_wins_for_subpaths(http, gw):
    """/my/op/x matches both /my and /my/op; the longer /my/op wins."""
    assert backend_path(http, gw, "/my/op/x") == "/be/myop/x"


def test_shorter_public_path_serves_other_subpaths(http, gw):
    """/my/other is served by /my, not /my/op."""
    assert backend_path(http, gw, "/my/other") == "/be/my/other"


def test_prefix_match_respects_segment_boundary(http, gw):
    """/my/opx is not under /my/op: it goes to /my with remainder /opx."""
    assert backend_path(http, gw, "/my/opx") == "/be/my/opx"


def test_partial_segment_match_is_not_found(http, gw):
    """/solo/opx does not match /solo/op (no segment boundary) and nothing else matches: 404."""
    r = http.get(gw.base_url + "/solo/opx", timeout=10)
    assert r.status_code == 404


def test_unmatched_path_answers_404(http, gw):
    """A path no endpoint covers answers 404."""
    r = http.get(gw.base_url + "/nothing/here", timeout=10)
    assert r.status_code == 404


def test_root_public_path_matches_every_path(http, gw):
    """public_path / matches any path; the whole path is the remainder."""
    assert backend_path(http, gw, "/anything/deep", headers={"Host": "root.test"}) == "/be/root/anything/deep"


@pytest.mark.parametrize("host", ["api.acme.test:8443", "api.acme.test"])
def test_public_host_matches_with_port_ignored(http, gw, host):
    """public_host api.acme.test matches Host api.acme.test with or without a port."""
    assert backend_path(http, gw, "/hosted/x", headers={"Host": host}) == "/be/hosted/x"


def test_public_host_mismatch_is_not_found(http, gw):
    """An endpoint with public_host is not a candidate for another Host: 404."""
    r = http.get(gw.base_url + "/hosted/x", headers={"Host": "other.test"}, timeout=10)
    assert r.status_code == 404


def test_get_routes_to_get_endpoint_on_shared_path(http, gw):
    """Among endpoints sharing /m, GET goes to the one whose methods include GET."""
    assert backend_path(http, gw, "/m/x") == "/be/m-get/x"


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_write_methods_route_to_write_endpoint_on_shared_path(http, gw, method):
    """Among endpoints sharing /m, POST and PUT go to the [POST, PUT] endpoint."""
    assert backend_path(http, gw, "/m/x", method=method, data=b"{}") == "/be/m-write/x"


def test_method_accepted_by_no_shared_endpoint_answers_405(http, gw):
    """DELETE on /m, accepted by none of the endpoints sharing it, answers 405."""
    r = http.delete(gw.base_url + "/m/x", timeout=10)
    assert r.status_code == 405


def test_405_allow_header_lists_union_of_methods(http, gw):
    """The 405 Allow header lists the union of the methods of the endpoints sharing the path."""
    r = http.delete(gw.base_url + "/m/x", timeout=10)
    allow = {m.strip().upper() for m in r.headers.get("Allow", "").split(",") if m.strip()}
    assert allow == {"GET", "POST", "PUT"}


def test_405_does_not_call_backend(http, gw, backend):
    """A 405 is answered by the gateway; the backend never sees the call."""
    token = uuid.uuid4().hex
    r = http.delete(f"{gw.base_url}/m/{token}", timeout=10)
    assert (r.status_code, backend.matching(token)) == (405, [])


def test_404_does_not_call_backend(http, gw, backend):
    """A 404 is answered by the gateway; the backend never sees the call."""
    token = uuid.uuid4().hex
    r = http.get(f"{gw.base_url}/nothing/{token}", timeout=10)
    assert (r.status_code, backend.matching(token)) == (404, [])


@pytest.mark.parametrize("method", ["DELETE", "PATCH", "OPTIONS", "GET"])
def test_endpoint_without_methods_accepts_any_method(http, gw, method):
    """An endpoint without methods accepts every method and forwards it unchanged."""
    r = http.request(method, gw.base_url + "/any/x", timeout=10)
    assert (r.status_code, r.json()["method"]) == (200, method)
