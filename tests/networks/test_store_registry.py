"""The model store's registry is filled by the architecture modules, which the package imports.

``omnireg.networks.store`` imports no architecture (that would be a circle: each architecture imports
the store to register itself); ``omnireg/networks/__init__.py`` imports every architecture module, and
Python runs it before any submodule, so every kind is loadable as soon as the store is importable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import omnireg.networks as networks
from omnireg.networks import store

PACKAGE = Path(networks.__file__).parent


def _registering_modules() -> set[str]:
    """Modules of omnireg.networks that call ``register_architecture`` (outside the store)."""
    out = set()
    for path in PACKAGE.glob("*.py"):
        if path.stem in ("__init__", "store"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "register_architecture"]
        if calls:
            out.add(path.stem)
    return out


def _imported_by_init() -> set[str]:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                out.update(a.name for a in node.names)
            else:
                out.add(node.module.split(".")[0])
    return out


def test_every_registering_module_is_imported_by_the_package_init():
    registering = _registering_modules()
    assert {"disa", "mad", "pyramid", "voxelmorph"} <= registering
    assert registering - _imported_by_init() == set(), "add `from . import <module>` to omnireg/networks/__init__.py"


def test_the_registry_holds_every_builtin_kind_after_importing_the_package():
    assert {"disa", "mad", "pyramid", "voxelmorph", "voxelmorph-diff"} <= set(store._ARCHITECTURES)


def test_a_fresh_interpreter_loads_a_shipped_model_through_the_store_alone():
    code = (
        "from omnireg.networks.store import load_model, packaged_weights\n"
        "model, meta = load_model(packaged_weights('mad_2d'))\n"
        "print(type(model).__name__, model.config.ndim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["MADNet", "2"]
