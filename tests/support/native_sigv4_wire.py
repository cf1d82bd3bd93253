"""Raw-socket servers and client for tests/integration/test_native_lane_sigv4.py (the native lane's signed Lambda
Invoke).

* ``RawServer``: tests/support/native_wire.py's asyncio TCP server on one loopback port in a daemon thread.  It
  records every request exactly as received (``Received``: head bytes, body bytes, connection serial number)
  *before* answering it by ``answer(head)``, so a request is recorded by the time the gateway's client answer
  arrives.  ``take()`` returns and clears the records.
* ``LambdaStub``: answers a Lambda Invoke by the function name in its path (``/2015-03-31/functions/<percent-encoded
  ARN>/invocations``): the name without qualifier, looked up in ``LAMBDA_ANSWERS``.
* ``PlainBackend``: answers every request ``200`` with a fixed body.
* ``RawConnection``, ``Answer``: the keep-alive raw client of tests/support/native_wire.py, here with no byte allowed
  to wait before a request (``keep_stray = False``).
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from support import native_wire
from support.native_wire import Answer, Received

__all__ = ["LAMBDA_ANSWERS", "Answer", "LambdaStub", "PlainBackend", "RawConnection", "RawServer", "Received",
           "function_name"]


def http_answer(status_line: bytes, headers: list[bytes], body: bytes) -> bytes:
    head = status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


_JSON = b"Content-Type: application/json"
FN_ERROR_BODY = b'{"errorMessage":"boom","errorType":"ValueError","stackTrace":["at x"]}'
# function name (without qualifier) -> the whole Invoke answer
LAMBDA_ANSWERS: dict[str, bytes] = {
    "allow": http_answer(b"HTTP/1.1 200 OK", [_JSON, b"X-Amzn-RequestId: 11111111-2222-3333-4444-555555555555"],
                         b"{}"),
    "terminate": http_answer(b"HTTP/1.1 200 OK", [_JSON],
                             b'{"terminate": {"code": 403, "message": "Denied by the function",'
                             b' "addHeaders": {"X-Denied-By": "lambda"}}}'),
    "modify": http_answer(b"HTTP/1.1 200 OK", [_JSON],
                          b'{"modify": {"addHeaders": {"X-Added": "by-lambda"}, "dropHeaders": ["x-drop-me"]}}'),
    "fn-error": http_answer(b"HTTP/1.1 200 OK", [_JSON, b"X-Amz-Function-Error: Unhandled"], FN_ERROR_BODY),
    "aws-500": http_answer(b"HTTP/1.1 500 Internal Server Error", [_JSON], b'{"message": "boom"}'),
    "empty": http_answer(b"HTTP/1.1 200 OK", [_JSON], b""),
}
BACKEND_ANSWER = http_answer(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain", b"X-Backend: plain"],
                             b"backend answer\n")


class RawServer(native_wire.RawServer):
    """tests/support/native_wire.py's recording server on one port, answering each request with the bytes
    ``answer(head)`` returns and keeping the connection open."""

    async def _answer(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(self.answer(head))
        await writer.drain()
        return True

    def answer(self, head: bytes) -> bytes:
        raise NotImplementedError


def function_name(head: bytes) -> str:
    """The Invoke's FunctionName without its qualifier (``arn:...:function:NAME[:QUALIFIER]`` -> ``NAME``)."""
    target = head.split(b" ", 2)[1].decode("latin-1")
    encoded = target.split("/functions/", 1)[1].split("/", 1)[0]
    return unquote(encoded).split(":function:", 1)[1].split(":", 1)[0]


class LambdaStub(RawServer):
    thread_name = "lambda-stub"

    def answer(self, head: bytes) -> bytes:
        try:
            return LAMBDA_ANSWERS[function_name(head)]
        except (IndexError, KeyError):
            return http_answer(b"HTTP/1.1 404 Not Found", [_JSON], b'{"message": "Function not found"}')


class PlainBackend(RawServer):
    thread_name = "plain-backend"

    def answer(self, head: bytes) -> bytes:
        if head.startswith(b"HEAD "):
            return BACKEND_ANSWER[: BACKEND_ANSWER.index(b"\r\n\r\n") + 4]
        return BACKEND_ANSWER


class RawConnection(native_wire.RawConnection):
    keep_stray = False  # a byte waiting before a request is an error here
