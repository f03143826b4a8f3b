"""Dependencies point one way: the layer order of omnireg's packages, and no circle of files.

Every module under ``src/omnireg`` is parsed with :mod:`ast` (nothing is imported) and all its imports
of omnireg are collected: at module level and inside functions (lazy imports), ``import omnireg.x``,
``from omnireg.x import y``, relative ``from . import y`` / ``from ..x import y``. The only exemption is
the body of an ``if TYPE_CHECKING:`` block, which never runs. An import names a *module*:
``from .store import f`` and ``from . import store`` both depend on ``store.py``; ``from ..core import
Grid`` depends on ``core/__init__.py``. Importing a submodule also runs its package's ``__init__``; that
implicit step is not an edge (otherwise every package whose ``__init__`` gathers its submodules would
be a circle), so a circle here is one that the code writes.

Checked:

* the layer order (``LAYERS``, from the ground up): a package imports packages of lower layers only,
  and packages of one layer do not import each other (``ALLOWED`` lists explicit exceptions, each with
  its reason; an entry that is no longer needed fails, so the list only shrinks);
* no circle of files: the module graph, lazy imports included, is acyclic;
* no hidden imports (``importlib.import_module``, ``__import__``) outside the top-level ``__init__``;
* the top-level ``omnireg/__init__.py`` and ``__main__.py`` are exempt as importers; other modules may
  take only ``__version__`` from the top-level package (its other names load subpackages lazily,
  which would hide a dependency).

Why the order is what it is (it follows the code; see also README "Architecture"):

* ``data`` is package data with two file-path helpers: a leaf.
* ``core`` (grids, sampling, filters, finite differences) imports nothing of omnireg but ``data``.
* ``io`` (files) and ``regularizers`` (penalties on fields) need only ``core``.
* ``transforms`` reads and writes transform files through ``io``.
* ``networks`` sits above ``transforms`` (registration networks warp and integrate velocities with
  ``transforms.svf``) and uses ``io`` for atomic model files; it knows no similarity, loss or loop.
* ``similarity`` holds the learned measures (DISA, MAD) that run ``networks``.
* ``optim`` (the engine), ``training``, ``evaluation`` and ``landmarks`` use the layers below and not
  each other.
* ``report`` draws results of the engine (``optim.result``) and ``evaluation`` figures.
* ``pipeline`` (one registration from files to outputs) runs methods (the engine, networks) and the
  report; ``batch`` runs the pipeline over cohorts; ``cli`` is the command line on top of everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import omnireg

#: Layers from the ground up; packages in one set form one layer.
LAYERS: list[set[str]] = [
    {"data"},
    {"core"},
    {"io", "regularizers"},
    {"transforms"},
    {"networks"},
    {"similarity"},
    {"optim", "training", "evaluation", "landmarks"},
    {"report"},
    {"pipeline"},
    {"batch"},
    {"cli"},
]

#: Imports against the rules that are allowed on purpose: (importing module, imported module) -> reason.
#: Empty today. A same-layer import with a clear need, or a known violation left for a later change
#: (name the issue), goes here; entries that the code no longer needs make the test fail.
ALLOWED: dict[tuple[str, str], str] = {}

ROOT = Path(omnireg.__file__).resolve().parent


# ------------------------------------------------------------------------------------------ the checker
def exempt(module: str) -> bool:
    """The top-level ``__init__`` and ``__main__`` (the package's entry points) are exempt as importers."""
    parts = module.split(".")
    return len(parts) == 1 or parts[1:] == ["__main__"]


def module_files(root: Path) -> dict[str, Path]:
    """Module name -> file for every ``.py`` file below the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST):
    """``ast.walk`` that skips the body of ``if TYPE_CHECKING:`` blocks (their ``else`` still counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, tuple[str, ...]]]:
    """The omnireg modules that module ``name`` imports: ``(target, line, names taken from it)``.

    Also reports hidden imports as the target ``"<dynamic>"``.
    """
    top = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _walk_runtime(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    found.append((alias.name, node.lineno, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != top:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # `from package import submodule`
                    found.append((sub, node.lineno, ()))
                else:
                    found.append((source, node.lineno, (alias.name,)))
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                found.append(("<dynamic>", node.lineno, ()))
    return found


def import_graph(root: Path) -> tuple[dict[str, Path], dict[str, dict[str, list[int]]], list[str]]:
    """Modules, the edges ``importer -> {imported: [lines]}`` among them, and rule breaches of the imports.

    The breaches found here are those that need the import itself: unknown targets, hidden imports
    and names other than ``__version__`` taken from the top-level package.
    """
    modules = module_files(root)
    top = root.name
    edges: dict[str, dict[str, list[int]]] = {m: {} for m in modules}
    problems = []
    for name, path in modules.items():
        if exempt(name):
            continue
        for target, line, names in module_imports(name, path, modules):
            where = f"{path.relative_to(root.parent)}:{line}"
            if target == "<dynamic>":
                problems.append(f"{where}: hidden import (import_module/__import__) in {name}")
                continue
            if target not in modules:
                problems.append(f"{where}: {name} imports {target}, which is not a module of {top}")
                continue
            if target == top and set(names) - {"__version__"}:
                problems.append(
                    f"{where}: {name} takes {sorted(names)} from the top-level package; import them from their subpackage"
                )
            if target != name:
                edges[name].setdefault(target, []).append(line)
    return modules, edges, problems


def layer_of(module: str, layers: list[set[str]]) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for i, layer in enumerate(layers):
        if parts[1] in layer:
            return i
    return None


def layer_violations(
    modules: dict[str, Path], edges: dict[str, dict[str, list[int]]], layers: list[set[str]], allowed: dict
) -> tuple[list[str], set[tuple[str, str]]]:
    """Imports against ``layers`` (and not in ``allowed``), and the ``allowed`` entries that were used."""
    bad, used = [], set()
    for src, targets in edges.items():
        if exempt(src):
            continue
        pkg = src.split(".")[1]
        s_layer = layer_of(src, layers)
        if s_layer is None:
            bad.append(f"{src}: package {pkg!r} is in no layer; add it to LAYERS where it belongs")
            continue
        for dst, lines in targets.items():
            d_layer = layer_of(dst, layers)
            if d_layer is None or dst.split(".")[1] == pkg:
                continue  # the top-level package (checked above) or the same package
            if d_layer < s_layer:
                continue
            if (src, dst) in allowed:
                used.add((src, dst))
                continue
            how = "in the same layer as" if d_layer == s_layer else "in a higher layer than"
            bad.append(f"{src} (line {lines[0]}) imports {dst}: {dst.split('.')[1]!r} is {how} {pkg!r}")
    return bad, used


def circles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """Every strongly connected component of more than one module, each as one closed path through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative Tarjan (no recursion limit)
        nonlocal counter
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(_closed_path(sorted(comp), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def _closed_path(component: list[str], edges: dict[str, dict[str, list[int]]]) -> list[str]:
    """A shortest circle through the first module of a strongly connected ``component`` (breadth first)."""
    members = set(component)
    start = component[0]
    previous = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v]):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w in members and w not in previous:
                previous[w] = v
                queue.append(w)
    return component  # unreachable for a strongly connected component


# ------------------------------------------------------------------------------------------ the tree
@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_every_package_has_a_layer(graph):
    modules, _, _ = graph
    packages = {m.split(".")[1] for m in modules if not exempt(m)}
    placed = set().union(*LAYERS)
    assert packages - placed == set(), f"packages in no layer: {sorted(packages - placed)}; add them to LAYERS"
    assert "pipeline" in placed  # its place is reserved between report and batch


def test_imports_are_explicit_and_resolve(graph):
    _, _, problems = graph
    assert problems == [], "\n".join(problems)


def test_imports_follow_the_layer_order(graph):
    modules, edges, _ = graph
    bad, used = layer_violations(modules, edges, LAYERS, ALLOWED)
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)
    stale = set(ALLOWED) - used
    assert stale == set(), f"ALLOWED entries the code no longer needs (remove them): {sorted(stale)}"


def test_no_circle_of_files_lazy_imports_included(graph):
    _, edges, _ = graph
    found = circles(edges)
    assert found == [], "circles of imports:\n" + "\n".join(" -> ".join(c) for c in found)


# ------------------------------------------------------------------------------------------ the checker's own tests
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [root, *root.rglob("*")]:
        if d.is_dir() and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    return root


def test_checker_finds_lazy_relative_and_absolute_imports_but_not_type_checking_ones(tmp_path):
    root = _tree(
        tmp_path,
        {
            "core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main\n",
            "core/b.py": "def f():\n    import pkg.io.c\n    from ..io import d\n    from . import a\n",
            "io/c.py": "",
            "io/d.py": "from pkg.core.a import x\n",
            "cli/main.py": "",
        },
    )
    modules, edges, problems = import_graph(root)
    assert problems == []
    assert edges["pkg.core.a"] == {}
    assert set(edges["pkg.core.b"]) == {"pkg.io.c", "pkg.io.d", "pkg.core.a"}
    assert edges["pkg.io.d"] == {"pkg.core.a": [1]}
    bad, _ = layer_violations(modules, edges, [{"core"}, {"io"}, {"cli"}], {})
    assert sorted(bad) == [
        "pkg.core.b (line 2) imports pkg.io.c: 'io' is in a higher layer than 'core'",
        "pkg.core.b (line 3) imports pkg.io.d: 'io' is in a higher layer than 'core'",
    ]


def test_checker_finds_same_layer_imports_and_honours_and_reports_allowed_ones(tmp_path):
    root = _tree(tmp_path, {"optim/e.py": "from ..training import loop\n", "training/loop.py": ""})
    modules, edges, _ = import_graph(root)
    layers = [{"optim", "training"}]
    bad, _ = layer_violations(modules, edges, layers, {})
    assert len(bad) == 1 and "same layer" in bad[0]
    bad, used = layer_violations(modules, edges, layers, {("pkg.optim.e", "pkg.training.loop"): "why"})
    assert bad == [] and used == {("pkg.optim.e", "pkg.training.loop")}


def test_checker_finds_a_circle_hidden_in_a_lazy_import_and_through_a_package_init(tmp_path):
    root = _tree(
        tmp_path,
        {
            "nets/store.py": "def load():\n    from . import disa\n",
            "nets/disa.py": "from .store import register\n",
            "nets/__init__.py": "from . import mad\n",
            "nets/mad.py": "from ..nets import store\n",
            "nets/other.py": "from ..nets import x\n",
        },
    )
    _, edges, _ = import_graph(root)
    found = circles(edges)
    assert found == [["pkg.nets.disa", "pkg.nets.store", "pkg.nets.disa"]]
    edges["pkg.nets.store"]["pkg.nets.other"] = [1]  # store -> other -> nets/__init__ -> mad -> store
    assert circles(edges) == [["pkg.nets", "pkg.nets.mad", "pkg.nets.store", "pkg.nets.other", "pkg.nets"]]


def test_checker_reports_hidden_imports_unknown_modules_and_names_from_the_top_level(tmp_path):
    root = _tree(
        tmp_path,
        {
            "__init__.py": "__version__ = '1'\n",
            "core/a.py": "import importlib\nm = importlib.import_module('pkg.cli')\n",
            "core/b.py": "from pkg import __version__\nfrom .. import Grid\nfrom pkg.core import missing_mod\n",
            "core/c.py": "from .nothere import f\n",
        },
    )
    _, _, problems = import_graph(root)
    text = "\n".join(problems)
    assert "core/a.py:2: hidden import" in text
    assert "pkg.core.b takes ['Grid'] from the top-level package" in text
    assert "pkg.core.c imports pkg.core.nothere, which is not a module" in text
    assert len(problems) == 3  # `from pkg.core import missing_mod` names an attribute of core/__init__
