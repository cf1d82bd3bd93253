"""What the native lane (native/lane.py, _lane.c) needs from the gateway, rendered the Python lane's way.

* ``error_replies``: an endpoint's 502 and 504 as whole responses (``render_error`` → ``_Responder.reply`` →
  ``_Cycle._encode_head``), rendered once per configuration load.
* ``terminate_decider``: for a pre-processor the lane calls itself, the function that turns an answer other than
  a plain allow into a whole response when it is a terminate (the Python lane's ``_termination_reply``), counting
  what the decision procedure counts; None for anything else, which the lane hands to the Python lane.  The same
  answer is decided once (``MEMO_ENTRIES``).

``encode_reply`` is the one encoder: the bytes ``_Cycle.respond`` writes for a whole response on a keep-alive
connection, or None when the Python lane would do something else with these headers (close the connection,
other framing, a header its check refuses, an unknown status).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..errors import BackendFailure, ErrorCode
from .app import GatewayApp
from .protocol import _HEAD_LINES  # the Python lane's check of an encoded header block
from .responses import render_error
from .runtime import EndpointRuntime

__all__ = ["encode_reply", "error_replies", "terminate_decider"]

MEMO_ENTRIES = 256  # per processor: distinct terminate answers remembered (a function answers a few kinds)
MEMO_BODY_MAX = 4096
"""A terminate's reply depends only on the answer (status, function-error flag, body) and the configuration:
``interpret_output`` reads the clock only for §9.1 cache hints, and a verdict with one is never answered here
(an answer mentioning ``cache`` is not even remembered).  So the same answer is decided once and remembered."""

_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def encode_reply(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes | None:
    line = STATUS_LINE.get(status)
    if line is None:
        return None
    lines = []
    for name, value in headers:
        name = name.lower()
        if name in _FRAMING:
            return None
        lines.append(name + b": " + value + b"\r\n")
    lines.append(b"content-length: %d\r\n" % len(body))
    block = b"".join(lines)
    if _HEAD_LINES.fullmatch(block) is None or block.count(b"\n") != len(lines):
        return None
    return line + block + b"\r\n" + body


def error_replies(endpoint: Any) -> tuple[bytes, bytes]:
    """The endpoint's rendered 502 (backend unavailable) and 504 (backend timeout)."""
    out = []
    for code in (ErrorCode.BACKEND_UNAVAILABLE, ErrorCode.BACKEND_TIMEOUT):
        reply = render_error(BackendFailure(code), endpoint)
        encoded = encode_reply(reply.status, reply.headers, reply.body)
        if encoded is None:
            raise ValueError(f"error reply of {endpoint.endpoint_id} cannot be encoded")
        out.append(encoded)
    return out[0], out[1]


def terminate_decider(epr: EndpointRuntime) -> Callable[[tuple[Any, ...], float], tuple[int, bytes] | None]:
    sidecar = epr.sidecar
    assert sidecar is not None and sidecar.pre is not None
    processor = sidecar.pre
    endpoint = epr.plan
    use_error_set = sidecar.pre_error_set

    memo: dict[tuple[int, int, bytes], tuple[Any, int, bytes]] = {}

    def decide(result: tuple[Any, ...], elapsed: float) -> tuple[int, bytes] | None:
        key = (result[1], result[4], result[3]) if result[0] is None else None
        hit = memo.get(key) if key is not None else None
        if hit is None:
            verdict = processor.native_verdict(result)
            if verdict is None:
                return None
            reply = GatewayApp._termination_reply(verdict.termination, endpoint, use_error_set)
            encoded = encode_reply(reply.status, list(reply.headers), reply.body)
            if encoded is None:
                return None
            hit = (verdict, reply.status, encoded)
            if key is not None and len(key[2]) <= MEMO_BODY_MAX and b"cache" not in key[2]:
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[key] = hit
        processor.native_count(hit[0], elapsed)
        return hit[1], hit[2]

    return decide
