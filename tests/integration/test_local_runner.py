"""The local Lambda runner against real callers (boto3) and the real runtime client (awslambdaric).

One runner per module, SigV4 verification on, functions from ``tests/functions`` (manifest + discovery).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from sidecar_gateway.localrunner import Defaults, ManifestError, load_functions
from support.lambda_runner import (
    FUNCTIONS_DIR,
    TEST_ACCESS_KEY,
    TEST_CREDENTIALS,
    TEST_REGION,
    TEST_SECRET_KEY,
    LambdaRunner,
    process_is_gone,
    run_lambda_runner,
)

ACCOUNT = "123456789012"  # the runner's default account id (DEFAULT_ACCOUNT_ID)
# Bounds for polling (event invocations, environment state); generous for a loaded CI machine.
POLL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LambdaRunner]:
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("runner"),
                           credentials=TEST_CREDENTIALS) as started:
        yield started


@pytest.fixture(scope="module")
def client(runner: LambdaRunner) -> Any:
    return runner.lambda_client()


def invoke(client: Any, function: str, event: Any = None, **kwargs: Any) -> tuple[dict[str, Any], bytes]:
    response = client.invoke(FunctionName=function, Payload=json.dumps(event if event is not None else {}), **kwargs)
    return response, response["Payload"].read()


def record_of(runner: LambdaRunner, request_id: str) -> dict[str, Any]:
    return next(r for r in runner.invocations() if r["request_id"] == request_id)


def wait_for(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def signed_post(runner: LambdaRunner, path: str, body: bytes, *, secret: str = TEST_SECRET_KEY,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST ``path`` (sent exactly as given, already percent-encoded) signed by botocore's SigV4Auth."""
    request = AWSRequest(method="POST", url=runner.url + path, data=body, headers=headers or {})
    SigV4Auth(Credentials(TEST_ACCESS_KEY, secret), "lambda", TEST_REGION).add_auth(request)
    prepared = urllib.request.Request(runner.url + path, data=body, method="POST",
                                      headers=dict(request.headers.items()))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(prepared, timeout=30) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


# -- Invoke: results -----------------------------------------------------------------------------------------------


def test_invoke_by_name_returns_the_function_result(client: Any) -> None:
    """RequestResponse by plain name: 200, the handler's JSON, executed version $LATEST."""
    response, body = invoke(client, "allow")
    assert response["StatusCode"] == 200
    assert json.loads(body) == {}
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response


def test_invoke_by_full_arn_with_qualifier_reaches_the_function(client: Any, runner: LambdaRunner) -> None:
    """A full ARN with a qualifier (``:`` URL-encoded by botocore) names the function; the context sees the ARN."""
    arn = f"arn:aws:lambda:{TEST_REGION}:{ACCOUNT}:function:whoami:prod"
    response, body = invoke(client, arn)
    result = json.loads(body)
    assert result["invoked_function_arn"] == arn
    assert result["function_name"] == "whoami"
    assert result["memory_limit_in_mb"] == "256"  # from the manifest
    assert result["greeting"] == "hello from the manifest"
    assert 0 < result["remaining_ms"] <= 3000
    record = record_of(runner, response["ResponseMetadata"]["RequestId"])
    assert (record["function"], record["qualifier"]) == ("whoami", "prod")
    assert "%3A" in record["raw_path"]


def test_invoke_by_partial_arn_and_qualifier_parameter(client: Any, runner: LambdaRunner) -> None:
    """``account:function:name`` plus the ``Qualifier`` query parameter is accepted."""
    response, body = invoke(client, f"{ACCOUNT}:function:echo_json", {"hello": "world"}, Qualifier="$LATEST")
    assert json.loads(body) == {"modify": {"json": {"hello": "world"}}}
    assert record_of(runner, response["ResponseMetadata"]["RequestId"])["qualifier"] == "$LATEST"


def test_double_encoded_function_name_is_accepted(runner: LambdaRunner) -> None:
    """A path whose ':' arrives double-encoded (%253A) still names the function, and its signature verifies."""
    status, headers, body = signed_post(runner, "/2015-03-31/functions/allow%253Aprod/invocations", b"{}")
    assert status == 200, body
    assert json.loads(body) == {}
    assert headers["X-Amz-Executed-Version"] == "$LATEST"


def test_echo_handler_sees_the_event_unchanged(client: Any) -> None:
    """The event bytes reach the handler as sent (echoed back inside modify.addHeaders)."""
    event = {"point": "PreProcessor", "request": {"headers": {"authorization": "Bearer x"}}, "n": [1, 2.5, None]}
    _, body = invoke(client, "echo", event)
    assert json.loads(json.loads(body)["modify"]["addHeaders"]["X-Echo-Event"]) == event


def test_non_json_bytes_result_is_returned_unchanged(client: Any) -> None:
    """A handler returning bytes (after printing garbage) gets its bytes back verbatim, no function error."""
    response, body = invoke(client, "garbage")
    assert body == b"this is <not> JSON {"
    assert "FunctionError" not in response


def test_empty_payload_reaches_the_handler_as_an_empty_object(client: Any) -> None:
    response = client.invoke(FunctionName="echo_json")
    assert json.loads(response["Payload"].read()) == {"modify": {"json": {}}}


# -- Invoke: invocation types ------------------------------------------------------------------------------------------


def test_event_invocation_answers_202_and_runs_the_function(client: Any, tmp_path: Path) -> None:
    """Event: 202 with an empty body at once; the function runs in the background."""
    target = tmp_path / "event.json"
    response, body = invoke(client, "write_file", {"path": str(target), "content": "ran"}, InvocationType="Event")
    assert response["StatusCode"] == 202
    assert body == b""
    wait_for(target.exists, "the event function to write its file")
    assert json.loads(target.read_text())["content"] == "ran"


def test_dry_run_answers_204_without_running(client: Any, runner: LambdaRunner, tmp_path: Path) -> None:
    target = tmp_path / "dry-run.json"
    response, _ = invoke(client, "write_file", {"path": str(target)}, InvocationType="DryRun")
    assert response["StatusCode"] == 204
    time.sleep(0.2)
    assert not target.exists()


# -- Invoke: function failures -------------------------------------------------------------------------------------


def test_function_exception_returns_the_runtime_error_document(client: Any) -> None:
    """A raising handler: 200, X-Amz-Function-Error Unhandled, awslambdaric's errorMessage/errorType/stackTrace."""
    response, body = invoke(client, "raise_error", {"message": "no entry"})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    document = json.loads(body)
    assert document["errorType"] == "SidecarFailure"
    assert document["errorMessage"] == "no entry"
    assert any("raise_error.py" in frame for frame in document["stackTrace"])


def test_unserialisable_result_is_a_marshal_error(client: Any) -> None:
    response, body = invoke(client, "unserialisable")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(body)["errorType"] == "Runtime.MarshalError"


def test_import_error_is_answered_with_the_init_error_document(client: Any) -> None:
    response, body = invoke(client, "broken_import")
    assert response["FunctionError"] == "Unhandled"
    document = json.loads(body)
    assert document["errorType"] == "Runtime.ImportModuleError"
    assert "module_that_does_not_exist" in document["errorMessage"]


def test_timeout_kills_the_runaway_handler_and_its_children(client: Any, runner: LambdaRunner,
                                                            tmp_path: Path) -> None:
    """Past the manifest timeout (1 s) the process group is killed before the Sandbox.Timedout answer."""
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    response, body = invoke(client, "sleepy", {"seconds": 30, "pid_file": str(pid_file)})
    assert time.monotonic() - started < 5
    assert response["FunctionError"] == "Unhandled"
    document = json.loads(body)
    request_id = response["ResponseMetadata"]["RequestId"]
    assert document == {"errorType": "Sandbox.Timedout",
                        "errorMessage": f"{request_id} Task timed out after 1.00 seconds"}
    runtime_pid, child_pid = map(int, pid_file.read_text().split())
    assert process_is_gone(runtime_pid)
    wait_for(lambda: process_is_gone(child_pid), "the handler's child to die with its group")
    assert all(env["pid"] != runtime_pid for env in runner.environments())
    assert f"REPORT RequestId: {request_id}" in runner.logs()


# -- Invoke: service errors ----------------------------------------------------------------------------------------


def test_unknown_function_is_404_resource_not_found(client: Any) -> None:
    with pytest.raises(ClientError) as raised:
        client.invoke(FunctionName="no_such_function", Payload=b"{}")
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "ResourceNotFoundException"
    assert error["Error"]["Message"] == (
        f"Function not found: arn:aws:lambda:{TEST_REGION}:{ACCOUNT}:function:no_such_function")


def test_unknown_function_body_is_lambda_json(runner: LambdaRunner) -> None:
    status, headers, body = signed_post(runner, "/2015-03-31/functions/nope/invocations", b"{}")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    assert json.loads(body) == {"Type": "User",
                                "message": f"Function not found: arn:aws:lambda:{TEST_REGION}:{ACCOUNT}:function:nope"}


def test_invalid_json_payload_is_400_invalid_request_content(client: Any) -> None:
    with pytest.raises(ClientError) as raised:
        client.invoke(FunctionName="allow", Payload=b"{not json")
    assert raised.value.response["Error"]["Code"] == "InvalidRequestContentException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_concurrency_limit_answers_429_too_many_requests(client: Any, runner: LambdaRunner) -> None:
    """``single`` allows one environment: a second concurrent RequestResponse call is throttled, not queued."""
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(result=invoke(client, "single", {"seconds": 1.5})))
    thread.start()
    try:
        wait_for(lambda: any(env["function"] == "single" and env["state"] == "running"
                             for env in runner.environments()), "the first call to run")
        with pytest.raises(ClientError) as raised:
            invoke(client, "single", {"seconds": 0})
        error = raised.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert error["Error"]["Code"] == "TooManyRequestsException"
        assert error["Error"]["Message"] == "Rate Exceeded."
    finally:
        thread.join(timeout=POLL_TIMEOUT_S)
    response, body = first["result"]
    assert "FunctionError" not in response
    assert json.loads(body)["slept"] == 1.5


# -- environments ----------------------------------------------------------------------------------------------


def test_warm_environment_is_reused_for_sequential_calls(client: Any) -> None:
    """Cold start once, then the same process (pid) serves the next call."""
    first = json.loads(invoke(client, "whoami")[1])["pid"]
    second = json.loads(invoke(client, "whoami")[1])["pid"]
    assert first == second


def test_concurrent_calls_get_separate_environments(client: Any) -> None:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        json.loads(invoke(client, "sleepy", {"seconds": 0.3})[1])["pid"])) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=POLL_TIMEOUT_S)
    assert len(results) == 2
    assert results[0] != results[1]


# -- SigV4 and introspection -------------------------------------------------------------------------------------


def test_sigv4_with_a_bad_secret_is_403_invalid_signature(runner: LambdaRunner) -> None:
    bad = runner.lambda_client(secret_key="not-the-secret")
    with pytest.raises(ClientError) as raised:
        bad.invoke(FunctionName="allow", Payload=b"{}")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_sigv4_with_an_unknown_access_key_is_403_unrecognized_client(runner: LambdaRunner) -> None:
    stranger = runner.lambda_client(access_key="AKIAUNKNOWN000000000")
    with pytest.raises(ClientError) as raised:
        stranger.invoke(FunctionName="allow", Payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_tampered_body_fails_signature_verification(runner: LambdaRunner) -> None:
    request = AWSRequest(method="POST", url=runner.url + "/2015-03-31/functions/allow/invocations", data=b"{}")
    SigV4Auth(Credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY), "lambda", TEST_REGION).add_auth(request)
    prepared = urllib.request.Request(request.url, data=b'{"x":1}', method="POST",
                                      headers=dict(request.headers.items()))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(prepared, timeout=10)
    assert raised.value.code == 403
    assert raised.value.headers["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_invocations_record_access_key_security_token_and_payload(runner: LambdaRunner) -> None:
    """/_runner/invocations tells other tests what a caller sent (here: session credentials)."""
    with_token = runner.lambda_client(session_token="FwoGZXIvYXdzEXAMPLETOKEN")
    response = with_token.invoke(FunctionName="allow", Payload=b'{"probe": 1}', InvocationType="Event")
    record = record_of(runner, response["ResponseMetadata"]["RequestId"])
    assert record["function"] == "allow"
    assert record["invocation_type"] == "Event"
    assert record["access_key"] == TEST_ACCESS_KEY
    assert record["has_security_token"] is True
    assert record["signature_verified"] is True
    assert record["payload"] == {"probe": 1}
    assert record["status"] == 202


# -- logs ----------------------------------------------------------------------------------------------------------


def test_logs_wrap_function_output_in_start_end_report(client: Any, runner: LambdaRunner) -> None:
    response, _ = invoke(client, "garbage")
    request_id = response["ResponseMetadata"]["RequestId"]
    lines = [line for line in runner.logs().splitlines() if line.startswith("[garbage] ")]
    start = lines.index(f"[garbage] START RequestId: {request_id} Version: $LATEST")
    end = lines.index(f"[garbage] END RequestId: {request_id}")
    report = lines[end + 1]
    assert start < end
    assert any("garbage" in line and "\\x1b" in line for line in lines[start + 1:end])  # escaped, not interpreted
    assert report.startswith(f"[garbage] REPORT RequestId: {request_id}\tDuration: ")
    for field in ("Billed Duration: ", "Memory Size: 128 MB", "Max Memory Used: "):
        assert field in report


def test_a_handler_printing_megabytes_does_not_block(client: Any, runner: LambdaRunner) -> None:
    started = time.monotonic()
    response, body = invoke(client, "chatty", {"lines": 20_000})
    assert json.loads(body) == {"printed": 20_000}
    assert time.monotonic() - started < 10
    logs = runner.logs()
    request_id = response["ResponseMetadata"]["RequestId"]
    assert logs.index("[chatty] 19999 ") < logs.index(f"[chatty] END RequestId: {request_id}")


def test_log_type_tail_returns_the_last_log_lines(client: Any) -> None:
    response = client.invoke(FunctionName="chatty", Payload=b'{"lines": 3}', LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    assert "00002 " in tail
    assert f"END RequestId: {response['ResponseMetadata']['RequestId']}" in tail


# -- shutdown and manifest -----------------------------------------------------------------------------------------


def test_stop_kills_every_runtime_process(tmp_path: Path) -> None:
    """SIGTERM to the runner kills busy and idle environments alike."""
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path) as own:
        own_client = own.lambda_client()
        invoke(own_client, "allow")  # an idle, warm environment
        invoke(own_client, "single", {"seconds": 30}, InvocationType="Event")  # a busy one
        def idle_and_running() -> list[dict[str, Any]] | None:
            environments = own.environments()
            return environments if sorted(env["state"] for env in environments) == ["idle", "running"] else None

        environments = wait_for(idle_and_running, "an idle and a busy environment")
        pids = [env["pid"] for env in environments]
        own.stop()
        assert own.process.returncode == 0
    assert all(process_is_gone(pid) for pid in pids)
    assert "Local Lambda runner stopped" in (tmp_path / "lambda-runner.log").read_text()


def test_manifest_overrides_discovery_and_sets_defaults() -> None:
    functions = load_functions(FUNCTIONS_DIR, Defaults(timeout_s=5, memory_mb=512, concurrency=2))
    assert functions["allow"].handler == "allow.handler"
    assert (functions["allow"].timeout_s, functions["allow"].memory_mb, functions["allow"].concurrency) == (5, 512, 2)
    assert functions["sleepy"].timeout_s == 1
    assert functions["single"].concurrency == 1
    assert functions["echo_json"].handler == "echo.as_json"
    assert dict(functions["whoami"].environment) == {"GREETING": "hello from the manifest"}


@pytest.mark.parametrize("manifest, message", [
    ("fn: {handler: 'no-dots'}", "is not 'module.function'"),
    ("fn: {handler: m.f, timeout: 0}", "timeout must be"),
    ("fn: {handler: m.f, memory: 64}", "memory must be"),
    ("fn: {handler: m.f, colour: red}", "unknown keys"),
    ("[1, 2]", "top level must map"),
])
def test_invalid_manifest_is_refused_with_its_reason(tmp_path: Path, manifest: str, message: str) -> None:
    (tmp_path / "functions.yaml").write_text(manifest)
    with pytest.raises(ManifestError, match=message):
        load_functions(tmp_path)
