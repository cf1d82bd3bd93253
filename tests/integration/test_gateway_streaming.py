"""Streaming (issue 2 "Tests"): a 50 MB request body and a 50 MB response body pass through the gateway
intact while the gateway's resident memory grows by no more than 20 MB.  Both directions are slowed down on
the far side so that an unbounded buffer in the gateway would fill up and show in RSS."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from support.backend import MIB, PatternBody, pattern_sha256
from support.gateway_proc import config, endpoint, service, session

SIZE_MB = 50
MAX_GROWTH = 20 * MIB


@pytest.fixture(scope="module")
def gw(module_gateway_factory, backend):
    b = backend.url
    anon = {"key_required": False, "timeout": 60}
    cfg = config(
        service(
            "svc-stream",
            endpoint("ep-up", "/up", b("/be/up"), **anon),
            endpoint("ep-down", "/down", b(f"/stream/{SIZE_MB}"), **anon),
            endpoint("ep-down-small", "/down-small", b("/stream/1"), **anon),
        ),
        max_request_body=64 * MIB,
    )
    gw = module_gateway_factory.start(cfg)
    return gw


class RssSampler:
    """Samples the summed VmRSS of the gateway's processes every 20 ms in a thread."""

    def __init__(self, gw) -> None:
        self.gw = gw
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.gw.rss())
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.gw.rss())


@pytest.fixture(scope="module")
def warm(gw, http_module):
    """One small call in each direction first, so that lazily created pools and buffers are in the baseline."""
    for _ in range(2):
        r = http_module.post(gw.base_url + "/up/warm", data=PatternBody(MIB), timeout=30)
        assert r.status_code == 200
        r = http_module.get(gw.base_url + "/down-small/warm", timeout=30)
        assert r.status_code == 200
    time.sleep(0.2)
    return gw


@pytest.fixture(scope="module")
def http_module():
    s = session()
    yield s
    s.close()


@pytest.fixture(scope="module")
def upload(warm, http_module):
    """POST 50 MiB (Content-Length) to a backend that reads 20 ms per MiB; returns (response, RSS growth)."""
    baseline = warm.rss()
    with RssSampler(warm) as sampler:
        r = http_module.post(warm.base_url + "/up/x?read_delay_ms=20", data=PatternBody(SIZE_MB * MIB), timeout=90)
    return r, sampler.peak - baseline


@pytest.fixture(scope="module")
def download(warm, http_module):
    """GET 50 MiB, reading 1 MiB every 20 ms; returns (status, length, sha256, RSS growth)."""
    baseline = warm.rss()
    h = hashlib.sha256()
    n = 0
    with RssSampler(warm) as sampler:
        r = http_module.get(warm.base_url + "/down/x", stream=True, timeout=90)
        for piece in r.iter_content(MIB):
            h.update(piece)
            n += len(piece)
            time.sleep(0.02)
        r.close()
    return r.status_code, n, h.hexdigest(), sampler.peak - baseline


def test_50mb_upload_reaches_backend_intact(upload):
    """The backend receives all 50 MiB of the request body, byte for byte."""
    r, _ = upload
    assert r.status_code == 200
    assert (r.json()["body_length"], r.json()["body_sha256"]) == (SIZE_MB * MIB, pattern_sha256(SIZE_MB * MIB))


def test_50mb_upload_keeps_gateway_rss_growth_under_20mb(upload):
    """Streaming a 50 MiB request body to a slow reader grows the gateway's RSS by at most 20 MB."""
    _, growth = upload
    assert growth <= MAX_GROWTH, f"RSS grew by {growth / MIB:.1f} MiB"


def test_50mb_download_reaches_client_intact(download):
    """The client receives all 50 MiB of the response body, byte for byte."""
    status, n, digest, _ = download
    assert (status, n, digest) == (200, SIZE_MB * MIB, pattern_sha256(SIZE_MB * MIB))


def test_50mb_download_keeps_gateway_rss_growth_under_20mb(download):
    """Streaming a 50 MiB response body to a slow client grows the gateway's RSS by at most 20 MB."""
    *_, growth = download
    assert growth <= MAX_GROWTH, f"RSS grew by {growth / MIB:.1f} MiB"
