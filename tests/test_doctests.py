"""Every docstring example of omnireg runs and holds; a module has runnable examples or none.

One test per module under ``src/omnireg`` (found on disk, so a new module is covered without editing
this file): its examples (module, classes, functions, methods, properties, private ones included) are
collected with :class:`doctest.DocTestFinder` and run with the module's globals. A module whose source
has lines starting with ``>>>`` must yield exactly that many examples, so an example the finder cannot
reach (in a string that is not a docstring, or in the docstring of an object imported from elsewhere)
fails instead of silently never running.
``omnireg/__main__.py`` runs the command line when imported; it is only checked to hold no example.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import omnireg

ROOT = Path(omnireg.__file__).resolve().parent
PROMPT = re.compile(r"^\s*>>> ", re.MULTILINE)


def _module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


MODULES = [m for m in _module_names() if m != "omnireg.__main__"]


def test_the_module_list_covers_the_package():
    assert {"omnireg", "omnireg.core.grid", "omnireg.transforms.linear", "omnireg.cli.main"} <= set(MODULES)
    assert not PROMPT.search((ROOT / "__main__.py").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_and_hold(name):
    module = importlib.import_module(name)
    prompts = len(PROMPT.findall(Path(module.__file__).read_text(encoding="utf-8")))
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    found = sum(len(t.examples) for t in tests)
    assert found == prompts, f"{name}: {prompts} '>>>' lines in the source but {found} examples reachable by doctest"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted == prompts
