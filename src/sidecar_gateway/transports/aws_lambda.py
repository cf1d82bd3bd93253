"""The ``aws-lambda`` transport: one Lambda ``Invoke`` per call, signed by our SigV4 signer (contract §7).

Rules of this file:

* The request is the one botocore's ``lambda.invoke`` sends (§7.1): ``POST
  /2015-03-31/functions/{FunctionName}/invocations`` with ``FunctionName`` percent-encoded as botocore's
  REST serializer does (everything but ``A-Za-z0-9-._~``), ``X-Amz-Invocation-Type``, the body as-is; plus
  ``Content-Type: application/json`` which §7.1 demands (botocore sends none).  Signed with SigV4, service
  ``lambda``, region ``conn.region``: the signing region never changes with an endpoint override (§7.5).
* Everything derivable is computed once at construction: endpoint (``AWS_ENDPOINT_URL_LAMBDA``, else
  ``AWS_ENDPOINT_URL``, else the regional endpoint), the invoke URL, the encoded header pairs.
* The answer is mapped by one table-like function (``classify``, §7.2 / §5.3).  Transport failures of the pool
  become ``CONNECTION_FAILURE``.  No retries (§5.3); the caller's ``asyncio.timeout`` is the deadline.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..config.plan import AwsLambdaConnection
from ..errors import ErrorCode, InvocationError
from .aws_credentials import AwsCredentialProvider
from .base import InvocationType, InvokeResult, ResultKind
from .http import INJECTED
from .http11 import encode_request_head, split_url
from .pool import ConnectError, HttpClient, ReadError
from .sigv4 import PreparedSigner, authorization, credential_scope, signing_key

__all__ = ["AwsLambdaTransport", "classify", "invoke_url", "lambda_endpoint"]

logger = logging.getLogger(__name__)

SERVICE = "lambda"  # SigV4 service name and endpoint prefix
INVOKE_API_VERSION = "2015-03-31"  # the Lambda API version in the Invoke path
# botocore ``percent_encode`` for a non-greedy URI label: only RFC 3986 unreserved characters stay as they are,
# so ':' and '/' of an ARN are encoded (``arn%3Aaws%3Alambda…``).
_LABEL_SAFE = "-._~"
_FUNCTION_ERROR = b"x-amz-function-error"
_CONTENT_TYPE = ("Content-Type", "application/json")
_INVOCATION_TYPE = "X-Amz-Invocation-Type"


def lambda_endpoint(region: str, environ: Mapping[str, str] = os.environ) -> str:
    """§7.5: ``AWS_ENDPOINT_URL_LAMBDA``, else ``AWS_ENDPOINT_URL``, else the regional endpoint."""
    for variable in ("AWS_ENDPOINT_URL_LAMBDA", "AWS_ENDPOINT_URL"):
        value = environ.get(variable, "").strip()
        if value:
            return value.rstrip("/")
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{SERVICE}.{region}.{suffix}"


def invoke_url(endpoint: str, function_name: str) -> str:
    """The Invoke URL exactly as botocore builds it (§7.1): ``FunctionName`` percent-encoded once."""
    return f"{endpoint}/{INVOKE_API_VERSION}/functions/{quote(function_name, safe=_LABEL_SAFE)}/invocations"


def _aws_error_message(body: bytes) -> str:
    """The ``message`` / ``Message`` of a Lambda error document, or "" when there is none (§7.2)."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    for member in ("message", "Message"):
        value = document.get(member)
        if isinstance(value, str) and value:
            return value
    return ""


def classify(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
             invocation_type: InvocationType) -> InvokeResult:
    """Map an Invoke answer to an outcome (§7.2, §5.3, Q15), or raise the failure."""
    if invocation_type is InvocationType.EVENT:
        if status in (200, 202):
            return InvokeResult.accepted()
    elif status == 200:
        for name, value in headers:
            if name == _FUNCTION_ERROR:
                return InvokeResult(ResultKind.FUNCTION_ERROR, body, value.decode("latin-1"))
        return InvokeResult(ResultKind.OUTPUT, body)
    elif status == 202:
        return InvokeResult.accepted()
    message = _aws_error_message(body)
    if message:
        raise InvocationError(ErrorCode.AWS_ERROR, detail=message)
    raise InvocationError(ErrorCode.UNEXPECTED_STATUS, detail=f"status {status}")


class AwsLambdaTransport:
    """One Lambda function (a processor's ``aws-lambda`` connection)."""

    def __init__(self, conn: AwsLambdaConnection, client: HttpClient, credentials: AwsCredentialProvider) -> None:
        self._conn = conn
        self._client = client
        self._credentials = credentials
        self.endpoint = lambda_endpoint(conn.region)
        self.url = invoke_url(self.endpoint, conn.function_arn)
        self._headers = {t: [(_INVOCATION_TYPE, t.value), _CONTENT_TYPE] for t in InvocationType}
        self._wire = {t: [(k.encode("latin-1"), v.encode("latin-1")) for k, v in h] for t, h in self._headers.items()}
        self._signers = {t: PreparedSigner("POST", self.url, h) for t, h in self._headers.items()}  # sign() per call

    def __repr__(self) -> str:
        return f"<AwsLambdaTransport {self._conn.function_arn} via {self.endpoint}>"

    def native_signer(self, payload: bytes, placeholder: str) -> Callable[[list[Any]], bool] | None:
        """For the native lane: a function that fills its signer cell ``[valid until (epoch s), state, itself]``
        from the credentials cached right now (``AwsCredentialProvider.cached``) and the current UTC day, or
        returns False (the Python lane serves the call and fetches them).  The state lets ``_lane.c`` produce the
        exact request ``invoke`` sends: the whole request with the date, the signature and the message id left
        as placeholders, and the SigV4 pieces that do not change within the state's life.  None for an https
        endpoint."""
        origin, target, host = split_url(self.url)
        if origin.scheme != "http":
            return None
        signer = self._signers[InvocationType.REQUEST_RESPONSE]
        date_mark, sig_mark = "YYYYMMDDTHHMMSSZ", "s" * 64

        def refresh(cell: list[Any]) -> bool:
            cached = self._credentials.cached(self._conn)
            if cached is None:
                return False
            credentials, valid_until = cached
            now = time.time()
            day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
            midnight = (int(now) // 86400 + 1) * 86400
            scope = credential_scope(day, self._conn.region, SERVICE)
            p1, p2, signed = signer.canonical_parts(credentials.token)
            added = [("X-Amz-Date", date_mark)]
            if credentials.token:
                added.append(("X-Amz-Security-Token", credentials.token))
            added.append(("Authorization", authorization(credentials.access_key, scope, signed, sig_mark)))
            wire = [*self._wire[InvocationType.REQUEST_RESPONSE],
                    *((k.encode("latin-1"), v.encode("latin-1")) for k, v in added)]
            head = encode_request_head("POST", target, wire, host, payload, False).data
            mark = placeholder.encode()
            mids = tuple(len(head) + i for i in _all(payload, mark))
            cell[1] = (head + payload, mids, head.index(date_mark.encode()), head.index(sig_mark.encode()), len(head),
                       p1.encode(), p2.encode(), f"\n{scope}\n".encode(),
                       signing_key(credentials.secret_key, day, self._conn.region, SERVICE))
            cell[0] = float(min(valid_until, midnight))
            return True

        return refresh

    @staticmethod
    def classify_native(result: tuple[Any, ...], invocation_type: InvocationType = InvocationType.REQUEST_RESPONSE,
                        ) -> InvokeResult:
        """``classify`` of an answer the native lane received (``INJECTED``), raising as ``invoke`` does."""
        kind = result[0]
        if kind == "timeout":
            raise TimeoutError
        if kind == "failure":
            raise InvocationError(ErrorCode.CONNECTION_FAILURE)
        return classify(result[1], result[2], result[3], invocation_type)

    async def invoke(self, payload: bytes, *, invocation_type: InvocationType, message_id: str,
                     deadline: float) -> InvokeResult:
        if INJECTED:
            injected = INJECTED.pop(message_id, None)
            if injected is not None:  # the native lane already called the function (transports/http.py INJECTED)
                return self.classify_native(injected, invocation_type)
        credentials = await self._credentials.for_connection(self._conn)
        added = self._signers[invocation_type].sign(payload, access_key=credentials.access_key,
                                                    secret_key=credentials.secret_key,
                                                    session_token=credentials.token, region=self._conn.region,
                                                    service=SERVICE, timestamp=datetime.now(UTC))
        wire = [*self._wire[invocation_type], *((k.encode("latin-1"), v.encode("latin-1")) for k, v in added)]
        try:
            response = await self._client.request("POST", self.url, wire, payload)
            body = await response.read()
        except (ConnectError, ReadError) as exc:
            logger.info("Lambda invoke %s for %s failed: %s", self._conn.function_arn, message_id, exc)
            raise InvocationError(ErrorCode.CONNECTION_FAILURE) from exc
        return classify(response.status, response.headers, body, invocation_type)

    async def aclose(self) -> None:
        """Nothing to close: the pool and the credential provider are shared and closed by their owner."""


def _all(data: bytes, mark: bytes) -> list[int]:
    """Every offset of ``mark`` in ``data``."""
    found, at = [], data.find(mark)
    while at >= 0:
        found.append(at)
        at = data.find(mark, at + 1)
    return found
