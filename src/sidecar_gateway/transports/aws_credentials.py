"""Credentials that sign a Lambda Invoke: the gateway's own, or an assumed role's (contract §7.3–§7.5).

Rules of this file:

* The gateway's credentials come from botocore's standard chain (env, shared files/profile, web identity,
  container, instance metadata).  STS ``AssumeRole`` and SSM ``GetParameter`` go through botocore clients,
  one per (service, region), created once and reused.  botocore is blocking: every call that may do I/O runs
  in a worker thread (``asyncio.to_thread``); the event loop never waits on a socket here.
* Endpoints are botocore's own resolution: ``AWS_ENDPOINT_URL_STS`` / ``AWS_ENDPOINT_URL_SSM`` win over
  ``AWS_ENDPOINT_URL``, which wins over the regional default (botocore ≥ 1.31 reads these itself; §7.5).
  botocore retries are off (``AWS_MAX_ATTEMPTS``): a failed lookup fails its waiters and the next client call
  tries again (§7.5), which keeps every wait inside the caller's deadline.
* Foreign exceptions are translated at this edge (``_map_aws_errors``): an AWS error document →
  ``InvocationError(AWS_ERROR, detail=<its message>)``; no connection → ``CONNECTION_FAILURE`` (§5.3).
* Secrets and session tokens never reach a log line (``Credentials.__repr__`` hides them).

Theory of operation (§7.5).  Assumed-role credentials are cached per (role ARN, ExternalId, session name,
duration) and used until ``USABLE_UNTIL_S`` before expiry.  From ``REFRESH_AHEAD_S`` before expiry the first
call that notices starts one background refresh and every call keeps the current credentials; only when no
usable credentials exist do calls wait, all on the same in-flight refresh (``_start`` keeps at most one task per
key; waiters ``shield`` it, so a waiter's own deadline cancels its wait, never the refresh).  A failed refresh
raises in its waiters only; nothing failed is cached, so the next call starts a new one.  The ExternalId is read
from SSM and cached per (SSM region, name) for ``ssm_cache_ttl_s``; an AssumeRole rejected with an access
error evicts it, so a rotated ExternalId is picked up by the next call (§7.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import botocore.session

from ..config.plan import AwsLambdaConnection
from ..errors import ErrorCode, InternalError, InvocationError

__all__ = [
    "AwsCredentialProvider",
    "Credentials",
    "normalise_role_arn",
    "ssm_parameter_name",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Bounds (style rule 12).
USABLE_UNTIL_S = 60.0  # §7.5: assumed-role credentials are used until 1 minute before their expiry
REFRESH_AHEAD_S = 300.0  # §7.5: from 5 minutes before expiry one background refresh starts
DEFAULT_SSM_CACHE_TTL_S = 600.0  # §7.4 / §9.7 ``sidecar.aws.ssm_cache_ttl_s`` default
AWS_MAX_ATTEMPTS = 1  # no botocore retry: the next call retries (§7.5), so waits stay within the caller's deadline
AWS_CONNECT_TIMEOUT_S = 5.0  # STS/SSM connect (botocore default 60 s is far beyond any processor timeout)
AWS_READ_TIMEOUT_S = 10.0  # STS/SSM read; callers stop waiting at their own deadline anyway
# AssumeRole error codes that mean "not allowed", e.g. a rotated ExternalId: they evict the cached SSM value.
ACCESS_ERROR_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
NO_CREDENTIALS_MESSAGE = "Unable to locate credentials"  # botocore ``NoCredentialsError`` wording

_STS_ARN = re.compile(r"^arn:([^:]+):sts::")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Credentials:
    """One set of AWS credentials.  ``token`` is the session token of temporary credentials (``ASIA…``)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class _RoleKey:
    """§7.5 cache key of assumed-role credentials."""

    role_arn: str
    external_id: str | None
    session_name: str
    duration_s: int


@dataclass(frozen=True, slots=True)
class _Expiring:
    credentials: Credentials
    expires_at: float  # on the provider's clock (epoch seconds)


def normalise_role_arn(arn: str) -> str:
    """§7.3 / Q2: remove every whitespace character, rewrite a leading ``arn:<partition>:sts::`` to ``iam``.
    Idempotent: the plan already holds the normalised ARN; applying it again guarantees what is sent."""
    return _STS_ARN.sub(r"arn:\1:iam::", _WHITESPACE.sub("", arn))


def ssm_parameter_name(external_id_key: str) -> str:
    """§7.4: a hierarchical name without its leading ``/`` gets one; any other name is used verbatim."""
    if "/" in external_id_key and not external_id_key.startswith("/"):
        return "/" + external_id_key
    return external_id_key


def _client_error_message(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Message") or error.get("Code") or exc)


def _client_error_code(exc: BaseException | None) -> str:
    response = getattr(exc, "response", None)  # a botocore ClientError (botocore is imported lazily)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


@contextlib.contextmanager
def _map_aws_errors() -> Iterator[None]:
    """Translate botocore exceptions into §5.3 invocation failures (httpcore ``map_exceptions``)."""
    try:
        yield
    except Exception as exc:
        mapped = _mapped_aws_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _mapped_aws_error(exc: Exception) -> InvocationError | None:
    if "botocore.exceptions" not in sys.modules:  # botocore is imported lazily: not one of its errors
        return None
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, ClientError):  # an AWS error document
        return InvocationError(ErrorCode.AWS_ERROR, detail=_client_error_message(exc))
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, DNS, TLS, reset, timeout
        return InvocationError(ErrorCode.CONNECTION_FAILURE)
    if isinstance(exc, BotoCoreError):  # no credentials, partial credentials, invalid parameters …
        return InvocationError(ErrorCode.AWS_ERROR, detail=str(exc))
    return None


def _freeze_long_lived() -> None:
    """botocore's session and clients (service models: ~50k objects) live as long as the process but are
    created after start-up's ``gc.freeze()``: freeze them too, or every full collection walks them (~70 ms of
    event-loop stall measured with STS + SSM clients).  Objects alive now are moved out of the collector's
    reach; they are still freed by reference counting."""
    gc.freeze()


class AwsCredentialProvider:
    """One per process: caches and single-flights every credential and ExternalId lookup.

    ``clock`` returns epoch seconds (``time.time``); tests inject one to make credentials expire.  The
    counters ``sts_calls`` / ``ssm_calls`` count AWS calls started (shown by ``__repr__``)."""

    def __init__(self, settings_ssm_ttl_s: float = DEFAULT_SSM_CACHE_TTL_S,
                 clock: Callable[[], float] = time.time, *,
                 session: botocore.session.Session | None = None) -> None:
        # Global: fixed for the provider's life.
        self._ssm_ttl_s = settings_ssm_ttl_s
        self._clock = clock
        # botocore (~10 MB per worker once imported) is loaded on the first AWS lookup, never by a gateway
        # without aws-lambda processors (performance issue: RSS per worker).
        self._session_given = session
        self._botocore: tuple[Any, Any] | None = None  # (session, client Config), under ``_clients_lock``
        self._clients: dict[tuple[str, str], Any] = {}
        self._clients_lock = threading.Lock()  # botocore sessions are not thread-safe; clients are
        # Caches, filled as calls arrive.
        self._gateway_region: tuple[str | None] | None = None  # resolved once: (region or None,)
        self._gateway_source: Any = None  # botocore Credentials / RefreshableCredentials of the chain
        self._gateway_current: Credentials | None = None
        self._external_ids: dict[tuple[str, str], tuple[str, float]] = {}  # (region, name) → (value, expires_at)
        self._roles: dict[_RoleKey, _Expiring] = {}
        self._flights: dict[Hashable, asyncio.Task[Any]] = {}  # at most one in-flight lookup per key
        self.sts_calls = 0
        self.ssm_calls = 0

    def __repr__(self) -> str:
        return (f"<AwsCredentialProvider roles={len(self._roles)} external_ids={len(self._external_ids)} "
                f"in_flight={len(self._flights)} sts_calls={self.sts_calls} ssm_calls={self.ssm_calls}>")

    # -- public ------------------------------------------------------------------------------------------------

    async def for_connection(self, conn: AwsLambdaConnection) -> Credentials:
        """The credentials that sign ``conn``'s Invoke: the assumed role's, or the gateway's own when
        ``use_assume_role`` is false (Q4).  Raises ``InvocationError`` (AWS error, connection failure)."""
        if not conn.use_assume_role:
            return await self.gateway_credentials()
        if conn.role_arn is None:
            raise InternalError("aws-lambda connection uses AssumeRole without a role ARN")
        ssm_key: tuple[str, str] | None = None
        external_id: str | None = None
        if conn.external_id_key is not None:  # mandatory (Q25), checked at load time
            ssm_key = (await self._ssm_region(conn.region), ssm_parameter_name(conn.external_id_key))
            external_id = await self._external_id(ssm_key)
        key = _RoleKey(normalise_role_arn(conn.role_arn), external_id, conn.session_name,
                       conn.expiration_minutes * 60)
        cached = self._roles.get(key)
        now = self._clock()
        if cached is not None and now < cached.expires_at - USABLE_UNTIL_S:
            if now >= cached.expires_at - REFRESH_AHEAD_S:
                self._start(("role", key), functools.partial(self._assume_role, conn.region, key, ssm_key))
            return cached.credentials
        return await self._wait(("role", key), functools.partial(self._assume_role, conn.region, key, ssm_key))

    def cached(self, conn: AwsLambdaConnection) -> tuple[Credentials, float] | None:
        """The credentials ``for_connection`` would return right now without waiting or starting a refresh, and
        until when (epoch seconds) that stays so; None when it would have to do either (the native lane then
        leaves the call to the Python lane, which does it)."""
        now = self._clock()
        if not conn.use_assume_role:
            current = self._gateway_current
            source = self._gateway_source
            if current is None or source is None or getattr(source, "refresh_needed", None) is not None:
                return None  # refreshable chain credentials: botocore decides per call (gateway_credentials)
            return current, float("inf")
        for key, entry in self._roles.items():
            if (key.role_arn == normalise_role_arn(conn.role_arn or "") and key.session_name == conn.session_name
                    and key.duration_s == conn.expiration_minutes * 60 and conn.external_id_key is None
                    and now < entry.expires_at - REFRESH_AHEAD_S):
                return entry.credentials, entry.expires_at - REFRESH_AHEAD_S
        return None

    async def gateway_credentials(self) -> Credentials:
        """The gateway's own credentials from the standard chain, refreshed when botocore says so: in the
        background inside botocore's advisory window, waited for when less than ``USABLE_UNTIL_S`` is left."""
        source = self._gateway_source
        if source is None:
            source = await self._wait(("gateway-chain",), self._resolve_chain)
        current = self._gateway_current
        refresh_needed = getattr(source, "refresh_needed", None)  # absent on static credentials
        if current is not None:
            if refresh_needed is None or not refresh_needed():
                return current
            if not refresh_needed(USABLE_UNTIL_S):
                self._start(("gateway-freeze",), self._freeze_gateway)
                return current
        return await self._wait(("gateway-freeze",), self._freeze_gateway)

    async def aclose(self) -> None:
        """Cancel lookups still in flight (their worker threads finish on their own) and close the clients."""
        flights = list(self._flights.values())
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- single flight -----------------------------------------------------------------------------------------

    def _start(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Task[T]:
        """The in-flight task for ``key``, started from ``factory`` when there is none."""
        task = self._flights.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(factory())
            self._flights[key] = task
            # Registered before any waiter's shield callback: the key is free again before waiters resume.
            task.add_done_callback(functools.partial(self._landed, key))
        return task

    async def _wait(self, key: Hashable, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Wait for the in-flight lookup of ``key`` (starting it if needed).  Cancelling the waiter (its
        deadline) leaves the lookup running for the others."""
        return await asyncio.shield(self._start(key, factory))

    def _landed(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here so a background refresh nobody waited for is not reported as "never retrieved";
            # waiters still get the exception from the task.
            logger.warning("AWS lookup %s failed: %s", key[0], task.exception())

    # -- gateway credentials -----------------------------------------------------------------------------------

    async def _resolve_chain(self) -> Any:
        with _map_aws_errors():
            source = await asyncio.to_thread(self._get_chain_credentials)
        if source is None:
            raise InvocationError(ErrorCode.AWS_ERROR, detail=NO_CREDENTIALS_MESSAGE)
        self._gateway_source = source
        return source

    async def _freeze_gateway(self) -> Credentials:
        with _map_aws_errors():
            frozen = await asyncio.to_thread(self._gateway_source.get_frozen_credentials)
        if not frozen.access_key or not frozen.secret_key:
            raise InvocationError(ErrorCode.AWS_ERROR, detail=NO_CREDENTIALS_MESSAGE)
        current = Credentials(frozen.access_key, frozen.secret_key, frozen.token or None)
        self._gateway_current = current
        return current

    # -- SSM ---------------------------------------------------------------------------------------------------

    async def _ssm_region(self, processor_region: str) -> str:
        """§7.4: the gateway's own region (``AWS_REGION``, ``AWS_DEFAULT_REGION``, profile), else the
        processor's.  Resolved once (reading the profile is file I/O, hence the thread)."""
        if self._gateway_region is None:
            self._gateway_region = (await asyncio.to_thread(self._resolve_gateway_region),)
        return self._gateway_region[0] or processor_region

    def _resolve_gateway_region(self) -> str | None:
        # botocore reads AWS_DEFAULT_REGION and the profile but not AWS_REGION (checked with botocore 1.43).
        with self._clients_lock:
            return os.environ.get("AWS_REGION") or self._session.get_config_variable("region") or None

    async def _external_id(self, ssm_key: tuple[str, str]) -> str:
        hit = self._external_ids.get(ssm_key)
        if hit is not None and self._clock() < hit[1]:
            return hit[0]
        return await self._wait(("ssm", ssm_key), functools.partial(self._get_parameter, ssm_key))

    async def _get_parameter(self, ssm_key: tuple[str, str]) -> str:
        region, name = ssm_key
        self.ssm_calls += 1
        with _map_aws_errors():
            response = await asyncio.to_thread(self._call, "ssm", region, "get_parameter",
                                               {"Name": name, "WithDecryption": True})
        value = str(response["Parameter"]["Value"])
        self._external_ids[ssm_key] = (value, self._clock() + self._ssm_ttl_s)
        return value

    # -- STS ---------------------------------------------------------------------------------------------------

    async def _assume_role(self, region: str, key: _RoleKey, ssm_key: tuple[str, str] | None) -> Credentials:
        params: dict[str, Any] = {"RoleArn": key.role_arn, "RoleSessionName": key.session_name,
                                  "DurationSeconds": key.duration_s}
        if key.external_id is not None:
            params["ExternalId"] = key.external_id
        self.sts_calls += 1
        try:
            with _map_aws_errors():
                response = await asyncio.to_thread(self._call, "sts", region, "assume_role", params)
        except InvocationError as exc:
            if ssm_key is not None and _client_error_code(exc.__cause__) in ACCESS_ERROR_CODES:
                self._external_ids.pop(ssm_key, None)  # §7.4: the next call re-reads the ExternalId
            raise
        issued = response["Credentials"]
        credentials = Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])
        self._prune_roles()
        self._roles[key] = _Expiring(credentials, issued["Expiration"].timestamp())
        return credentials

    def _prune_roles(self) -> None:
        """Drop expired entries (left behind when an ExternalId or a configuration changed)."""
        now = self._clock()
        for key in [k for k, v in self._roles.items() if v.expires_at <= now]:
            del self._roles[key]

    # -- botocore (worker threads) -----------------------------------------------------------------------------

    @property
    def _session(self) -> Any:
        return self._loaded_botocore()[0]

    def _loaded_botocore(self) -> tuple[Any, Any]:
        """(session, client Config), imported and created on first use; the caller holds ``_clients_lock``."""
        if self._botocore is None:
            import botocore.session
            from botocore.config import Config

            session = self._session_given if self._session_given is not None else botocore.session.get_session()
            config = Config(
                retries={"total_max_attempts": AWS_MAX_ATTEMPTS, "mode": "standard"},
                connect_timeout=AWS_CONNECT_TIMEOUT_S,
                read_timeout=AWS_READ_TIMEOUT_S,
            )
            self._botocore = (session, config)
            _freeze_long_lived()
        return self._botocore

    def _get_chain_credentials(self) -> Any:
        with self._clients_lock:
            return self._session.get_credentials()

    def _call(self, service: str, region: str, operation: str, params: dict[str, Any]) -> Any:
        return getattr(self._client(service, region), operation)(**params)

    def _client(self, service: str, region: str) -> Any:
        with self._clients_lock:
            client = self._clients.get((service, region))
            if client is None:
                session, config = self._loaded_botocore()
                client = session.create_client(service, region_name=region, config=config)
                self._clients[(service, region)] = client
                _freeze_long_lived()
            return client
