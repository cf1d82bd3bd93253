"""Paths (gateway-config.md "Matching" and "Paths"): the remainder after public_path is appended to the
target's path, the query is passed on, and dot segments / encoded dots / encoded slashes answer 400 before
anything else, without the backend being called."""

from __future__ import annotations

import uuid

import pytest

from support.gateway_proc import config, endpoint, raw_request, service


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    b = backend.url
    cfg = config(
        service(
            "svc-paths",
            endpoint("ep-p", "/p/op", b("/be/p/base"), key_required=False),
            endpoint("ep-pk", "/pk/op", b("/be/pk")),  # key required (default)
        )
    )
    return module_gateway_factory.start(cfg)


def echoed(gw, target):
    r = raw_request(gw.port, "GET", target)
    assert r.status == 200, (r.status, r.headers, r.body)
    return r.json()["path"]


def test_remainder_is_appended_to_target_path(gw):
    """/p/op/a/b reaches <target path>/a/b."""
    assert echoed(gw, "/p/op/a/b") == "/be/p/base/a/b"


def test_empty_remainder_uses_target_path(gw):
    """/p/op reaches the target path itself."""
    assert echoed(gw, "/p/op") == "/be/p/base"


def test_query_string_is_passed_on_in_order(gw):
    """The client's query parameters reach the backend, repeated names and order kept."""
    path = echoed(gw, "/p/op/x?x=1&y=2&x=3")
    assert path.partition("?")[2] == "x=1&y=2&x=3"


def test_query_without_remainder_is_passed_on(gw):
    """A query on the bare public path is passed on after the target path."""
    assert echoed(gw, "/p/op?x=1") == "/be/p/base?x=1"


def test_percent_encoded_remainder_is_not_decoded(gw):
    """An escaped space in the remainder reaches the backend still escaped."""
    assert echoed(gw, "/p/op/a%20b") == "/be/p/base/a%20b"


def test_dots_inside_segments_are_not_dot_segments(gw):
    """Segments that merely contain dots (a..b, .c, v1.2) are legal and forwarded unchanged."""
    assert echoed(gw, "/p/op/a..b/.c/v1.2") == "/be/p/base/a..b/.c/v1.2"


BAD_REMAINDERS = [
    "/p/op/../{t}",
    "/p/op/./{t}",
    "/p/op/{t}/..",
    "/p/op/{t}/.",
    "/p/op/x/../../{t}",
    "/p/op/%2e%2e/{t}",
    "/p/op/%2E%2E/{t}",
    "/p/op/%2e/{t}",
    "/p/op/.%2e/{t}",
    "/p/op/%2E./{t}",
    "/p/op/{t}%2fx",
    "/p/op/{t}%2Fx",
    "/p/op/%2f{t}",
]


@pytest.mark.parametrize("template", BAD_REMAINDERS)
def test_dot_segment_or_encoded_slash_answers_400(gw, template):
    """A remainder with a (possibly encoded) dot segment or an encoded slash answers 400."""
    token = uuid.uuid4().hex
    r = raw_request(gw.port, "GET", template.format(t=token) + f"?probe={token}")
    assert r.status == 400


@pytest.mark.parametrize("template", BAD_REMAINDERS)
def test_dot_segment_or_encoded_slash_never_reaches_backend(gw, backend, template):
    """A rejected remainder is never forwarded (normalised or not) to the backend."""
    token = uuid.uuid4().hex
    raw_request(gw.port, "GET", template.format(t=token) + f"?probe={token}")
    assert backend.matching(token) == []


def test_dot_segment_is_rejected_before_key_check(gw):
    """On a key-required endpoint, a dot-segment path without a key answers 400, not 403."""
    r = raw_request(gw.port, "GET", "/pk/op/../x")
    assert r.status == 400
