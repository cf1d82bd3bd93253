"""What a function's output means, once validated (contract §4): allow, modify or terminate.

An invalid ``Verdict`` cannot exist: ``output_interpreter.interpret_output`` is the only producer and it
validates the whole output first (§4.3).  Header names are lower-cased ``bytes``; values are ``bytes``
already checked against control characters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ALLOW", "ChangeRoute", "Modification", "Termination", "Verdict", "VerdictKind"]


class VerdictKind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum.__hash__ is Python code run per dict lookup

    ALLOW = "allow"
    MODIFY = "modify"
    TERMINATE = "terminate"


@dataclass(frozen=True, slots=True)
class ChangeRoute:
    """[ext] §4.4 step 3 (pre only).  ``uri`` already split; ``None`` members are unchanged."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path_qs: str | None = None
    method: str | None = None  # upper-cased


@dataclass(frozen=True, slots=True)
class Modification:
    drop_headers: frozenset[bytes] = frozenset()
    add_headers: tuple[tuple[bytes, bytes], ...] = ()  # union of headers/addHeaders, addHeaders winning
    body: bytes | None = None  # replacement body (json serialised, or payload decoded)
    body_is_json: bool = False  # Content-Type: application/json unless add_headers sets content-type
    complete_with_code: int | None = None  # post only (None at pre)
    change_route: ChangeRoute | None = None  # pre only


@dataclass(frozen=True, slots=True)
class Termination:
    code: int
    message: str | None = None  # None: the default text of §4.2
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes | None = None  # json or payload; None -> gateway-rendered error (§6.2)
    body_is_json: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    modification: Modification | None = None
    termination: Termination | None = None
    cache_ttl_ms: int | None = None  # [ext] §9.1 hint, already reduced to the earlier expiry; None = no hint


ALLOW = Verdict(VerdictKind.ALLOW)
