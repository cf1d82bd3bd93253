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
