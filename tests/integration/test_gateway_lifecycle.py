"""Process lifecycle (gateway-config.md): SIGTERM stops accepting, finishes in-flight requests and exits 0;
``--listen`` overrides the file's listen."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest
import requests

from support.gateway_proc import config, endpoint, free_port, service, session


@pytest.fixture(scope="module")
def drain(module_gateway_factory, backend):
    """A call to a 2 s backend is in flight when SIGTERM arrives; returns what happened."""
    cfg = config(service("svc-l", endpoint("ep-slow", "/slow", backend.url("/slow/2"), key_required=False, timeout=10)))
    gw = module_gateway_factory.start(cfg)
    token = uuid.uuid4().hex
    result: dict[str, object] = {}

    def call():
        try:
            r = session().get(f"{gw.base_url}/slow/{token}", timeout=20)
            result["status"], result["body"] = r.status_code, r.content
        except requests.RequestException as exc:
            result["error"] = repr(exc)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    assert backend.wait_for(token, timeout=10), "the call never reached the backend"
    gw.signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        late = session().get(f"{gw.base_url}/slow/late", timeout=5).status_code
    except requests.RequestException:
        late = None
    t.join(20)
    rc = gw.wait_exit(20)
    return {"result": result, "rc": rc, "late": late, "gw": gw}


def test_sigterm_lets_in_flight_request_complete(drain):
    """A request in flight when SIGTERM arrives completes with 200."""
    assert drain["result"].get("status") == 200, drain["result"]


def test_sigterm_exits_0_after_drain(drain):
    """After the in-flight request, the gateway exits with status 0."""
    assert drain["rc"] == 0, drain["gw"].tail()


def test_sigterm_stops_accepting_new_calls(drain):
    """A call started after SIGTERM is not served (connection refused or closed)."""
    assert drain["late"] != 200


@pytest.fixture(scope="module")
def overridden(module_gateway_factory, backend):
    file_port = free_port()
    cli_port = free_port()
    cfg = config(
        service("svc-l2", endpoint("ep-l", "/l", backend.url("/be/l"), key_required=False)),
        listen=f"127.0.0.1:{file_port}",
    )
    gw = module_gateway_factory.start(cfg, listen=f"127.0.0.1:{cli_port}")
    return gw, file_port, cli_port


def test_listen_option_serves_on_given_address(overridden):
    """--listen HOST:PORT serves traffic on that address."""
    _, _, cli_port = overridden
    assert session().get(f"http://127.0.0.1:{cli_port}/l/x", timeout=5).status_code == 200


def test_listen_option_replaces_file_listen(overridden):
    """With --listen, the file's listen address is not bound."""
    _, file_port, _ = overridden
    with pytest.raises(requests.ConnectionError):
        session().get(f"http://127.0.0.1:{file_port}/l/x", timeout=5)
