"""Admin listener (issue 2): /healthz, /readyz, /metrics in Prometheus format with request counters by
endpoint and status and an upstream latency histogram; loopback by default."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.gateway_proc import ACTIVE_KEY, config, endpoint, free_port, listening_addresses, service, session


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    cfg = config(service("svc-adm", endpoint("ep-adm", "/adm", backend.url("/be/adm"))))
    return module_gateway_factory.start(cfg)


@pytest.fixture(scope="module")
def metrics(gw):
    """Three 200 and two 403 calls on ep-adm, then the parsed /metrics families."""
    s = session()
    for _ in range(3):
        assert s.get(gw.base_url + "/adm/x", params={"api_key": ACTIVE_KEY}, timeout=10).status_code == 200
    for _ in range(2):
        assert s.get(gw.base_url + "/adm/x", timeout=10).status_code == 403
    r = s.get(gw.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200
    return r, list(text_string_to_metric_families(r.text))


def counted(families, endpoint_id, status):
    """Sum of counter samples whose label values include the endpoint id and the status."""
    total = 0.0
    for fam in families:
        if fam.type != "counter":
            continue
        for s in fam.samples:
            values = set(s.labels.values())
            if s.name.endswith("_total") and endpoint_id in values and str(status) in values:
                total += s.value
    return total


def test_healthz_answers_200(http, gw):
    """/healthz on the admin listener answers 200."""
    assert http.get(gw.admin_url + "/healthz", timeout=5).status_code == 200


def test_readyz_answers_200_when_serving(http, gw):
    """/readyz answers 200 once the configuration is loaded and the listener is bound."""
    assert http.get(gw.admin_url + "/readyz", timeout=5).status_code == 200


def test_metrics_are_prometheus_text(metrics):
    """/metrics is Prometheus text exposition (text/plain) and parses."""
    r, families = metrics
    assert r.headers.get("Content-Type", "").startswith("text/plain") and families


def test_metrics_count_successful_requests_by_endpoint_and_status(metrics):
    """A request counter labelled with endpoint ep-adm and status 200 counts the three calls."""
    _, families = metrics
    assert counted(families, "ep-adm", 200) >= 3


def test_metrics_count_rejected_requests_by_endpoint_and_status(metrics):
    """A request counter labelled with endpoint ep-adm and status 403 counts the two refused calls."""
    _, families = metrics
    assert counted(families, "ep-adm", 403) >= 2


def test_metrics_have_upstream_latency_histogram(metrics):
    """An upstream latency histogram exists and has observed the three forwarded calls."""
    _, families = metrics
    observed = sum(
        s.value
        for fam in families
        if fam.type == "histogram" and "upstream" in fam.name
        for s in fam.samples
        if s.name.endswith("_count")
    )
    assert observed >= 3


def test_admin_listens_on_loopback_by_default(gateway_factory, backend):
    """Without admin.listen the admin listener is on 127.0.0.1:9901 (loopback only)."""
    if listening_addresses(9901):
        pytest.skip("port 9901 is already in use on this machine")
    cfg = config(
        service("svc-adm2", endpoint("ep-adm2", "/adm", backend.url("/be/adm"))), listen=f"127.0.0.1:{free_port()}"
    )
    gateway_factory.start(cfg, default_admin=True)
    addresses = listening_addresses(9901)
    assert addresses and all(a in ("127.0.0.1", "::1") for a in addresses), addresses


def test_admin_token_is_required_and_follows_reload(gateway_factory, backend):
    """With admin.token every admin request needs the bearer token; a SIGHUP that changes it applies at once."""
    import time

    admin_port = free_port()

    def cfg(token):
        return config(service("svc-admin", endpoint("ep", "/a", backend.url("/"))),
                      admin={"listen": f"127.0.0.1:{admin_port}", "token": token})

    gw = gateway_factory.start(cfg("first-token"), wait=False)
    url = f"http://127.0.0.1:{admin_port}/readyz"
    with session() as s:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if s.get(url, headers={"Authorization": "Bearer first-token"}, timeout=1).status_code == 200:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        assert s.get(url, timeout=2).status_code == 401
        assert s.get(url, headers={"Authorization": "Bearer wrong"}, timeout=2).status_code == 401
        gw.reload(cfg("second-token"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if s.get(url, headers={"Authorization": "Bearer second-token"}, timeout=2).status_code == 200:
                break
            time.sleep(0.05)
        assert s.get(url, headers={"Authorization": "Bearer second-token"}, timeout=2).status_code == 200
        assert s.get(url, headers={"Authorization": "Bearer first-token"}, timeout=2).status_code == 401
