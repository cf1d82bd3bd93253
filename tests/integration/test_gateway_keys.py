"""Package keys (gateway-config.md "Keys", contract §1/§6.1): query api_key with the apikey alias, header
X-Api-Key with ``in: header``, explicit names disabling the alias, 403 with ``Package Key Not Specified`` /
``Package Key Not Recognised``, and anonymous calls with ``key_required: false``."""

from __future__ import annotations

import uuid

import pytest

from support.gateway_proc import ACTIVE_KEY, DISABLED_KEY, OTHER_KEY, config, endpoint, service

NOT_SPECIFIED = "Package Key Not Specified"
NOT_RECOGNISED = "Package Key Not Recognised"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    b = backend.url
    cfg = config(
        service(
            "svc-keys",
            endpoint("ep-kq", "/kq", b("/be/kq")),
            endpoint("ep-kh", "/kh", b("/be/kh"), api_key={"in": "header"}),
            endpoint("ep-kn", "/kn", b("/be/kn"), api_key={"in": "query", "name": "key"}),
            endpoint("ep-khn", "/khn", b("/be/khn"), api_key={"in": "header", "name": "X-Client-Key"}),
            endpoint("ep-anon", "/anon", b("/be/anon"), key_required=False),
        )
    )
    return module_gateway_factory.start(cfg)


def call(http, gw, path, **kw):
    return http.get(gw.base_url + path, timeout=10, **kw)


def outcome(r):
    """(status, X-Error-Detail-Header) of a response."""
    return r.status_code, r.headers.get("X-Error-Detail-Header")


# -- query (default) ---------------------------------------------------------------------------------------------


def test_query_api_key_is_accepted(http, gw):
    """An active key in query parameter api_key is accepted."""
    assert call(http, gw, "/kq/x", params={"api_key": ACTIVE_KEY}).status_code == 200


def test_query_alias_apikey_is_accepted(http, gw):
    """The alias apikey is accepted when no explicit name is configured."""
    assert call(http, gw, "/kq/x", params={"apikey": ACTIVE_KEY}).status_code == 200


def test_key_of_another_application_is_accepted(http, gw):
    """Keys of every application are recognised."""
    assert call(http, gw, "/kq/x", params={"api_key": OTHER_KEY}).status_code == 200


def test_missing_key_answers_403_not_specified(http, gw):
    """No key at all: 403 with X-Error-Detail-Header Package Key Not Specified."""
    assert outcome(call(http, gw, "/kq/x")) == (403, NOT_SPECIFIED)


def test_unknown_key_answers_403_not_recognised(http, gw):
    """A key no application owns: 403 with Package Key Not Recognised."""
    assert outcome(call(http, gw, "/kq/x", params={"api_key": "no-such-key-123"})) == (403, NOT_RECOGNISED)


def test_disabled_key_answers_403_not_recognised(http, gw):
    """A key with status disabled: 403 with Package Key Not Recognised."""
    assert outcome(call(http, gw, "/kq/x", params={"api_key": DISABLED_KEY})) == (403, NOT_RECOGNISED)


@pytest.mark.parametrize("params", [{}, {"api_key": "no-such-key-123"}, {"api_key": DISABLED_KEY}])
def test_rejected_key_never_reaches_backend(http, gw, backend, params):
    """A call refused with 403 is never forwarded to the backend."""
    token = uuid.uuid4().hex
    r = call(http, gw, f"/kq/{token}", params=params)
    assert (r.status_code, backend.matching(token)) == (403, [])


def test_header_key_is_ignored_when_key_is_read_from_query(http, gw):
    """With the default query location, an X-Api-Key header is not a key: 403 Not Specified."""
    assert outcome(call(http, gw, "/kq/x", headers={"X-Api-Key": ACTIVE_KEY})) == (403, NOT_SPECIFIED)


# -- header ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["X-Api-Key", "x-api-key"])
def test_header_key_is_accepted(http, gw, name):
    """With in: header the key is read from X-Api-Key (header names are case-insensitive)."""
    assert call(http, gw, "/kh/x", headers={name: ACTIVE_KEY}).status_code == 200


def test_query_key_is_ignored_when_key_is_read_from_header(http, gw):
    """With in: header, api_key in the query is not a key: 403 Not Specified."""
    assert outcome(call(http, gw, "/kh/x", params={"api_key": ACTIVE_KEY})) == (403, NOT_SPECIFIED)


def test_unknown_header_key_answers_403_not_recognised(http, gw):
    """An unknown key in the header: 403 Not Recognised."""
    assert outcome(call(http, gw, "/kh/x", headers={"X-Api-Key": "nope-nope"})) == (403, NOT_RECOGNISED)


def test_explicit_header_name_is_accepted(http, gw):
    """in: header with name X-Client-Key reads the key from that header."""
    assert call(http, gw, "/khn/x", headers={"X-Client-Key": ACTIVE_KEY}).status_code == 200


def test_explicit_header_name_replaces_default_header(http, gw):
    """in: header with name X-Client-Key does not read X-Api-Key: 403 Not Specified."""
    assert outcome(call(http, gw, "/khn/x", headers={"X-Api-Key": ACTIVE_KEY})) == (403, NOT_SPECIFIED)


# -- explicit query name -----------------------------------------------------------------------------------------


def test_explicit_query_name_is_accepted(http, gw):
    """in: query with name key reads ?key=."""
    assert call(http, gw, "/kn/x", params={"key": ACTIVE_KEY}).status_code == 200


def test_explicit_query_name_disables_apikey_alias(http, gw):
    """An explicit name disables the apikey alias: 403 Not Specified."""
    assert outcome(call(http, gw, "/kn/x", params={"apikey": ACTIVE_KEY})) == (403, NOT_SPECIFIED)


def test_explicit_query_name_replaces_default_name(http, gw):
    """An explicit name replaces api_key: ?api_key= is not read, 403 Not Specified."""
    assert outcome(call(http, gw, "/kn/x", params={"api_key": ACTIVE_KEY})) == (403, NOT_SPECIFIED)


# -- key_required: false -----------------------------------------------------------------------------------------


def test_anonymous_call_is_allowed_when_key_not_required(http, gw):
    """key_required false: a call without a key is served."""
    assert call(http, gw, "/anon/x").status_code == 200


def test_valid_key_is_accepted_when_key_not_required(http, gw):
    """key_required false: a valid key is still accepted."""
    assert call(http, gw, "/anon/x", params={"api_key": ACTIVE_KEY}).status_code == 200


def test_unknown_key_is_rejected_when_key_not_required(http, gw):
    """key_required false: a present but unknown key is still refused with 403 Not Recognised."""
    assert outcome(call(http, gw, "/anon/x", params={"api_key": "no-such-key-123"})) == (403, NOT_RECOGNISED)


def test_disabled_key_is_rejected_when_key_not_required(http, gw):
    """key_required false: a disabled key is still refused with 403 Not Recognised."""
    assert outcome(call(http, gw, "/anon/x", params={"api_key": DISABLED_KEY})) == (403, NOT_RECOGNISED)
