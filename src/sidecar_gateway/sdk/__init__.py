"""The function author's SDK for sidecar-gateway (contract §3 input, §4 output).

Standard library only, so the ``sidecar_gateway/sdk`` folder (with ``sidecar_gateway/__init__.py``) can be
zipped into a Lambda deployment package without the gateway's dependencies.

Example (a pre-processor that requires an API version header)::

    from sidecar_gateway.sdk import SidecarInput, allow, modify, sidecar, terminate

    @sidecar
    def handler(inp: SidecarInput, context):
        version = inp.request_headers.get("x-api-version")
        if version is None:
            return terminate(400, "X-Api-Version is required")
        return modify(add_headers={"X-Backend-Version": version})

``@sidecar`` turns ``handler(inp, context)`` into a Lambda-style ``handler(event, context)``: the event is
parsed into a ``SidecarInput`` (``@sidecar(raw_event=True)`` passes the event ``dict`` unchanged instead),
and whatever the function returns is validated against §4.3 for the input's ``point`` before it is
returned.  An invalid output raises ``InvalidOutput`` listing every defect — Lambda (and the ``python``
stack) report it as a function error, so the mistake is named in the function's log instead of surfacing
as the gateway's generic ``Invalid output from AWS Lambda function`` (§5.3).  Coroutine handlers are
supported (the ``python`` stack awaits them, §8.2).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from ._input import Headers, InvalidInput, Operation, Payload, Point, Routing, SidecarInput, Token
from ._output import allow, modify, terminate, unchanged_for, unchanged_until
from ._schemas import input_schema, output_schema
from ._validate import FORBIDDEN_HEADERS, MAX_OUTPUT_BYTES, InvalidOutput, output_problems, validate_output

__all__ = [
    "FORBIDDEN_HEADERS",
    "MAX_OUTPUT_BYTES",
    "Headers",
    "InvalidInput",
    "InvalidOutput",
    "Operation",
    "Payload",
    "Point",
    "Routing",
    "SidecarInput",
    "Token",
    "allow",
    "input_schema",
    "modify",
    "output_problems",
    "output_schema",
    "sidecar",
    "terminate",
    "unchanged_for",
    "unchanged_until",
    "validate_output",
]

Handler = Callable[[Any, Any], Any]


def _point_of(event: Any) -> str | None:
    point = event.get("point") if isinstance(event, dict) else None
    return point if point in {p.value for p in Point} else None


def sidecar(handler: Handler | None = None, *, raw_event: bool = False,
            permitted_hosts: Iterable[str] | None = None) -> Any:
    """Decorate ``handler(inp, context)`` into a validated Lambda handler ``(event, context)``.

    ``raw_event``: pass the event ``dict`` instead of a ``SidecarInput``.  ``permitted_hosts``: the backend
    authority and ``route_hosts`` of the endpoint, to check ``changeRoute`` hosts too (§4.4 step 3).
    Usable bare (``@sidecar``) or with arguments (``@sidecar(raw_event=True)``).
    """
    hosts = None if permitted_hosts is None else tuple(permitted_hosts)

    def decorate(function: Handler) -> Handler:
        def argument(event: Any) -> Any:
            return event if raw_event else SidecarInput.from_event(event)

        def checked(event: Any, output: Any) -> Any:
            return validate_output(output, _point_of(event), permitted_hosts=hosts)

        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(event: Any, context: Any) -> Any:
                return checked(event, await function(argument(event), context))

            return async_wrapper

        @functools.wraps(function)
        def wrapper(event: Any, context: Any) -> Any:
            return checked(event, function(argument(event), context))

        return wrapper

    if handler is not None:
        return decorate(handler)
    return decorate
