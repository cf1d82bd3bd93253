"""The callout contract every transport implements (style rule 6, httpcore ``interfaces.py``).

A transport takes the input bytes and returns an ``InvokeResult`` or raises ``errors.InvocationError`` for
the failure rows of contract §5.3 (AWS error, unexpected status, connection failure).  The *deadline* is
enforced by the caller with cancellation (``asyncio.timeout``); a transport only needs to be cancellable
and may read ``deadline`` (event-loop time) to tell a function how long it has (§8.2 context).  Transports
never retry (§5.3).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["InvocationType", "InvokeResult", "ResultKind", "Transport"]


class InvocationType(enum.Enum):
    """Lambda ``X-Amz-Invocation-Type`` / HTTP ``X-Sidecar-Invocation-Type`` (§7.1, §8.1)."""

    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"


class ResultKind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    OUTPUT = "output"  # body is the function's output, still to be interpreted (may be empty: "not returned")
    ACCEPTED = "accepted"  # 202, or 200/204 in event mode: allow
    FUNCTION_ERROR = "function_error"  # body is the function's error document; function_error the header value


@dataclass(frozen=True, slots=True)
class InvokeResult:
    kind: ResultKind
    body: bytes = b""
    function_error: str = ""  # value of X-Amz-Function-Error ("Unhandled", "Handled") for FUNCTION_ERROR

    @staticmethod
    def accepted() -> InvokeResult:
        return _ACCEPTED


_ACCEPTED = InvokeResult(ResultKind.ACCEPTED)


class Transport(Protocol):
    """One function endpoint (a processor's connection), created once per compiled plan."""

    async def invoke(self, payload: bytes, *, invocation_type: InvocationType, message_id: str,
                     deadline: float) -> InvokeResult: ...

    async def aclose(self) -> None: ...
