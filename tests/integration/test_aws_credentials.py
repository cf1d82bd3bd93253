"""``AwsCredentialProvider`` against a real STS/SSM emulator (moto server on loopback): contract §7.3–§7.5.

What the emulator received is read from moto's backend state (role ARN, session name, ExternalId of every
AssumeRole); how many AWS calls were made is counted with botocore event hooks on the provider's session.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSResponse
from botocore.credentials import CredentialProvider, RefreshableCredentials
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from sidecar_gateway.config.plan import AwsLambdaConnection
from sidecar_gateway.errors import ErrorCode, InvocationError
from sidecar_gateway.transports.aws_credentials import (
    REFRESH_AHEAD_S,
    USABLE_UNTIL_S,
    AwsCredentialProvider,
    normalise_role_arn,
    ssm_parameter_name,
)

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/sidecar_connector_fn1"
GATEWAY_REGION = "us-east-1"
PROCESSOR_REGION = "eu-west-1"
GATEWAY_KEY = "AKIAGATEWAYEXAMPLE01"
GATEWAY_SECRET = "gateway/secret+EXAMPLE"
DURATION_MIN = 15


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    """Gateway credentials in the environment, STS/SSM pointed at moto, no profile files, fresh moto state."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_LAMBDA", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", GATEWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", GATEWAY_SECRET)
    monkeypatch.setenv("AWS_REGION", GATEWAY_REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_url)
    return moto_url


def _put_parameter(moto_url: str, name: str, value: str, region: str = GATEWAY_REGION) -> None:
    ssm = boto3.client("ssm", region_name=region, endpoint_url=moto_url, aws_access_key_id="x",
                       aws_secret_access_key="y")
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def _assumed_roles() -> list[Any]:
    """Every AssumeRole moto answered, in order (its record of RoleArn, RoleSessionName, ExternalId)."""
    return list(sts_backends[ACCOUNT]["aws"].assumed_roles)


@dataclass
class Recorder:
    """botocore event hooks on the provider's session: counts and parameters of the AWS calls, an optional
    gate (blocks AssumeRole until set) and an optional injected AWS error answer for AssumeRole."""

    session: botocore.session.Session = field(default_factory=botocore.session.get_session)
    assume_role: list[dict[str, Any]] = field(default_factory=list)
    get_parameter: list[dict[str, Any]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    sts_error: tuple[str, str] | None = None  # (code, message) answered instead of calling moto

    def __post_init__(self) -> None:
        self.gate.set()
        self.session.register("before-parameter-build.sts.AssumeRole", self._on_assume_role)
        self.session.register("before-parameter-build.ssm.GetParameter", self._on_get_parameter)
        self.session.register("before-call.sts.AssumeRole", self._before_assume_role)

    def _on_assume_role(self, params: dict[str, Any], **_: Any) -> None:
        self.assume_role.append(dict(params))

    def _on_get_parameter(self, params: dict[str, Any], **_: Any) -> None:
        self.get_parameter.append(dict(params))

    def _before_assume_role(self, **_: Any) -> Any:
        assert self.gate.wait(10), "test gate never opened"
        if self.sts_error is None:
            return None
        code, message = self.sts_error
        parsed = {"Error": {"Code": code, "Message": message, "Type": "Sender"},
                  "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse("https://sts.example/", 403, {}, None), parsed


class FakeClock:
    """Wall-clock time plus a settable offset (moto stamps expiries with real time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _conn(session_name: str = "sidecar-gateway", external_id_key: str | None = "acme/prod/trustKey",
          role_arn: str = ROLE_ARN, use_assume_role: bool = True) -> AwsLambdaConnection:
    return AwsLambdaConnection(region=PROCESSOR_REGION, function_arn=f"arn:aws:lambda:{PROCESSOR_REGION}:"
                               f"{ACCOUNT}:function:fn", use_assume_role=use_assume_role,
                               role_arn=role_arn if use_assume_role else None,
                               external_id_key=external_id_key if use_assume_role else None,
                               session_name=session_name, expiration_minutes=DURATION_MIN)


async def _settle(provider: AwsCredentialProvider) -> None:
    """Wait until no lookup is in flight (background refreshes included)."""
    for _ in range(500):
        if "in_flight=0" in repr(provider):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"lookups still in flight: {provider!r}")


# ---------------------------------------------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "name"), [("acme/prod/trustKey", "/acme/prod/trustKey"),
                                           ("/acme/prod/trustKey", "/acme/prod/trustKey"),
                                           ("trustKey", "trustKey")])
def test_ssm_name_gets_leading_slash_only_when_hierarchical(key: str, name: str) -> None:
    """§7.4: '/' is prepended only to hierarchical names lacking it."""
    assert ssm_parameter_name(key) == name


def test_role_arn_normalisation_removes_whitespace_and_rewrites_sts() -> None:
    """§7.3 / Q2 example, and idempotence."""
    normalised = normalise_role_arn("arn:aws:sts::680833432085:role/ tibco_sidecar_connector_fn1")
    assert normalised == "arn:aws:iam::680833432085:role/tibco_sidecar_connector_fn1"
    assert normalise_role_arn(normalised) == normalised
    assert normalise_role_arn("arn:aws-cn:sts::680833432085:role/x") == "arn:aws-cn:iam::680833432085:role/x"


# ---------------------------------------------------------------------------------------------------------------
# AssumeRole and SSM
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_assume_role_returns_temporary_keys_and_sends_ssm_external_id(aws_env: str) -> None:
    """The ExternalId read from SSM (gateway region, '/'-prefixed name) is the one STS receives; the
    normalised role ARN, session name and duration are sent; ASIA… keys with a token come back."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-id-42")
    recorder = Recorder()
    provider = AwsCredentialProvider(600, session=recorder.session)
    creds = await provider.for_connection(_conn(role_arn=f"arn:aws:sts::{ACCOUNT}:role/ sidecar_connector_fn1",
                                                session_name="my-session"))
    assert creds.access_key.startswith("ASIA")
    assert creds.token
    [received] = _assumed_roles()
    assert received.external_id == "ext-id-42"
    assert received.role_arn == ROLE_ARN
    assert received.session_name == "my-session"
    assert received.access_key_id == creds.access_key
    assert recorder.assume_role == [{"RoleArn": ROLE_ARN, "RoleSessionName": "my-session",
                                     "DurationSeconds": DURATION_MIN * 60, "ExternalId": "ext-id-42"}]
    assert recorder.get_parameter == [{"Name": "/acme/prod/trustKey", "WithDecryption": True}]
    assert GATEWAY_SECRET not in repr(creds) and creds.secret_key not in repr(creds)


@pytest.mark.asyncio
async def test_ssm_is_read_in_processor_region_when_gateway_has_none(aws_env: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """§7.4: without AWS_REGION / AWS_DEFAULT_REGION / profile region, SSM is queried in the processor's region."""
    monkeypatch.delenv("AWS_REGION")
    _put_parameter(aws_env, "trustKey", "in-eu", region=PROCESSOR_REGION)
    provider = AwsCredentialProvider(600, session=Recorder().session)
    await provider.for_connection(_conn(external_id_key="trustKey"))
    assert [r.external_id for r in _assumed_roles()] == ["in-eu"]


@pytest.mark.asyncio
async def test_ssm_value_is_cached_for_ttl(aws_env: str) -> None:
    """Within ssm_cache_ttl_s the cached ExternalId is sent even after SSM changed; after it, the new one."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "v1")
    clock = FakeClock()
    recorder = Recorder()
    provider = AwsCredentialProvider(100, clock, session=recorder.session)
    await provider.for_connection(_conn(session_name="s1"))
    _put_parameter(aws_env, "/acme/prod/trustKey", "v2")
    clock.offset = 99
    await provider.for_connection(_conn(session_name="s2"))  # new role key, cached ExternalId
    clock.offset = 101
    await provider.for_connection(_conn(session_name="s3"))
    assert [(r.session_name, r.external_id) for r in _assumed_roles()] == [("s1", "v1"), ("s2", "v1"),
                                                                          ("s3", "v2")]
    assert len(recorder.get_parameter) == 2


@pytest.mark.asyncio
async def test_concurrent_first_calls_share_one_assume_role(aws_env: str) -> None:
    """Single flight: 25 concurrent first calls make exactly one GetParameter and one AssumeRole."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    recorder = Recorder()
    provider = AwsCredentialProvider(600, session=recorder.session)
    results = await asyncio.gather(*(provider.for_connection(_conn()) for _ in range(25)))
    assert len({r.access_key for r in results}) == 1
    assert len(recorder.assume_role) == 1 and len(_assumed_roles()) == 1
    assert len(recorder.get_parameter) == 1


@pytest.mark.asyncio
async def test_cached_credentials_are_reused_until_refresh_window(aws_env: str) -> None:
    """Before the refresh window, calls use the cache and make no AWS call."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    clock = FakeClock()
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, clock, session=recorder.session)
    first = await provider.for_connection(_conn())
    clock.offset = DURATION_MIN * 60 - REFRESH_AHEAD_S - 5
    again = await provider.for_connection(_conn())
    assert again == first
    assert len(recorder.assume_role) == 1


@pytest.mark.asyncio
async def test_refresh_before_expiry_runs_in_background_without_blocking(aws_env: str) -> None:
    """From 5 minutes before expiry one background refresh starts; calls meanwhile get the current
    credentials at once; afterwards the new ones are used."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    clock = FakeClock()
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, clock, session=recorder.session)
    old = await provider.for_connection(_conn())
    recorder.gate.clear()  # the refresh will hang in STS until we open the gate
    clock.offset = DURATION_MIN * 60 - REFRESH_AHEAD_S + 10
    during = await asyncio.wait_for(asyncio.gather(*(provider.for_connection(_conn()) for _ in range(10))), 1.0)
    assert all(c == old for c in during)
    assert "in_flight=1" in repr(provider)
    recorder.gate.set()
    await _settle(provider)
    new = await provider.for_connection(_conn())
    assert new != old and new.access_key.startswith("ASIA")
    assert len(recorder.assume_role) == 2


@pytest.mark.asyncio
async def test_calls_wait_when_less_than_a_minute_is_left_and_a_cancelled_waiter_does_not_cancel_refresh(
        aws_env: str) -> None:
    """With < 1 minute left the cache is unusable: calls wait on one refresh; a waiter hitting its deadline
    gives up alone, the refresh completes for everyone else."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    clock = FakeClock()
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, clock, session=recorder.session)
    old = await provider.for_connection(_conn())
    recorder.gate.clear()
    clock.offset = DURATION_MIN * 60 - USABLE_UNTIL_S + 5
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await provider.for_connection(_conn())
    patient = [asyncio.create_task(provider.for_connection(_conn())) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in patient)
    recorder.gate.set()
    fresh = await asyncio.gather(*patient)
    assert len({c.access_key for c in fresh}) == 1 and fresh[0] != old
    assert len(recorder.assume_role) == 2  # the abandoned wait and the patient ones shared one refresh


@pytest.mark.asyncio
async def test_failed_refresh_fails_only_its_waiters(aws_env: str) -> None:
    """A failing background refresh is invisible to callers with usable credentials; a failing needed
    refresh fails exactly the calls waiting for it (one AssumeRole); the next call tries again."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    clock = FakeClock()
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, clock, session=recorder.session)
    old = await provider.for_connection(_conn())
    other = await provider.for_connection(_conn(session_name="other"))
    recorder.sts_error = ("Throttling", "Rate exceeded")
    clock.offset = DURATION_MIN * 60 - REFRESH_AHEAD_S + 10
    assert await provider.for_connection(_conn()) == old  # background refresh fails unseen
    await _settle(provider)
    calls_before = len(recorder.assume_role)

    clock.offset = DURATION_MIN * 60 - USABLE_UNTIL_S + 5
    recorder.gate.clear()
    waiters = [asyncio.create_task(provider.for_connection(_conn())) for _ in range(4)]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, InvocationError) and o.code is ErrorCode.AWS_ERROR and o.detail == "Rate exceeded"
               for o in outcomes)
    assert len(recorder.assume_role) == calls_before + 1
    recorder.sts_error = None
    assert (await provider.for_connection(_conn(session_name="other"))).access_key.startswith("ASIA")
    recovered = await provider.for_connection(_conn())
    assert recovered != old and recovered.access_key.startswith("ASIA")
    assert other != recovered


@pytest.mark.asyncio
async def test_access_denied_evicts_cached_external_id(aws_env: str) -> None:
    """§7.4: an AssumeRole rejected with an access error makes the next call re-read the ExternalId."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "old-id")
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, session=recorder.session)
    recorder.sts_error = ("AccessDenied", "User is not authorized to perform: sts:AssumeRole")
    with pytest.raises(InvocationError) as denied:
        await provider.for_connection(_conn())
    assert denied.value.code is ErrorCode.AWS_ERROR
    assert denied.value.detail == "User is not authorized to perform: sts:AssumeRole"
    _put_parameter(aws_env, "/acme/prod/trustKey", "rotated-id")
    recorder.sts_error = None
    await provider.for_connection(_conn())
    assert [r.external_id for r in _assumed_roles()] == ["rotated-id"]
    assert len(recorder.get_parameter) == 2


@pytest.mark.asyncio
async def test_non_access_sts_error_keeps_cached_external_id(aws_env: str) -> None:
    """Only access errors evict the ExternalId; a throttle does not re-read SSM."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-id")
    recorder = Recorder()
    provider = AwsCredentialProvider(10_000, session=recorder.session)
    recorder.sts_error = ("Throttling", "Rate exceeded")
    with pytest.raises(InvocationError):
        await provider.for_connection(_conn())
    recorder.sts_error = None
    await provider.for_connection(_conn())
    assert len(recorder.get_parameter) == 1


@pytest.mark.asyncio
async def test_missing_ssm_parameter_is_an_aws_error(aws_env: str) -> None:
    """§7.4: a missing parameter is an AWS error carrying SSM's message; nothing is cached."""
    recorder = Recorder()
    provider = AwsCredentialProvider(600, session=recorder.session)
    with pytest.raises(InvocationError) as missing:
        await provider.for_connection(_conn())
    assert missing.value.code is ErrorCode.AWS_ERROR
    assert "/acme/prod/trustKey" in missing.value.detail
    assert recorder.assume_role == []
    _put_parameter(aws_env, "/acme/prod/trustKey", "now-there")
    await provider.for_connection(_conn())
    assert [r.external_id for r in _assumed_roles()] == ["now-there"]


@pytest.mark.asyncio
async def test_unreachable_sts_is_a_connection_failure(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection to STS maps to CONNECTION_FAILURE (§5.3), without botocore retries."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{_free_port()}")
    provider = AwsCredentialProvider(600, session=Recorder().session)
    started = time.monotonic()
    with pytest.raises(InvocationError) as failed:
        await provider.for_connection(_conn())
    assert failed.value.code is ErrorCode.CONNECTION_FAILURE
    assert time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_endpoint_url_generic_variable_is_honoured(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """§7.5: AWS_ENDPOINT_URL alone points STS and SSM at the emulator (botocore resolves it)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS")
    monkeypatch.delenv("AWS_ENDPOINT_URL_SSM")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    _put_parameter(aws_env, "/acme/prod/trustKey", "generic")
    provider = AwsCredentialProvider(600, session=Recorder().session)
    await provider.for_connection(_conn())
    assert [r.external_id for r in _assumed_roles()] == ["generic"]


# ---------------------------------------------------------------------------------------------------------------
# Gateway credentials
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_without_assume_role_the_gateway_credentials_are_used(aws_env: str) -> None:
    """Q4: useAssumeRole false → the standard chain's credentials (here the environment), no STS/SSM call."""
    recorder = Recorder()
    provider = AwsCredentialProvider(600, session=recorder.session)
    creds = await provider.for_connection(_conn(use_assume_role=False))
    assert (creds.access_key, creds.secret_key, creds.token) == (GATEWAY_KEY, GATEWAY_SECRET, None)
    assert recorder.assume_role == [] and recorder.get_parameter == []
    assert await provider.gateway_credentials() is creds  # frozen once, reused


@pytest.mark.asyncio
async def test_gateway_session_token_is_kept(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporary gateway credentials carry their session token."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "gateway-token")
    provider = AwsCredentialProvider(600, session=Recorder().session)
    assert (await provider.gateway_credentials()).token == "gateway-token"


@pytest.mark.asyncio
async def test_no_gateway_credentials_is_an_aws_error(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty credential chain fails the call as an AWS error, and is retried by the next call."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = AwsCredentialProvider(600, session=Recorder().session)
    with pytest.raises(InvocationError) as failed:
        await provider.gateway_credentials()
    assert failed.value.code is ErrorCode.AWS_ERROR
    assert failed.value.detail == "Unable to locate credentials"


def test_moto_records_what_it_received(moto_url: str) -> None:
    """Sanity check of the observation method: moto keeps the ExternalId of an AssumeRole it answered."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="x",
                       aws_secret_access_key="y")
    sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="probe", ExternalId="probe-id")
    assert [(r.session_name, r.external_id) for r in _assumed_roles()] == [("probe", "probe-id")]


class _RefreshingSource(CredentialProvider):
    """A credential-chain member yielding botocore RefreshableCredentials on a fake clock; each refresh
    issues a new key and can be held at a gate."""

    METHOD = "test-refreshing"
    CANONICAL_NAME = "test-refreshing"

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime.now(UTC)
        self.refreshes = 0
        self.gate = threading.Event()
        self.gate.set()

    def _metadata(self) -> dict[str, Any]:
        return {"access_key": f"ASIAGATEWAY{self.refreshes:09d}", "secret_key": "s", "token": "t",
                "expiry_time": (self.now + timedelta(hours=1)).isoformat()}

    def _refresh(self) -> dict[str, Any]:
        assert self.gate.wait(10)
        self.refreshes += 1
        return self._metadata()

    def load(self) -> RefreshableCredentials:
        meta = self._metadata()
        return RefreshableCredentials(meta["access_key"], meta["secret_key"], meta["token"],
                                      datetime.fromisoformat(meta["expiry_time"]), self._refresh, self.METHOD,
                                      time_fetcher=lambda: self.now)


@pytest.mark.asyncio
async def test_refreshable_gateway_credentials_refresh_in_background_then_block_near_expiry(aws_env: str) -> None:
    """botocore's advisory window refreshes in the background (calls proceed); with < 1 minute left calls wait."""
    recorder = Recorder()
    source = _RefreshingSource()
    recorder.session.get_component("credential_provider").insert_before("env", source)
    provider = AwsCredentialProvider(600, session=recorder.session)
    first = await provider.gateway_credentials()
    assert first.access_key == "ASIAGATEWAY000000000"

    source.gate.clear()
    source.now += timedelta(minutes=50)  # 10 minutes left: botocore wants a refresh
    during = await asyncio.wait_for(provider.gateway_credentials(), 1.0)
    assert during == first
    source.gate.set()
    await _settle(provider)
    second = await provider.gateway_credentials()
    assert second.access_key == "ASIAGATEWAY000000001"

    source.gate.clear()
    source.now += timedelta(minutes=59, seconds=30)  # 30 s left on the refreshed credentials
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await provider.gateway_credentials()
    source.gate.set()
    await _settle(provider)
    assert (await provider.gateway_credentials()).access_key == "ASIAGATEWAY000000002"
    assert source.refreshes == 2


@pytest.mark.asyncio
async def test_aclose_cancels_lookups_in_flight(aws_env: str) -> None:
    """Closing the provider cancels a pending refresh; its waiters see the cancellation."""
    _put_parameter(aws_env, "/acme/prod/trustKey", "ext-x")
    recorder = Recorder()
    provider = AwsCredentialProvider(600, session=recorder.session)
    recorder.gate.clear()
    waiter = asyncio.create_task(provider.for_connection(_conn()))
    await asyncio.sleep(0.3)  # SSM answered, AssumeRole held at the gate
    assert "in_flight=1" in repr(provider)
    await provider.aclose()
    recorder.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert "in_flight=0" in repr(provider)
