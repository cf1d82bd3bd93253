"""In-process (stack: python) handlers for the end-to-end tests (contract §8.2)."""

from __future__ import annotations

from typing import Any


def pre_add_user(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"modify": {"addHeaders": {"x-user": "alice"}}}


def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise ValueError("no luck")
