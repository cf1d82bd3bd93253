"""The published JSON Schemas (draft 2020-12) of the input (§3) and the output (§4), shipped in the package.

``schemas/`` at the repository root holds the published copy; a test asserts both copies are identical.
The output schema's root accepts an output valid at *some* point; ``output_schema(point)`` narrows it to
the point of an input (``completeWithCode`` is validated only at post, ``changeRoute`` only at pre, §4.3).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["INPUT_SCHEMA_FILE", "OUTPUT_SCHEMA_FILE", "input_schema", "output_schema"]

INPUT_SCHEMA_FILE = "sidecar-input.schema.json"
OUTPUT_SCHEMA_FILE = "sidecar-output.schema.json"
_POINT_DEFS = {"PreProcessor": "preOutput", "PostProcessor": "postOutput", "Preflight": "preflightOutput"}


def _load(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def input_schema() -> dict[str, Any]:
    """The input schema (a fresh copy)."""
    return _load(INPUT_SCHEMA_FILE)


def output_schema(point: str | None = None) -> dict[str, Any]:
    """The output schema; with ``point`` (``"PreProcessor"``, ``"PostProcessor"``, ``"Preflight"``) its root
    is replaced by a reference to that point's definition."""
    schema = _load(OUTPUT_SCHEMA_FILE)
    if point is None:
        return schema
    try:
        definition = _POINT_DEFS[point]
    except KeyError:
        raise ValueError(f"point must be one of {sorted(_POINT_DEFS)}, not {point!r}") from None
    schema.pop("anyOf", None)
    schema["$ref"] = f"#/$defs/{definition}"
    return schema
