"""The report and results packages: a renderer for every result kind, one module per report kind
sharing only public helpers. (No import circle and no function-level import of a non-optional
module, here as everywhere in gradrank: tests/test_import_graph.py.)"""

import ast
import pathlib

import gradrank
from gradrank.report import render
from gradrank.results import kinds

ROOT = pathlib.Path(gradrank.__file__).parent


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
