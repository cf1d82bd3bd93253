"""Applying a validated ``Modification`` to the backend request (pre) or the client response (post) — §4.4.

Rules of this file:

* Sans-IO (style rule 2): the functions mutate the ``BackendRequest`` / ``BackendResponse`` views in place
  and never fail: the output interpreter already validated everything (§4.3), so a ``Modification`` is
  always applicable.
* Headers stay ``list[tuple[bytes, bytes]]`` with lower-cased names (style rule 9).
* ``body is None`` on a view means "stream the original body unchanged"; it is only set when the body is
  replaced (``BackendRequest.body_replaced`` says so at pre).
* Framing is the gateway's (style rule 10): whenever a body is replaced, ``Content-Length`` is recomputed,
  ``Transfer-Encoding`` removed and ``Content-Encoding`` removed unless ``addHeaders`` set it (§4.4 step 6).

Theory of operation — the §4.4 step order:

1. ``dropHeaders`` then ``addHeaders`` (an added name replaces every value, so a name both dropped and added
   ends up present with the added value).  Both are done in one pass: every dropped or added name is
   filtered out, then the added fields are appended.
2. [pre] ``changeRoute``: scheme, host, port, path and query replaced; the ``Host`` header follows the new
   authority; ``httpVerb`` replaces the method.
3. body: ``json`` (already serialised) or ``payload`` (already decoded); a ``json`` body gets
   ``Content-Type: application/json`` unless ``addHeaders`` set one (§10 Q14); a ``payload`` body keeps
   the existing ``Content-Type``.
4. [post] ``completeWithCode`` becomes the status; for 204 and 304 the body is removed.
5. framing (step 6 of §4.4).
"""

from __future__ import annotations

from .call import BackendRequest, BackendResponse
from .verdict import ChangeRoute, Modification, Termination

__all__ = ["apply_to_request", "apply_to_response", "terminate_headers"]

NO_BODY_STATUSES = frozenset({204, 304})
"""§4.4 step 5 (RFC 9110 §15.3.5, §15.4.5): these responses carry no content, so the body is removed."""

_HOST = b"host"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_CONTENT_ENCODING = b"content-encoding"
_TRANSFER_ENCODING = b"transfer-encoding"
_APPLICATION_JSON = b"application/json"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _drop_and_add(headers: list[tuple[bytes, bytes]], mod: Modification) -> frozenset[bytes]:
    """§4.4 steps 2.1–2.2; returns the set of added names (needed by the Content-Type/Encoding rules)."""
    added = frozenset(name for name, _ in mod.add_headers)
    removed = mod.drop_headers | added
    if removed:
        headers[:] = [(n, v) for n, v in headers if n not in removed]
    headers.extend(mod.add_headers)
    return added


def _reframe(headers: list[tuple[bytes, bytes]], length: int | None, added: frozenset[bytes],
             json_body: bool) -> None:
    """§4.4 step 6 and the Content-Type rule.  ``length`` None: no content at all (204/304)."""
    removed = {_CONTENT_LENGTH, _TRANSFER_ENCODING}
    if _CONTENT_ENCODING not in added:
        removed.add(_CONTENT_ENCODING)
    set_json_type = json_body and _CONTENT_TYPE not in added
    if set_json_type:
        removed.add(_CONTENT_TYPE)
    headers[:] = [(n, v) for n, v in headers if n not in removed]
    if set_json_type:
        headers.append((_CONTENT_TYPE, _APPLICATION_JSON))
    if length is not None:
        headers.append((_CONTENT_LENGTH, str(length).encode("ascii")))


def _host_header(scheme: str, host: str, port: int) -> bytes:
    host_text = f"[{host}]" if ":" in host else host  # an IPv6 literal is bracketed in an authority
    if port == _DEFAULT_PORTS.get(scheme):
        return host_text.encode("ascii")
    return f"{host_text}:{port}".encode("ascii")


def _reroute(req: BackendRequest, route: ChangeRoute) -> None:
    """§4.4 step 3 [ext]: the interpreter already checked the authority against the permitted hosts."""
    if route.scheme is not None and route.host is not None and route.port is not None:
        req.scheme, req.host, req.port = route.scheme, route.host, route.port
        if route.path_qs is not None:
            req.path_qs = route.path_qs
        host = _host_header(req.scheme, req.host, req.port)
        for index, (name, _) in enumerate(req.headers):
            if name == _HOST:
                req.headers[index] = (_HOST, host)
                req.headers[index + 1:] = [(n, v) for n, v in req.headers[index + 1:] if n != _HOST]
                break
        else:
            req.headers.append((_HOST, host))
    if route.method is not None:
        req.method = route.method


def apply_to_request(mod: Modification, req: BackendRequest) -> None:
    """§4.4 at pre (and the header part at pre-flight, §9.3): change the backend request in place."""
    added = _drop_and_add(req.headers, mod)
    if mod.change_route is not None:
        _reroute(req, mod.change_route)
    if mod.body is not None:
        req.body = mod.body
        req.body_replaced = True
        _reframe(req.headers, len(mod.body), added, mod.body_is_json)


def apply_to_response(mod: Modification, resp: BackendResponse) -> None:
    """§4.4 at post: change the client response (status, headers, body) in place."""
    added = _drop_and_add(resp.headers, mod)
    replaced = mod.body is not None
    if replaced:
        resp.body = mod.body
    if mod.complete_with_code is not None:
        resp.status = mod.complete_with_code
    if resp.status in NO_BODY_STATUSES and (replaced or mod.complete_with_code is not None):
        resp.body = b""  # §4.4 step 5: no content (also when a body was set on a response that cannot carry one)
        _reframe(resp.headers, None, added, json_body=False)
    elif replaced and resp.body is not None:
        _reframe(resp.headers, len(resp.body), added, mod.body_is_json)


def terminate_headers(term: Termination) -> list[tuple[bytes, bytes]]:
    """§4.4 terminate table, for a termination with a ``json`` or ``payload`` body: the function's headers plus
    ``Content-Type: application/json`` for ``json`` unless they set one; no Content-Type is added for
    ``payload``.  Content-Length is left to the response writer (a function may not set it, §4.3 rule 4)."""
    headers = list(term.headers)
    if term.body is not None and term.body_is_json and all(name != _CONTENT_TYPE for name, _ in headers):
        headers.append((_CONTENT_TYPE, _APPLICATION_JSON))
    return headers
