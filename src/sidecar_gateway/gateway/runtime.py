"""The live objects built from a ``GatewayPlan``: router, per-endpoint runtimes, shared clients.

A ``Runtime`` is built once per configuration load and never changes; a reload builds a new one and swaps it
in ``RuntimeHolder`` (calls in flight keep the one they started with).  Process-wide resources that survive
reloads — the pooled HTTP client, AWS credential caches, the Python worker pool — live in ``Shared``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from ..config.plan import EndpointPlan, GatewayPlan
from ..native import lane as native_lane
from ..observability.logs import log_event
from ..observability.metrics import EndpointMetrics
from ..sidecar.engine import EndpointSidecar, SidecarServices, build_endpoint_sidecar
from ..transports.pool import HttpClient
from .routing import Router

__all__ = ["EndpointRuntime", "Runtime", "RuntimeHolder"]

RETIRE_POLL_S = 0.5  # how often a replaced runtime checks whether its calls have finished
RETIRE_MAX_S = 120.0  # after this the old runtime is closed anyway (longer than any sane endpoint timeout)


@dataclass(slots=True)
class EndpointRuntime:
    plan: EndpointPlan
    metrics: EndpointMetrics
    sidecar: EndpointSidecar | None


class Runtime:
    def __init__(self, plan: GatewayPlan, services: SidecarServices) -> None:
        self.plan = plan
        self.client: HttpClient = services.client
        self.router = Router(plan.endpoints)
        self.endpoints: dict[str, EndpointRuntime] = {
            ep.endpoint_id: EndpointRuntime(ep, EndpointMetrics(ep.service_id, ep.endpoint_id),
                                            build_endpoint_sidecar(ep, plan.sidecar, services))
            for ep in plan.endpoints
        }
        self._trusted = plan.trusted_proxies
        self._trust_cache: dict[str, bool] = {}
        self.inflight = 0
        from . import native_hooks  # imports app.py, which imports this module

        self.native = native_lane.build_routes(self, native_hooks)  # None: every call through the Python lane

    def is_trusted(self, peer: str) -> bool:
        if not self._trusted or not peer:
            return False
        hit = self._trust_cache.get(peer)
        if hit is None:
            try:
                ip = ipaddress.ip_address(peer)
                hit = any(ip in net for net in self._trusted)
            except ValueError:
                hit = False
            if len(self._trust_cache) < 10_000:
                self._trust_cache[peer] = hit
        return hit

    async def aclose(self) -> None:
        for epr in self.endpoints.values():
            if epr.sidecar is not None:
                await epr.sidecar.aclose()


class RuntimeHolder:
    """Owns the current runtime and the process-wide services; swaps runtimes on reload."""

    def __init__(self, plan: GatewayPlan) -> None:
        self._initial = plan
        self._current: Runtime | None = None
        self._services: SidecarServices | None = None
        self.ready = False

    @property
    def ready_runtime(self) -> bool:
        return self._current is not None

    @property
    def current(self) -> Runtime:
        assert self._current is not None  # set in start(); the server calls nothing before lifespan startup
        return self._current

    async def start(self) -> None:
        if self._current is not None:
            return
        self._services = SidecarServices.create(self._initial.sidecar)
        self._current = Runtime(self._initial, self._services)
        await self._services.start()

    def reload(self, plan: GatewayPlan) -> None:
        """Swap in a runtime for ``plan``.  Changed ``sidecar`` settings get new services (client pool, caches,
        queue, worker threads); the old ones are closed once the calls that use them have finished."""
        assert self._services is not None
        old = self._current
        old_services = None
        if old is not None and plan.sidecar != old.plan.sidecar:
            old_services = self._services
            self._services = SidecarServices.create(plan.sidecar)
            asyncio.get_running_loop().create_task(self._services.start())
        self._current = Runtime(plan, self._services)
        log_event(logging.INFO, "config_reloaded", endpoints=len(plan.endpoints),
                  sidecar_settings_changed=old_services is not None)
        if old is not None:
            asyncio.get_running_loop().create_task(self._retire(old, old_services))

    @staticmethod
    async def _retire(old: Runtime, old_services: SidecarServices | None) -> None:
        waited = 0.0
        while old.inflight > 0 and waited < RETIRE_MAX_S:
            await asyncio.sleep(RETIRE_POLL_S)
            waited += RETIRE_POLL_S
        await old.aclose()
        if old_services is not None:
            await old_services.aclose()

    async def stop(self) -> None:
        native_lane.close_pools()
        if self._current is not None:
            await self._current.aclose()
        if self._services is not None:
            await self._services.aclose()
