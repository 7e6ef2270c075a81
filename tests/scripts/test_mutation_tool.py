"""scripts/mutants.py generates its mutants from the AST: each kind makes the edit it names, every module
of gradrank/ with mutable code gets mutants and tests, and each drawn mutant edits the text it reports. Nothing here
names a place in gradrank's code, so renaming or moving code never fails it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "scripts" / "mutants.py"

# one instance of each AST kind, and the edit each must make (kind, before, after)
SAMPLE = """
import math
import torch


def f(a, b, x, y):
    if a < b and x >= y:
        z = a + b * 2.5
    z = -a
    w = x[: a - 1]
    v = torch.mean(x).T
    u = math.floor(a) + min(a, b) + x.std(ddof=0)
    if not a:
        return None
    return g(a, b), z, v, u, w


def g(a, b):
    return a / b
"""
EXPECTED = {
    ("boundary", "<", "<="),
    ("boundary", ">=", ">"),
    ("logic", "and", "or"),
    ("logic", "not a", "a"),
    ("arithmetic", "+", "-"),
    ("arithmetic", "*", "/"),
    ("arithmetic", "/", "*"),
    ("constant", "2.5", "1.25"),
    ("off-by-one", "1", "2"),
    ("off-by-one", "a - 1", "(a - 1) + 1"),
    ("sign", "-a", "a"),
    ("sign", "2.5", "(-2.5)"),
    ("swap-args", "a, b", "b, a"),
    ("mean-sum", "mean", "sum"),
    ("transpose", "torch.mean(x).T", "torch.mean(x)"),
    ("floor-ceil", "floor", "ceil"),
    ("min-max", "min", "max"),
    ("ddof", "0", "1"),
    ("return-element", "g(a, b), z", "z, g(a, b)"),
}


def _list(root: Path, *args: str) -> list[dict]:
    out = root / f"mutants-{len(list(root.glob('mutants-*.json')))}.json" if root != ROOT else Path(args[-1])
    cmd = [sys.executable, str(TOOL), "--list", "--root", str(root), *args]
    if root != ROOT:
        cmd += ["--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.read_text())["mutants"]


def _check_edit(root: Path, mt: dict) -> None:
    """The reported span holds `before`; the edit compiles and changes the module's AST."""
    data = (root / mt["path"]).read_bytes()
    assert data[mt["start"] : mt["end"]].decode() == mt["before"], mt["id"]
    assert data[: mt["start"]].count(b"\n") + 1 == mt["line"], mt["id"]
    new = data[: mt["start"]] + mt["after"].encode() + data[mt["end"] :]
    assert ast.dump(ast.parse(new)) != ast.dump(ast.parse(data)), mt["id"]


def test_each_ast_kind_makes_the_edit_it_names(tmp_path):
    (tmp_path / "gradrank").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "gradrank" / "sample.py").write_text(SAMPLE)
    (tmp_path / "tests" / "test_sample.py").write_text("def test_nothing():\n    pass\n")
    (tmp_path / "tests" / "mutants_map.toml").write_text('[tests]\n"gradrank" = ["tests/test_sample.py"]\n')
    mutants = _list(tmp_path)
    made = {(mt["kind"], mt["before"], mt["after"]) for mt in mutants}
    assert EXPECTED <= made, sorted(EXPECTED - made)
    assert all(mt["tests"] == ["tests/test_sample.py"] for mt in mutants)
    for mt in mutants:
        _check_edit(tmp_path, mt)
    # the draw is deterministic and spread over the kinds
    drawn = _list(tmp_path, "--per-module", "5", "--seed", "3")
    assert drawn == _list(tmp_path, "--per-module", "5", "--seed", "3")
    assert len(drawn) == 5 and len({mt["kind"] for mt in drawn}) == 5


def _mutable(tree: ast.AST) -> bool:
    """Whether a module holds code the tool must mutate: an order comparison (boundary) or an
    arithmetic operator (arithmetic). A module of imports, names, tables and membership tests
    (results/kinds.py, a registry) has none, and gets no mutant."""
    order = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
    arith = (ast.Add, ast.Sub, ast.Mult, ast.Div)
    return any(
        (isinstance(n, ast.Compare) and any(isinstance(op, order) for op in n.ops))
        or (isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, arith))
        for n in ast.walk(tree)
    )


def test_every_module_with_mutable_code_gets_mutants_and_mapped_tests_and_each_edit_is_what_it_says(tmp_path):
    """One drawn mutant per module of gradrank/ that holds an order comparison or an arithmetic
    operator, each mapped to existing tests by tests/mutants_map.toml (the tool refuses a map naming
    missing files)."""
    mutants = _list(ROOT, "--per-module", "1", "--seed", "0", "--json", str(tmp_path / "m.json"))
    by_module = {mt["path"]: mt for mt in mutants}
    missing = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "gradrank").rglob("*.py"))
        if _mutable(ast.parse(path.read_text())) and path.relative_to(ROOT).as_posix() not in by_module
    ]
    assert not missing, f"no mutant for {missing}"
    for mt in mutants:
        assert mt["tests"] and all((ROOT / t.split("::")[0]).exists() for t in mt["tests"]), mt["id"]
        _check_edit(ROOT, mt)


def test_a_module_without_mutable_code_is_not_required_to_get_mutants():
    assert not _mutable(ast.parse("from a import b\nKINDS = {k.name: k for k in (b,)}\n\ndef of(x):\n    return x in KINDS\n"))
    assert _mutable(ast.parse("def f(a, b):\n    return a < b\n")) and _mutable(ast.parse("x = 1\nx += 2\n"))
