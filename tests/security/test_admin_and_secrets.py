"""The admin listener off loopback needs a token; secrets never reach logs or metrics labels (issue 5).

* ``admin.listen`` on a non-loopback address without ``admin.token`` is a configuration ERROR
  (``admin.token is required when admin.listen is not a loopback address``): ``check`` exits 1, ``run``
  refuses to start.  With a token every request needs ``Authorization: Bearer <token>`` (compared with
  ``hmac.compare_digest``).
* A gateway driven with valid, disabled and unknown keys (query and header), a bearer token and a function
  that fails, never writes any of those secrets in clear to its stdout/stderr or to a ``/metrics`` label value.
  (The whole suite's logs are scanned at session end by ``tests/conftest.py``.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from sidecar_gateway.config.loader import load_config_text
from sidecar_gateway.gateway import admin as admin_module
from sidecar_gateway.gateway.admin import AdminServer
from support.backend import BackendServer
from support.gateway_proc import (
    ACTIVE_KEY,
    DISABLED_KEY,
    OTHER_KEY,
    GatewayProcess,
    config,
    endpoint,
    free_port,
    run_cli,
    service,
    session,
    write_yaml,
)

TOKEN_REQUIRED = "admin.token: admin.token is required when admin.listen is not a loopback address"
ADMIN_TOKEN = "adm1n-t0ken-for-security-tests"
BEARER = "bearer-secret-value-0123456789"
UNKNOWN_KEY = "unknownKEY0123456789zz"
SIDECAR_TOKEN = "sidecar-static-header-secret-42"


# --------------------------------------------------------------------------------------------------------------
# admin.token rule (loader)
# --------------------------------------------------------------------------------------------------------------


def problems(admin: dict[str, Any]) -> list[str]:
    import yaml

    return [p.render() for p in load_config_text(yaml.safe_dump({"admin": admin, "services": []})).problems]


@pytest.mark.parametrize("listen", ["0.0.0.0:9901", "[::]:9901", "10.1.2.3:9901", "admin.internal:9901",
                                    "[2001:db8::1]:9901"])
def test_non_loopback_admin_without_token_is_an_error(listen: str) -> None:
    """admin.listen reachable from other machines without admin.token is a configuration ERROR."""
    assert [p.split(None, 1)[1] for p in problems({"listen": listen})] == [TOKEN_REQUIRED]


@pytest.mark.parametrize("listen", ["127.0.0.1:9901", "127.9.9.9:9901", "[::1]:9901", "localhost:9901"])
def test_loopback_admin_needs_no_token(listen: str) -> None:
    """Loopback (127.0.0.0/8, ::1, localhost) needs no token."""
    assert problems({"listen": listen}) == []


def test_non_loopback_admin_with_token_is_accepted() -> None:
    """With a token any address is accepted."""
    assert problems({"listen": "0.0.0.0:9901", "token": ADMIN_TOKEN}) == []


def test_token_rule_is_reported_beside_other_errors() -> None:
    """The rule is checked on the admin block alone: it is reported even when the rest of the file is invalid."""
    import yaml

    text = yaml.safe_dump({"admin": {"listen": "0.0.0.0:9901"}, "listen": "nowhere", "services": []})
    rendered = [p.render() for p in load_config_text(text).problems]
    assert any(TOKEN_REQUIRED in line for line in rendered) and any("listen: " in line for line in rendered)


def test_check_and_run_refuse_non_loopback_admin_without_token(tmp_path: Path) -> None:
    """`check` prints the ERROR and exits 1; `run` writes it to stderr and refuses to start (exit 1)."""
    path = tmp_path / "admin.yaml"
    write_yaml(path, {"listen": f"127.0.0.1:{free_port()}", "admin": {"listen": f"0.0.0.0:{free_port()}"},
                      "services": []})
    checked = run_cli("check", str(path))
    ran = run_cli("run", str(path), timeout=20)
    assert (checked.returncode, ran.returncode) == (1, 1)
    assert TOKEN_REQUIRED in checked.stdout and TOKEN_REQUIRED in ran.stderr


# --------------------------------------------------------------------------------------------------------------
# Bearer token on a non-loopback admin listener
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed_admin(module_gateway_factory: Any, backend: BackendServer) -> str:
    """A gateway whose admin listener binds 0.0.0.0 with a token; returns the admin base URL (via loopback)."""
    port = free_port()
    cfg = config(service("svc-adm-sec", endpoint("ep", "/a", backend.url("/"), key_required=False)),
                 admin={"listen": f"0.0.0.0:{port}", "token": ADMIN_TOKEN})
    module_gateway_factory.start(cfg, wait=False)
    url = f"http://127.0.0.1:{port}"
    with session() as s:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if s.get(url + "/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=1).ok:
                    return url
            except Exception:
                pass
            time.sleep(0.05)
    raise AssertionError("gateway with exposed admin listener not ready")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {ADMIN_TOKEN[:-1]}",
                                           f"Bearer {ADMIN_TOKEN}x", ADMIN_TOKEN, f"Basic {ADMIN_TOKEN}",
                                           f"Bearer  {ADMIN_TOKEN} extra"])
def test_exposed_admin_refuses_missing_or_wrong_token(exposed_admin: str, path: str,
                                                      authorization: str | None) -> None:
    """No token, a wrong one, a prefix or an extension of it, or another scheme → 401."""
    headers = {"Authorization": authorization} if authorization is not None else {}
    with session() as s:
        assert s.get(exposed_admin + path, headers=headers, timeout=5).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_exposed_admin_answers_with_the_token(exposed_admin: str, path: str) -> None:
    """The right bearer token → 200."""
    with session() as s:
        r = s.get(exposed_admin + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    assert r.status_code == 200


def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The presented credentials are compared with hmac.compare_digest (no early exit on the first byte)."""
    calls: list[tuple[bytes, bytes]] = []
    real = admin_module.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin_module.hmac, "compare_digest", spy)
    server = AdminServer("127.0.0.1", 0, ready=lambda: True, token=lambda: ADMIN_TOKEN)
    head = b"GET /healthz HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n"
    assert server._route(head)[0] == 401
    assert calls == [(b"Bearer nope", f"Bearer {ADMIN_TOKEN}".encode())]


# --------------------------------------------------------------------------------------------------------------
# Secrets in logs and metrics labels
# --------------------------------------------------------------------------------------------------------------

SECRETS = (ACTIVE_KEY, OTHER_KEY, DISABLED_KEY, UNKNOWN_KEY, BEARER, SIDECAR_TOKEN, ADMIN_TOKEN)


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, dead_port: int) -> Any:
    """A gateway driven through success and failure paths with every kind of secret; yields (gateway, /metrics)."""
    dead_fn = f"stack: http\nurl: http://127.0.0.1:{dead_port}/fn\nheader.Authorization: Bearer ${{SIDECAR_TOKEN}}\n"
    b = backend.url
    cfg = config(
        service(
            "svc-secrets",
            endpoint("q", "/q", b("/be/q")),
            endpoint("hdr", "/hdr", b("/be/hdr"), api_key={"in": "header"}),
            endpoint("fn", "/fn", b("/be/fn"), pre_processing=dead_fn),
            endpoint("fs", "/fs", b("/be/fs"), pre_processing=dead_fn + "failSafe: true\n"),
            endpoint("down", "/down", f"http://127.0.0.1:{dead_port}/x"),
        ),
        admin={"listen": f"127.0.0.1:{free_port()}", "token": ADMIN_TOKEN},
    )
    import os

    gw = GatewayProcess(tmp_path_factory.mktemp("secrets"), cfg, env={**os.environ, "SIDECAR_TOKEN": SIDECAR_TOKEN})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with session() as s:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if s.get(gw.admin_url + "/readyz", headers=auth, timeout=1).ok:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            for path in ("/q/x", "/fn/x", "/fs/x", "/down/x", "/nowhere"):
                for key in (ACTIVE_KEY, OTHER_KEY, DISABLED_KEY, UNKNOWN_KEY, f" {ACTIVE_KEY} "):
                    s.get(f"{gw.base_url}{path}", params={"api_key": key},
                          headers={"Authorization": f"Bearer {BEARER}"}, timeout=10)
            for key in (ACTIVE_KEY, UNKNOWN_KEY, DISABLED_KEY):
                s.get(f"{gw.base_url}/hdr/x", headers={"X-Api-Key": key, "Authorization": BEARER}, timeout=10)
            time.sleep(0.8)  # the access log is flushed every 0.5 s
            metrics = s.get(gw.admin_url + "/metrics", headers=auth, timeout=5).text
        yield gw, metrics
    finally:
        gw.stop()


def test_no_secret_in_gateway_logs(driven: Any) -> None:
    """stdout and stderr of the driven gateway hold no key, token or static function credential in clear."""
    gw, _ = driven
    output = gw.output()
    assert output.strip(), "the gateway logged nothing: the scan would prove nothing"
    assert [s[:4] for s in SECRETS if s in output] == []


def test_keys_are_logged_masked(driven: Any) -> None:
    """The access log records the presented key masked (first four characters and an ellipsis)."""
    gw, _ = driven
    keys = {line.get("key") for line in gw.json_lines() if "key" in line}
    assert {f"{ACTIVE_KEY[:4]}…", f"{UNKNOWN_KEY[:4]}…"} <= keys


def test_no_secret_in_metrics_label_values(driven: Any) -> None:
    """No /metrics label value (nor any other part of the exposition) contains a secret."""
    _, metrics = driven
    labels = re.findall(r'="((?:[^"\\]|\\.)*)"', metrics)
    assert labels, "no labelled metric: the scan would prove nothing"
    assert [v for v in labels if any(s in v for s in SECRETS)] == []
    assert [s[:4] for s in SECRETS if s in metrics] == []
