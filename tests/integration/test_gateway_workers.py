"""``--workers 2`` (gateway-config.md, issue 2): two worker processes share the traffic port (SO_REUSEPORT),
both serve, and /metrics aggregates them (prometheus multiprocess mode)."""

from __future__ import annotations

import http.client
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.gateway_proc import cmdline, config, endpoint, service, session, socket_owner_pids

CALLS = 200


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    cfg = config(service("svc-w", endpoint("ep-w", "/w", backend.url("/be/w"), key_required=False)))
    return module_gateway_factory.start(cfg, args=("--workers", "2"))


@pytest.fixture(scope="module")
def many_calls(gw):
    """CALLS requests, each on a new connection; returns their statuses (exceptions as strings)."""
    s = session()
    statuses = []
    for _ in range(CALLS):
        try:
            statuses.append(s.get(gw.base_url + "/w/x", headers={"Connection": "close"}, timeout=10).status_code)
        except Exception as exc:
            statuses.append(repr(exc))
    return statuses


def worker_pids(gw):
    helpers = ("resource_tracker", "semaphore_tracker", "forkserver")
    return [p for p in gw.pids() if p != gw.pid and not any(h in cmdline(p) for h in helpers)]


def test_workers_serve_every_request(many_calls):
    """200 calls on fresh connections all answer 200."""
    assert [s for s in many_calls if s != 200] == []


def test_two_worker_processes_run(gw):
    """--workers 2 runs two worker processes under the gateway."""
    assert len(worker_pids(gw)) == 2, [(p, cmdline(p)) for p in gw.pids()]


def test_connections_are_served_by_more_than_one_process(gw):
    """Connections held open after a served request belong to at least two different processes."""
    owners: set[int] = set()
    for _ in range(3):
        conns = []
        ports = set()
        for _ in range(16):
            c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            c.request("GET", "/w/x")
            r = c.getresponse()
            r.read()
            assert r.status == 200
            ports.add(c.sock.getsockname()[1])
            conns.append(c)
        time.sleep(0.1)
        owners = set(socket_owner_pids(gw.pids(), gw.port, ports).values())
        for c in conns:
            c.close()
        if len(owners) >= 2:
            break
    assert len(owners) >= 2, owners


def _served_ep_w(gw) -> float:
    text = session().get(gw.admin_url + "/metrics", timeout=10).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        if fam.type == "counter"
        for s in fam.samples
        if s.name.endswith("_total") and "ep-w" in s.labels.values() and "200" in s.labels.values()
    )


def test_metrics_aggregate_all_workers(gw, many_calls):
    """/metrics counts the calls served by every worker (at least all CALLS calls for ep-w, status 200) within
    the workers' flush interval (metrics.FLUSH_INTERVAL_S = 1 s)."""
    deadline = time.monotonic() + 3.0
    while (total := _served_ep_w(gw)) < CALLS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert total >= CALLS
