"""Access log (issue 2): one JSON line per call on stdout or stderr with message id, service and endpoint ids,
method, path without the key, status, upstream and total durations; package keys never in clear (first 4
characters + ``…``)."""

from __future__ import annotations

import uuid

import pytest

from support.gateway_proc import ACTIVE_KEY, OTHER_KEY, config, endpoint, service, session

UNKNOWN_KEY = "UNKNOWNsecret987654"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    cfg = config(
        service(
            "svc-log",
            endpoint("ep-log", "/log", backend.url("/be/log")),
            endpoint("ep-logh", "/logh", backend.url("/be/logh"), api_key={"in": "header"}),
        )
    )
    return module_gateway_factory.start(cfg)


def has_value(obj, value):
    return any(v == value for v in obj.values())


@pytest.fixture(scope="module")
def calls(gw):
    """Five POSTs with the key in the query; returns [(message id, [access lines carrying it])]."""
    s = session()
    ids = []
    for i in range(5):
        r = s.post(f"{gw.base_url}/log/x{i}", params={"api_key": ACTIVE_KEY, "n": str(i)}, data=b"{}", timeout=10)
        assert r.status_code == 200
        headers = {k.lower(): v for k, v in r.json()["headers"]}
        ids.append(headers["x-mashery-message-id"])
    # a header-key call and a refused unknown-key call, for the "never in clear" tests
    assert s.get(f"{gw.base_url}/logh/y", headers={"X-Api-Key": OTHER_KEY}, timeout=10).status_code == 200
    assert s.get(f"{gw.base_url}/log/z", params={"api_key": UNKNOWN_KEY}, timeout=10).status_code == 403
    gw.wait_for_lines(lambda o: has_value(o, ids[-1]), timeout=5)
    gw.wait_for_lines(lambda o: str(o.get("path", "")).startswith("/log/z"), timeout=5)
    lines = gw.json_lines()
    return [(mid, [o for o in lines if has_value(o, mid)]) for mid in ids]


def first_line(calls):
    lines = calls[0][1]
    assert lines, "no JSON log line carries the call's message id"
    return lines[0]


def test_each_call_writes_exactly_one_json_line(calls):
    """Every one of five calls has exactly one JSON log line carrying its message id."""
    assert [len(lines) for _, lines in calls] == [1] * 5


def test_access_line_names_service_and_endpoint(calls):
    """The line carries service_id and endpoint_id of the endpoint that served the call."""
    line = first_line(calls)
    assert (line.get("service_id"), line.get("endpoint_id")) == ("svc-log", "ep-log")


def test_access_line_has_method_and_status(calls):
    """The line carries the method and the status sent to the client."""
    line = first_line(calls)
    assert (line.get("method"), str(line.get("status"))) == ("POST", "200")


def test_access_line_path_is_request_path(calls):
    """The line's path is the client's request path."""
    assert str(first_line(calls).get("path", "")).startswith("/log/x0")


def test_access_line_path_omits_key(calls):
    """The logged path does not contain the package key."""
    assert ACTIVE_KEY not in str(first_line(calls).get("path", ""))


def test_access_line_has_upstream_and_total_durations(calls):
    """The line carries a numeric upstream duration and a numeric total duration."""
    line = first_line(calls)
    numeric = {k.lower() for k, v in line.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    assert any("upstream" in k for k in numeric), line
    assert any(("total" in k or "duration" in k) and "upstream" not in k for k in numeric), line


def test_package_key_is_logged_masked(calls):
    """The call's line shows the key as its first 4 characters followed by an ellipsis."""
    assert any(v == ACTIVE_KEY[:4] + "…" for v in first_line(calls).values()), first_line(calls)


@pytest.mark.parametrize("key", [ACTIVE_KEY, OTHER_KEY], ids=["query-key", "header-key"])
def test_package_key_never_logged_in_clear(gw, calls, key):
    """No line of stdout or stderr contains a package key in clear."""
    assert key not in gw.output()


def test_unrecognised_key_never_logged_in_clear(gw, calls):
    """A refused, unknown key presented by a client is not logged in clear either."""
    assert UNKNOWN_KEY not in gw.output()


def test_not_found_call_writes_one_json_line(gw, http):
    """A call matching no endpoint (404) is logged with exactly one JSON line."""
    path = f"/nolog-{uuid.uuid4().hex}"
    assert http.get(gw.base_url + path, timeout=10).status_code == 404
    lines = gw.wait_for_lines(lambda o: str(o.get("path", "")).startswith(path), timeout=5)
    assert len(lines) == 1 and str(lines[0].get("status")) == "404", lines
