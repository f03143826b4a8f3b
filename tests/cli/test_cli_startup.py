"""``omnireg --help`` and ``--version`` start without the numerical stack, and the CLI has no import circle.

Start-up time is measured, not asserted (README and the issue report the figures); what is pinned here is
the cause of a slow start: importing torch, numpy or omnireg's numerical packages before a sub-command runs.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import omnireg

SRC = Path(omnireg.__file__).resolve().parents[1]
CLI = SRC / "omnireg" / "cli"
HEAVY = ("torch", "numpy", "scipy", "SimpleITK", "nibabel", "omnireg.core", "omnireg.transforms", "omnireg.optim")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_do_not_import_the_numerical_stack(flag):
    code = (
        "import sys\n"
        "from omnireg.cli.main import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    if flag == "--version":
        assert f"omnireg {omnireg.__version__}" in proc.stdout
    else:
        for command in ("register", "apply", "evaluate", "landmarks", "batch", "train", "demo", "info"):
            assert command in proc.stdout


def test_python_dash_m_omnireg_version_imports_no_torch():
    """The module entry point, as measured with ``python -X importtime -m omnireg --version``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "omnireg", "--version"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"omnireg {omnireg.__version__}"
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "no -X importtime output"
    assert not {m for m in imported if m.split(".")[0] in ("torch", "numpy", "scipy", "SimpleITK", "nibabel")}


def test_package_exports_stay_importable_and_are_loaded_on_first_use():
    code = (
        "import sys, omnireg\n"
        "assert 'torch' not in sys.modules, 'import omnireg loaded torch'\n"
        "from omnireg import Grid, Image, Affine, compose, warp, sample\n"
        "assert 'torch' in sys.modules\n"
        "missing = [n for n in omnireg.__all__ if not hasattr(omnireg, n)]\n"
        "assert not missing, missing\n"
        "assert set(omnireg.__all__) <= set(dir(omnireg))\n"
        "try:\n"
        "    omnireg.no_such_name\n"
        "except AttributeError as e:\n"
        "    print('ATTR', e)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert "ATTR" in proc.stdout and "no_such_name" in proc.stdout


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module relative to omnireg.cli or absolute, names) of every import in a file, nested ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            out.append((node.lineno, mod, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
    return out


def test_cli_modules_do_not_import_the_entry_point_or_each_other_circularly():
    """``main`` imports the sub-commands; no sub-command (or helper) imports ``main`` back."""
    for path in sorted(CLI.glob("*.py")):
        if path.name in ("main.py", "__init__.py"):
            continue
        for line, mod, names in _imports(path):
            assert mod not in (".main", "omnireg.cli.main") and not (mod == "." and "main" in names), \
                f"{path.name}:{line} imports the entry point"
    # the error and progress helpers import nothing from the CLI
    for helper in ("errors.py", "progress.py"):
        for line, mod, _ in _imports(CLI / helper):
            assert not mod.startswith(".") and not mod.startswith("omnireg"), f"{helper}:{line} imports {mod}"


def test_sub_command_modules_import_nothing_heavy_at_module_level():
    """Module-level imports only (imports inside ``run`` are where the work starts)."""
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            top = mod.lstrip(".").split(".")[0]
            assert top not in ("torch", "numpy", "scipy", "SimpleITK", "nibabel"), f"{path.name}: imports {mod}"
            if node.level if isinstance(node, ast.ImportFrom) else False:
                assert node.level == 1, f"{path.name}: imports {mod} (omnireg internals) at module level"


def test_cli_error_is_still_importable_from_main():
    from omnireg.cli import errors, main

    assert main.CliError is errors.CliError
