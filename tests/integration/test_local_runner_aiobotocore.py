"""The local Lambda runner answers the async AWS SDK (aiobotocore) like AWS does, not only boto3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.config import Config

from support.lambda_runner import FUNCTIONS_DIR, TEST_ACCESS_KEY, TEST_CREDENTIALS, TEST_SECRET_KEY, run_lambda_runner


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with run_lambda_runner(FUNCTIONS_DIR, log_dir=tmp_path_factory.mktemp("aiob"), credentials=TEST_CREDENTIALS) as r:
        yield r


def _client(runner: Any) -> Any:
    return get_session().create_client(
        "lambda", endpoint_url=runner.url, region_name=runner.region, aws_access_key_id=TEST_ACCESS_KEY,
        aws_secret_access_key=TEST_SECRET_KEY, config=Config(retries={"total_max_attempts": 1}))


@pytest.mark.asyncio
async def test_aiobotocore_request_response_and_function_error(runner: Any) -> None:
    """A signed RequestResponse call returns the function's output; a raising function gives FunctionError."""
    async with _client(runner) as client:
        ok = await client.invoke(FunctionName=f"arn:aws:lambda:{runner.region}:123456789012:function:add_header:prod",
                                 Payload=json.dumps({"point": "PreProcessor"}).encode())
        body = json.loads(await ok["Payload"].read())
        assert ok["StatusCode"] == 200 and "FunctionError" not in ok
        assert body == {"modify": {"addHeaders": {"X-Sidecar-Added": "by add_header"}}}
        failed = await client.invoke(FunctionName="raise_error", Payload=b'{"message": "nope"}')
        error = json.loads(await failed["Payload"].read())
        assert failed["FunctionError"] == "Unhandled"
        assert error["errorType"] == "SidecarFailure" and error["errorMessage"] == "nope"
    assert runner.invocations()[-1]["signature_verified"] is True


@pytest.mark.asyncio
async def test_aiobotocore_event_invocation_is_accepted(runner: Any) -> None:
    """InvocationType Event answers 202 at once."""
    async with _client(runner) as client:
        resp = await client.invoke(FunctionName="allow", InvocationType="Event", Payload=b"{}")
        assert resp["StatusCode"] == 202
