"""Layers look down: ``codi2/`` (the library) never imports ``train``, ``serve`` or ``data_builders``, the
packages above it; they plug in through the ``codi2.plugins`` entry points instead."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABOVE = ("train", "serve", "data_builders")
# the check, verbatim: also catches a module path in a string (importlib.import_module("serve.app"))
MENTION = re.compile(r"data_builders|^import train|from train|import serve|from serve", re.M)


def upward_imports(package: Path, above: tuple[str, ...] = ABOVE) -> list[str]:
    """``file:line: module`` for every import of a package in ``above`` anywhere under ``package`` (module-level
    or inside functions), and every line the issue's grep would find."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(package.parent)
        for node in ast.walk(ast.parse(text, str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                  in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
                names = [str(node.args[0].value)]
            found += [f"{rel}:{node.lineno}: {n}" for n in names if n.split(".")[0] in above]
        for m in MENTION.finditer(text):
            found.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: mentions {m.group(0)!r}")
    return found


def test_library_imports_nothing_above_it():
    assert upward_imports(ROOT / "codi2") == []


def test_the_check_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "codi2"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "ok.py").write_text("import os\nfrom codi2 import config\n")
    (pkg / "sub" / "bad.py").write_text("def f():\n    from serve.app import main\n    import train.loop\n")
    (pkg / "dyn.py").write_text("import importlib\nimportlib.import_module('data_builders.world')\n")
    found = upward_imports(pkg)
    assert any(f.startswith("codi2/sub/bad.py:2: serve.app") for f in found), found
    assert any(f.startswith("codi2/sub/bad.py:3: train.loop") for f in found), found
    assert any(f.startswith("codi2/dyn.py:2: data_builders.world") for f in found), found
    assert not any(f.startswith("codi2/ok.py") for f in found), found


def test_importing_every_library_module_loads_nothing_above_it():
    script = (
        "import importlib, json, pkgutil, sys\nimport codi2\n"
        "for info in pkgutil.walk_packages(codi2.__path__, prefix='codi2.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {ABOVE!r})))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_plugins_register_the_wings_without_the_library_naming_them():
    from codi2.eval.registry import get_suite, suite_names
    from codi2.plugins import plugin_modules

    assert {"data_builders.world.plugin", "serve.app", "train.cli", "train.mini"} <= {m for _, m in plugin_modules()}
    assert {"dreambench", "image-edit", "audio-edit", "world"} <= set(suite_names())
    assert get_suite("world").cls.__module__ == "data_builders.world.suite"
    assert get_suite("world").many_data and not get_suite("image-edit").many_data
