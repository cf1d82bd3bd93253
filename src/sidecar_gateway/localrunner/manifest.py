"""Which functions a functions directory holds: the manifest and discovery.

Rules of this file:

* A functions directory ``DIR`` describes its functions in two ways, merged: the manifest
  ``DIR/functions.yaml`` (or ``functions.yml`` / ``functions.json``, at most one) maps a function name to
  ``{handler, timeout, memory, concurrency, environment}``; and every ``DIR/<name>.py`` that defines a
  top-level ``handler`` is discovered as function ``<name>`` with handler ``<name>.handler``.  A manifest entry
  wins over a discovered file of the same name, so the manifest only has to list what differs from the defaults.
* Discovery reads the source with ``ast``; user code is never imported into the runner (it runs only inside
  its execution environment, like on AWS).
* Everything is validated here, once; a ``FunctionSpec`` that exists is valid (h11 ``_events.py``).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "MANIFEST_NAMES",
    "Defaults",
    "FunctionSpec",
    "ManifestError",
    "load_functions",
]

# AWS defaults for a new function: 3 s timeout, 128 MB memory (Lambda console / CreateFunction defaults).
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_MEMORY_MB = 128
# Per-function concurrent executions before 429.  AWS's account default is 1,000; ten real Python processes is
# what a laptop (or the 2-core CI machine) runs comfortably.
DEFAULT_CONCURRENCY = 10
# AWS limits: timeout 1–900 s, memory 128–10,240 MB.  We accept fractional timeouts below 1 s too, because
# tests of timeouts should not have to wait a whole second per case.
MAX_TIMEOUT_S = 900.0
MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
# Only one manifest may exist; the first match in this order is read.
MANIFEST_NAMES = ("functions.yaml", "functions.yml", "functions.json")
# Lambda function names: letters, digits, hyphens, underscores, 1–64 characters (CreateFunction).
FUNCTION_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# awslambdaric handler strings: "module.function", the module path may use "." or "/" (bootstrap._get_handler).
HANDLER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[./][A-Za-z_][A-Za-z0-9_]*)*\.[A-Za-z_][A-Za-z0-9_]*")
# Environment variable names accepted by Lambda.
ENV_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ENTRY_KEYS = frozenset({"handler", "timeout", "memory", "concurrency", "environment"})
_DISCOVERED_HANDLER = "handler"


class ManifestError(ValueError):
    """The functions directory or its manifest is invalid; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """Values used when a manifest entry (or a discovered function) does not set them."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    concurrency: int = DEFAULT_CONCURRENCY


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function, validated.  ``environment`` is read-only."""

    name: str
    handler: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    concurrency: int = DEFAULT_CONCURRENCY
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not FUNCTION_NAME_RE.fullmatch(self.name):
            raise ManifestError(f"invalid function name {self.name!r}: use 1-64 letters, digits, '-' or '_'")
        if not HANDLER_RE.fullmatch(self.handler):
            raise ManifestError(f"function {self.name}: handler {self.handler!r} is not 'module.function'")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ManifestError(f"function {self.name}: timeout must be > 0 and <= {MAX_TIMEOUT_S:g} seconds")
        if not MIN_MEMORY_MB <= self.memory_mb <= MAX_MEMORY_MB:
            raise ManifestError(f"function {self.name}: memory must be {MIN_MEMORY_MB}-{MAX_MEMORY_MB} MB")
        if self.concurrency < 1:
            raise ManifestError(f"function {self.name}: concurrency must be >= 1")
        for key in self.environment:
            if not ENV_NAME_RE.fullmatch(key):
                raise ManifestError(f"function {self.name}: invalid environment variable name {key!r}")
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))


def load_functions(directory: Path, defaults: Defaults = Defaults()) -> dict[str, FunctionSpec]:
    """Return name → spec for ``directory``: discovered files, overridden and extended by the manifest."""
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    functions = {spec.name: spec for spec in _discover(directory, defaults)}
    manifest = _find_manifest(directory)
    if manifest is not None:
        functions.update((spec.name, spec) for spec in _read_manifest(manifest, defaults))
    if not functions:
        raise ManifestError(f"{directory}: no functions (no manifest, no <name>.py with a 'handler')")
    return dict(sorted(functions.items()))


def _find_manifest(directory: Path) -> Path | None:
    found = [directory / name for name in MANIFEST_NAMES if (directory / name).is_file()]
    if len(found) > 1:
        raise ManifestError(f"{directory}: more than one manifest ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def _read_manifest(path: Path, defaults: Defaults) -> list[FunctionSpec]:
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ManifestError(f"{path}: the top level must map function names to settings")
    try:
        return [_entry(str(name), entry, defaults) for name, entry in document.items()]
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def _entry(name: str, entry: Any, defaults: Defaults) -> FunctionSpec:
    if isinstance(entry, str):  # shorthand  name: module.function
        entry = {"handler": entry}
    if not isinstance(entry, dict):
        raise ManifestError(f"function {name}: expected a mapping with at least 'handler'")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ManifestError(f"function {name}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    handler = entry.get("handler")
    if not isinstance(handler, str):
        raise ManifestError(f"function {name}: 'handler' (module.function) is required")
    environment = entry.get("environment") or {}
    if not isinstance(environment, dict) or not all(
        isinstance(v, str | int | float | bool) for v in environment.values()
    ):
        raise ManifestError(f"function {name}: 'environment' must map names to strings")
    return FunctionSpec(
        name=name,
        handler=handler,
        timeout_s=float(_number(name, "timeout", entry.get("timeout", defaults.timeout_s))),
        memory_mb=_integer(name, "memory", entry.get("memory", defaults.memory_mb)),
        concurrency=_integer(name, "concurrency", entry.get("concurrency", defaults.concurrency)),
        environment={str(k): _env_text(v) for k, v in environment.items()},
    )


def _number(name: str, key: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ManifestError(f"function {name}: '{key}' must be a number")
    return value


def _integer(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"function {name}: '{key}' must be an integer")
    return value


def _env_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # YAML booleans as a shell would spell them
    return str(value)


def _discover(directory: Path, defaults: Defaults) -> list[FunctionSpec]:
    specs = []
    for path in sorted(directory.glob("*.py")):
        if path.stem.startswith("_") or not FUNCTION_NAME_RE.fullmatch(path.stem):
            continue
        if _defines_handler(path):
            specs.append(FunctionSpec(
                name=path.stem, handler=f"{path.stem}.{_DISCOVERED_HANDLER}", timeout_s=defaults.timeout_s,
                memory_mb=defaults.memory_mb, concurrency=defaults.concurrency,
            ))
    return specs


def _defines_handler(path: Path) -> bool:
    """True when the module defines a top-level ``handler`` (def, async def or assignment)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        # Still a function: the runtime reports the syntax error as Runtime.UserCodeSyntaxError, like AWS.
        return True
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == _DISCOVERED_HANDLER:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == _DISCOVERED_HANDLER for t in node.targets
        ):
            return True
    return False
