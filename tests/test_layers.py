"""How the project's modules import each other, read from the source with ``ast``: no module imports
another module's underscore names, and no two modules import each other (directly or in a ring;
imports inside functions count)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("codi2", "train", "serve", "data_builders", "benchmarks", "tests")


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the project's top-level folders."""
    out = {}
    for top in PACKAGES:
        for f in sorted((root / top).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (resolves ``from . import x`` / ``from ..a import b``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str, Optional[str]]]:
    """(line, imported project module, imported name or None) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, is_package, node)
            if target.split(".")[0] not in PACKAGES:
                continue
            for a in node.names:
                if f"{target}.{a.name}" in known:  # a submodule, not a name
                    yield node.lineno, f"{target}.{a.name}", None
                else:
                    yield node.lineno, target, a.name


def test_no_module_imports_private_names():
    known = project_modules()
    bad = []
    for module, path in known.items():
        for line, target, name in imports(module, path, known):
            if target == module:
                continue
            private = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if (name and name.startswith("_") and not name.startswith("__")) or private:
                bad.append(f"{path.relative_to(REPO)}:{line}: {target}" + (f" import {name}" if name else ""))
    assert not bad, "modules import other modules' underscore names:\n" + "\n".join(bad)


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for _, target, _ in imports(module, path, known):
            if target in known and target != module:
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph(project_modules()))
    assert not found, "modules import each other (directly or in a ring):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_checks_catch_a_private_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "codi2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import _hidden\n")
    (pkg / "b.py").write_text("import codi2.a\n_hidden = 1\n")
    known = project_modules(tmp_path)
    assert list(imports("codi2.a", pkg / "a.py", known)) == [(2, "codi2.b", "_hidden")]
    assert cycles(import_graph(known)) == [["codi2.a", "codi2.b"]]
