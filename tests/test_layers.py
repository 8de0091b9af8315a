"""The layers of the project's own modules: one import direction, no cycle.

Every import counts, also those inside functions and under `if TYPE_CHECKING:`: an
import deferred for start-up speed still couples the two modules, and a deferred cycle
is a cycle that only shows at run time. Lowest layer first:

    configuration   features.config, service.settings (import nothing of the project)
    features        the feature reader, encoder and the Feast repository
    service         the service's domain and HTTP
    training        training, the simulator, off-policy evaluation, the demo world
    load_tests      the benchmark
    cli             service.cli, the top: no module imports it

A module may import its own layer or a lower one. Running another command as a child
process (`python -m service.cli serve`) is not an import and is not looked at.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("features", "service", "training", "load_tests")

#: (layer, modules or packages in it), lowest first; a module belongs to the layer of
#: the longest entry that names it or one of its packages.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("configuration", ("features.config", "service.settings")),
    ("features", ("features",)),
    ("service", ("service",)),
    ("training", ("training",)),
    ("load_tests", ("load_tests",)),
    ("cli", ("service.cli",)),
)
BOTTOM = LAYERS[0][0]

Graph = Mapping[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every .py file of the packages."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _own(name: str, modules: Iterable[str]) -> str | None:
    """The project module `name` refers to (its longest prefix that is one), if any."""
    known = set(modules)
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, source: str, modules: Iterable[str], is_package: bool = False) -> set[str]:
    """The project modules `module` imports anywhere in `source`."""
    known = set(modules)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import module` imports the module; `from module import name` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in (_own(t, known) for t in targets) if t is not None and t != module)
    return found


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    modules = project_modules(root, packages)
    return {
        name: imports_of(name, path.read_text(), modules, is_package=path.name == "__init__.py")
        for name, path in modules.items()
    }


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as `[a, b, ..., a]`, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> tuple[int, str]:
    """(rank, name) of the module's layer, by the longest matching entry of `layers`."""
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), rank, name)
    if best is None:
        raise ValueError(f"{module} is in no layer: add it to LAYERS")
    return best[1], best[2]


def layer_violations(graph: Graph, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> list[str]:
    """Every upward import, and every import of the bottom layer, as "X (layer a) imports Y (layer b)"."""
    bottom = layers[0][0]
    out = []
    for module in sorted(graph):
        rank, name = layer_of(module, layers)
        for target in sorted(graph[module]):
            target_rank, target_name = layer_of(target, layers)
            if target_rank > rank or name == bottom:
                out.append(f"{module} (layer {name}) imports {target} (layer {target_name})")
    return out


# --- the project ----------------------------------------------------------------------------
def test_the_graph_sees_the_project() -> None:
    graph = import_graph()
    assert {"features.store", "service.engine", "service.cli", "training.simulator"} <= set(graph)
    assert "features.config" in graph["features.store"]  # the walk finds imports at all


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_upward_import() -> None:
    violations = layer_violations(import_graph())
    assert not violations, "imports against the layers:\n" + "\n".join(violations)


# --- the checker itself ---------------------------------------------------------------------
def test_imports_of_sees_deferred_relative_and_type_checking_imports() -> None:
    modules = ["pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.sub", "pkg.sub.d", "other"]
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from . import b\n"
        "from .sub.d import thing\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.c import C\n"
        "def f():\n"
        "    import other.x\n"
        "    from pkg import a\n"
    )
    assert imports_of("pkg.a", source, modules) == {"pkg.b", "pkg.sub.d", "pkg.c", "other"}
    assert imports_of("pkg.sub", "from .d import x\nfrom .. import c\n", modules, is_package=True) == {
        "pkg.sub.d", "pkg.c"}
    assert imports_of("pkg.sub.d", "from .. import b\nfrom ..sub import x\n", modules) == {"pkg.b", "pkg.sub"}


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"a"}, "a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_layer_violations_reports_upward_imports() -> None:
    graph = {
        "service.settings": set(),
        "features.store": {"features.config", "service.engine"},  # upward
        "features.config": {"service.settings"},  # the bottom imports nothing of the project
        "service.engine": {"features.store", "service.catalog"},
        "service.catalog": set(),
        "training.demo": {"service.cli"},  # nothing imports the CLI
        "service.cli": {"training.demo"},
    }
    assert layer_violations(graph) == [
        "features.config (layer configuration) imports service.settings (layer configuration)",
        "features.store (layer features) imports service.engine (layer service)",
        "training.demo (layer training) imports service.cli (layer cli)",
    ]
    assert layer_of("service.cli") == (5, "cli")
    assert layer_of("service.state.resp") == (2, "service")
    assert layer_of("service.settings") == (0, BOTTOM)
