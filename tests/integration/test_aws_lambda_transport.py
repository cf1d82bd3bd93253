"""``AwsLambdaTransport`` against a loopback Lambda look-alike that checks every SigV4 signature with botocore
(contract §7.1, §7.2, §5.3), with STS/SSM served by moto for the assumed-role case."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
import pytest_asyncio
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from sidecar_gateway.config.plan import AwsLambdaConnection
from sidecar_gateway.errors import ErrorCode, InvocationError
from sidecar_gateway.transports.aws_credentials import AwsCredentialProvider, Credentials
from sidecar_gateway.transports.aws_lambda import AwsLambdaTransport, classify, lambda_endpoint
from sidecar_gateway.transports.base import InvocationType, InvokeResult, ResultKind
from sidecar_gateway.transports.pool import HttpClient

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/sidecar_connector_fn1"
GATEWAY_KEY = "AKIAGATEWAYEXAMPLE01"
GATEWAY_SECRET = "gateway/secret+EXAMPLE"
DENIED_MESSAGE = "User: arn:aws:sts::123456789012:assumed-role/x is not authorized to perform: lambda:InvokeFunction"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    """One Invoke as the fake Lambda received it."""

    path: str
    headers: dict[str, str]
    body: bytes
    access_key: str
    signature_valid: bool


@dataclass
class FakeLambda:
    """Answers like Lambda, chosen by the function name (last ARN segment before the qualifier)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def secret_for(self, access_key: str, token: str | None) -> tuple[str, str | None] | None:
        if access_key == GATEWAY_KEY:
            return GATEWAY_SECRET, None
        role = sts_backends[ACCOUNT]["aws"].get_assumed_role_from_access_key(access_key)
        if role is None:
            return None
        return role.secret_access_key, role.session_token

    def verify(self, request: web.Request, body: bytes) -> tuple[str, bool]:
        """Recompute the signature with botocore from the received bytes and the issuer's secret."""
        authz = request.headers.get("Authorization", "")
        credential = authz.split("Credential=", 1)[1].split(",", 1)[0]
        access_key, date, region, service, _ = credential.split("/")
        signed = authz.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        token = request.headers.get("X-Amz-Security-Token")
        known = self.secret_for(access_key, token)
        if known is None or known[1] != token or (region, service) != (REGION, "lambda"):
            return access_key, False
        aws_request = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body)
        for name in signed:
            if name != "host":
                aws_request.headers[name] = request.headers[name]
        aws_request.context["timestamp"] = request.headers["X-Amz-Date"]
        auth = SigV4Auth(BotoCredentials(access_key, known[0], token), service, region)
        canonical = auth.canonical_request(aws_request)
        expected = auth.signature(auth.string_to_sign(aws_request, canonical), aws_request)
        return access_key, authz.endswith(f"Signature={expected}") and date == aws_request.context["timestamp"][:8]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        access_key, valid = self.verify(request, body)
        self.seen.append(Seen(request.raw_path, dict(request.headers), body, access_key, valid))
        if not valid:
            return web.json_response({"message": "The request signature we calculated does not match the "
                                                 "signature you provided."}, status=403,
                                     headers={"x-amzn-ErrorType": "InvalidSignatureException"})
        behaviour = request.match_info["name"].split(":")[6]
        event = request.headers.get("X-Amz-Invocation-Type") == "Event"
        if behaviour == "output":
            return web.Response(status=202 if event else 200, body=b"" if event else b'{"echo":' + body + b"}")
        if behaviour == "event200":
            return web.Response(status=200, body=b"")
        if behaviour == "fnerror":
            return web.Response(status=200, headers={"X-Amz-Function-Error": "Unhandled"},
                                body=b'{"errorMessage":"boom","errorType":"RuntimeError"}')
        if behaviour == "accepted":
            return web.Response(status=202, body=b"")
        if behaviour == "denied":
            return web.json_response({"Type": "User", "message": DENIED_MESSAGE}, status=403,
                                     headers={"x-amzn-ErrorType": "AccessDeniedException"})
        if behaviour == "throttled":
            return web.json_response({"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                                      "Type": "User", "Message": "Rate Exceeded."}, status=429,
                                     headers={"x-amzn-ErrorType": "TooManyRequestsException"})
        if behaviour == "crash":
            return web.Response(status=500, body=b"")
        if behaviour == "html":
            return web.Response(status=502, body=b"<html>Bad Gateway</html>")
        return web.json_response({"Type": "User", "message": f"Function not found: {behaviour}"}, status=404)


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest_asyncio.fixture
async def fake_lambda() -> AsyncIterator[FakeLambda]:
    fake = FakeLambda()
    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def aws_env(moto_url: str, fake_lambda: FakeLambda, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", GATEWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", GATEWAY_SECRET)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", fake_lambda.url)
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=moto_url, aws_access_key_id="x",
                       aws_secret_access_key="y")
    ssm.put_parameter(Name="/acme/trustKey", Value="ext-id-7", Type="SecureString", Overwrite=True)
    return moto_url


@pytest_asyncio.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient()
    try:
        yield http
    finally:
        await http.aclose()


def _conn(name: str, *, use_assume_role: bool = False) -> AwsLambdaConnection:
    return AwsLambdaConnection(region=REGION, function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:prod",
                               use_assume_role=use_assume_role, role_arn=ROLE_ARN if use_assume_role else None,
                               external_id_key="acme/trustKey" if use_assume_role else None)


async def _invoke(client: HttpClient, name: str, invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
                  *, use_assume_role: bool = False, payload: bytes = b'{"point":"PreProcessor"}') -> InvokeResult:
    provider = AwsCredentialProvider(600)
    transport = AwsLambdaTransport(_conn(name, use_assume_role=use_assume_role), client, provider)
    try:
        return await transport.invoke(payload, invocation_type=invocation_type, message_id="m-1", deadline=0.0)
    finally:
        await transport.aclose()
        await provider.aclose()


# ---------------------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_invoke_is_signed_with_assumed_role_credentials(aws_env: str, fake_lambda: FakeLambda,
                                                              client: HttpClient) -> None:
    """useAssumeRole: an ASIA key from STS plus X-Amz-Security-Token, valid for botocore's verifier."""
    result = await _invoke(client, "output", use_assume_role=True)
    assert result.kind is ResultKind.OUTPUT
    [seen] = fake_lambda.seen
    assert seen.signature_valid
    assert seen.access_key.startswith("ASIA")
    [role] = sts_backends[ACCOUNT]["aws"].assumed_roles
    assert (role.access_key_id, role.external_id) == (seen.access_key, "ext-id-7")
    assert seen.headers["X-Amz-Security-Token"] == role.session_token


@pytest.mark.asyncio
async def test_invoke_is_signed_with_gateway_credentials_without_assume_role(aws_env: str, fake_lambda: FakeLambda,
                                                                             client: HttpClient) -> None:
    """Q4: useAssumeRole false → the gateway's own key, no security token, no STS call."""
    assert (await _invoke(client, "output")).kind is ResultKind.OUTPUT
    [seen] = fake_lambda.seen
    assert seen.signature_valid and seen.access_key == GATEWAY_KEY
    assert "X-Amz-Security-Token" not in seen.headers
    assert sts_backends[ACCOUNT]["aws"].assumed_roles == []


@pytest.mark.asyncio
async def test_invoke_request_has_contract_path_headers_and_body(aws_env: str, fake_lambda: FakeLambda,
                                                                 client: HttpClient) -> None:
    """§7.1: POST to the URL-encoded ARN path, invocation type, JSON content type, body unchanged."""
    payload = b'{"point":"PreProcessor","n":"caf\xc3\xa9"}'
    result = await _invoke(client, "output", payload=payload)
    [seen] = fake_lambda.seen
    assert seen.path == (f"/2015-03-31/functions/arn%3Aaws%3Alambda%3A{REGION}%3A{ACCOUNT}%3Afunction%3Aoutput"
                         "%3Aprod/invocations")
    assert seen.headers["X-Amz-Invocation-Type"] == "RequestResponse"
    assert seen.headers["Content-Type"] == "application/json"
    assert "X-Amz-Content-SHA256" not in seen.headers
    assert seen.body == payload
    assert result == InvokeResult(ResultKind.OUTPUT, b'{"echo":' + payload + b"}")


# ---------------------------------------------------------------------------------------------------------------
# Response mapping (§7.2, §5.3)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_function_error_header_gives_function_error(aws_env: str, client: HttpClient) -> None:
    """200 + X-Amz-Function-Error → FUNCTION_ERROR with the error document and the header value."""
    result = await _invoke(client, "fnerror")
    assert result == InvokeResult(ResultKind.FUNCTION_ERROR, b'{"errorMessage":"boom","errorType":"RuntimeError"}',
                                  "Unhandled")


@pytest.mark.asyncio
async def test_event_invocation_202_is_accepted(aws_env: str, fake_lambda: FakeLambda, client: HttpClient) -> None:
    """Event mode: Lambda answers 202 → ACCEPTED; the Event header was sent."""
    assert (await _invoke(client, "output", InvocationType.EVENT)).kind is ResultKind.ACCEPTED
    assert fake_lambda.seen[0].headers["X-Amz-Invocation-Type"] == "Event"
    assert fake_lambda.seen[0].signature_valid


@pytest.mark.asyncio
async def test_event_invocation_200_is_accepted(aws_env: str, client: HttpClient) -> None:
    """Q15: a 200 in event mode is accepted too, its body ignored."""
    assert (await _invoke(client, "event200", InvocationType.EVENT)).kind is ResultKind.ACCEPTED


@pytest.mark.asyncio
async def test_request_response_202_is_accepted(aws_env: str, client: HttpClient) -> None:
    """§7.2: 202 in request-response mode is treated as allow."""
    assert (await _invoke(client, "accepted")).kind is ResultKind.ACCEPTED


@pytest.mark.asyncio
async def test_lambda_error_document_message_is_aws_error(aws_env: str, client: HttpClient) -> None:
    """4xx with {"Type","message"} → AWS_ERROR carrying the message."""
    with pytest.raises(InvocationError) as failed:
        await _invoke(client, "denied")
    assert failed.value.code is ErrorCode.AWS_ERROR
    assert failed.value.detail == DENIED_MESSAGE


@pytest.mark.asyncio
async def test_capitalised_message_member_is_used(aws_env: str, client: HttpClient) -> None:
    """§7.2: ``Message`` is read as well as ``message``."""
    with pytest.raises(InvocationError) as failed:
        await _invoke(client, "throttled")
    assert (failed.value.code, failed.value.detail) == (ErrorCode.AWS_ERROR, "Rate Exceeded.")


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["crash", "html"])
async def test_other_status_without_message_is_unexpected_status(aws_env: str, client: HttpClient,
                                                                 name: str) -> None:
    """500 with an empty body, or a non-JSON 502, → UNEXPECTED_STATUS."""
    with pytest.raises(InvocationError) as failed:
        await _invoke(client, name)
    assert failed.value.code is ErrorCode.UNEXPECTED_STATUS


@pytest.mark.asyncio
async def test_connection_refused_is_connection_failure(aws_env: str, client: HttpClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening at the endpoint → CONNECTION_FAILURE."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(InvocationError) as failed:
        await _invoke(client, "output")
    assert failed.value.code is ErrorCode.CONNECTION_FAILURE


@pytest.mark.asyncio
async def test_sts_failure_surfaces_as_invocation_error(aws_env: str, client: HttpClient,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Credential failures are invocation failures (§5.4): an unreachable STS fails the invoke."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(InvocationError) as failed:
        await _invoke(client, "output", use_assume_role=True)
    assert failed.value.code is ErrorCode.CONNECTION_FAILURE


# ---------------------------------------------------------------------------------------------------------------
# Endpoint resolution (§7.5)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "endpoint"), [
    ({}, "https://lambda.eu-west-1.amazonaws.com"),
    ({"AWS_ENDPOINT_URL": "http://localhost:4566/"}, "http://localhost:4566"),
    ({"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_LAMBDA": "http://specific:2"}, "http://specific:2"),
])
def test_lambda_endpoint_prefers_service_variable_then_generic_then_regional(environ: dict[str, str],
                                                                             endpoint: str) -> None:
    """AWS_ENDPOINT_URL_LAMBDA wins over AWS_ENDPOINT_URL, which wins over the regional default."""
    assert lambda_endpoint("eu-west-1", environ) == endpoint


def test_error_document_parsing_ignores_non_objects() -> None:
    """A JSON array or string body carries no AWS message."""
    for body in (b"[]", b'"message"', b'{"message": 3}', b""):
        with pytest.raises(InvocationError) as failed:
            classify(400, [], body, InvocationType.REQUEST_RESPONSE)
        assert failed.value.code is ErrorCode.UNEXPECTED_STATUS


class _WrongSecret(AwsCredentialProvider):
    async def for_connection(self, conn: AwsLambdaConnection) -> Credentials:
        return Credentials(GATEWAY_KEY, "not-the-secret", None)


@pytest.mark.asyncio
async def test_fake_lambda_rejects_a_wrong_signature(aws_env: str, fake_lambda: FakeLambda,
                                                     client: HttpClient) -> None:
    """The verifier is not a rubber stamp: a request signed with the wrong secret is refused (and surfaces
    as AWS_ERROR with Lambda's message)."""
    transport = AwsLambdaTransport(_conn("output"), client, _WrongSecret(600))
    with pytest.raises(InvocationError) as failed:
        await transport.invoke(b"{}", invocation_type=InvocationType.REQUEST_RESPONSE, message_id="m", deadline=0.0)
    assert failed.value.code is ErrorCode.AWS_ERROR
    assert "signature" in failed.value.detail
    assert fake_lambda.seen[0].signature_valid is False
