"""Header hygiene (gateway-config.md "Forwarding headers", contract §1 masheryMessageId): hop-by-hop headers
are never forwarded (both directions, including those named in Connection), X-Forwarded-For is replaced for an
untrusted peer and appended to for a trusted one, X-Forwarded-Proto/-Host are set, and X-Mashery-Message-ID is
a fresh lower-case v4 UUID per call, replacing any client value."""

from __future__ import annotations

import re

import pytest

from support.gateway_proc import config, endpoint, raw_request, service

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

HOP_REQUEST_HEADERS = [
    ("Connection", "keep-alive, X-Custom-Hop"),
    ("X-Custom-Hop", "named-in-connection"),
    ("Keep-Alive", "timeout=5, max=100"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("Upgrade", "example/1"),
    ("X-End-To-End", "kept"),
    ("Authorization", "Bearer abc"),
]


def _cfg(backend, **top):
    b = backend.url
    return config(
        service(
            "svc-hdr",
            endpoint("ep-h", "/h", b("/be/h"), key_required=False),
            endpoint("ep-hop", "/hop", b("/hopresp"), key_required=False),
        ),
        **top,
    )


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    return module_gateway_factory.start(_cfg(backend))


@pytest.fixture(scope="module")
def trusted_gw(module_gateway_factory, backend):
    return module_gateway_factory.start(_cfg(backend, trusted_proxies=["127.0.0.0/8"]))


def sent_headers(gw, headers=(), host=None, path="/h/x"):
    """The headers the backend received for one call, as a case-insensitive name -> [values] map."""
    r = raw_request(gw.port, "GET", path, headers=headers, host=host)
    assert r.status == 200, (r.status, r.headers, r.body)
    out: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def xff(headers):
    return [p.strip() for v in headers.get("x-forwarded-for", []) for p in v.split(",")]


# -- hop-by-hop --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hop_call(gw):
    return sent_headers(gw, HOP_REQUEST_HEADERS)


@pytest.mark.parametrize("name", ["X-Custom-Hop", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade"])
def test_hop_by_hop_request_header_is_not_forwarded(hop_call, name):
    """Hop-by-hop request headers (RFC 9110 §7.6.1, and those named in Connection) do not reach the backend."""
    assert name.lower() not in hop_call


def test_client_connection_tokens_are_not_forwarded(hop_call):
    """The client's Connection header (naming X-Custom-Hop) is not passed on."""
    assert not any("x-custom-hop" in v.lower() for v in hop_call.get("connection", []))


@pytest.mark.parametrize(("name", "value"), [("x-end-to-end", "kept"), ("authorization", "Bearer abc")])
def test_end_to_end_request_header_is_forwarded(hop_call, name, value):
    """Ordinary end-to-end headers reach the backend unchanged."""
    assert hop_call.get(name) == [value]


@pytest.fixture(scope="module")
def hop_response(gw):
    return raw_request(gw.port, "GET", "/hop/x")


@pytest.mark.parametrize("name", ["X-Resp-Hop", "Keep-Alive"])
def test_hop_by_hop_response_header_is_not_returned(hop_response, name):
    """Hop-by-hop response headers of the backend (incl. those its Connection names) do not reach the client."""
    assert hop_response.header_values(name) == []


def test_end_to_end_response_header_is_returned(hop_response):
    """Ordinary backend response headers reach the client."""
    assert hop_response.header_values("X-End-To-End") == ["kept"]


# -- X-Forwarded-* -----------------------------------------------------------------------------------------------


def test_x_forwarded_for_is_replaced_for_untrusted_peer(gw):
    """From an untrusted peer the client's X-Forwarded-For is replaced by the peer address."""
    assert xff(sent_headers(gw, [("X-Forwarded-For", "203.0.113.9")])) == ["127.0.0.1"]


def test_x_forwarded_for_is_set_to_peer_without_client_header(gw):
    """Without a client X-Forwarded-For, the backend gets the peer address."""
    assert xff(sent_headers(gw)) == ["127.0.0.1"]


def test_x_forwarded_for_is_appended_for_trusted_peer(trusted_gw):
    """From a peer in trusted_proxies the peer address is appended to the client's X-Forwarded-For."""
    got = xff(sent_headers(trusted_gw, [("X-Forwarded-For", "198.51.100.1, 203.0.113.9")]))
    assert got == ["198.51.100.1", "203.0.113.9", "127.0.0.1"]


def test_x_forwarded_for_is_peer_for_trusted_peer_without_header(trusted_gw):
    """A trusted peer without X-Forwarded-For: the backend gets the peer address."""
    assert xff(sent_headers(trusted_gw)) == ["127.0.0.1"]


def test_x_forwarded_proto_is_http(gw):
    """X-Forwarded-Proto is set to the client's scheme (http on this listener)."""
    assert sent_headers(gw).get("x-forwarded-proto") == ["http"]


def test_client_x_forwarded_proto_is_replaced_for_untrusted_peer(gw):
    """A client-supplied X-Forwarded-Proto from an untrusted peer does not survive."""
    assert sent_headers(gw, [("X-Forwarded-Proto", "https")]).get("x-forwarded-proto") == ["http"]


def test_x_forwarded_host_is_client_host(gw):
    """X-Forwarded-Host carries the Host the client asked for."""
    assert sent_headers(gw, host="client.example").get("x-forwarded-host") == ["client.example"]


def test_client_x_forwarded_host_is_replaced_for_untrusted_peer(gw):
    """A client-supplied X-Forwarded-Host from an untrusted peer is replaced by the request's Host."""
    got = sent_headers(gw, [("X-Forwarded-Host", "evil.example")], host="client.example")
    assert got.get("x-forwarded-host") == ["client.example"]


# -- X-Mashery-Message-ID ----------------------------------------------------------------------------------------


def test_message_id_is_lowercase_v4_uuid(gw):
    """The backend gets exactly one X-Mashery-Message-ID, a lower-case v4 UUID."""
    values = sent_headers(gw).get("x-mashery-message-id", [])
    assert len(values) == 1 and UUID4.match(values[0]), values


def test_client_message_id_is_replaced(gw):
    """A client-supplied X-Mashery-Message-ID is replaced by the gateway's own (one value, a v4 UUID)."""
    values = sent_headers(gw, [("X-Mashery-Message-ID", "client-chosen-id")]).get("x-mashery-message-id", [])
    assert len(values) == 1 and UUID4.match(values[0]), values


def test_message_id_is_unique_per_call(gw):
    """Twenty calls carry twenty different message ids."""
    ids = [sent_headers(gw).get("x-mashery-message-id", [""])[0] for _ in range(20)]
    assert len(set(ids)) == 20
