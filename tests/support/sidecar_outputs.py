"""Hypothesis strategies for function outputs (contract §4), valid and broken, plus the gateway's verdict.

Used by ``tests/unit/test_sdk.py`` (SDK validator vs ``interpret_output``) and ``tests/unit/test_schemas.py``
(output JSON Schema vs ``interpret_output``).  ``outputs(exact=True)`` leaves out what JSON Schema cannot
express (numbers like ``200.0``, URLs whose port or host ``urlsplit`` refuses, hosts not permitted, lone
surrogates); header
maps repeating a name case-insensitively are filtered by ``has_repeated_header`` in the schema test.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from sidecar_gateway.errors import FunctionFailure, Point

BACKEND = "backend.local"
ROUTE_HOSTS = frozenset({"backend.local", "alt.local:8080", "[::1]"})
POINTS = (Point.PRE, Point.POST, Point.PREFLIGHT)
NOW = 1_700_000_000.0

_NAMES = ["X-A", "x-a", "Content-Type", "X-Tier", "Host", "content-length", "TE", "Proxy-Authorization",
          "bad name", "", "x\n", "é", "x:y", "Authorization"]
_VALUES = ["v", "a\tb", "a\nb", "\x00", "\x7f", "ok é", "\x85", "", "trailing\r"]
_VALUES_INEXACT = ["\ud800"]  # a lone surrogate: not UTF-8, refused by the gateway's JSON parser
_PAYLOADS = ["QUJD", "QQ==", "QQ=", "QUJD=", "!!", "QUJD\n", "", "plain text", "é"]
_URIS_EXACT = ["http://backend.local/x", "https://backend.local:443/", "http://alt.local:8080/y?q=1",
               "ftp://backend.local/", "http://user@backend.local/", "/relative", "http://backend.local/a b",
               "HTTP://BACKEND.LOCAL/", "http://[::1]/", "http:/backend.local", "http://backend.local#frag"]
_URIS_INEXACT = ["http://evil.local/", "http://backend.local:0/", "http://backend.local:99999/", "http://:80/",
                 "http://backend.local:abc/"]
_VERBS = ["GET", "post", "BAD VERB", "", "PATCH", "G\u00e9T"]


def _maybe_null(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def outputs(*, exact: bool = False) -> st.SearchStrategy[Any]:
    """Outputs mixing valid and broken members of every §4.3 rule (and non-objects at the top level)."""
    names = st.one_of(st.sampled_from(_NAMES), st.text(max_size=4))
    value_samples = _VALUES + ([] if exact else _VALUES_INEXACT)
    values = st.one_of(st.sampled_from(value_samples), st.text(max_size=4), st.integers(0, 9), st.none())
    header_maps = _maybe_null(st.one_of(st.dictionaries(names, values, max_size=3), st.integers(0, 9),
                                        st.lists(st.text(max_size=2), max_size=2)))
    status_samples = [200, 599, 600, 199, 201.5, True, "200", -1] + ([] if exact else [200.0, 404.0])
    statuses = _maybe_null(st.one_of(st.sampled_from(status_samples), st.integers(100, 700)))
    payloads = _maybe_null(st.one_of(st.sampled_from(_PAYLOADS), st.text(max_size=6), st.integers(0, 9)))
    flags = _maybe_null(st.one_of(st.booleans(), st.sampled_from([0, 1, "true"])))
    json_values = _maybe_null(st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                                        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)))
    drops = _maybe_null(st.one_of(st.lists(names, max_size=3), st.text(max_size=3),
                                  st.lists(st.integers(), min_size=1, max_size=1)))
    uris = _maybe_null(st.one_of(st.sampled_from(_URIS_EXACT + ([] if exact else _URIS_INEXACT)), st.integers()))
    verbs = _maybe_null(st.one_of(st.sampled_from(_VERBS), st.integers()))
    routes = _maybe_null(st.one_of(st.fixed_dictionaries({}, optional={"uri": uris, "httpVerb": verbs}),
                                   st.text(max_size=2), st.integers()))
    modify = st.fixed_dictionaries({}, optional={
        "dropHeaders": drops, "addHeaders": header_maps, "headers": header_maps, "payload": payloads,
        "base64Encoded": flags, "json": json_values, "completeWithCode": statuses, "changeRoute": routes,
        "unknown": json_values})
    terminate = st.fixed_dictionaries({}, optional={
        "code": statuses, "message": _maybe_null(st.one_of(st.text(max_size=3), st.integers())),
        "addHeaders": header_maps, "headers": header_maps, "payload": payloads, "base64Encoded": flags,
        "json": json_values})
    documents = st.fixed_dictionaries({}, optional={
        "terminate": _maybe_null(st.one_of(terminate, st.integers(), st.text(max_size=2))),
        "modify": _maybe_null(st.one_of(modify, modify, st.lists(st.integers(), max_size=1), st.text(max_size=2))),
        "unchangedFor": st.one_of(st.integers(), st.text(max_size=2)),
        "unchangedUntil": st.text(max_size=3),
        "extra": json_values})
    return st.one_of(documents, documents, documents,
                     st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2), st.text(max_size=3)))


def gateway_accepts(output: Any, point: Point) -> bool:
    """The gateway's verdict on the JSON text of ``output``: True unless ``interpret_output`` fails."""
    from sidecar_gateway.sidecar.output_interpreter import interpret_output

    raw = json.dumps(output).encode("utf-8")  # what a Lambda runtime sends (ensure_ascii escapes surrogates)
    try:
        interpret_output(raw, point, backend_authority=BACKEND, route_hosts=ROUTE_HOSTS, now=NOW)
    except FunctionFailure:
        return False
    return True


def has_repeated_header(output: Any) -> bool:
    """True when some header map repeats a name case-insensitively (§4.3 rule 4; JSON Schema cannot see it)."""
    if not isinstance(output, dict):
        return False
    for member in ("terminate", "modify"):
        obj = output.get(member)
        if not isinstance(obj, dict):
            continue
        for key in ("addHeaders", "headers"):
            headers = obj.get(key)
            if isinstance(headers, dict):
                lowered = [str(name).lower() for name in headers]
                if len(lowered) != len(set(lowered)):
                    return True
    return False
