"""``sidecar-gateway invoke`` as a subprocess against every stack: python handlers, an aiohttp function on the
http stack, and real Lambda functions through the local runner (aws-lambda stack, ``AWS_ENDPOINT_URL_LAMBDA``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sidecar_gateway.cli import main
from support.lambda_runner import FUNCTIONS_DIR, run_lambda_runner

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
REGION = "eu-west-1"
ACCOUNT = "123456789012"
INVOKE_TIMEOUT_S = 60


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), base.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "sidecar_gateway", "invoke", *args], capture_output=True,
                          text=True, timeout=INVOKE_TIMEOUT_S, env={**base, **(env or {})})


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """In process (``cli.main``), to keep the suite fast; the subprocess tests cover the entry point."""
    code = main(["invoke", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


# -- python stack -------------------------------------------------------------------------------------------------

CONFIG = """\
services:
  - id: orders
    endpoints:
      - id: create-order
        public_path: /shop
        target: http://backend.internal:9000/api
        pre_processing: |
          stack: python
          handler: support.invoke_handlers:tag_user
          include-request-headers: Authorization
          expand-input: requestPayload
          include-packageKey-eavs: tier
applications:
  - id: app-1
    package_keys:
      - key: key-123
        eavs: {tier: gold}
"""

HTTP_FILE = """\
# a REST Client request
@host = api.acme.com

POST https://api.acme.com/shop/orders?api_key=key-123 HTTP/1.1
Authorization: Bearer alice
Content-Type: application/json
X-Debug: 1

{"item": 42}

###
GET https://api.acme.com/shop/ignored
"""


def test_python_stack_modify_from_config_and_http_file(tmp_path: Path) -> None:
    """Config + .http file: the input carries the selected header/body/EAV, the verdict lists the backend
    request's headers added and dropped and a body diff; exit 0."""
    (tmp_path / "gw.yaml").write_text(CONFIG)
    (tmp_path / "order.http").write_text(HTTP_FILE)
    done = invoke("--config", str(tmp_path / "gw.yaml"), "--endpoint", "create-order", "--point", "pre",
                  "--request", str(tmp_path / "order.http"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"authorization": "alice"' in out and '"packageKeyEAVs": {\n    "tier": "gold"' in out
    assert "interpreter (§4.3): valid" in out and "schema sidecar-output PreProcessor: valid" in out
    assert "== verdict: MODIFY" in out
    assert "  + x-user: alice" in out and "  - x-debug: 1" in out
    assert '-{"item": 42}' in out and '+{"item":42,"user":"alice"}' in out
    assert "valid output (exit 0)" in out


def test_python_stack_post_modify_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Ad-hoc post processor: status before → after, headers and body as the gateway would apply them."""
    code, rep = report(capsys, "--processor-text", "stack: python\nhandler: support.invoke_handlers:mask_email\n"
                       "expand-input: responsePayload", "--point", "post", "--path", "/users/7",
                       "--response-status", "200", "--response-header", "Content-Type: application/json",
                       "--response-body", '{"id": 7, "email": "a@b.example"}')
    assert code == 0
    assert rep["input"]["response"]["payload"] == '{"id": 7, "email": "a@b.example"}'
    verdict = rep["verdict"]
    assert verdict["kind"] == "modify" and verdict["status"] == [200, 203]
    assert "x-masked: email" in verdict["headers"]["added"]
    assert verdict["body"]["after"] == '{"id":7,"email":"***"}'
    assert rep["validation"]["valid"] is True


def test_python_stack_terminate_shows_the_client_response(capsys: pytest.CaptureFixture[str]) -> None:
    """A terminate without body: the gateway-rendered XML error with the terminate headers (§4.4, §6.2)."""
    code, rep = report(capsys, "--processor-text", "stack: python\nhandler: support.invoke_handlers:tag_user",
                       "--point", "pre", "--key", "k")
    assert code == 0
    assert rep["verdict"] == {"kind": "terminate", "status": 401, "body": "<h1>token required</h1>",
                              "headers": ["content-type: application/xml", "www-authenticate: Bearer"]}


def test_python_stack_invalid_output_exits_1() -> None:
    """A forbidden header: the interpreter and the schema both say invalid; the §5.3 error is shown; exit 1."""
    done = invoke("--processor-text", "stack: python\nhandler: support.invoke_handlers:forbidden_header",
                  "--point", "pre")
    assert done.returncode == 1
    out = done.stdout
    assert "interpreter (§4.3): INVALID: modify.addHeaders: forbidden header 'Content-Length'" in out
    assert "schema sidecar-output PreProcessor: INVALID" in out
    assert "InvalidResponseFromAWSLambdaInPreProcess: Invalid output from AWS Lambda function" in out
    assert "status: 500" in out


def test_python_stack_function_error_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """An exception is a function error: 502 with the documented JSON body (§5.3)."""
    code, rep = report(capsys, "--processor-text",
                       "stack: python\nhandler: support.invoke_handlers:boom\nfailSafe: true", "--point", "post")
    assert code == 1
    assert rep["output"]["outcome"] == "function_error"
    verdict = rep["verdict"]
    assert (verdict["kind"], verdict["errorName"], verdict["status"]) == ("error", "FunctionError", 502)
    assert json.loads(verdict["body"]) == {"code": 502, "message": {"detail": "database unreachable",
                                                                     "title": "RuntimeError"}}
    assert "failSafe" in verdict["note"]


@pytest.mark.parametrize("args", [
    ("--point", "pre"),  # no processor
    ("--config", "/nonexistent.yaml", "--endpoint", "x", "--point", "pre"),
    ("--processor-text", "stack: python\nhandler: nowhere:nothing", "--point", "pre"),
])
def test_usage_and_configuration_errors_exit_2(args: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Missing processor, unreadable configuration, processor text with errors: exit 2."""
    assert main(["invoke", *args]) == 2
    assert "sidecar-gateway invoke:" in capsys.readouterr().err


# -- http stack ---------------------------------------------------------------------------------------------------


class FunctionServer:
    """An aiohttp function on a loopback port, in a thread; records what it received."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        event = await request.json()
        self.received.append({"event": event, "invocation": request.headers.get("X-Sidecar-Invocation-Type")})
        if request.path == "/drop":
            return web.json_response({"modify": {"dropHeaders": ["set-cookie"], "addHeaders": {"X-Via": "http"}}})
        return web.Response(status=500, text="nope")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FunctionServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def function_server() -> Iterator[FunctionServer]:
    server = FunctionServer().start()
    yield server
    server.stop()


def test_http_stack_post_drops_and_adds_response_headers(function_server: FunctionServer) -> None:
    """http stack: POST of the input (§8.1); the verdict drops set-cookie and adds x-via on the response."""
    done = invoke("--processor-text", f"stack: http\nurl: {function_server.url}/drop\n"
                  "skip-response-headers: set-cookie", "--point", "post",
                  "--response-header", "Set-Cookie: s=1", "--response-header", "ETag: abc", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert function_server.received[-1]["invocation"] == "RequestResponse"
    assert function_server.received[-1]["event"]["response"] == {"code": 200, "headers": {"etag": "abc"}}
    headers = json.loads(done.stdout)["verdict"]["headers"]
    assert headers["removed"] == ["set-cookie: s=1"] and headers["added"] == ["x-via: http"]


def test_http_stack_unexpected_status_exits_1(function_server: FunctionServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A 500 from an http function is 'Success Response not returned' (§5.3, §8.1)."""
    code, rep = report(capsys, "--processor-text", f"stack: http\nurl: {function_server.url}/fail", "--point", "pre")
    assert code == 1
    assert rep["verdict"]["message"] == "Success Response not returned from AWS Lambda"


# -- aws-lambda stack through the local runner --------------------------------------------------------------------


@pytest.fixture(scope="module")
def lambda_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("runner"), region=REGION) as runner:
        yield {"AWS_ENDPOINT_URL_LAMBDA": runner.url, "AWS_ACCESS_KEY_ID": "AKIAINVOKETEST000001",
               "AWS_SECRET_ACCESS_KEY": "invoke-test-secret", "AWS_REGION": REGION,
               "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
               "AWS_EC2_METADATA_DISABLED": "true"}


def _lambda(name: str) -> str:
    return f"region: {REGION}\nfunctionARN: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}\nuseAssumeRole: false"


def test_aws_lambda_stack_modify_through_the_local_runner(lambda_env: dict[str, str]) -> None:
    """A real Lambda runtime (awslambdaric) answers; the verdict adds its header to the backend request."""
    done = invoke("--processor-text", _lambda("add_header"), "--point", "pre", "--path", "/x?api_key=k",
                  env=lambda_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "== verdict: MODIFY" in done.stdout
    assert "  + x-sidecar-added: by add_header" in done.stdout


def test_aws_lambda_stack_non_json_output_exits_1(lambda_env: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A function that returns non-JSON bytes: invalid output (§4.3 rule 1), exit 1."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in lambda_env.items():
        monkeypatch.setenv(name, value)
    code, rep = report(capsys, "--processor-text", _lambda("garbage"), "--point", "post")
    assert code == 1
    assert rep["validation"]["interpreter"]["error"] == "output is not UTF-8 JSON"
    assert rep["verdict"]["errorName"] == "InvalidResponseFromAWSLambdaInPostProcess"
