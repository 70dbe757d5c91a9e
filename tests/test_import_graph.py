"""The imports inside ``snn`` run one way: no module imports, directly or through others, a module
that imports it back, and no package imports one on a floor above it (docs/guides/architecture.md):
``snn.neurons`` <- ``snn.models`` <- ``snn.data`` / ``snn.training`` (``snn.data`` never imports
``snn.training``) <- ``snn.train`` (the entry point; ``train.py`` at the root calls it), and
``snn.errors`` below them all; ``snn.interop`` stands beside the training stack.

The graph is read from the source with ``ast``, so it also sees the imports inside functions that
a cycle hides behind (they run later, but the modules still depend on each other both ways).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "snn"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of ``package`` (``__init__.py`` is the
    package itself)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``name`` imports anywhere in its source:
    ``import a.b`` imports ``a.b``; ``from a import b`` the submodule ``a.b`` if there is one, else
    ``a``; relative imports resolve against the module's package."""
    is_package = path.name == "__init__.py"
    package_parts = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package_parts[: len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = []
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a, a.b and a.b.c; the innermost one of ours is the dependency.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[m0, m1, ..., m0]`` of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


# What each package may import from snn, besides itself.
MAY_IMPORT = {
    "snn.errors": set(),  # the exceptions: every floor imports them, they import nothing of ours
    "snn.neurons": {"snn.errors"},
    "snn.models": {"snn.errors", "snn.neurons"},
    "snn.data": {"snn.errors", "snn.neurons", "snn.models"},
    "snn.training": {"snn.errors", "snn.neurons", "snn.models", "snn.data"},
    "snn.interop": {"snn.errors", "snn.neurons", "snn.models"},
    "snn.sweep": {"snn.errors"},  # Optuna and Hydra only: the trials' runs are snn.training's, reached by config
}


def upward_imports(graph: dict[str, set[str]], may_import: dict[str, set[str]] = MAY_IMPORT) -> list[str]:
    """``"a imports b"`` for every import of a module ``b`` of a package that ``a``'s package may not
    import (by ``may_import``: package -> the packages it may import besides itself)."""

    def package(module: str) -> str | None:
        return next((p for p in may_import if module == p or module.startswith(p + ".")), None)

    found = []
    for module, imported in sorted(graph.items()):
        home = package(module)
        if home is None:
            continue
        for target in sorted(imported):
            there = package(target)
            if there is not None and there != home and there not in may_import[home]:
                found.append(f"{module} imports {target}")
    return found


def test_snn_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    """The check itself: a cycle closed by an import inside a function, and relative imports."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import helper\n")
    (pkg / "sub" / "__init__.py").write_text("def helper():\n    from ..b import x\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub"} and graph["pkg.sub"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub", "pkg.b", "pkg.a"]
    (pkg / "b.py").write_text("x = 1\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None


def test_no_package_imports_one_above_it():
    assert upward_imports(import_graph()) == []


def test_the_check_finds_data_importing_training(tmp_path):
    """The floor check itself: a data module importing the training stack (even inside a function)
    is reported; training importing data is not."""
    pkg = tmp_path / "snn"
    for folder in ("data", "training"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "images.py").write_text("def load():\n    from snn.training.errors import DataError\n")
    (pkg / "training" / "errors.py").write_text("from snn.data import images\n")
    graph = import_graph(tmp_path, "snn")
    assert upward_imports(graph) == ["snn.data.images imports snn.training.errors"]
