"""SIGHUP reload (gateway-config.md): a valid changed file replaces the configuration without dropping a
request, under continuous load; an invalid file is rejected with its problem lines logged and the old
configuration kept; listen changes wait for the next start."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from support.gateway_proc import config, endpoint, free_port, service, session


def _cfg(backend, *extra_endpoints, **top):
    return config(
        service(
            "svc-r", endpoint("ep-stable", "/stable", backend.url("/be/stable"), key_required=False), *extra_endpoints
        ),
        **top,
    )


def _new_endpoint(backend, ep_id="ep-new", path="/new", **extra):
    return endpoint(ep_id, path, backend.url("/be" + path), key_required=False, **extra)


class Load:
    """Client threads calling /stable continuously: two on keep-alive sessions, one with a new connection per
    call.  Records every status and every exception."""

    def __init__(self, gw, threads: int = 3) -> None:
        self.gw = gw
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i == threads - 1,), daemon=True) for i in range(threads)
        ]

    def _run(self, fresh_connections: bool) -> None:
        s = session()
        headers = {"Connection": "close"} if fresh_connections else {}
        while not self._stop.is_set():
            try:
                r = s.get(self.gw.base_url + "/stable/x", headers=headers, timeout=10)
                outcome = None if r.status_code == 200 else f"status {r.status_code}: {r.text[:100]}"
            except requests.RequestException as exc:
                outcome = repr(exc)
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15)


def poll_status(url: str, want: int, timeout: float) -> int:
    s = session()
    deadline = time.monotonic() + timeout
    status = -1
    while time.monotonic() < deadline:
        try:
            status = s.get(url, timeout=5).status_code
        except requests.RequestException:
            status = -1
        if status == want:
            return status
        time.sleep(0.05)
    return status


@pytest.fixture(scope="module")
def valid_reload(module_gateway_factory, backend):
    """Reload a file adding /new while three clients call /stable; returns a summary."""
    gw = module_gateway_factory.start(_cfg(backend))
    with Load(gw) as load:
        time.sleep(0.7)
        gw.reload(_cfg(backend, _new_endpoint(backend)))
        new_status = poll_status(gw.base_url + "/new/x", 200, timeout=10)
        time.sleep(0.7)
    return {"gw": gw, "ok": load.ok, "failures": load.failures, "new_status": new_status}


def test_sighup_reload_under_load_drops_no_request(valid_reload):
    """Not one of the calls made around a SIGHUP reload fails."""
    assert valid_reload["failures"] == [] and valid_reload["ok"] > 30, (
        valid_reload["ok"],
        valid_reload["failures"][:5],
    )


def test_sighup_reload_serves_new_route(valid_reload):
    """After SIGHUP with a file adding /new, /new answers 200."""
    assert valid_reload["new_status"] == 200


def test_sighup_reload_keeps_process_running(valid_reload):
    """SIGHUP reloads; it does not stop the gateway."""
    assert valid_reload["gw"].proc.poll() is None


@pytest.fixture(scope="module")
def invalid_reload(module_gateway_factory, backend):
    """Reload a file adding /new2 plus an unknown key; returns a summary after the rejection was logged."""
    gw = module_gateway_factory.start(_cfg(backend))
    before = gw.output()
    gw.reload(_cfg(backend, _new_endpoint(backend, "ep-new2", "/new2", bogus_key=1)))
    logged = gw.wait_for_text(lambda out: "bogus_key" in out[len(before) :], timeout=5)
    time.sleep(0.3)
    s = session()
    return {
        "gw": gw,
        "logged": logged,
        "stable": s.get(gw.base_url + "/stable/x", timeout=5).status_code,
        "new2": s.get(gw.base_url + "/new2/x", timeout=5).status_code,
    }


def test_sighup_with_invalid_file_keeps_old_routes(invalid_reload):
    """An invalid file is rejected: the existing /stable route still answers 200."""
    assert invalid_reload["stable"] == 200


def test_sighup_with_invalid_file_applies_nothing(invalid_reload):
    """An invalid file is rejected as a whole: its valid new route /new2 is not served."""
    assert invalid_reload["new2"] == 404


def test_sighup_with_invalid_file_logs_problem_lines(invalid_reload):
    """The rejected file's problems (naming the unknown key) are logged."""
    assert invalid_reload["logged"], invalid_reload["gw"].tail()


def test_sighup_with_invalid_file_keeps_process_running(invalid_reload):
    """A rejected reload does not stop the gateway."""
    assert invalid_reload["gw"].proc.poll() is None


def test_sighup_does_not_move_traffic_listener(gateway_factory, backend):
    """A changed listen is not applied by SIGHUP: the old port keeps serving."""
    gw = gateway_factory.start(_cfg(backend))
    gw.rewrite_config(_cfg(backend, _new_endpoint(backend), listen=f"127.0.0.1:{free_port()}"))
    gw.signal(signal.SIGHUP)
    assert poll_status(gw.base_url + "/new/x", 200, timeout=10) == 200
