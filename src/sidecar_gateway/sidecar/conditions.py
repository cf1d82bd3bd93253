"""Whether a processor applies to a call, and whether the call may reach it (contract §9.2, §5.1 P4/P5/P7, §5.2 Q2–Q4).

Rules of this file:

* Sans-IO (style rule 2): every function reads a compiled ``ProcessorPlan`` and a ``CallContext`` and either
  answers or raises a catalogue ``ClientError``.  Nothing here reads the clock, a socket or a file.
* Scope (§9.2) is a pure predicate: it never raises and never changes the input.
* Condition and payload failures are ``ClientError`` (400/413): they are not covered by ``failSafe`` (§5.4).
* "Blank" means empty or whitespace only (§0); a blank header or EAV counts as absent (§1, §5.1 P5).

Theory of operation.  The decision procedure asks, in this order (§5.1, §5.2):

1. ``in_scope``: every ``when-`` filter matches and no ``unless-`` filter matches.  A filter's value is read
   from the call (table ``_SCOPE_VALUE``); an absent value matches nothing, so it fails a ``when-`` and
   passes an ``unless-`` (§9.2).  A regex matcher must match the whole value; a literal matcher is a set.
2. ``check_conditions``: required request headers, then required application EAVs, then required
   package-key EAVs, each in configured order; the first failure is raised (§5.1 P5, §10 Q28).
3. ``check_payload_limits``: only for *expanded* and non-empty bodies.  A body over 1 MB is refused whatever
   the condition; a body over ``max-payload-size`` is refused (``blocking``) or makes the processor skip
   the call (``filtering`` → ``False``).  At post both expanded bodies are checked (§5.2 Q4); the
   1 MB rule is checked on both before the configured limit, because it applies "always".
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.plan import ProcessorPlan, ScopeElement, ScopeFilter
from ..errors import ClientError, ErrorCode
from .call import BackendResponse, CallContext

__all__ = ["MAX_PAYLOAD_HARD_LIMIT", "check_conditions", "check_payload_limits", "in_scope"]

MAX_PAYLOAD_HARD_LIMIT = 1024 * 1024
"""§5.1 P7: a body over 1 MB (1,048,576 bytes) is never sent to a function, whatever ``max-payload-condition``
says (also the ceiling of ``max-payload-size``, §2.4)."""

_HEADER_JOIN = b", "  # §3.2: repeated fields are joined in order received; scope reads the same value


def _header_value(call: CallContext, name: bytes) -> str | None:
    """The client request header ``name`` (lower-cased bytes) as one string, or None when absent."""
    values = [v for n, v in call.request.headers if n == name]
    if not values:
        return None
    raw = values[0] if len(values) == 1 else _HEADER_JOIN.join(values)
    try:
        return raw.decode("utf-8")  # as the input builder reads header text (§3.2)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _eav(value: str | None) -> str | None:
    # §1: a blank EAV value counts as absent.
    return value if value is not None and value.strip() else None


def _request_header(call: CallContext, f: ScopeFilter) -> str | None:
    return _header_value(call, (f.argument or "").lower().encode("latin-1"))


def _http_verb(call: CallContext, f: ScopeFilter) -> str | None:
    return call.request.method.upper()


def _resource_path(call: CallContext, f: ScopeFilter) -> str | None:
    return call.request.remainder  # §9.2: as operation.path (§3.4)


def _package_key(call: CallContext, f: ScopeFilter) -> str | None:
    return call.package_key.key if call.package_key is not None else None


def _app_eav(call: CallContext, f: ScopeFilter) -> str | None:
    return _eav(call.app_eavs.get(f.argument or ""))


def _key_eav(call: CallContext, f: ScopeFilter) -> str | None:
    return _eav(call.key_eavs.get(f.argument or ""))


_SCOPE_VALUE: dict[ScopeElement, Callable[[CallContext, ScopeFilter], str | None]] = {
    ScopeElement.REQUEST_HEADER: _request_header,
    ScopeElement.HTTP_VERB: _http_verb,
    ScopeElement.RESOURCE_PATH: _resource_path,
    ScopeElement.PACKAGE_KEY: _package_key,
    ScopeElement.EAV: _app_eav,
    ScopeElement.PACKAGE_KEY_EAV: _key_eav,
}


def _matches(f: ScopeFilter, call: CallContext) -> bool:
    value = _SCOPE_VALUE[f.element](call, f)
    if value is None:  # §9.2: an absent value matches nothing
        return False
    if f.pattern is not None:
        return f.pattern.fullmatch(value) is not None  # §9.2: the regex must match the whole value
    return value in f.values  # httpVerb: both sides upper-cased (plan stores the values upper-cased)


def in_scope(plan: ProcessorPlan, call: CallContext) -> bool:
    """§9.2: True when every ``when-`` filter matches and no ``unless-`` filter matches."""
    # A when- filter (negate False) must match; an unless- filter (negate True) must not.
    return all(_matches(f, call) is not f.negate for f in plan.scope)


def _header_present(call: CallContext, name: bytes) -> bool:
    # Present and non-blank: at least one field of that name carries a non-whitespace value.
    return any(v.strip() for n, v in call.request.headers if n == name)


def check_conditions(plan: ProcessorPlan, call: CallContext) -> None:
    """§5.1 P5 / §5.2 Q3: raise the first failing ``require-*`` condition (§10 Q28 order), else return."""
    for configured, name in plan.require_request_headers:
        if not _header_present(call, name):
            raise ClientError(ErrorCode.REQUIRED_HEADER, name=configured)
    app_eavs = call.app_eavs  # empty for anonymous calls: every require-eavs fails
    for eav_name in plan.require_eavs:
        if _eav(app_eavs.get(eav_name)) is None:
            raise ClientError(ErrorCode.REQUIRED_APP_EAV, name=eav_name)
    key_eavs = call.key_eavs
    for eav_name in plan.require_key_eavs:
        if _eav(key_eavs.get(eav_name)) is None:
            raise ClientError(ErrorCode.REQUIRED_KEY_EAV, name=eav_name)


def check_payload_limits(plan: ProcessorPlan, call: CallContext, response: BackendResponse | None) -> bool:
    """§5.1 P7 / §5.2 Q4.  True: call the function.  False: ``filtering`` skip.  Raises 413 ``ClientError``."""
    sizes: list[int] = []
    if plan.expand_request_payload and call.request.body:
        sizes.append(len(call.request.body))
    if plan.expand_response_payload and response is not None and response.body:
        sizes.append(len(response.body))
    if not sizes:
        return True
    largest = max(sizes)
    if largest > MAX_PAYLOAD_HARD_LIMIT:
        raise ClientError(ErrorCode.PAYLOAD_OVER_1MB)
    if largest > plan.max_payload_bytes:
        if plan.payload_blocking:
            raise ClientError(ErrorCode.PAYLOAD_OVER_LIMIT)
        return False
    return True
