"""The report and results packages: a renderer for every result kind, one module per report kind
sharing only public helpers, and no import circle (module- or function-level) among their modules."""

import ast
import pathlib

import gradrank
from gradrank.report import render
from gradrank.results import kinds

ROOT = pathlib.Path(gradrank.__file__).parent
HEAVY = ("matplotlib", "weasyprint")  # optional heavy dependencies, imported where drawn


def _modules(*folders):
    out = {}
    for folder in folders:
        for p in sorted((ROOT / folder).glob("*.py")):
            out[f"gradrank.{folder}.{p.stem}".removesuffix(".__init__")] = ast.parse(p.read_text(encoding="utf-8"))
    return out


def _imports(tree):
    """(module imported, names, inside a function) for every gradrank import of a module."""
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names], id(node) in inner
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], id(node) in inner


def test_every_result_kind_and_the_sweep_have_a_renderer():
    assert set(render.RENDERERS) == {*kinds.KINDS, "sweep"}


def test_report_modules_import_no_private_name_of_another_module():
    for name, tree in _modules("report", "results").items():
        for module, names, _ in _imports(tree):
            if module.startswith("gradrank") and module != name:
                assert not [n for n in names if n.startswith("_")], (name, module, names)


def test_report_and_results_import_only_heavy_optional_packages_inside_functions():
    for name, tree in _modules("report", "results").items():
        inside = [m for m, _, inner in _imports(tree) if inner and not m.startswith(HEAVY)]
        assert not inside, (name, inside)


def test_no_import_circle_in_report_or_results():
    mods = _modules("report", "results")
    graph = {}
    for name, tree in mods.items():
        graph[name] = set()
        for module, names, _ in _imports(tree):
            for target in [f"{module}.{n}" for n in names] + [module]:
                if target in mods and target != name:
                    graph[name].add(target)
                    break
    state = {}

    def visit(n, path):
        if state.get(n) == "open":
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(n) :], n]))
        if state.get(n) == "done":
            return
        state[n] = "open"
        for t in graph[n]:
            visit(t, [*path, n])
        state[n] = "done"

    for n in graph:
        visit(n, [])
