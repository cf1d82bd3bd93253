"""Admission control (``max_inflight``): past the limit of calls in progress in a worker, a new call is answered
503 ServiceUnavailable at once — no backend or function is called — with ``Retry-After`` and
``Connection: close``; once calls finish, the gateway serves normally again."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import requests

from support.gateway_proc import config, endpoint, run_cli, service, write_yaml

SLOW_S = 1.5


def test_calls_past_max_inflight_are_refused_503_at_once_and_served_again_later(gateway_factory, backend):
    token = uuid.uuid4().hex[:8]
    cfg = config(
        service(
            "svc-adm",
            endpoint("ep-slow", "/slow", backend.url(f"/slow/{SLOW_S}"), key_required=False),
            endpoint("ep-fast", "/fast", backend.url(f"/be/{token}"), key_required=False),
        ),
        max_inflight=2,
    )
    gw = gateway_factory.start(cfg)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(requests.get, gw.base_url + "/slow", timeout=10) for _ in range(2)]
        backend.wait_for("/slow/", n=2)  # both slow calls are in progress at the backend
        t0 = time.monotonic()
        refused = requests.get(gw.base_url + "/fast", timeout=10)
        refused_after = time.monotonic() - t0
        answers = [f.result() for f in slow]

    assert refused.status_code == 503
    assert refused.content == b"<h1>ServiceUnavailable</h1>"
    assert refused.headers["X-Error-Detail-Header"] == "The gateway is at its limit of calls in progress"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Connection"].lower() == "close"
    assert refused_after < SLOW_S / 2, "the refusal must not wait for a call to finish"
    assert backend.matching(token) == [], "a refused call reaches no backend"
    assert [r.status_code for r in answers] == [200, 200], "calls already in progress are not affected"

    later = requests.get(gw.base_url + "/fast", timeout=10)
    assert later.status_code == 200 and len(backend.matching(token)) == 1

    metrics = requests.get(gw.admin_url + "/metrics", timeout=10).text
    assert "gateway_overload_rejections_total 1.0" in metrics
    line = next(rec for rec in gw.json_lines() if rec.get("error") == "ServiceUnavailable")
    assert line["status"] == 503 and line["path"] == "/fast"


def test_max_inflight_must_be_a_positive_integer(tmp_path):
    path = tmp_path / "gw.yaml"
    write_yaml(path, config(service("s", endpoint("e", "/e", "http://127.0.0.1:9/x")), max_inflight=0))
    result = run_cli("check", str(path))
    assert result.returncode == 1
    assert "max_inflight" in result.stdout
