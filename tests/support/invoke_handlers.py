"""``python``-stack handlers for the ``sidecar-gateway invoke`` tests (contract §8.2), written with the SDK."""

from __future__ import annotations

from typing import Any

from sidecar_gateway.sdk import SidecarInput, modify, sidecar, terminate


@sidecar
def tag_user(inp: SidecarInput, context: Any) -> dict[str, Any]:
    """Pre: requires a bearer token, adds X-User to the backend request and drops X-Debug; 401 without one."""
    token = inp.request_headers.get("authorization")
    if token is None:
        return terminate(401, "token required", headers={"WWW-Authenticate": "Bearer"})
    body = inp.request_body.json() if inp.request_body is not None else {}
    return modify(add_headers={"X-User": token}, drop_headers=["X-Debug"], json={**body, "user": token})


@sidecar
def mask_email(inp: SidecarInput, context: Any) -> dict[str, Any]:
    """Post: replaces the response body's email with a mask and completes with 203."""
    assert inp.response_body is not None
    doc = inp.response_body.json()
    doc["email"] = "***"
    return modify(json=doc, complete_with_code=203, add_headers={"X-Masked": "email"})


def forbidden_header(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Invalid output (§4.3 rule 4): sets Content-Length; deliberately not decorated."""
    return {"modify": {"addHeaders": {"Content-Length": "5"}}}


def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Function error (§5.3, 502)."""
    raise RuntimeError("database unreachable")
