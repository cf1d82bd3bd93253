"""The metrics store (``observability/metrics.py``): what a Prometheus scrape shows, single-process and merged
over worker snapshots written by real separate processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar_gateway.observability import metrics

WORKER = textwrap.dedent("""
    import sys
    from sidecar_gateway.observability import metrics as m
    ep = m.EndpointMetrics("svc", "ep-1")
    for _ in range(int(sys.argv[1])):
        ep.observe(200, 0.003)
        ep.upstream_duration.observe(0.002)
    ep.observe(502, 2.0)
    m.sidecar_nonblocking_queue_depth.set(int(sys.argv[2]))
    m.loop_lag_max.set(float(sys.argv[3]))
    m.flush()
    if len(sys.argv) > 4:  # stay alive: its gauges count
        print("ready", flush=True)
        sys.stdin.read()
""")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_single_process_rendering_is_valid_prometheus_text_with_cumulative_buckets():
    ep = metrics.EndpointMetrics("svc-x", 'ep "quoted"\\back')
    ep.observe(200, 0.0005)
    ep.observe(200, 0.004)
    ep.observe(200, 99.0)
    text = metrics.render_metrics(False, metrics.collect(False)).decode()
    got = _samples(text)
    labels = (("endpoint_id", 'ep "quoted"\\back'), ("service_id", "svc-x"))
    assert got[("gateway_requests_total", (*labels[:1], labels[1], ("status", "200")))] == 3
    bucket = "gateway_request_duration_seconds_bucket"
    assert got[(bucket, (labels[0], ("le", "0.001"), labels[1]))] == 1
    assert got[(bucket, (labels[0], ("le", "0.005"), labels[1]))] == 2
    assert got[(bucket, (labels[0], ("le", "10.0"), labels[1]))] == 2
    assert got[(bucket, (labels[0], ("le", "+Inf"), labels[1]))] == 3
    assert got[("gateway_request_duration_seconds_count", labels)] == 3
    assert got[("gateway_request_duration_seconds_sum", labels)] == pytest.approx(99.0045)


def test_worker_snapshots_are_summed_and_gauges_count_only_live_workers(tmp_path, monkeypatch):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", WORKER, "5", "7", "0.5"], env=env, check=True, timeout=60)
    live = subprocess.Popen([sys.executable, "-c", WORKER, "3", "4", "0.25", "stay"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        assert len(list(tmp_path.glob("worker-*.json"))) == 2
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        got = _samples(metrics.render_metrics(multiprocess=True).decode())
    finally:
        live.communicate("", timeout=30)
    labels = (("endpoint_id", "ep-1"), ("service_id", "svc"))
    assert got[("gateway_requests_total", (*labels, ("status", "200")))] == 8  # 5 + 3, the exited worker too
    assert got[("gateway_requests_total", (*labels, ("status", "502")))] == 2
    assert got[("gateway_upstream_duration_seconds_count", labels)] == 8
    assert got[("gateway_request_duration_seconds_bucket", (labels[0], ("le", "0.0025"), labels[1]))] == 0
    assert got[("gateway_request_duration_seconds_bucket", (labels[0], ("le", "0.005"), labels[1]))] == 8
    assert got[("gateway_request_duration_seconds_bucket", (labels[0], ("le", "+Inf"), labels[1]))] == 10
    # gauges: only the worker still running (the exited one's 7 and 0.5 no longer count)
    assert got[("sidecar_nonblocking_queue_depth", ())] == 4
    assert got[("gateway_event_loop_lag_max_seconds", ())] == 0.25


def test_a_torn_or_foreign_file_in_the_directory_is_ignored(tmp_path, monkeypatch):
    (tmp_path / "worker-123.json").write_bytes(b'{"gateway_requests_total": [[["a"')
    (tmp_path / "worker-abc.json").write_bytes(b"{}")
    (tmp_path / "counter_1.db").write_bytes(b"\x00" * 16)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics.render_metrics(multiprocess=True).decode()
    assert "# TYPE gateway_requests_total counter" in text
    assert list(text_string_to_metric_families(text))  # parses
