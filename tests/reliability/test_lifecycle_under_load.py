"""Graceful shutdown and reload under load (issue 5), with sidecars on the path.

``tests/integration/test_gateway_lifecycle.py`` covers one in-flight call across SIGTERM and
``tests/integration/test_gateway_reload.py`` one reload under load on a sidecar-free endpoint.  Here:

* SIGTERM while a dozen calls are in flight (slow backend behind pre and post processors) and client threads keep
  opening new connections: every call whose connect succeeded completes with its contract answer — including
  connections the kernel had completed but the gateway had not accepted yet when SIGTERM came (the accept backlog
  is drained, see ``test_shutdown_backlog.py`` for the deterministic case); calls made after the listener stopped
  accepting are refused at connect and counted apart (they were never accepted); no connection is reset, cut or
  failed.
* Twenty SIGHUP reloads, 150 ms apart, while clients call endpoints with pre/post processors (``http`` and
  ``aws-lambda`` with an assumed role) and slow calls span the reloads: not one call fails, each carries the
  processors' modifications, and the reloads leak no file descriptors.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from support.backend import BackendServer
from support.faulty import FaultyServer
from support.gateway_proc import GatewayProcess, config, endpoint, service, session

REGION = "eu-west-1"
ACCOUNT = "123456789012"
IN_FLIGHT = 12
LOAD_CLIENTS = 6  # threads opening a new connection per call around SIGTERM
SLOW_S = 1.5  # backend delay of the in-flight calls: SIGTERM lands in the middle of them
RELOADS = 20
RELOAD_GAP_S = 0.15
# The baseline is taken after sequential warm-up (one pooled upstream connection per origin); under 5 concurrent
# clients the pool legitimately holds up to 5 per origin (3 origins) until its 30 s idle expiry.  A leak of one
# descriptor per reload would add >= RELOADS (20), so 18 still catches it.
FD_SLACK = 18


def _http(url: str) -> str:
    return f"stack: http\nurl: {url}\ntimeout: 2000\n"


def _cfg(backend: BackendServer, faulty: FaultyServer, marker: int = 0) -> dict[str, Any]:
    f = faulty.path_url
    aws = (f"region: {REGION}\nfunctionARN: arn:aws:lambda:{REGION}:{ACCOUNT}:function:ok__life-aws\n"
           f"roleARN: arn:aws:iam::{ACCOUNT}:role/sts-ok\nexternalIdKey: fault/ssm-ok\n"
           f"sidecar-param-generation: {marker}\n")
    eps = [
        endpoint("sides", "/sides", backend.url("/be/sides"), pre_processing=_http(f("/ok/life-pre")),
                 post_processing=_http(f("/ok/life-post"))),
        endpoint("slow", "/slow", backend.url(f"/slow/{SLOW_S}"), timeout=10, pre_processing=_http(f("/ok/life-pre")),
                 post_processing=_http(f("/ok/life-post"))),
        endpoint("aws", "/aws", backend.url("/be/aws"), pre_processing=aws),
        endpoint(f"marker-{marker}", f"/marker-{marker}", backend.url("/be/marker")),
    ]
    for ep in eps:
        ep["key_required"] = False
    return config(service("svc-life", *eps))


def _aws_env(faulty: FaultyServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "AKIALIFECYCLE0000001", "AWS_SECRET_ACCESS_KEY": "lifecycle-secret",
                "AWS_ENDPOINT_URL_LAMBDA": faulty.url, "AWS_ENDPOINT_URL_STS": faulty.url,
                "AWS_ENDPOINT_URL_SSM": faulty.url})
    return env


def _post_applied(r: requests.Response) -> bool:
    return r.status_code == 200 and r.headers.get("X-Faulty-Fn") == "life-post" and b"life-pre" in r.content


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyServer]:
    server = FaultyServer().start()
    yield server
    server.stop()


# --------------------------------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    refused: int = 0  # connect refused: the listener had stopped accepting, the call was never accepted
    other: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: str | None, refused: bool = False) -> None:
        with self.lock:
            if refused:
                self.refused += 1
            elif outcome is None:
                self.ok += 1
            else:
                self.other.append(outcome)


def _is_refused(exc: requests.RequestException) -> bool:
    """Refused at connect: the only acceptable failure.  A connection whose connect succeeded was accepted from the
    client's point of view — even when the gateway had not called ``accept()`` yet — and must be answered; a reset
    on it (the kernel resetting the accept backlog when the listener closes) is a lost call."""
    if not isinstance(exc, requests.ConnectionError):
        return False
    text = repr(exc)
    return "Connection refused" in text or "Errno 111" in text


def _fresh_connection_client(gw: GatewayProcess, stop: threading.Event, tally: Tally) -> None:
    """A new connection per call (``Connection: close``): refused connects are told apart from everything else."""
    while not stop.is_set():
        try:
            with session() as s:
                r = s.get(gw.base_url + "/sides/load", headers={"Connection": "close"}, timeout=15)
            tally.add(None if _post_applied(r) else f"status {r.status_code}: {r.content[:80]!r}")
        except requests.RequestException as exc:
            tally.add(repr(exc)[:200], refused=_is_refused(exc))
        time.sleep(0.005)


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, faulty: FaultyServer) -> dict[str, Any]:
    gw = GatewayProcess(tmp_path_factory.mktemp("sigterm"), _cfg(backend, faulty), env=_aws_env(faulty))
    try:
        gw.wait_ready()
        tokens = [uuid.uuid4().hex for _ in range(IN_FLIGHT)]
        in_flight: dict[str, Any] = {}

        def slow_call(token: str) -> None:
            try:
                with session() as s:
                    r = s.get(f"{gw.base_url}/slow/{token}", timeout=20)
                in_flight[token] = r
            except requests.RequestException as exc:
                in_flight[token] = exc

        stop = threading.Event()
        load = Tally()
        clients = [threading.Thread(target=_fresh_connection_client, args=(gw, stop, load), daemon=True)
                   for _ in range(LOAD_CLIENTS)]
        for t in clients:
            t.start()
        time.sleep(1.0)  # steady load before the calls that will be in flight
        slow = [threading.Thread(target=slow_call, args=(tok,), daemon=True) for tok in tokens]
        for t in slow:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not backend.matching(tok) for tok in tokens):
            time.sleep(0.02)
        accepted = [tok for tok in tokens if backend.matching(tok)]
        gw.signal(signal.SIGTERM)
        time.sleep(0.8)  # the clients keep calling after the listener closed
        stop.set()
        for t in clients + slow:
            t.join(25)
        rc = gw.wait_exit(30)
        return {"gw": gw, "tokens": tokens, "accepted": accepted, "in_flight": in_flight, "load": load, "rc": rc}
    finally:
        gw.stop()


def test_sigterm_completes_every_call_in_flight(sigterm: dict[str, Any]) -> None:
    """All 12 calls already at the (slow) backend when SIGTERM arrives complete with the post-processed answer."""
    assert len(sigterm["accepted"]) == IN_FLIGHT
    outcomes = {tok: sigterm["in_flight"].get(tok) for tok in sigterm["tokens"]}
    bad = {tok: (o if not isinstance(o, requests.Response) else (o.status_code, o.content[:80]))
           for tok, o in outcomes.items() if not (isinstance(o, requests.Response) and _post_applied(o))}
    assert bad == {}


def test_sigterm_under_load_loses_no_accepted_call(sigterm: dict[str, Any]) -> None:
    """Load clients around SIGTERM: every call either completes with its contract answer, or was refused at connect
    (never accepted); no connection whose connect succeeded is reset, cut or failed."""
    load: Tally = sigterm["load"]
    assert load.other == [], Counter(o[:60] for o in load.other)
    assert load.ok > 20, load


def test_sigterm_refuses_connections_after_the_listener_closes(sigterm: dict[str, Any]) -> None:
    """Calls made after SIGTERM are refused at connect (their handshake is not completed, then the listener is
    closed), not left accepting into a void."""
    assert sigterm["load"].refused > 0, sigterm["load"]


def test_sigterm_under_load_exits_zero(sigterm: dict[str, Any]) -> None:
    """After the drain the gateway exits with status 0."""
    assert sigterm["rc"] == 0, sigterm["gw"].tail()


# --------------------------------------------------------------------------------------------------------------
# SIGHUP
# --------------------------------------------------------------------------------------------------------------


def _fd_count(gw: GatewayProcess) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in gw.pids())


def _keepalive_client(gw: GatewayProcess, path: str, stop: threading.Event, tally: Tally) -> None:
    with session() as s:
        while not stop.is_set():
            try:
                r = s.get(gw.base_url + path, timeout=15)
                good = _post_applied(r) if path.startswith(("/sides", "/slow")) else \
                    (r.status_code == 200 and b"x-faulty-fn" in r.content.lower())
                tally.add(None if good else f"{path}: status {r.status_code}: {r.content[:80]!r}")
            except requests.RequestException as exc:
                tally.add(f"{path}: {exc!r}"[:200])


@pytest.fixture(scope="module")
def reloads(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, faulty: FaultyServer) -> dict[str, Any]:
    gw = GatewayProcess(tmp_path_factory.mktemp("sighup"), _cfg(backend, faulty), env=_aws_env(faulty))
    try:
        gw.wait_ready()
        with session() as s:  # warm pools and credentials so the fd baseline holds them
            for path in ("/sides/w", "/aws/w", "/slow/w"):
                s.get(gw.base_url + path, timeout=15)
        time.sleep(0.3)
        fds_before = _fd_count(gw)
        stop = threading.Event()
        tally = Tally()
        clients = [threading.Thread(target=_keepalive_client, args=(gw, path, stop, tally), daemon=True)
                   for path in ("/sides/r", "/sides/r", "/aws/r", "/slow/r", "/slow/r")]
        for t in clients:
            t.start()
        time.sleep(0.5)
        for marker in range(1, RELOADS + 1):
            gw.reload(_cfg(backend, faulty, marker))
            time.sleep(RELOAD_GAP_S)
        marker_status = -1
        deadline = time.monotonic() + 10
        with session() as s:
            while time.monotonic() < deadline and marker_status != 200:
                marker_status = s.get(f"{gw.base_url}/marker-{RELOADS}/x", timeout=5).status_code
                time.sleep(0.05)
        time.sleep(SLOW_S + 0.5)  # slow calls started under the last configurations finish
        stop.set()
        for t in clients:
            t.join(20)
        time.sleep(0.5)
        fds_after = _fd_count(gw)
        running = gw.proc.poll() is None
        return {"gw": gw, "tally": tally, "marker_status": marker_status, "fds_before": fds_before,
                "fds_after": fds_after, "running": running}
    finally:
        gw.stop()


def test_sighup_reloads_under_load_fail_no_call(reloads: dict[str, Any]) -> None:
    """Twenty reloads under load: every call (pre/post http, assumed-role Lambda, slow calls spanning reloads)
    succeeds with the processors' modifications applied."""
    tally: Tally = reloads["tally"]
    assert tally.other == [] and tally.refused == 0, Counter(o[:70] for o in tally.other)
    assert tally.ok > 50, tally


def test_sighup_reloads_under_load_apply_the_last_configuration(reloads: dict[str, Any]) -> None:
    """The last reload's new endpoint answers."""
    assert reloads["marker_status"] == 200 and reloads["running"]


def test_sighup_reloads_leak_no_file_descriptors(reloads: dict[str, Any]) -> None:
    """After twenty reloads and the load gone, the gateway holds no more descriptors than before (± slack)."""
    assert reloads["fds_after"] <= reloads["fds_before"] + FD_SLACK, (reloads["fds_before"], reloads["fds_after"])
