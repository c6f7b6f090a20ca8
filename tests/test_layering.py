"""DESIGN.md §3: imports flow one way. The sans-I/O layers import no I/O framework or storage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "flowplane"

FORBIDDEN = {
    "domain": {"trio", "trio_asyncio", "grpclib", "asyncio", "asyncpg", "sqlite3", "quart",
               "quart_trio", "hypercorn", "flowplane.storage", "flowplane.actors", "flowplane.api",
               "flowplane.grpc", "flowplane.xds", "flowplane.app", "flowplane.settings"},
    "xds": {"trio", "trio_asyncio", "grpclib", "asyncio", "asyncpg", "sqlite3", "quart",
            "quart_trio", "hypercorn", "flowplane.storage", "flowplane.actors", "flowplane.api",
            "flowplane.grpc", "flowplane.app", "flowplane.settings"},
    "storage": {"flowplane.api", "flowplane.actors", "flowplane.grpc", "flowplane.xds",
                "flowplane.app", "quart", "grpclib"},
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    bad = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, bad


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if p.name != "settings.py"
        and "testing" not in p.parts
        and ("os.environ" in p.read_text() or "getenv" in p.read_text())
    ]
    assert not offenders, offenders
