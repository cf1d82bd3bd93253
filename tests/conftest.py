"""Shared fixtures for the real-socket gateway tests.

* ``backend`` (session): the loopback ``BackendServer`` of ``tests/support/backend.py``.
* ``dead_port`` (session): a loopback port bound but not listening (connections are refused).
* ``gateway_factory`` (function) / ``module_gateway_factory`` (module): ``start(cfg, *, args=(), listen=None,
  default_admin=False, wait=True) -> GatewayProcess``; every gateway started is stopped at teardown.
* ``http`` (function): a ``requests`` session that ignores proxy variables.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.backend import BackendServer, bound_dead_port
from support.gateway_proc import GatewayProcess, session


class GatewayFactory:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[GatewayProcess] = []

    def start(
        self,
        cfg: dict[str, Any],
        *,
        args: tuple[str, ...] = (),
        listen: str | None = None,
        default_admin: bool = False,
        wait: bool = True,
    ) -> GatewayProcess:
        gw = GatewayProcess(self.workdir, cfg, args=args, listen=listen, default_admin=default_admin)
        self.started.append(gw)
        if wait:
            gw.wait_ready()
        return gw

    def stop_all(self) -> None:
        for gw in self.started:
            gw.stop()


@pytest.fixture(scope="session")
def backend() -> Iterator[BackendServer]:
    server = BackendServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dead_port() -> Iterator[int]:
    sock, port = bound_dead_port()
    yield port
    sock.close()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path / "gateways")
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def module_gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path_factory.mktemp("gateways"))
    yield factory
    factory.stop_all()


@pytest.fixture
def http() -> Iterator[Any]:
    s = session()
    yield s
    s.close()


# --------------------------------------------------------------------------------------------------------------
# Secrets never logged (issue 5): at the end of the session every gateway and Lambda-runner log written under
# pytest's temporary directories is scanned for the secrets the suite used.  The masked form (``abc1…``) is fine.
# --------------------------------------------------------------------------------------------------------------

# Module-level names whose string values are secrets, collected from every test module that ran (so the list
# cannot drift from the tests): package keys, AWS secret keys, ExternalIds, bearer/back-end tokens.
SECRET_NAMES = (
    "ACTIVE_KEY", "OTHER_KEY", "DISABLED_KEY", "UNKNOWN_KEY", "JWT_KEY", "BARE_KEY", "NOJWT_KEY",
    "GATEWAY_SECRET", "TEST_SECRET_KEY", "SECRET_KEY", "SUITE_SECRET_KEY", "EXTERNAL_ID", "BACKEND_SECRET",
    "BEARER", "ADMIN_TOKEN",
)
# Secrets written inline in tests (bearer tokens, ExternalIds, admin tokens).
LITERAL_SECRETS = (
    "qwertyuiopasdfghjklzxcvbnm", "first-token", "second-token", "client-own-token", "gateway-token", "ext-id-42",
    "ext-id-from-ssm-42",
)
SECRET_MIN_LENGTH = 8  # shorter values ("abc", "x") would match innocent text
SCANNED_LOGS = ("gw*.stdout", "gw*.stderr", "lambda-runner.log")


def _suite_secrets(session: pytest.Session) -> set[str]:
    secrets = set(LITERAL_SECRETS)
    for module in {item.module for item in session.items if getattr(item, "module", None) is not None}:
        for name in SECRET_NAMES:
            value = getattr(module, name, None)
            if isinstance(value, str):
                secrets.add(value)
    from support import gateway_proc, lambda_runner

    secrets |= {gateway_proc.ACTIVE_KEY, gateway_proc.OTHER_KEY, gateway_proc.DISABLED_KEY,
                lambda_runner.TEST_SECRET_KEY}
    return {s for s in secrets if len(s) >= SECRET_MIN_LENGTH}


def find_logged_secrets(root: Path, secrets: set[str]) -> list[str]:
    """``path: secret`` for every scanned log file under ``root`` that contains a secret in clear."""
    found = []
    for pattern in SCANNED_LOGS:
        for path in sorted(root.rglob(pattern)):
            try:
                text = path.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue
            found += [f"{path}: {secret[:4]}… in clear" for secret in sorted(secrets) if secret in text]
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or not session.items:
        return
    try:
        root = factory.getbasetemp()
    except Exception:  # no temporary directory was ever made
        return
    leaks = find_logged_secrets(root, _suite_secrets(session))
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "secrets found in gateway logs", red=True)
        for line in leaks:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
