"""The per-request shortcuts of ``transports/http11.py`` behave exactly like the rules they shortcut.

``split_url`` keeps split URLs, ``encode_request_head`` keeps valid header names and checks values with one
translate; ``on_header`` counts fields by the length of the list.  Each is compared here with the plain rule
(random header lists against ``_HEADER_LINES`` and ``_check_header``), cold and warm.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from sidecar_gateway.transports import http11
from sidecar_gateway.transports.http11 import (
    MAX_HEADER_COUNT,
    Http11Connection,
    Origin,
    ReadError,
    encode_request_head,
    split_url,
)
from support.sansio import RecordingTransport

# ------------------------------------------------------------------------------------------------ split_url


def test_split_url_cached_result_equals_a_fresh_split() -> None:
    """A URL split twice (the second time from the cache) gives the same origin, target and Host."""
    url = "http://Cache-Test.example:8080/a/b?c=1"
    first = split_url(url)
    assert url in http11._urls
    assert split_url(url) == first == (Origin("http", "cache-test.example", 8080), b"/a/b?c=1",
                                       b"cache-test.example:8080")


@pytest.mark.parametrize("url", ["ftp://h/", "http://h/a b", "http://h:99999/", "http://user:pw@h/"])
def test_split_url_failures_are_never_cached(url: str) -> None:
    """A bad URL raises every time and leaves nothing in the cache."""
    for _ in range(2):
        with pytest.raises(ValueError):
            split_url(url)
    assert url not in http11._urls


def test_split_url_cache_is_bounded() -> None:
    """The cache is cleared when full; very long URLs are split every time, never kept."""
    for i in range(http11.URL_CACHE_SIZE + 10):
        split_url(f"http://h/bounded/{i}")
    assert len(http11._urls) <= http11.URL_CACHE_SIZE
    long_url = "http://h/" + "a" * http11.URL_CACHED_MAX_CHARS
    assert split_url(long_url)[1] == b"/" + b"a" * http11.URL_CACHED_MAX_CHARS
    assert long_url not in http11._urls


# ------------------------------------------------------------------------------------- encode_request_head

def _reference(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """The encoding rule without shortcuts (no Content-Length / Transfer-Encoding fields here)."""
    block = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    if http11._HEADER_LINES(block) is None or block.count(b"\n") != len(headers):
        for name, value in headers:
            http11._check_header(name, value)
        raise AssertionError("a block refused by _HEADER_LINES has an invalid field")
    has_host = any(name.lower() == b"host" for name, _ in headers)
    keep_alive = not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers)
    return b"GET /p HTTP/1.1\r\n" + block + (b"" if has_host else b"host: h:1\r\n") + b"\r\n", keep_alive


_NAMES = [b"x-a", b"X-A", b"Host", b"host", b"connection", b"Connection", b"a: b", b"a:b", b"", b"x y", b"x\xe9",
          b"x\r\ny", b"x\x00", b"a: b\x01", b"a: \tb", b":", b"x-b\x7f", b"tok!#$%&'*+-.^_`|~09"]
_VALUES = [b"", b"v", b"close", b"Keep-Alive, Close", b"a\tb", b"\xe9\xff", b"a\r\nX: y", b"a\nb", b"a\rb",
           b"\x00", b"\x7f", b"\x1f", b": ", b" spaced ", b"\x08", b"\x0b"]


def _random_headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    fields = []
    for _ in range(rng.randrange(6)):
        name = rng.choice(_NAMES)
        if rng.random() < 0.3:
            name += bytes([rng.randrange(256)])
        value = rng.choice(_VALUES)
        if rng.random() < 0.3:
            value += bytes([rng.randrange(256)])
        fields.append((name, value))
    return fields


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except ValueError as exc:
        return ("ValueError", str(exc))


def test_encode_request_head_matches_the_plain_rule_on_random_fields() -> None:
    """Accepted and refused exactly as ``_HEADER_LINES`` + ``_check_header`` say (including the quirk that a name
    such as ``a: b`` passes the line rule), same bytes, same error message; with the name cache cold and warm."""
    rng = random.Random(20261125)
    accepted = refused = 0
    for _ in range(4000):
        headers = _random_headers(rng)
        if rng.random() < 0.5:
            http11._known_names.clear()
        want = _outcome(lambda h=headers: _reference(h))  # type: ignore[misc]
        for _ in range(2):  # cold (maybe), then warm
            got = _outcome(lambda h=headers: encode_request_head("GET", b"/p", h, b"h:1", None, False))  # type: ignore[misc]
            if isinstance(got, tuple) and got[0] == "ValueError":
                assert got == want, headers
            else:
                assert (got.data, got.keep_alive) == want, headers  # type: ignore[union-attr]
        if isinstance(want, tuple) and want[0] == "ValueError":
            refused += 1
        else:
            accepted += 1
    assert accepted > 500 and refused > 500  # both sides of the rule were exercised


def test_only_valid_non_framing_names_are_remembered() -> None:
    """The name cache never holds a name that is not a token, nor a framing field in any case."""
    http11._known_names.clear()
    encode_request_head("GET", b"/p", [(b"X-Ok", b"1"), (b"Host", b"h"), (b"Connection", b"keep-alive"),
                                       (b"a: b", b"c")], b"h:1", None, False)
    assert http11._known_names == {b"X-Ok"}


def test_name_cache_is_bounded() -> None:
    """Invented names cannot grow the cache past its bound."""
    for i in range(http11.NAME_CACHE_SIZE + 10):
        encode_request_head("GET", b"/p", [(b"x-%d" % i, b"v")], b"h:1", None, False)
    assert len(http11._known_names) <= http11.NAME_CACHE_SIZE


def test_head_is_a_request_head_tuple() -> None:
    """The head built without the NamedTuple constructor is a real ``RequestHead``."""
    head = encode_request_head("POST", b"/p", [], b"h:1", b"abc", False)
    assert type(head) is http11.RequestHead
    assert head == http11.RequestHead(b"POST /p HTTP/1.1\r\nhost: h:1\r\ncontent-length: 3\r\n\r\n", 3, False, True)


# ------------------------------------------------------------------------------------------------ on_header

def _connection() -> Http11Connection:
    conn = Http11Connection(Origin("http", "h", 80), asyncio.get_running_loop())
    conn.connection_made(RecordingTransport())
    conn.start_request(encode_request_head("GET", b"/", [], b"h", None, False), None, False)
    return conn


@pytest.mark.asyncio
async def test_interim_response_fields_do_not_count_toward_the_final_heads_limit() -> None:
    """The field count starts again after a 1xx (its fields are dropped), as before."""
    conn = _connection()
    many = b"X-A: 1\r\n" * (MAX_HEADER_COUNT - 1)
    conn.data_received(b"HTTP/1.1 103 Early Hints\r\n" + many + b"\r\n"
                       b"HTTP/1.1 200 OK\r\n" + many + b"Content-Length: 2\r\n\r\nok")
    await conn.receive_head()
    assert conn.status == 200 and len(conn.headers) == MAX_HEADER_COUNT
    assert await conn.read_body_chunk() == b"ok"


@pytest.mark.asyncio
async def test_one_field_too_many_after_an_interim_response_fails() -> None:
    """The bound still applies to the final head after a 1xx."""
    conn = _connection()
    conn.data_received(b"HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\n"
                       b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (MAX_HEADER_COUNT + 1) + b"\r\n")
    with pytest.raises(ReadError, match="more than"):
        await conn.receive_head()


def _expected_keep_alive(version: bytes, connection: bytes | None) -> bool:
    """The rule as written before the shortcut: HTTP/1.0 needs a keep-alive token, later versions no close."""
    tokens = (connection or b"").lower()
    if version == b"1.0":
        return b"keep-alive" in tokens and b"close" not in tokens
    return b"close" not in tokens


@pytest.mark.asyncio
@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize("connection", [None, b"keep-alive", b"Keep-Alive", b"close", b"keep-alive, close",
                                        b"xkeep-alive", b"upgrade", b"foo"])
@pytest.mark.parametrize("kind", ["length", "head-without-length", "204"])
async def test_keep_alive_decision_without_the_version_string(version: bytes, connection: bytes | None,
                                                               kind: str) -> None:
    """``on_headers_complete`` asks llhttp before the (costly) version string; the verdict is the same."""
    conn = Http11Connection(Origin("http", "h", 80), asyncio.get_running_loop())
    conn.connection_made(RecordingTransport())
    method = "HEAD" if kind == "head-without-length" else "GET"
    conn.start_request(encode_request_head(method, b"/", [], b"h", None, False), None, method == "HEAD")
    status = b"204 No Content" if kind == "204" else b"200 OK"
    fields = b"Content-Length: 2\r\n" if kind == "length" else b""
    if connection is not None:
        fields += b"Connection: " + connection + b"\r\n"
    conn.data_received(b"HTTP/" + version + b" " + status + b"\r\n" + fields + b"\r\n" +
                       (b"ok" if kind == "length" else b""))
    await conn.receive_head()
    while await conn.read_body_chunk():
        pass
    assert conn.keep_alive is _expected_keep_alive(version, connection)
    assert conn.is_reusable is _expected_keep_alive(version, connection)
