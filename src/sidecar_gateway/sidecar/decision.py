"""The decision procedure of one processor (contract §5.1 P3–P11, §5.2 Q1–Q8, §5.3, §5.4, §9).

Rules of this file:

* ``Processor.run`` is the only place that orders the steps; each step is a call into a sans-IO core
  (``conditions``, ``input_builder``, ``output_interpreter``, ``apply``) or into the transport.
* Failures are classified once, in ``_invoke``: a transport result or exception becomes a ``Verdict`` or a
  ``FunctionFailure`` with the §5.3 name for this point.  ``failSafe`` is applied in exactly one place
  (``_request_response``): a ``FunctionFailure`` becomes "continue unchanged" with verdict *error* (§5.4).
  Client errors (conditions 400, payload 413, input 400/500) are never covered (§5.4).
* Event, non-blocking and shadow modes never change the call (§5.1 P9, §9.4, §9.5).
* Every processor outcome is counted once in ``sidecar_verdicts_total`` (§9.6).

Theory of operation (pre; post is the same with Q-steps and the response as extra input)::

    scope? ──no──► skipped
      │yes
    conditions (400) ─► [pre-flight] ─► payload limits (413 | filtering ► skipped)
      ─► build input (400/500) ─► mode: shadow | non-blocking ─► queue, continue
                                        event ─► invoke(Event) within deadline, continue
                                        request-response ─► cache? ─► invoke ─► classify ─► verdict
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..config.plan import Mode, ProcessorPlan, SidecarSettings
from ..errors import ClientError, ErrorCode, FunctionFailure, GatewayError, InvocationError, Point
from ..observability.logs import log_event
from ..observability.metrics import (
    LazyChild,
    sidecar_errors,
    sidecar_invocation_duration,
    sidecar_nonblocking_dropped,
    sidecar_nonblocking_queue_depth,
    sidecar_output_cache_lookups,
    sidecar_verdicts,
)
from ..transports.base import InvocationType, ResultKind, Transport
from ..transports.deadline import Deadline
from .apply import apply_to_request, apply_to_response
from .call import BackendRequest, BackendResponse, CallContext, ClientRequest
from .conditions import check_conditions, check_payload_limits, in_scope
from .input_builder import build_input, build_preflight_input, cache_key
from .output_interpreter import function_failure, interpret_output
from .verdict import ALLOW, Modification, Verdict, VerdictKind

__all__ = ["NonBlockingQueue", "OutputCache", "Phase", "Processor", "advance"]

NONBLOCKING_WARN_INTERVAL_S = 10.0  # §9.4: a full-queue warning at most once per 10 s per endpoint


class Phase(enum.Enum):
    """Where a client call is (style rule 4).  One call moves strictly along ``TRANSITIONS``."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    PRE_CALL = "pre-call"  # authenticated; the pre-processor (if any) decides
    PROXY = "proxy"  # the backend request is being sent / its head awaited
    POST_CALL = "post-call"  # the backend answered; the post-processor (if any) decides
    RESPOND = "respond"  # the client response is being sent
    DONE = "done"


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PRE_CALL: frozenset({Phase.PROXY, Phase.RESPOND}),  # terminate / error at pre → respond
    Phase.PROXY: frozenset({Phase.POST_CALL, Phase.RESPOND}),  # backend failure → respond
    Phase.POST_CALL: frozenset({Phase.RESPOND}),
    Phase.RESPOND: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}


def advance(current: Phase, to: Phase) -> Phase:
    """Move to ``to`` or raise: an outcome arriving in the wrong phase is a bug, never applied."""
    if to not in TRANSITIONS[current]:
        from ..errors import InternalError

        raise InternalError(f"phase {current.value} -> {to.value}")
    return to


# ---------------------------------------------------------------------------------------------------------------
# Output cache (§9.1, in-process LRU part)
# ---------------------------------------------------------------------------------------------------------------


class OutputCache:
    """In-process LRU of verdicts keyed by ``serviceId:endpointId:point:sha256``; expired entries never served."""

    def __init__(self, max_entries: int, max_ttl_s: float) -> None:
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._max = max_entries
        self._max_ttl_s = max_ttl_s
        # Key prefixes (``serviceId:endpointId:point:fingerprint:point:``) that ever had an entry: a processor
        # whose function never answered with a cache hint looks nothing up and hashes no input (most don't).
        self.filled: set[str] = set()

    def get(self, key: str, now: float) -> Verdict | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, verdict = hit
        if expires <= now:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verdict

    def put(self, key: str, verdict: Verdict, ttl_ms: int, now: float) -> None:
        ttl_s = min(ttl_ms / 1000.0, self._max_ttl_s)
        if ttl_s <= 0 or self._max <= 0:
            return
        self.filled.add(key[: key.rindex(":") + 1])
        self._entries[key] = (now + ttl_s, verdict)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# ---------------------------------------------------------------------------------------------------------------
# Non-blocking queue (§9.4) — also carries shadow calls (§9.5)
# ---------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    processor: Processor
    payload: bytes
    message_id: str
    shadow: bool


class NonBlockingQueue:
    def __init__(self, size: int, workers: int, drain_s: float) -> None:
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=size)
        self._workers_n = workers
        self._drain_s = drain_s
        self._workers: list[asyncio.Task[None]] = []
        self._last_warning: dict[str, float] = {}

    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.get_running_loop().create_task(self._work()) for _ in range(self._workers_n)]

    def put(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            plan = job.processor.plan
            sidecar_nonblocking_dropped.labels(plan.service_id, plan.endpoint_id, plan.point.value).inc()
            now = time.monotonic()
            label = f"{plan.service_id}/{plan.endpoint_id}"
            if now - self._last_warning.get(label, -1e9) >= NONBLOCKING_WARN_INTERVAL_S:
                self._last_warning[label] = now
                log_event(logging.WARNING, "nonblocking_queue_full", service_id=plan.service_id,
                          endpoint_id=plan.endpoint_id)
            return
        sidecar_nonblocking_queue_depth.set(self._queue.qsize())

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            sidecar_nonblocking_queue_depth.set(self._queue.qsize())
            try:
                await job.processor.run_detached(job)
            except Exception as exc:  # never affects any call (§9.4)
                log_event(logging.WARNING, "nonblocking_failed", message_id=job.message_id, error=repr(exc))
            finally:
                self._queue.task_done()

    async def aclose(self) -> None:
        if not self._workers:
            return
        try:
            async with asyncio.timeout(self._drain_s):
                await self._queue.join()
        except TimeoutError:
            pass
        while not self._queue.empty():
            job = self._queue.get_nowait()
            plan = job.processor.plan
            sidecar_nonblocking_dropped.labels(plan.service_id, plan.endpoint_id, plan.point.value).inc()
        for w in self._workers:
            w.cancel()
        self._workers = []


# ---------------------------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------------------------


# Enum member access costs ~0.2 µs on CPython 3.11: the per-call code reads these aliases (same objects).
_NON_BLOCKING = Mode.NON_BLOCKING
_EVENT_MODE = Mode.EVENT
_REQUEST_RESPONSE_MODE = Mode.REQUEST_RESPONSE
_REQUEST_RESPONSE = InvocationType.REQUEST_RESPONSE
_EVENT = InvocationType.EVENT
_ACCEPTED = ResultKind.ACCEPTED
_FUNCTION_ERROR = ResultKind.FUNCTION_ERROR
_TERMINATE = VerdictKind.TERMINATE
_MODIFY = VerdictKind.MODIFY
_PREFLIGHT = Point.PREFLIGHT
_POST = Point.POST


class Processor:
    """One configured processor with its transport and pre-bound metric children."""

    def __init__(self, plan: ProcessorPlan, transport: Transport, *, cache: OutputCache,
                 queue: NonBlockingQueue, settings: SidecarSettings, backend_authority: str,
                 route_hosts: frozenset[str]) -> None:
        self.plan = plan
        self.transport = transport
        self._cache = cache
        self._queue = queue
        self._settings = settings
        self._authority = backend_authority
        self._route_hosts = route_hosts
        labels = (plan.service_id, plan.endpoint_id, plan.point.value)
        self._labels = labels
        mode = "shadow" if plan.shadow else "live"
        # children bound on first use (``LazyChild``): most of a large configuration's processors never see a call
        self._verdict = {k: LazyChild(sidecar_verdicts, *labels, k.value, mode) for k in VerdictKind}
        self._verdict_error = LazyChild(sidecar_verdicts, *labels, "error", mode)
        self._verdict_skipped = LazyChild(sidecar_verdicts, *labels, "skipped", mode)
        self._duration = LazyChild(sidecar_invocation_duration, *labels, plan.stack.value)
        self._pf_labels = (plan.service_id, plan.endpoint_id, _PREFLIGHT.value)
        self._pf_duration = (LazyChild(sidecar_invocation_duration, *self._pf_labels, plan.stack.value)
                             if plan.preflight else None)  # bound only when used: every child is a scraped series
        self._use_cache = plan.output_cache and plan.mode is _REQUEST_RESPONSE_MODE and not plan.shadow
        # The configuration's fingerprint is part of the key: after a reload that changes the processor, outputs
        # cached for the old configuration are never served (they age out of the LRU).
        fingerprint = hashlib.sha256(repr(plan).encode()).hexdigest()[:16]
        self._cache_prefix = f"{plan.service_id}:{plan.endpoint_id}:{plan.point.value}:{fingerprint}:"
        self._cache_prefixes = {p: f"{self._cache_prefix}{p.value}:" for p in Point}  # enum .value is a call
        self._lookups: dict[tuple[Point, bool], LazyChild] = {}  # output-cache lookup counters, bound on first use

    # -- public -------------------------------------------------------------------------------------------------

    async def run(self, call: CallContext, backend: BackendRequest,
                  response: BackendResponse | None) -> Verdict | None:
        """Run P4–P11 (pre) or Q2–Q8 (post).  Returns a terminate verdict to answer with, or None to continue
        (modifications already applied).  Raises ``GatewayError`` for client-visible failures."""
        plan = self.plan
        try:
            if plan.scope and not in_scope(plan, call):
                self._verdict_skipped.inc()
                return None
            check_conditions(plan, call)
            if plan.preflight:
                terminate = await self._preflight(call, backend)
                if terminate is not None:
                    return terminate
            if not check_payload_limits(plan, call, response):
                self._verdict_skipped.inc()
                return None
            try:
                payload = build_input(plan, call, routing=backend if plan.expand_routing else None,
                                      response=response)
            except ClientError:
                raise
            except Exception:
                raise ClientError(ErrorCode.INPUT_POST if plan.point is _POST else ErrorCode.INPUT_PRE) from None
            if plan.shadow or plan.mode is _NON_BLOCKING:
                self._queue.put(_Job(self, payload, call.message_id, plan.shadow))
                return None
            if plan.mode is _EVENT_MODE:
                await self._event(payload, call.message_id)
                return None
            verdict = await self._request_response(payload, call.message_id, plan.point, self._duration)
        except GatewayError as err:
            if err.point is None:
                err.point = plan.point
            self._count_error(err)
            self._verdict_error.inc()
            raise
        return self._apply(verdict, backend, response)

    async def run_detached(self, job: _Job) -> None:
        """A queued non-blocking (Event) or shadow (RequestResponse, never applied) invocation (§9.4, §9.5)."""
        plan = self.plan
        if not job.shadow:
            try:
                await self._invoke(job.payload, _EVENT, job.message_id, plan.point, self._duration)
                self._verdict[VerdictKind.ALLOW].inc()
            except GatewayError as err:
                self._verdict_error.inc()
                self._count_error(err)
                log_event(logging.WARNING, "sidecar_failed", message_id=job.message_id, service_id=plan.service_id,
                          endpoint_id=plan.endpoint_id, point=plan.point.value, error=err.error_name,
                          detail=err.error_message, mode="non-blocking")
            return
        try:
            verdict = await self._invoke(job.payload, _REQUEST_RESPONSE, job.message_id, plan.point,
                                         self._duration)
        except GatewayError as err:
            self._verdict_error.inc()
            self._count_error(err)
            log_event(logging.INFO, "shadow_verdict", message_id=job.message_id, service_id=plan.service_id,
                      endpoint_id=plan.endpoint_id, point=plan.point.value, verdict="error", error=err.error_name)
            return
        self._verdict[verdict.kind].inc()
        log_event(logging.INFO, "shadow_verdict", message_id=job.message_id, service_id=plan.service_id,
                  endpoint_id=plan.endpoint_id, point=plan.point.value, **_describe(verdict))

    # -- the native lane (native/lane.py) -------------------------------------------------------------------------

    def native_call(self, endpoint: Any, placeholder: str) -> tuple[str, bytes | None, Any, str] | None:
        """What the native lane needs to make this processor's call itself, or None when it must not: the http
        stack, request-response, no scope, conditions, pre-flight or shadow, and an input that depends on the
        call only through the message id (no ``expand-input``; the selected request headers, when a call has
        one, make the lane leave that call to the Python lane).  Returns (function URL, the whole HTTP request
        with ``placeholder`` where the message id goes — None for aws-lambda, whose request is signed per call —,
        the aws-lambda signer refresh function or None, the output-cache prefix the lane must find empty)."""
        from ..transports.aws_lambda import AwsLambdaTransport
        from ..transports.http import HttpTransport

        plan = self.plan
        if (not isinstance(self.transport, HttpTransport | AwsLambdaTransport)
                or plan.mode is not _REQUEST_RESPONSE_MODE or plan.shadow
                or plan.scope or plan.preflight or plan.require_request_headers or plan.require_eavs
                or plan.require_key_eavs or plan.expand_request_payload or plan.expand_remote_address
                or plan.expand_token or plan.expand_operation or plan.expand_routing or plan.point is _POST):
            return None
        request = ClientRequest("GET", "http", "", "/", "/", "", [], "")
        payload = build_input(plan, CallContext(placeholder, endpoint, request, None), routing=None, response=None)
        prefix = self._cache_prefixes[plan.point]
        if isinstance(self.transport, AwsLambdaTransport):
            refresh = self.transport.native_signer(payload, placeholder)
            return None if refresh is None else (self.transport.url, None, refresh, prefix)
        wire = self.transport.encoded_request(payload, placeholder)
        return None if wire is None else (self.transport.url, wire, None, prefix)

    def native_allow(self, elapsed: float) -> None:
        """The native lane made this processor's call and the answer was a plain allow: the metrics
        ``_request_response`` and ``_apply`` would have counted."""
        self._count_native(VerdictKind.ALLOW, elapsed)

    def _count_native(self, kind: VerdictKind, elapsed: float) -> None:
        if self._use_cache:
            self._count_lookup(self.plan.point, False)
        self._duration.observe(elapsed)
        self._verdict[kind].inc()

    def native_allows(self, count: int, buckets: tuple[int, ...], total: float) -> None:
        """``native_allow`` for ``count`` calls at once (the lane's tally, ``Recorder.fold``): their durations as
        bucket counts of ``sidecar_invocation_duration_seconds`` and their sum."""
        if self._use_cache:
            self._count_lookup(self.plan.point, False, count)
        self._duration.add_counts(buckets, total)
        self._verdict[VerdictKind.ALLOW].inc(count)

    def native_verdict(self, result: tuple[Any, ...]) -> Verdict | None:
        """The verdict of an answer the native lane received (``transports/http.INJECTED`` shapes) when it is a
        terminate without a cache hint — ``_invoke``'s classification, nothing counted — else None: the Python
        lane decides that call (errors, failSafe and every other verdict stay there)."""
        try:
            outcome = self.transport.classify_native(result)  # type: ignore[attr-defined]
            if outcome.kind is not ResultKind.OUTPUT:
                return None
            verdict = interpret_output(outcome.body, self.plan.point, backend_authority=self._authority,
                                       route_hosts=self._route_hosts, now=time.time())
        except (GatewayError, InvocationError, TimeoutError):
            return None
        if verdict.kind is not _TERMINATE or verdict.cache_ttl_ms is not None or verdict.termination is None:
            return None
        return verdict

    def native_count(self, verdict: Verdict, elapsed: float) -> None:
        """The native lane answered ``verdict`` (from ``native_verdict``): what ``_request_response`` and
        ``_apply`` count."""
        self._count_native(verdict.kind, elapsed)

    @property
    def output_cache_filled(self) -> set[str]:
        return self._cache.filled

    # -- steps --------------------------------------------------------------------------------------------------

    async def _event(self, payload: bytes, message_id: str) -> None:
        """P9 event: wait for acceptance at most ``timeout``; whatever happens, continue (never blocks)."""
        plan = self.plan
        try:
            await self._invoke(payload, _EVENT, message_id, plan.point, self._duration)
            self._verdict[VerdictKind.ALLOW].inc()
        except GatewayError as err:
            self._verdict_error.inc()
            self._count_error(err)
            log_event(logging.WARNING, "sidecar_failed", message_id=message_id, service_id=plan.service_id,
                      endpoint_id=plan.endpoint_id, point=plan.point.value, error=err.error_name,
                      detail=err.error_message, mode="event")

    async def _request_response(self, payload: bytes, message_id: str, point: Point, duration: Any,
                                *, preflight_ttl_s: int | None = None) -> Verdict:
        """P10/Q7: cache lookup, invoke, classify; failSafe turns a failure into ALLOW (verdict *error*)."""
        plan = self.plan
        use_cache = self._use_cache or preflight_ttl_s is not None
        key = ""
        if use_cache:
            prefix = self._cache_prefixes[point]
            hit = None
            if prefix in self._cache.filled:  # else nothing was ever cached here: a miss without hashing
                key = prefix + cache_key(payload)
                hit = self._cache.get(key, time.monotonic())
            self._count_lookup(point, hit is not None)
            if hit is not None:
                return hit
        try:
            verdict = await self._invoke(payload, _REQUEST_RESPONSE, message_id, point, duration)
        except FunctionFailure as err:
            if not plan.fail_safe:
                raise
            self._count_error(err)
            log_event(logging.WARNING, "sidecar_failed_failsafe", message_id=message_id, service_id=plan.service_id,
                      endpoint_id=plan.endpoint_id, point=point.value, error=err.error_name, detail=err.error_message)
            (self._verdict_error if point is not _PREFLIGHT else _nop).inc()
            return _FAILSAFE
        if use_cache:
            ttl_ms = verdict.cache_ttl_ms
            if ttl_ms is None and preflight_ttl_s:
                ttl_ms = preflight_ttl_s * 1000
            if ttl_ms:
                key = key or self._cache_prefixes[point] + cache_key(payload)
                self._cache.put(key, verdict, ttl_ms, time.monotonic())
        return verdict

    def _count_lookup(self, point: Point, hit: bool, count: int = 1) -> None:
        child = self._lookups.get((point, hit))
        if child is None:
            labels = self._pf_labels if point is _PREFLIGHT else self._labels
            child = self._lookups[(point, hit)] = LazyChild(sidecar_output_cache_lookups, *labels,
                                                            "hit" if hit else "miss")
        child.inc(count)

    async def _invoke(self, payload: bytes, invocation_type: InvocationType, message_id: str, point: Point,
                      duration: Any) -> Verdict:
        """One invocation within the processor's deadline, classified per §5.3.  No retries."""
        plan = self.plan
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.deadline_s
        started = time.perf_counter()
        try:
            with Deadline(time.monotonic() + plan.deadline_s):
                result = await self.transport.invoke(payload, invocation_type=invocation_type,
                                                     message_id=message_id, deadline=deadline)
        except TimeoutError:
            raise FunctionFailure(ErrorCode.FUNCTION_TIMEOUT, point=point) from None
        except InvocationError as exc:
            raise exc.for_point(point) from None
        finally:
            duration.observe(time.perf_counter() - started)
        if result.kind is _ACCEPTED or invocation_type is _EVENT:
            if result.kind is _FUNCTION_ERROR and invocation_type is not _EVENT:
                raise function_failure(result.body, result.function_error, point)
            return ALLOW
        if result.kind is _FUNCTION_ERROR:
            raise function_failure(result.body, result.function_error, point)
        return interpret_output(result.body, point, backend_authority=self._authority,
                                route_hosts=self._route_hosts, now=time.time())

    async def _preflight(self, call: CallContext, backend: BackendRequest) -> Verdict | None:
        """§9.3: per-package-key call; terminate ends the call; modify applies headers only."""
        payload = build_preflight_input(self.plan, call)
        verdict = await self._request_response(payload, call.message_id, _PREFLIGHT, self._pf_duration,
                                               preflight_ttl_s=self.plan.preflight_ttl_s)
        if verdict.kind is _TERMINATE:
            return verdict
        if verdict.kind is _MODIFY and verdict.modification is not None:
            mod = verdict.modification
            apply_to_request(Modification(drop_headers=mod.drop_headers, add_headers=mod.add_headers), backend)
        return None

    def _apply(self, verdict: Verdict, backend: BackendRequest, response: BackendResponse | None) -> Verdict | None:
        """P11/Q8 (§4.4)."""
        if verdict is _FAILSAFE:
            return None
        self._verdict[verdict.kind].inc()
        if verdict.kind is _TERMINATE:
            return verdict
        if verdict.kind is _MODIFY and verdict.modification is not None:
            if response is None:
                apply_to_request(verdict.modification, backend)
            else:
                apply_to_response(verdict.modification, response)
        return None

    def _count_error(self, err: GatewayError) -> None:
        labels = self._pf_labels if err.point is _PREFLIGHT else self._labels
        sidecar_errors.labels(*labels, err.error_name).inc()

    async def aclose(self) -> None:
        await self.transport.aclose()


class _Nop:
    def inc(self) -> None:
        pass


_nop = _Nop()
_FAILSAFE = Verdict(VerdictKind.ALLOW)  # identity marks "failure covered by failSafe" (already counted)


def _describe(verdict: Verdict) -> dict[str, Any]:
    """§9.5: the would-be verdict of a shadow call, without secrets (header names only, body sizes)."""
    out: dict[str, Any] = {"verdict": verdict.kind.value}
    if verdict.termination is not None:
        out["terminate_code"] = verdict.termination.code
    mod = verdict.modification
    if mod is not None:
        out["add_headers"] = sorted(k.decode("latin-1") for k, _ in mod.add_headers)
        out["drop_headers"] = sorted(k.decode("latin-1") for k in mod.drop_headers)
        out["body_replaced"] = mod.body is not None
        if mod.body is not None:
            out["body_bytes"] = len(mod.body)
        if mod.complete_with_code is not None:
            out["complete_with_code"] = mod.complete_with_code
    return out
