"""The library never imports the application (``avssl.apps``, and the entry points ``avssl.cli``, ``avssl.__main__``).

Two checks: every import statement of every library file (read, not run, so a lazy import inside a
function counts too), and a fresh interpreter that imports every library module and then holds no
application module.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import avssl

PACKAGE = Path(avssl.__file__).resolve().parent
APPLICATION = ("avssl.apps", "avssl.cli", "avssl.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_application(module: str) -> bool:
    return any(module == app or module.startswith(app + ".") for app in APPLICATION)


def library_files() -> List[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not _is_application(_module_name(p)))


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of every module an import statement (or ``import_module("...")``) names."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # ``from avssl import apps`` names the module in the alias
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def application_imports(source: str, module: str, is_package: bool = False, where: str = "") -> List[str]:
    """``where:line imports NAME`` for each application module that ``source`` (module ``module``) imports."""
    tree = ast.parse(source, filename=where or module)
    return [f"{where or module}:{line} imports {name}"
            for line, name in _imported(tree, module, is_package) if _is_application(name)]


def test_the_scan_sees_every_form_of_import():
    """The scanner itself: each way of writing the import is caught (else the real check proves nothing)."""
    forms = ["import avssl.apps.demo", "from avssl.apps import synthetic", "from avssl import apps",
             "from avssl import cli", "from ..apps.bench import BENCHMARKS", "from .. import cli",
             "importlib.import_module('avssl.apps.compare')", "def f():\n    from avssl.apps.pages import write_page"]
    for form in forms:
        assert application_imports(form, "avssl.data.sampling"), form
    assert application_imports("from ...apps import demo", "avssl.data.prep.plan") != []
    assert application_imports("from . import manifest\nfrom avssl.data import decoding\nimport avssl.config\n"
                               "from .. import registry", "avssl.data.sampling") == []


def test_application_modules_live_in_apps():
    library = {_module_name(p) for p in library_files()}
    assert "avssl.data.decoding" in library and "avssl.config" in library
    misplaced = sorted(m for m in library if set(m.split(".")) & {"demo", "compare", "bench", "synthetic", "apps"})
    assert misplaced == []


def test_no_library_file_imports_the_application():
    files = library_files()
    found = [hit for p in files for hit in application_imports(
        p.read_text(encoding="utf-8"), _module_name(p), p.name == "__init__.py", str(p.relative_to(PACKAGE.parent)))]
    assert found == []


_FRESH = """
import importlib, pkgutil, sys
import avssl
APP = ("avssl.apps", "avssl.cli", "avssl.__main__")
def app(name): return any(name == a or name.startswith(a + ".") for a in APP)
names, todo = [], [avssl]
while todo:  # walk_packages would import the application's packages to list them: walk by hand
    pkg = todo.pop()
    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        if not app(m.name):
            names.append(m.name)
            mod = importlib.import_module(m.name)
            if m.ispkg:
                todo.append(mod)
loaded = sorted(m for m in sys.modules if app(m))
print(len(names), "library modules imported; application modules loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_importing_every_library_module_loads_no_application_module():
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _FRESH], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert int(proc.stdout.split()[0]) > 50  # the walk found the library (not an empty package)
