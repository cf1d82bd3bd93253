"""The example functions of ``examples/``, end to end: the gateway subprocess, configured with each example's
``endpoint.yaml`` exactly as documented → SigV4 Lambda Invoke → the local Lambda runner serving ``examples/`` (its
``functions.yaml``) → real ``awslambdaric`` runtimes running the example handlers.

One runner and one gateway serve every example.  The runner serves a copy of ``examples/`` whose manifest points
``ANALYTICS_FILE`` at a temporary file and sets a test ``BACKEND_TOKEN``; everything else is the shipped code.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.backend import BackendServer
from support.gateway_proc import GatewayProcess, config, run_cli, service, session, write_yaml
from support.lambda_runner import LambdaRunner, run_lambda_runner

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = ("jwt_auth", "verb_plan", "pii_masking", "event_analytics", "backend_credentials")
REGION = "us-east-1"

JWT_KEY = "jwtgold0key1abc2def3"  # application with jwt_public_key; its key's plan allows GET,HEAD
BARE_KEY = "bare0key1without2eav"  # same application; no allowed_verbs EAV
NOJWT_KEY = "nojwt0app1key2xyz345"  # another application, without jwt_public_key
BACKEND_SECRET = "s3cr3t-backend-token-for-tests"
AUDIENCE = "orders-api"  # sidecar-param-audience in examples/jwt_auth/endpoint.yaml


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def public_pem(signing_key: rsa.RSAPrivateKey) -> str:
    return signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@pytest.fixture(scope="module")
def analytics_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("analytics") / "calls.jsonl"


@pytest.fixture(scope="module")
def functions_dir(tmp_path_factory: pytest.TempPathFactory, analytics_file: Path) -> Path:
    """A copy of examples/ whose manifest sends analytics to a temporary file and holds a test secret."""
    target = tmp_path_factory.mktemp("examples") / "examples"
    shutil.copytree(EXAMPLES_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    manifest = yaml.safe_load((target / "functions.yaml").read_text())
    manifest["event_analytics"]["environment"]["ANALYTICS_FILE"] = str(analytics_file)
    manifest["backend_credentials"]["environment"]["BACKEND_TOKEN"] = BACKEND_SECRET
    write_yaml(target / "functions.yaml", manifest)
    return target


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, functions_dir: Path) -> Iterator[LambdaRunner]:
    with run_lambda_runner(functions_dir, log_dir=tmp_path_factory.mktemp("runner"), region=REGION) as r:
        yield r


# What the canned backend answers on /canned/<kind>: status, Content-Type, body.
CANNED_RESPONSES: dict[str, tuple[int, str, bytes]] = {
    "json": (201, "application/json", json.dumps({
        "id": 4711,
        "owner": {"name": "Alice Smith", "email": "alice.smith@example.com"},
        "cards": [{"number": "4111 1111 1111 1111"}, {"number": "5500-0000-0000-0004"},
                  {"number": 4012888888881881}],
        "notes": "call bob@example.org about order 1234567890123",
        "reference": "4111 1111 1111 1112",
    }).encode()),
    "clean": (200, "application/json", b'{ "id": 1,  "status": "shipped" }'),
    "text": (200, "text/plain; charset=utf-8",
             b"Contact carol@example.net, card 4111-1111-1111-1111, ticket 99887766554433.\n"),
    "binary": (200, "application/octet-stream", b"\x00\xffalice.smith@example.com 4111111111111111\x01"),
}


class CannedBackend:
    """A backend that answers with a fixed body per path (the PII example needs PII in the backend's answer)."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, name="canned-backend", daemon=True)

    def start(self) -> CannedBackend:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("canned backend did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        status, content_type, body = CANNED_RESPONSES[kind]
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/canned/{kind}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedBackend]:
    server = CannedBackend().start()
    yield server
    server.stop()


def example_endpoint(name: str, target: str) -> dict[str, Any]:
    """The example's endpoint.yaml as documented, with only ``target`` pointed at the test backend."""
    ep = yaml.safe_load((EXAMPLES_DIR / name / "endpoint.yaml").read_text())
    assert isinstance(ep, dict)
    return {**ep, "target": target}


def applications(public_pem: str) -> list[dict[str, Any]]:
    return [
        {"id": "jwt-app", "eavs": {"jwt_public_key": public_pem},
         "package_keys": [{"key": JWT_KEY, "eavs": {"allowed_verbs": "GET,HEAD"}}, {"key": BARE_KEY}]},
        {"id": "plain-app", "package_keys": [{"key": NOJWT_KEY}]},
    ]


def _gateway_env(runner: LambdaRunner) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "AKIAEXAMPLESE2E00001", "AWS_SECRET_ACCESS_KEY": "examples-e2e-secret",
                "AWS_ENDPOINT_URL_LAMBDA": runner.url})
    return env


@pytest.fixture(scope="module")
def gateway_config(backend: BackendServer, canned: CannedBackend, public_pem: str) -> dict[str, Any]:
    eps = [
        example_endpoint("jwt_auth", backend.url("/jwt-backend")),
        example_endpoint("verb_plan", backend.url("/plan-backend")),
        example_endpoint("pii_masking", canned.url("/canned")),
        example_endpoint("event_analytics", backend.url("/analytics-backend")),
        example_endpoint("backend_credentials", backend.url("/partner-backend")),
    ]
    return config(service("examples", *eps), applications=applications(public_pem))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any],
       runner: LambdaRunner) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("gw-examples"), gateway_config, env=_gateway_env(runner))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def call(gw: GatewayProcess, method: str, path: str, key: str = JWT_KEY, **kw: Any) -> requests.Response:
    sep = "&" if "?" in path else "?"
    with session() as s:
        return s.request(method, f"{gw.base_url}{path}{sep}api_key={key}", timeout=20, **kw)


def invocations(runner: LambdaRunner, function: str) -> list[dict[str, Any]]:
    return [i for i in runner.invocations() if i["function"] == function]


# --------------------------------------------------------------------------------------------------------------
# Layout: what is documented is what is served and tested
# --------------------------------------------------------------------------------------------------------------


def test_every_example_is_complete_and_served_by_the_manifest() -> None:
    """Each example has handler.py, endpoint.yaml (naming its manifest function) and a README section that
    shows that endpoint.yaml verbatim."""
    manifest = yaml.safe_load((EXAMPLES_DIR / "functions.yaml").read_text())
    readme = (EXAMPLES_DIR / "README.md").read_text()
    assert sorted(manifest) == sorted(EXAMPLES)
    for name in EXAMPLES:
        assert (EXAMPLES_DIR / name / "handler.py").is_file()
        assert manifest[name]["handler"] == f"{name}/handler.handler"
        ep = yaml.safe_load((EXAMPLES_DIR / name / "endpoint.yaml").read_text())
        text = ep.get("pre_processing") or ep.get("post_processing")
        assert f"functionARN: arn:aws:lambda:{REGION}:123456789012:function:{name}\n" in text
        assert "useAssumeRole: false" in text
        assert re.search(rf"^## .*`{name}`", readme, re.M), f"README has no section for {name}"
        documented = "".join(line for line in (EXAMPLES_DIR / name / "endpoint.yaml").read_text().splitlines(True)
                             if not line.startswith("#"))
        assert f"# examples/{name}/endpoint.yaml\n{documented}```" in readme, f"README shows another {name} config"


def test_handlers_are_self_contained() -> None:
    """A handler imports only the standard library (plus PyJWT for jwt_auth), so it can be zipped as is."""
    for name in EXAMPLES:
        tree = ast.parse((EXAMPLES_DIR / name / "handler.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        allowed = set(sys.stdlib_module_names) | ({"jwt"} if name == "jwt_auth" else set())
        assert imported <= allowed, f"{name} imports {sorted(imported - allowed)}"


def test_documented_configuration_checks_clean(tmp_path: Path, gateway_config: dict[str, Any]) -> None:
    """``sidecar-gateway check`` on the examples' configuration: no error, no warning."""
    path = tmp_path / "gateway.yaml"
    write_yaml(path, gateway_config)
    result = run_cli("check", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------------------
# (1) JWT authentication at pre
# --------------------------------------------------------------------------------------------------------------


def _token(key: rsa.RSAPrivateKey, *, sub: str = "alice", exp_in: int = 300, aud: str = AUDIENCE) -> str:
    return jwt.encode({"sub": sub, "aud": aud, "exp": int(time.time()) + exp_in}, key, algorithm="RS256")


def test_jwt_valid_token_reaches_backend_as_authenticated_user(gw: GatewayProcess, backend: BackendServer,
                                                               signing_key: rsa.RSAPrivateKey) -> None:
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/jwt/{token}", headers={"Authorization": f"Bearer {_token(signing_key)}",
                                                   "X-Authenticated-User": "mallory"})
    assert r.status_code == 200, r.text
    [seen] = backend.wait_for(token)
    assert seen.header_values("X-Authenticated-User") == ["alice"]  # the client's spoofed value is replaced
    assert seen.header_values("Authorization") == []  # the backend never sees the raw token


@pytest.mark.parametrize(("case", "message"), [
    ("expired", "Token has expired"),
    ("bad-signature", "Token signature is invalid"),
    ("malformed", "Token is malformed"),
    ("wrong-audience", "Token audience is not accepted"),
])
def test_jwt_rejected_tokens_answer_401(gw: GatewayProcess, backend: BackendServer,
                                        signing_key: rsa.RSAPrivateKey, case: str, message: str) -> None:
    if case == "expired":
        bearer = _token(signing_key, exp_in=-60)
    elif case == "bad-signature":
        bearer = _token(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif case == "malformed":
        bearer = "not.a-jwt"
    else:
        bearer = _token(signing_key, aud="billing-api")
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/jwt/{token}", headers={"Authorization": f"Bearer {bearer}"})
    assert (r.status_code, r.text) == (401, f"<h1>{message}</h1>")
    assert r.headers["WWW-Authenticate"] == f'Bearer error="invalid_token", error_description="{message}"'
    time.sleep(0.1)
    assert backend.matching(token) == []


def test_jwt_missing_authorization_is_refused_by_the_gateway(gw: GatewayProcess, backend: BackendServer) -> None:
    """require-request-headers: the gateway answers 400 itself, the function is not called."""
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/jwt/{token}")
    assert r.status_code == 400
    assert r.headers["X-Error-Detail-Header"] == "Required Header - Authorization Unavailable"
    assert backend.matching(token) == []


def test_jwt_application_without_public_key_is_403(gw: GatewayProcess, signing_key: rsa.RSAPrivateKey) -> None:
    r = call(gw, "GET", "/jwt/x", key=NOJWT_KEY, headers={"Authorization": f"Bearer {_token(signing_key)}"})
    assert (r.status_code, r.text) == (403, "<h1>Application is not configured for JWT authentication</h1>")


# --------------------------------------------------------------------------------------------------------------
# (2) Plan-based verb constraint at pre
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_plan_allows_listed_verbs(gw: GatewayProcess, backend: BackendServer, method: str) -> None:
    token = uuid.uuid4().hex
    r = call(gw, method, f"/plan/items/{token}")
    assert r.status_code == 200
    [seen] = backend.wait_for(token)
    assert seen.method == method


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_plan_refuses_other_verbs_with_405_and_allow(gw: GatewayProcess, backend: BackendServer, method: str) -> None:
    token = uuid.uuid4().hex
    r = call(gw, method, f"/plan/items/{token}", data=b"{}")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"
    assert r.text == f"<h1>Method {method} is not allowed by your plan; allowed: GET, HEAD</h1>"
    time.sleep(0.1)
    assert backend.matching(token) == []


def test_plan_key_without_allowed_verbs_is_403(gw: GatewayProcess, backend: BackendServer) -> None:
    token = uuid.uuid4().hex
    r = call(gw, "GET", f"/plan/items/{token}", key=BARE_KEY)
    assert (r.status_code, r.text) == (403, "<h1>Your plan does not allow any method on this API</h1>")
    assert backend.matching(token) == []


# --------------------------------------------------------------------------------------------------------------
# (3) PII masking at post
# --------------------------------------------------------------------------------------------------------------


def test_pii_masked_in_json_and_backend_status_kept(gw: GatewayProcess) -> None:
    r = call(gw, "GET", "/customers/json")
    assert r.status_code == 201  # completeWithCode untouched: the backend's 201 stands
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "id": 4711,
        "owner": {"name": "Alice Smith", "email": "a**********@example.com"},
        "cards": [{"number": "**** **** **** 1111"}, {"number": "****-****-****-0004"},
                  {"number": "************1881"}],
        "notes": "call b**@example.org about order 1234567890123",  # not Luhn-valid: not a card
        "reference": "4111 1111 1111 1112",
    }


def test_pii_masked_in_text(gw: GatewayProcess) -> None:
    r = call(gw, "GET", "/customers/text")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.text == "Contact c****@example.net, card ****-****-****-1111, ticket 99887766554433.\n"


@pytest.mark.parametrize("kind", ["binary", "clean"])
def test_pii_bodies_without_readable_pii_pass_unchanged(gw: GatewayProcess, kind: str) -> None:
    """Binary answers (base64 in the input) and JSON with nothing to mask: ``{}``, the exact bytes go through."""
    status, content_type, body = CANNED_RESPONSES[kind]
    r = call(gw, "GET", f"/customers/{kind}")
    assert (r.status_code, r.headers["Content-Type"], r.content) == (status, content_type, body)


# --------------------------------------------------------------------------------------------------------------
# (4) Async analytics in event mode
# --------------------------------------------------------------------------------------------------------------


def _analytics_lines(path: Path, message_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found = [line for line in lines if line["masheryMessageId"] == message_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_analytics_appends_one_line_per_call(gw: GatewayProcess, backend: BackendServer, runner: LambdaRunner,
                                             analytics_file: Path) -> None:
    token = uuid.uuid4().hex
    r = call(gw, "DELETE", f"/tracked/orders/{token}?dry=1")
    assert r.status_code == 200  # the call is not held up or changed by the function
    [seen] = backend.wait_for(token)
    assert seen.method == "DELETE"
    [message_id] = seen.header_values("X-Mashery-Message-ID")
    [line] = _analytics_lines(analytics_file, message_id)
    assert set(line) == {"ts", "masheryMessageId", "point", "serviceId", "endpointId", "packageKey", "method",
                         "path", "remoteAddr"}
    assert {k: line[k] for k in ("point", "serviceId", "endpointId", "packageKey", "method", "path", "remoteAddr")} \
        == {"point": "PreProcessor", "serviceId": "examples", "endpointId": "event-analytics",
            "packageKey": JWT_KEY[:4] + "…", "method": "DELETE", "path": f"/orders/{token}",
            "remoteAddr": "127.0.0.1"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line["ts"])
    inv = [i for i in invocations(runner, "event_analytics") if i["payload"]["masheryMessageId"] == message_id]
    assert [i["invocation_type"] for i in inv] == ["Event"]


def test_analytics_lines_accumulate(gw: GatewayProcess, backend: BackendServer, analytics_file: Path) -> None:
    ids = []
    for _ in range(3):
        token = uuid.uuid4().hex
        assert call(gw, "GET", f"/tracked/{token}").status_code == 200
        ids.append(backend.wait_for(token)[0].header_values("X-Mashery-Message-ID")[0])
    for message_id in ids:
        assert len(_analytics_lines(analytics_file, message_id)) == 1
    assert all(json.loads(line) for line in analytics_file.read_text().splitlines())


# --------------------------------------------------------------------------------------------------------------
# (5) Dynamic backend credentials at pre
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_auth", [None, "Bearer client-own-token"])
def test_backend_credentials_replace_client_authorization(gw: GatewayProcess, backend: BackendServer,
                                                          runner: LambdaRunner, client_auth: str | None) -> None:
    token = uuid.uuid4().hex
    headers = {"Authorization": client_auth} if client_auth else {}
    r = call(gw, "GET", f"/partner/{token}", headers=headers)
    assert r.status_code == 200
    [seen] = backend.wait_for(token)
    assert seen.header_values("Authorization") == [f"Bearer {BACKEND_SECRET}"]
    [message_id] = seen.header_values("X-Mashery-Message-ID")
    [inv] = [i for i in invocations(runner, "backend_credentials") if i["payload"]["masheryMessageId"] == message_id]
    assert "request" not in inv["payload"]  # skip-request-headers: the client's credential never reaches the function
