"""DESIGN.md §3: "imports flow one way, inner to outer; a test fails on any cycle".

The import graph is read from the source with `ast`, and every import counts: module level,
inside a function, under `if TYPE_CHECKING:`; relative imports are resolved. A function-local or
type-checking import is still a dependency a reader has to follow, and a cycle waiting for the
day someone hoists it to module level.

The rules, checked on modules and on *units* (the top-level packages and modules of flowplane:
`xds`, `app`, ...):

1. No import cycle, between modules or between units.
2. Every unit has a row in `LAYERS`, inner to outer, and imports only the units its row names,
   all of which sit in earlier rows. A new package fails here until it is placed.
3. The sans-I/O layers import no I/O framework or storage driver (`FORBIDDEN_EXTERNAL`).

`KNOWN_VIOLATIONS` lists, import by import, what breaks these rules today and is being removed;
anything else that breaks them fails. The checker's own tests feed it a package with a cycle and
a wrong-direction import (`test_the_checker_*`), so a checker that sees nothing fails too.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

PKG = Path(__file__).resolve().parent.parent / "flowplane"

Edge = tuple[str, str]
"""(importing module, imported module), e.g. ("flowplane.xds.scope", "flowplane.xds.snapshot")."""

# -- the rules ---------------------------------------------------------------------------------

# What an edge may import: everything inward except actors/ and storage/, which it reaches
# through services/ ("the operations every edge calls", DESIGN.md §3). Edges never import each
# other.
EDGE_INWARD: Final = {
    "errors",
    "settings",
    "tls",
    "domain",
    "xds",
    "auth",
    "observability",
    "platform",
    "services",
}

# One row per unit, inner -> outer (DESIGN.md §3): unit -> the units it may import. A row may
# only name rows above it, so the table itself cannot describe a cycle (checked below). mcp/ is
# placed before it exists (DESIGN.md §3).
LAYERS: Final[dict[str, set[str]]] = {
    "__init__": set(),  # flowplane/__init__.py: empty, so importing any part costs nothing else
    "errors": set(),  # one error tree; imported by everything
    "settings": {"errors"},  # the only reader of the environment
    "tls": {"errors", "settings"},  # TLS contexts from the configured files
    "domain": {"errors"},  # pydantic models; validation only, no I/O
    "storage": {"errors", "domain"},
    "xds": {"errors", "domain"},  # sans-I/O: translate, snapshot, scope, stream machines
    "auth": {"errors", "domain", "storage"},  # tokens, keys, the Authenticator
    "observability": {"errors", "settings"},
    "platform": {"errors", "domain"},  # API definitions -> native resources: pure
    "actors": {"errors", "domain", "storage", "xds", "auth", "observability", "platform"},
    "services": {
        "errors",
        "settings",
        "domain",
        "storage",
        "xds",
        "auth",
        "observability",
        "actors",
        "platform",
    },
    # --- edges: import inward only, never each other ---
    "api": EDGE_INWARD,
    "grpc": EDGE_INWARD,  # the snapshot builder publishes to the hub through a callable
    "mcp": EDGE_INWARD,
    # The composition root: knows every part, except the command line and the test kit.
    "app": {
        "errors",
        "settings",
        "tls",
        "domain",
        "storage",
        "xds",
        "auth",
        "observability",
        "actors",
        "platform",
        "services",
        "api",
        "grpc",
        "mcp",
    },
    # A REST client, except `serve` (the app), `db` (storage) and token recovery (services).
    "cli": EDGE_INWARD | {"storage", "app"},
    # Fakes and harnesses may use any part (never the test suite: see below).
    "testing": {
        "errors",
        "settings",
        "tls",
        "domain",
        "storage",
        "xds",
        "auth",
        "observability",
        "actors",
        "platform",
        "services",
        "api",
        "grpc",
        "mcp",
        "app",
        "cli",
    },
}

# removed by the service-layer refactor (issue 9): the imports that break the rules today. Each
# entry is one (importer, imported) module pair; the set may only shrink (a stale entry fails).
KNOWN_VIOLATIONS: Final[set[Edge]] = set()

# DESIGN.md §3: "`xds/` and `domain/` import neither trio nor grpclib nor storage"; storage/ knows
# nothing of the HTTP or gRPC edges.
_NO_IO: Final = {
    "trio",
    "trio_asyncio",
    "grpclib",
    "asyncio",
    "asyncpg",
    "sqlite3",
    "quart",
    "quart_trio",
    "hypercorn",
}
FORBIDDEN_EXTERNAL: Final[dict[str, set[str]]] = {
    "domain": _NO_IO,
    "xds": _NO_IO,
    "storage": {"quart", "quart_trio", "hypercorn", "grpclib"},
}

# -- reading the import graph ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's dependency: `importer` needs `target`.

    `target` is a module of the package when it names one (`from a import b` where `a.b` is a
    module gives `a.b`; `from a.b import C` gives `a.b`), else the imported module's name.
    `where` is "path:line" relative to the package, for reports.
    """

    importer: str
    target: str
    where: str


@dataclass(frozen=True, slots=True)
class Package:
    """The modules of a package and every import in them."""

    modules: frozenset[str]
    imports: tuple[Import, ...]

    def graph(self, known: Set[Edge] = frozenset()) -> dict[str, dict[str, str]]:
        """module -> {package module it imports -> where (the first such import)}.

        Every module is a key. Imports of a module by itself and the `known` edges are left out.
        """
        out: dict[str, dict[str, str]] = {m: {} for m in self.modules}
        for imp in self.imports:
            edge = (imp.importer, imp.target)
            if imp.target in self.modules and imp.importer != imp.target and edge not in known:
                out[imp.importer].setdefault(imp.target, imp.where)
        return out


def module_name(path: Path, root: Path) -> str:
    """`root/xds/scope.py` -> "flowplane.xds.scope"; `root/xds/__init__.py` -> "flowplane.xds"."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The top-level package or module holding `module` ("__init__" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def read_package(root: Path) -> Package:
    """Every import of every module under `root` (a package directory), resolved."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = frozenset(paths)

    def resolve(name: str) -> str:
        # The longest prefix of `name` that is a module: `a.b.C` -> `a.b`.
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        return name

    def internal(name: str) -> bool:
        return name == root.name or name.startswith(root.name + ".")

    imports: list[Import] = []
    for module, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    # `from . import x` in a/b.py means a.x; in a/__init__.py it means a.x too.
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join([*here, base] if base else here)
                # A name imported from a package module may be a submodule: resolved below.
                targets = [f"{base}.{a.name}" for a in node.names] if internal(base) else [base]
            else:
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            for target in targets:
                resolved = resolve(target) if internal(target) else target
                imports.append(Import(module, resolved, where))
    return Package(modules, tuple(imports))


# -- checking it -------------------------------------------------------------------------------


def strong_components(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components of `graph` that hold a cycle (Tarjan's algorithm).

    Every cycle lies inside one of them; a module outside all of them is on no cycle.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(set(graph) | {w for targets in graph.values() for w in targets}):
        if v not in index:
            visit(v)
    return sorted(components, key=min)


def shortest_cycle(graph: Mapping[str, Iterable[str]], start: str) -> list[str]:
    """A shortest cycle through `start`, as a path `[start, ..., start]` (breadth-first)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise ValueError(f"{start} is on no cycle")


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[tuple[list[str], set[str]]]:
    """Per tangle (strong component), a shortest cycle through its smallest node, and the rest.

    One cycle per tangle keeps the report short and stable; the rest of the tangle (nodes on
    other cycles with it) is named so that nobody breaks one cycle and is surprised by the next.
    """
    out = []
    for component in strong_components(graph):
        cycle = shortest_cycle(graph, min(component))
        out.append((cycle, component - set(cycle)))
    return out


def _report(cycle: list[str], rest: set[str], hops: Mapping[str, Mapping[str, str]]) -> str:
    steps = "; ".join(hops[a][b] for a, b in itertools.pairwise(cycle))
    tangle = f"; the same tangle holds {', '.join(sorted(rest))}" if rest else ""
    return f"{' -> '.join(cycle)} ({steps}){tangle}"


def module_cycles(pkg: Package, known: Set[Edge] = frozenset()) -> list[str]:
    """Each tangle of modules, as "a -> b -> a (where a imports b; where b imports a)"."""
    graph = pkg.graph(known)
    return [_report(cycle, rest, graph) for cycle, rest in find_cycles(graph)]


def unit_graph(pkg: Package, known: Set[Edge] = frozenset()) -> dict[str, dict[str, str]]:
    """unit -> {other unit it imports -> an example: "where imports module"}."""
    out: dict[str, dict[str, str]] = {}
    for importer, targets in sorted(pkg.graph(known).items()):
        deps = out.setdefault(unit_of(importer), {})
        for target, where in sorted(targets.items()):
            if unit_of(target) != unit_of(importer):
                deps.setdefault(unit_of(target), f"{where} imports {target}")
    return out


def unit_cycles(pkg: Package, known: Set[Edge] = frozenset()) -> list[str]:
    """Each tangle of units, as "a -> b -> a (an import for each step)"."""
    graph = unit_graph(pkg, known)
    return [_report(cycle, rest, graph) for cycle, rest in find_cycles(graph)]


def table_problems(layers: Mapping[str, Set[str]]) -> list[str]:
    """Rows naming a unit that is not in an earlier row (so the table points one way)."""
    problems = []
    earlier: set[str] = set()
    for unit, allowed in layers.items():
        problems += [
            f"{unit!r} may import {dep!r}, which is not above it" for dep in allowed - earlier
        ]
        earlier.add(unit)
    return sorted(problems)


def unplaced_units(pkg: Package, layers: Mapping[str, Set[str]]) -> list[str]:
    """Units of the package that have no row in `layers`."""
    return sorted({unit_of(m) for m in pkg.modules} - set(layers))


def layer_violations(
    pkg: Package, layers: Mapping[str, Set[str]], known: Set[Edge] = frozenset()
) -> list[str]:
    """Imports of a unit its row does not allow, as "where: importer imports target (...)"."""
    problems = []
    for importer, targets in sorted(pkg.graph(known).items()):
        unit = unit_of(importer)
        for target, where in sorted(targets.items()):
            dep = unit_of(target)
            if dep != unit and unit in layers and dep not in layers[unit]:
                allowed = ", ".join(sorted(layers[unit])) or "nothing"
                problems.append(
                    f"{where}: {importer} imports {target} ({unit} may import {allowed})"
                )
    return problems


# -- the package ------------------------------------------------------------------------------

FLOWPLANE: Final = read_package(PKG)


def assert_none(problems: list[str]) -> None:
    """Fail listing every problem in full (pytest's diff of a long list elides them)."""
    assert not problems, "\n" + "\n".join(problems)


def test_no_import_cycle_between_modules() -> None:
    assert_none(module_cycles(FLOWPLANE, KNOWN_VIOLATIONS))


def test_no_import_cycle_between_units() -> None:
    assert_none(unit_cycles(FLOWPLANE, KNOWN_VIOLATIONS))


def test_the_layer_table_points_one_way() -> None:
    assert_none(table_problems(LAYERS))


def test_every_unit_is_placed_in_the_layer_table() -> None:
    # A new top-level package or module needs a row in LAYERS (and, usually, a place in the
    # rows of app and testing, which may import it).
    assert_none(unplaced_units(FLOWPLANE, LAYERS))


def test_every_unit_imports_only_what_its_row_allows() -> None:
    assert_none(layer_violations(FLOWPLANE, LAYERS, KNOWN_VIOLATIONS))


def test_known_violations_still_occur() -> None:
    # The set only shrinks: an entry whose import is gone must be removed, so that it cannot
    # quietly excuse the same import coming back.
    graph = FLOWPLANE.graph()
    assert_none(sorted(f"{a} -> {b}" for a, b in KNOWN_VIOLATIONS if b not in graph.get(a, {})))


@pytest.mark.parametrize("unit", sorted(FORBIDDEN_EXTERNAL))
def test_no_forbidden_third_party_imports(unit: str) -> None:
    banned = FORBIDDEN_EXTERNAL[unit]
    bad = [
        f"{imp.where} imports {imp.target}"
        for imp in FLOWPLANE.imports
        if unit_of(imp.importer) == unit
        and any(imp.target == b or imp.target.startswith(b + ".") for b in banned)
    ]
    assert_none(bad)


def test_the_package_never_imports_the_test_suite() -> None:
    bad = [
        f"{imp.where} imports {imp.target}"
        for imp in FLOWPLANE.imports
        if imp.target.split(".")[0] in {"tests", "benchmarks"}
    ]
    assert_none(bad)


def test_only_settings_reads_the_environment() -> None:
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if p.name != "settings.py"
        and "testing" not in p.parts
        and ("os.environ" in p.read_text() or "getenv" in p.read_text())
    ]
    assert not offenders, offenders


# -- the checker itself, on a package with known faults -----------------------------------------

TOY: Final = {
    "__init__.py": "",
    "inner/__init__.py": "",
    # A wrong-direction import (inner -> outer) that only the type checker follows.
    "inner/model.py": (
        "from typing import TYPE_CHECKING\n"
        "from toy.inner.helper import helps\n"
        "if TYPE_CHECKING:\n"
        "    from toy.outer import View\n"
    ),
    # Closes a module cycle with model.py from inside a function, through a relative import.
    "inner/helper.py": "def helps():\n    from . import model\n    return model\n",
    "outer.py": "from .inner import model\nimport json\n",
}
TOY_LAYERS: Final = {"inner": set[str](), "outer": {"inner"}}


@pytest.fixture
def toy(tmp_path: Path) -> Package:
    for name, text in TOY.items():
        path = tmp_path / "toy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return read_package(tmp_path / "toy")


def test_the_checker_reads_every_kind_of_import(toy: Package) -> None:
    assert toy.graph() == {
        "toy": {},
        "toy.inner": {},
        "toy.inner.model": {
            "toy.inner.helper": "inner/model.py:2",
            "toy.outer": "inner/model.py:4",
        },
        "toy.inner.helper": {"toy.inner.model": "inner/helper.py:2"},
        "toy.outer": {"toy.inner.model": "outer.py:1"},
    }
    assert Import("toy.outer", "json", "outer.py:2") in toy.imports


def test_the_checker_reports_cycles(toy: Package) -> None:
    assert module_cycles(toy) == [
        "toy.inner.helper -> toy.inner.model -> toy.inner.helper"
        " (inner/helper.py:2; inner/model.py:2); the same tangle holds toy.outer"
    ]
    assert unit_cycles(toy) == [
        "inner -> outer -> inner"
        " (inner/model.py:4 imports toy.outer; outer.py:1 imports toy.inner.model)"
    ]


def test_the_checker_reports_a_wrong_direction_import(toy: Package) -> None:
    assert layer_violations(toy, TOY_LAYERS) == [
        "inner/model.py:4: toy.inner.model imports toy.outer (inner may import nothing)"
    ]


def test_the_checker_reports_units_missing_from_the_table(toy: Package) -> None:
    assert unplaced_units(toy, {"inner": set()}) == ["__init__", "outer"]


def test_the_checker_reports_a_table_that_points_both_ways() -> None:
    assert table_problems({"inner": {"outer"}, "outer": {"inner"}}) == [
        "'inner' may import 'outer', which is not above it"
    ]


def test_a_known_violation_excuses_exactly_its_own_import(toy: Package) -> None:
    known = {("toy.inner.model", "toy.outer")}
    assert layer_violations(toy, TOY_LAYERS, known) == []
    assert unit_cycles(toy, known) == []
    # The cycle inside inner/ does not go through that import, so it is still reported.
    assert module_cycles(toy, known) == [
        "toy.inner.helper -> toy.inner.model -> toy.inner.helper"
        " (inner/helper.py:2; inner/model.py:2)"
    ]


def test_find_cycles_on_a_synthetic_graph() -> None:
    assert find_cycles({"a": ["b"], "b": ["c"], "c": []}) == []
    graph = {"a": ["b"], "b": ["c", "d"], "c": ["a", "e"], "d": ["d"], "e": ["b"], "f": ["a"]}
    assert find_cycles(graph) == [(["a", "b", "c", "a"], {"e"}), (["d", "d"], set())]
