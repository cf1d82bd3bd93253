"""In-process sidecar handlers used by tests of the ``python`` stack (contract §2.5 ``handler``, §8.2)."""

from __future__ import annotations

from typing import Any

NOT_CALLABLE = 42  # a module attribute that exists but is not a handler


def allow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Allow every call (§4.1 ``{}``)."""
    return {}


async def allow_async(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Coroutine variant of ``allow`` (§8.2: awaited on the loop)."""
    return {}
