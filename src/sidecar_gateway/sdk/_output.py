"""Builders of contract §4 outputs: ``allow()``, ``modify(...)``, ``terminate(...)`` and the §9.1 hints.

Every builder returns a plain ``dict`` (what a Lambda handler returns) and validates it with
``output_problems(point=None)`` before returning, so a forbidden header or a bad status fails at the line
that built it, with ``InvalidOutput``.  Python names are snake_case; the contract's member names
(``addHeaders``, ``completeWithCode`` …) are written in exactly this module.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ._validate import InvalidOutput, output_problems

__all__ = ["allow", "modify", "terminate", "unchanged_for", "unchanged_until"]


def _checked(output: dict[str, Any]) -> dict[str, Any]:
    problems = output_problems(output, None)
    if problems:
        raise InvalidOutput(problems)
    return output


def _body_members(target: dict[str, Any], json_value: Any, payload: str | bytes | None,
                  base64_encoded: bool | None) -> None:
    """§4.2 body members; ``bytes`` payloads are base64-encoded here and flagged (§4.4 step 4)."""
    if payload is not None:
        if isinstance(payload, bytes | bytearray):
            if base64_encoded is False:
                raise InvalidOutput(["a bytes payload is always sent base64-encoded; drop base64_encoded=False"])
            target["payload"] = base64.b64encode(bytes(payload)).decode("ascii")
            target["base64Encoded"] = True
        else:
            target["payload"] = payload
            if base64_encoded is not None:
                target["base64Encoded"] = base64_encoded
    elif base64_encoded is not None:
        target["base64Encoded"] = base64_encoded
    if json_value is not None:  # §4.4: json wins over payload
        target["json"] = json_value


def allow() -> dict[str, Any]:
    """§4.1 ``{}``: continue unchanged."""
    return {}


def modify(
    *,
    add_headers: Mapping[str, str] | None = None,
    drop_headers: Iterable[str] | None = None,
    json: Any = None,
    payload: str | bytes | None = None,
    base64_encoded: bool | None = None,
    complete_with_code: int | None = None,
    change_route: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """§4.2 ``{"modify": {...}}``.

    ``add_headers`` → ``addHeaders`` (set, replacing every value of the name); ``drop_headers`` →
    ``dropHeaders``; ``json`` → replacement body serialised by the gateway (wins over ``payload``);
    ``payload`` → replacement body (``bytes`` are sent base64-encoded automatically; a ``str`` with
    ``base64_encoded=True`` must already be base64); ``complete_with_code`` → response status (post only,
    ignored at pre); ``change_route`` → ``{"uri": ..., "httpVerb": ...}`` ([ext] pre only, §4.4 step 3).
    """
    body: dict[str, Any] = {}
    if drop_headers is not None:
        body["dropHeaders"] = [drop_headers] if isinstance(drop_headers, str) else list(drop_headers)
    if add_headers is not None:
        body["addHeaders"] = dict(add_headers)
    _body_members(body, json, payload, base64_encoded)
    if complete_with_code is not None:
        body["completeWithCode"] = complete_with_code
    if change_route is not None:
        body["changeRoute"] = dict(change_route)
    return _checked({"modify": body})


def terminate(
    code: int,
    message: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    payload: str | bytes | None = None,
    base64_encoded: bool | None = None,
) -> dict[str, Any]:
    """§4.2 ``{"terminate": {...}}``: end the call with status ``code`` (200–599).

    Without ``json``/``payload`` the gateway renders an error body from ``message`` (§6.2); ``headers`` →
    ``addHeaders`` set on the response; ``json`` wins over ``payload``.
    """
    body: dict[str, Any] = {"code": code}
    if message is not None:
        body["message"] = message
    if headers is not None:
        body["addHeaders"] = dict(headers)
    _body_members(body, json, payload, base64_encoded)
    return _checked({"terminate": body})


def unchanged_for(ms: int, output: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """[ext] §9.1 hint: the same input yields the same output for ``ms`` milliseconds.

    ``unchanged_for(60_000, modify(...))`` returns a copy of the output with ``unchangedFor``; without
    ``output`` it returns ``{"unchangedFor": ms}`` (an allow that may be cached).
    """
    if type(ms) is not int or ms <= 0:
        raise ValueError("unchanged_for needs a positive integer number of milliseconds")
    return {**(output or {}), "unchangedFor": ms}


def unchanged_until(when: datetime, output: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """[ext] §9.1 hint with an absolute expiry; ``when`` must be timezone-aware (RFC 3339 needs an offset)."""
    if when.tzinfo is None:
        raise ValueError("unchanged_until needs a timezone-aware datetime (RFC 3339 demands an offset)")
    return {**(output or {}), "unchangedUntil": when.isoformat()}
