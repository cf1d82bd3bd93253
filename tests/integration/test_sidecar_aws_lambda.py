"""End to end on the aws-lambda stack: the gateway subprocess → SigV4 Lambda Invoke → the local Lambda runner →
real ``awslambdaric`` runtimes running the functions of ``tests/functions``; STS AssumeRole and SSM GetParameter
served by ``moto`` (contract §7).
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from support.backend import BackendServer
from support.gateway_proc import ACTIVE_KEY, GatewayProcess, config, endpoint, service, session
from support.lambda_runner import FUNCTIONS_DIR, TEST_ACCESS_KEY, TEST_CREDENTIALS, TEST_SECRET_KEY, run_lambda_runner

REGION = "eu-west-1"
ACCOUNT = "123456789012"
GATEWAY_KEY = "AKIAGATEWAYE2E000001"
GATEWAY_SECRET = "gateway-e2e-secret"
EXTERNAL_ID = "ext-id-from-ssm-42"
ROLE = f"arn:aws:sts::{ACCOUNT}:role/ tibco_sidecar_connector_e2e"  # §7.3 example form: sts + stray space


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def _aws(name: str, extra: str = "", *, assume: bool = True) -> str:
    head = f"region: {REGION}\nfunctionARN: {_arn(name)}\n"
    if assume:
        head += f"roleARN: {ROLE}\nexternalIdKey: acme/e2e/trustKey\nsessionName: e2e-session\n"
    else:
        head += "useAssumeRole: false\n"
    return head + extra


def _clean_aws_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": REGION}, **extra)
    return env


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="y")
    ssm.put_parameter(Name="/acme/e2e/trustKey", Value=EXTERNAL_ID, Type="SecureString", Overwrite=True)
    yield url
    server.stop()


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A runner that records (but does not verify) signatures: assumed-role keys are minted by moto."""
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("runner"), region=REGION) as r:
        yield r


@pytest.fixture(scope="module")
def verifying_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A runner that recomputes every signature with botocore and refuses a mismatch (403)."""
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("vrunner"), region=REGION,
                           credentials=TEST_CREDENTIALS) as r:
        yield r


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer, runner: Any, moto_url: str) -> Iterator[Any]:
    b = backend.url("/")
    eps = [
        endpoint("assumed", "/assumed", b, pre_processing=_aws("add_header")),
        endpoint("own-creds", "/own", b, pre_processing=_aws("add_header", assume=False)),
        endpoint("terminate", "/terminate", b,
                 pre_processing=_aws("require_header", "include-request-headers: x-user", assume=False)),
        endpoint("raise", "/raise", b, pre_processing=_aws("raise_error", assume=False)),
        endpoint("missing", "/missing", b, pre_processing=_aws("no_such_function", assume=False)),
        endpoint("slow", "/slow", b, pre_processing=_aws("sleepy", "timeout: 300", assume=False)),
        endpoint("event", "/event", b, pre_processing=_aws("raise_error", "synchronicity: event", assume=False)),
        endpoint("post", "/post", b, post_processing=_aws("add_header", "include-response-headers: content-type",
                                                          assume=False)),
    ]
    env = _clean_aws_env({"AWS_ACCESS_KEY_ID": GATEWAY_KEY, "AWS_SECRET_ACCESS_KEY": GATEWAY_SECRET,
                          "AWS_ENDPOINT_URL_LAMBDA": runner.url, "AWS_ENDPOINT_URL_STS": moto_url,
                          "AWS_ENDPOINT_URL_SSM": moto_url})
    proc = GatewayProcess(tmp_path_factory.mktemp("gw-aws"), config(service("svc-aws", *eps)), env=env)
    proc.wait_ready()
    yield proc
    proc.stop()


def call(gw: GatewayProcess, path: str, **kw: Any) -> Any:
    with session() as s:
        return s.get(f"{gw.base_url}{path}?api_key={ACTIVE_KEY}", timeout=20, **kw)


def _last_invocation(runner: Any, function: str) -> dict[str, Any]:
    return [i for i in runner.invocations() if i["function"] == function][-1]


def test_invoke_is_signed_with_assumed_role_credentials(gw: Any, runner: Any, backend: BackendServer) -> None:
    """§7.3/§7.4: the ExternalId read from SSM goes to STS; the Invoke carries the ASIA session key and token."""
    token = uuid.uuid4().hex
    r = call(gw, f"/assumed/{token}")
    assert r.status_code == 200, r.text
    assert backend.wait_for(token)[0].header_values("X-Sidecar-Added") == ["by add_header"]
    inv = _last_invocation(runner, "add_header")
    assert inv["access_key"].startswith("ASIA")
    assert inv["has_security_token"] is True
    assumed = list(sts_backends[ACCOUNT]["aws"].assumed_roles)
    assert assumed, "STS AssumeRole was never called"
    last = assumed[-1]
    assert last.external_id == EXTERNAL_ID
    assert last.role_arn == f"arn:aws:iam::{ACCOUNT}:role/tibco_sidecar_connector_e2e"
    assert last.session_name == "e2e-session"
    assert inv["payload"]["point"] == "PreProcessor"


def test_assumed_credentials_are_cached_across_calls(gw: Any, runner: Any) -> None:
    """§7.5: two calls, one AssumeRole (credentials are used until a minute before expiry)."""
    call(gw, "/assumed/one")
    before = len(sts_backends[ACCOUNT]["aws"].assumed_roles)
    assert call(gw, "/assumed/two").status_code == 200
    assert len(sts_backends[ACCOUNT]["aws"].assumed_roles) == before


def test_own_credentials_sign_when_use_assume_role_is_false(gw: Any, runner: Any) -> None:
    """Q4: useAssumeRole false → the gateway's own key signs the Invoke, no session token."""
    assert call(gw, "/own/x").status_code == 200
    inv = _last_invocation(runner, "add_header")
    assert inv["access_key"] == GATEWAY_KEY
    assert inv["has_security_token"] is False


def test_terminate_from_lambda(gw: Any) -> None:
    """A real Lambda terminate: 401 rendered from its message."""
    r = call(gw, "/terminate/x")
    assert (r.status_code, r.text) == (401, "<h1>Missing x-user header</h1>")
    assert call(gw, "/terminate/x", headers={"X-User": "alice"}).status_code == 200


def test_lambda_exception_is_502_with_runtime_error_type(gw: Any) -> None:
    """§5.3 function error: the runtime's errorType and errorMessage in the 502 body."""
    r = call(gw, "/raise/x")
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": {"detail": "boom", "title": "SidecarFailure"}}


def test_unknown_function_is_aws_error_with_its_message(gw: Any) -> None:
    """§5.3 AWS error: 500 with the AWS error message from the error document."""
    r = call(gw, "/missing/x")
    assert r.status_code == 500
    assert r.text == "<h1>InvalidResponseFromAWSLambdaInPreProcess</h1>"
    assert "Function not found" in r.headers["X-Error-Detail-Header"]


def test_function_past_deadline_answers_504(gw: Any) -> None:
    """§5.3 timeout: the processor's 300 ms deadline passes → 504 Gateway Timeout."""
    r = call(gw, "/slow/x")
    assert r.status_code == 504
    assert r.text == "<h1>Gateway Timeout</h1>"


def test_event_invocation_is_accepted_and_never_blocks(gw: Any, runner: Any) -> None:
    """P9 event: X-Amz-Invocation-Type Event (202), the call continues even though the function raises."""
    assert call(gw, "/event/x").status_code == 200
    inv = _last_invocation(runner, "raise_error")
    assert inv["invocation_type"] == "Event"
    assert inv["payload"]["synchronicity"] == "Event"


def test_post_processor_modifies_client_response(gw: Any, runner: Any) -> None:
    """Q8: a post modify adds a header to the client response; the post input carries response.code."""
    r = call(gw, "/post/x")
    assert r.status_code == 200
    assert r.headers["X-Sidecar-Added"] == "by add_header"
    inv = _last_invocation(runner, "add_header")
    assert inv["payload"]["point"] == "PostProcessor"
    assert inv["payload"]["response"]["code"] == 200


def test_signature_is_accepted_by_a_botocore_verifier(tmp_path: Path, backend: BackendServer,
                                                      verifying_runner: Any) -> None:
    """§7.1: our own SigV4 signature is recomputed by botocore in the runner and matches."""
    cfg = config(service("svc-v", endpoint("verified", "/verified", backend.url("/"),
                                           pre_processing=_aws("add_header", assume=False))))
    env = _clean_aws_env({"AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_SECRET_KEY,
                          "AWS_ENDPOINT_URL_LAMBDA": verifying_runner.url})
    gw = GatewayProcess(tmp_path, cfg, env=env)
    try:
        gw.wait_ready()
        assert call(gw, "/verified/x").status_code == 200
        inv = _last_invocation(verifying_runner, "add_header")
        assert inv["signature_verified"] is True
    finally:
        gw.stop()


def test_wrong_secret_is_refused_by_the_verifier(tmp_path: Path, backend: BackendServer,
                                                 verifying_runner: Any) -> None:
    """Negative control: a wrong secret is rejected (403 InvalidSignatureException) → 500 AWS error."""
    cfg = config(service("svc-w", endpoint("wrong", "/wrong", backend.url("/"),
                                           pre_processing=_aws("add_header", assume=False))))
    env = _clean_aws_env({"AWS_ACCESS_KEY_ID": TEST_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "not-the-secret",
                          "AWS_ENDPOINT_URL_LAMBDA": verifying_runner.url})
    gw = GatewayProcess(tmp_path, cfg, env=env)
    try:
        gw.wait_ready()
        r = call(gw, "/wrong/x")
        assert r.status_code == 500
        assert "signature" in r.headers["X-Error-Detail-Header"].lower()
    finally:
        gw.stop()


def test_runner_introspection_is_reachable(runner: Any) -> None:
    """Guard: the fixture's runner answers its introspection endpoint (otherwise the tests above prove nothing)."""
    with urllib.request.urlopen(runner.url + "/_runner/invocations", timeout=5) as resp:
        assert resp.status == 200
