"""Wiring: the per-endpoint sidecar (pre + post processors) and the process-wide services behind them.

``SidecarServices`` owns what outlives a configuration reload: the pooled HTTP client, the AWS credential
provider (STS/SSM caches), the Python worker pool, the output cache and the non-blocking queue.
``build_endpoint_sidecar`` turns an ``EndpointPlan`` into an ``EndpointSidecar`` once per load; the request
path then only calls ``run_pre`` / ``run_post``.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass

from ..config.plan import (
    AwsLambdaConnection,
    EndpointPlan,
    HttpConnection,
    ProcessorPlan,
    PythonConnection,
    SidecarSettings,
)
from ..errors import GatewayError, Point
from ..transports.aws_credentials import AwsCredentialProvider
from ..transports.aws_lambda import AwsLambdaTransport
from ..transports.base import Transport
from ..transports.http import HttpTransport
from ..transports.pool import HttpClient
from ..transports.python import PythonTransport, make_executor
from .call import BackendRequest, BackendResponse, CallContext
from .decision import NonBlockingQueue, OutputCache, Processor
from .verdict import Termination

__all__ = ["EndpointSidecar", "SidecarServices", "build_endpoint_sidecar"]


@dataclass(slots=True)
class SidecarServices:
    client: HttpClient
    credentials: AwsCredentialProvider
    executor: concurrent.futures.ThreadPoolExecutor
    cache: OutputCache
    queue: NonBlockingQueue

    @classmethod
    def create(cls, settings: SidecarSettings) -> SidecarServices:
        """Create on the running event loop (the HTTP client binds to it)."""
        return cls(
            client=HttpClient(),
            credentials=AwsCredentialProvider(settings.ssm_cache_ttl_s),
            executor=make_executor(settings.python_max_threads),
            cache=OutputCache(settings.output_cache_local_entries, settings.output_cache_max_ttl_s),
            queue=NonBlockingQueue(settings.nonblocking_queue_size, settings.nonblocking_workers,
                                   settings.nonblocking_drain_s),
        )

    async def start(self) -> None:
        self.queue.start()

    async def aclose(self) -> None:
        await self.queue.aclose()
        await self.client.aclose()
        self.executor.shutdown(wait=False, cancel_futures=True)


def make_transport(plan: ProcessorPlan, services: SidecarServices) -> Transport:
    conn = plan.connection
    if isinstance(conn, AwsLambdaConnection):
        return AwsLambdaTransport(conn, services.client, services.credentials)
    if isinstance(conn, HttpConnection):
        return HttpTransport(conn, services.client)
    if isinstance(conn, PythonConnection):
        return PythonTransport(conn, services.executor)
    raise TypeError(f"unknown connection {conn!r}")


class EndpointSidecar:
    """The pre- and post-processors of one endpoint."""

    __slots__ = ("needs_request_body", "needs_response_body", "post", "post_error_set", "pre", "pre_error_set")

    def __init__(self, pre: Processor | None, post: Processor | None) -> None:
        self.pre = pre
        self.post = post
        pre_plan = pre.plan if pre is not None else None
        post_plan = post.plan if post is not None else None
        self.needs_request_body = bool((pre_plan and pre_plan.expand_request_payload)
                                       or (post_plan and post_plan.expand_request_payload))
        self.needs_response_body = bool(post_plan and post_plan.expand_response_payload)
        self.pre_error_set = bool(pre_plan and pre_plan.enable_error_set)
        self.post_error_set = bool(post_plan and post_plan.enable_error_set)

    async def run_pre(self, call: CallContext, backend: BackendRequest) -> Termination | None:
        assert self.pre is not None
        verdict = await self.pre.run(call, backend, None)
        return verdict.termination if verdict is not None else None

    async def run_post(self, call: CallContext, backend: BackendRequest,
                       response: BackendResponse) -> Termination | None:
        assert self.post is not None
        verdict = await self.post.run(call, backend, response)
        return verdict.termination if verdict is not None else None

    def error_set_for(self, err: GatewayError) -> bool:
        """§6.2 rule 2: the processor that raised the error decides whether the error set is used."""
        if err.point is Point.POST:
            return self.post_error_set
        if err.point in (Point.PRE, Point.PREFLIGHT):
            return self.pre_error_set
        return False

    async def aclose(self) -> None:
        for p in (self.pre, self.post):
            if p is not None:
                await p.aclose()


def build_endpoint_sidecar(endpoint: EndpointPlan, settings: SidecarSettings,
                           services: SidecarServices) -> EndpointSidecar | None:
    if endpoint.pre is None and endpoint.post is None:
        return None
    authority = endpoint.target.authority.lower()

    def make(plan: ProcessorPlan | None) -> Processor | None:
        if plan is None:
            return None
        return Processor(plan, make_transport(plan, services), cache=services.cache, queue=services.queue,
                         settings=settings, backend_authority=authority, route_hosts=endpoint.route_hosts)

    return EndpointSidecar(make(endpoint.pre), make(endpoint.post))
