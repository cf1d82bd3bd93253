"""The folders follow the data (style rule 1): imports only point rightwards.

config → gateway → sidecar → transports; the native lane (``native``) is used by ``gateway`` only.
``config`` imports nothing of ours but ``errors``; ``transports``
imports nothing above it (only the plan's connection types, ``errors`` and ``observability``); ``sidecar``
never imports ``gateway``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sidecar_gateway"

# package -> the packages/modules of ours it may import
ALLOWED: dict[str, set[str]] = {
    "config": {"config", "errors"},
    "transports": {"transports", "errors", "config", "observability"},
    "sidecar": {"sidecar", "errors", "config", "transports", "observability", "sdk"},
    "sdk": {"sdk"},  # standard library only: it is zipped into Lambda functions
    "observability": {"observability", "errors"},
    "gateway": {"gateway", "sidecar", "transports", "config", "errors", "observability", "native"},
    "native": {"native", "errors", "observability"},  # the native lane: the gateway passes it what it needs
}


def _our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    pkg_parts = path.relative_to(PACKAGE).parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    found.add(target[0])
                elif node.names:
                    found.update(a.name for a in node.names)
            elif node.module and node.module.startswith("sidecar_gateway."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sidecar_gateway."):
                    found.add(a.name.split(".")[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_rightwards(package: str) -> None:
    """No module of a package imports a package to its left."""
    bad = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        extra = _our_imports(path) - ALLOWED[package]
        if extra:
            bad.append(f"{path.relative_to(PACKAGE)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)
