"""gradrank's mutation audit: plant realistic bugs one at a time and see whether the tests notice.

    python scripts/mutants.py --list --per-module 3 --seed 0                 # what would run
    python scripts/mutants.py --per-module 3 --under gradrank/core --json /tmp/m.json
    python scripts/mutants.py --per-module 2 --kind boundary --whole-suite --jobs 2
    python scripts/mutants.py --list --json /tmp/all.json                     # every mutant, as JSON

Mutants are generated, not written by hand: every module of gradrank/ is parsed and each place where a
realistic bug of one of the KINDS can be planted yields a mutant (a comparison boundary, an arithmetic
operator, an integer off by one, a slice bound, a dropped or added minus, two swapped arguments, a
halved constant, mean for sum, a ddof, a dropped transpose, floor for ceil, min for max, a wrong
returned element, and for or). A mutant is a text edit at the span the AST gives (line, column), so
formatting and comments elsewhere stay; PATTERNS adds, by regular expression, kinds the AST walk
cannot make. `--per-module K --seed S` draws K mutants per module, spread over the kinds
(deterministic for a given tree and seed).

Each mutant runs on a fresh temporary copy of the tree (the worktree is never written) with the tests
that guard its module, from tests/mutants_map.toml (the longest key that contains the module), or the
whole suite (`--whole-suite`), under `pytest -x` and a timeout: a failing or timed-out run kills it, a
passing one lets it survive. Each distinct selection first runs once unmutated: a selection that fails
on clean code makes its mutants "invalid", never "killed". The JSON report (rewritten after each
mutant, so an interrupted audit leaves one) gives every result and the kill rates by module and by
kind. Nothing here is part of CI: the tool runs by hand, and docs/testing.md says what it found.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "tests" / "mutants_map.toml"
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "runs", "*.egg-info")

KINDS = (
    "boundary",  # < <-> <=, > <-> >=
    "arithmetic",  # + <-> -, * <-> /, also in augmented assignments
    "off-by-one",  # an integer constant + 1, a slice bound + 1
    "sign",  # a unary minus dropped, or added to the right operand of *
    "swap-args",  # the first two positional arguments of a call, when alike
    "constant",  # a float constant halved (0.0 -> 1.0)
    "mean-sum",  # mean <-> sum (method, numpy or torch function)
    "ddof",  # ddof / correction 0 <-> 1, unbiased True <-> False
    "transpose",  # .T / .mT dropped
    "floor-ceil",  # floor <-> ceil
    "min-max",  # min <-> max, argmin <-> argmax, amin <-> amax, clamp_min <-> clamp_max
    "return-element",  # return a, b -> return b, a
    "logic",  # and <-> or, not dropped
)
SWAPS = {
    "mean-sum": {"mean": "sum", "sum": "mean", "nanmean": "nansum", "nansum": "nanmean"},
    "floor-ceil": {"floor": "ceil", "ceil": "floor"},
    "min-max": {
        "min": "max",
        "max": "min",
        "argmin": "argmax",
        "argmax": "argmin",
        "amin": "amax",
        "amax": "amin",
        "clamp_min": "clamp_max",
        "clamp_max": "clamp_min",
        "minimum": "maximum",
        "maximum": "minimum",
    },
}
COMPARE = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">")}
ARITH = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*")}
ATOMS = (ast.Name, ast.Attribute, ast.Call, ast.Constant, ast.Subscript, ast.List, ast.Tuple, ast.Dict)


@dataclass(frozen=True)
class Pattern:
    """A hand-written mutant kind the AST walk cannot make: every match of `regex` in the modules whose
    path starts with `under` is one mutant (re.sub's `repl` applied to that match alone)."""

    kind: str
    regex: str
    repl: str
    under: str = "gradrank/"


PATTERNS: tuple[Pattern, ...] = (
    # a stream not indexed by what it should vary with: the index of a seeded stream dropped
    Pattern("stream", r"\b(stream|generator)\(([^(),]+), ([^(),]+)\)", r"\1(\2, 0)"),
    # a data-frame style centring dropped: x - x.mean(...) -> x
    Pattern("centring", r"\b(\w+) - \1\.mean\(([^()]*)\)", r"\1"),
    # a sorted order reversed
    Pattern("order", r"\bdescending=True\b", "descending=False"),
    # keepdim lost before a broadcast
    Pattern("keepdim", r"\bkeepdims?=True\b", "keepdim=False"),
)


@dataclass(frozen=True)
class Mutant:
    id: str  # module:line:column:kind:variant, stable for a given tree
    path: str  # module path relative to the repository root
    kind: str
    line: int  # 1-based line of the edit's start
    start: int  # byte offsets of the edited span in the file's UTF-8 text
    end: int
    before: str  # the span's text
    after: str  # its replacement


# ---------------------------------------------------------------------------- generating


class _Source:
    """A module's text with (line, column) -> byte offset; AST columns count UTF-8 bytes."""

    def __init__(self, path: str, text: str):
        self.path, self.data = path, text.encode()
        self.starts = [0]
        for ln in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(ln))

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode()

    def seg(self, node: ast.AST) -> str:
        return self.text(*self.span(node))

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:  # the last line start <= offset
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.starts[mid] <= offset else (lo, mid - 1)
        return lo + 1


def _wrapped(src: _Source, node: ast.AST) -> str:
    """The node's text, parenthesised unless it is an atom (its span excludes any parentheses)."""
    return src.seg(node) if isinstance(node, ATOMS) else f"({src.seg(node)})"


def _token_between(src: _Source, a: ast.AST, b: ast.AST, token: str) -> tuple[int, int] | None:
    """The byte span of operator `token` in the gap between nodes a and b (comments blanked)."""
    lo, hi = src.offset(a.end_lineno, a.end_col_offset), src.offset(b.lineno, b.col_offset)
    gap = re.sub(r"#[^\n]*", lambda m: " " * len(m.group().encode()), src.text(lo, hi))
    pattern = r"(?<![\w<>=!*/])" + re.escape(token) + (r"(?![\w=*/])" if token.isalpha() or token in "<>*/" else r"(?!=)")
    m = re.search(pattern, gap)
    if m is None:
        return None
    pre = len(gap[: m.start()].encode())
    return lo + pre, lo + pre + len(token.encode())


def _skipped(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: annotations, f-strings, docstrings and their subtrees."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots += [a.annotation for a in (*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs) if a.annotation]
            roots += [a.annotation for a in (node.args.vararg, node.args.kwarg) if a is not None and a.annotation]
            roots += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            roots.append(node)
    return {id(n) for r in roots for n in ast.walk(r)}


def _alike(a: ast.AST, b: ast.AST) -> bool:
    """Two call arguments that could be swapped by mistake: both names, attributes or subscripts, or numbers of one type."""
    if isinstance(a, ast.Constant) and isinstance(b, ast.Constant):
        return type(a.value) is type(b.value) and isinstance(a.value, (int, float)) and not isinstance(a.value, bool)
    return type(a) is type(b) and isinstance(a, (ast.Name, ast.Attribute, ast.Subscript))


def _edits(src: _Source, tree: ast.AST):
    """(kind, variant, start, end, after) for every mutable place of the module."""
    skip = _skipped(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for left, op, right in zip([node.left, *node.comparators], node.ops, node.comparators):
                if type(op) in COMPARE and (tok := _token_between(src, left, right, COMPARE[type(op)][0])):
                    yield "boundary", COMPARE[type(op)][1], *tok, COMPARE[type(op)][1]
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH:
            left, right = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.target, node.value)
            old, new = ARITH[type(node.op)]
            if isinstance(node, ast.AugAssign):
                old, new = old + "=", new + "="
            if any(
                isinstance(x, ast.JoinedStr) or (isinstance(x, ast.Constant) and isinstance(x.value, str)) for x in (left, right)
            ):
                continue  # string formatting or concatenation, a path joined
            if tok := _token_between(src, left, right, old):
                yield "arithmetic", new, *tok, new
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and isinstance(right, ATOMS[:5]):
                if not (isinstance(right, ast.Constant) and not isinstance(right.value, (int, float))):
                    yield "sign", "negated", *src.span(right), f"(-{src.seg(right)})"
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            if type(node.value) is int:
                yield "off-by-one", "+1", *src.span(node), str(node.value + 1)
            else:
                new = node.value / 2 if node.value else 1.0
                yield "constant", "halved", *src.span(node), repr(new)
        elif isinstance(node, ast.Slice):
            for bound, name in ((node.lower, "lower"), (node.upper, "upper")):
                if bound is not None and not isinstance(bound, ast.Constant):  # constants: off-by-one above
                    yield "off-by-one", f"{name}+1", *src.span(bound), f"{_wrapped(src, bound)} + 1"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            yield "sign", "dropped", *src.span(node), _wrapped(src, node.operand)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield "logic", "not-dropped", *src.span(node), _wrapped(src, node.operand)
        elif isinstance(node, ast.BoolOp) and len(node.values) >= 2:
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            if tok := _token_between(src, node.values[0], node.values[1], old):
                yield "logic", new, *tok, new
        elif isinstance(node, ast.Call):
            args = node.args
            if len(args) >= 2 and not any(isinstance(a, ast.Starred) for a in args[:2]) and _alike(args[0], args[1]):
                a, b = src.span(args[0]), src.span(args[1])
                if src.seg(args[0]) != src.seg(args[1]):
                    yield "swap-args", "0<->1", a[0], b[1], src.seg(args[1]) + src.text(a[1], b[0]) + src.seg(args[0])
            for kw in node.keywords:
                v = kw.value
                if kw.arg in ("ddof", "correction") and isinstance(v, ast.Constant) and v.value in (0, 1):
                    yield "ddof", f"{kw.arg}={1 - v.value}", *src.span(v), str(1 - v.value)
                elif kw.arg == "unbiased" and isinstance(v, ast.Constant) and isinstance(v.value, bool):
                    yield "ddof", f"unbiased={not v.value}", *src.span(v), str(not v.value)
        elif isinstance(node, ast.Attribute):
            if node.attr in ("T", "mT") and isinstance(node.ctx, ast.Load):
                yield "transpose", "dropped", *src.span(node), _wrapped(src, node.value)
            for kind, table in SWAPS.items():
                if node.attr in table:
                    _, end = src.span(node)
                    yield kind, table[node.attr], end - len(node.attr), end, table[node.attr]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in ("min", "max"):
            yield "min-max", SWAPS["min-max"][node.id], *src.span(node), SWAPS["min-max"][node.id]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple) and len(node.value.elts) >= 2:
            a, b = node.value.elts[:2]
            if not any(isinstance(e, ast.Starred) for e in (a, b)) and src.seg(a) != src.seg(b):
                (s, e1), (s2, e) = src.span(a), src.span(b)
                yield "return-element", "0<->1", s, e, src.seg(b) + src.text(e1, s2) + src.seg(a)


def modules(root: Path = ROOT, under: tuple[str, ...] = ("gradrank",)) -> list[str]:
    """Every Python module of gradrank/ (or of the given folders or files), as sorted paths from the root."""
    out = set()
    for u in under:
        p = root / u
        found = [p] if p.is_file() else sorted(p.rglob("*.py"))
        out |= {f.relative_to(root).as_posix() for f in found if "__pycache__" not in f.parts}
    return sorted(out)


def generate(path: str, root: Path = ROOT, patterns: tuple[Pattern, ...] = PATTERNS) -> list[Mutant]:
    """Every mutant of one module (AST kinds and PATTERNS), in source order; `compiles` says which
    compile (checked only for those drawn: compiling thousands takes a while)."""
    text = (root / path).read_text()
    src = _Source(path, text)
    edits = list(_edits(src, ast.parse(text)))
    for pat in patterns:
        if path.startswith(pat.under):
            for m in re.finditer(pat.regex, text):
                new = m.expand(pat.repl)
                if new != m.group():
                    s = len(text[: m.start()].encode())
                    edits.append((pat.kind, "pattern", s, s + len(m.group().encode()), new))
    out, seen = [], set()
    for kind, variant, start, end, after in sorted(edits, key=lambda e: (e[2], e[3], e[0], e[1])):
        mutated = src.data[:start] + after.encode() + src.data[end:]
        if (start, end, after) in seen or mutated == src.data:
            continue
        seen.add((start, end, after))
        line = src.line_of(start)
        col = start - src.starts[line - 1]
        out.append(Mutant(f"{path}:{line}:{col}:{kind}:{variant}", path, kind, line, start, end, src.text(start, end), after))
    return out


def compiles(mt: Mutant, root: Path = ROOT) -> bool:
    """Whether the mutated module still compiles (a mutant that does not is never run)."""
    try:
        compile(apply((root / mt.path).read_bytes(), mt), mt.path, "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def sample(mutants: list[Mutant], k: int | None, seed: int, module: str, root: Path = ROOT) -> list[Mutant]:
    """k compiling mutants of one module, spread over its kinds: kinds in a seeded order, a seeded
    mutant of each in turn (seed and module name fix the draw). k = None: all that compile."""
    if k is None or k >= len(mutants):
        return [mt for mt in mutants if compiles(mt, root)]
    rng = random.Random(f"{seed}:{module}")
    by_kind: dict[str, list[Mutant]] = {}
    for mt in mutants:
        by_kind.setdefault(mt.kind, []).append(mt)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    for kind in kinds:
        rng.shuffle(by_kind[kind])
    out: list[Mutant] = []
    while len(out) < k and any(by_kind.values()):
        for kind in kinds:
            if by_kind[kind] and len(out) < k and compiles(mt := by_kind[kind].pop(), root):
                out.append(mt)
    return sorted(out, key=lambda mt: (mt.start, mt.id))


def apply(data: bytes, mt: Mutant) -> bytes:
    """The mutated module; ValueError when the span no longer holds `before` (the file changed)."""
    if data[mt.start : mt.end].decode() != mt.before:
        raise ValueError(f"{mt.id}: the file no longer holds {mt.before!r} there")
    return data[: mt.start] + mt.after.encode() + data[mt.end :]


# ---------------------------------------------------------------------------- the module -> tests map


def load_map(path: Path = MAP) -> dict[str, tuple[str, ...]]:
    """tests/mutants_map.toml: {module path or folder: pytest selections}."""
    with open(path, "rb") as f:
        table = tomllib.load(f)
    return {key: tuple(value) for key, value in table["tests"].items()}


def tests_for(path: str, table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The selections of the longest key that is the module or a folder holding it; () when none."""
    keys = [k for k in table if path == k or path.startswith(k.rstrip("/") + "/")]
    return table[max(keys, key=len)] if keys else ()


def map_problems(table: dict[str, tuple[str, ...]], root: Path = ROOT) -> list[str]:
    """Keys that are no module or folder, and selections naming no test file or folder."""
    problems = [f"key {k!r}: no such module or folder" for k in table if not (root / k).exists()]
    for k, sels in table.items():
        problems += [f"key {k!r}: {s!r} names no test file or folder" for s in sels if not (root / s.split("::")[0]).exists()]
    return problems


# ---------------------------------------------------------------------------- running


def _pytest(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout' | 'error', seconds, last output line) of pytest -x on tests in tree."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    status = {0: "pass", 1: "fail"}.get(proc.returncode, "error")
    return status, time.perf_counter() - t0, lines[-1] if lines else ""


def _fresh_copy(into: Path, source: Path) -> Path:
    tree = into / "tree"
    shutil.copytree(source, tree, ignore=COPY_IGNORE)
    return tree


def run_mutant(mt: Mutant, tests: tuple[str, ...], timeout: float, source: Path) -> dict:
    """Apply one mutant to a fresh temporary copy of `source` and run its tests there."""
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-") as tmp:
        tree = _fresh_copy(Path(tmp), source)
        target = tree / mt.path
        target.write_bytes(apply(target.read_bytes(), mt))
        status, seconds, last = _pytest(tree, tests, timeout)
    verdict = {"pass": "survived", "fail": "killed", "timeout": "killed (timeout)", "error": "error"}[status]
    return {**asdict(mt), "tests": list(tests), "verdict": verdict, "seconds": round(seconds, 1), "last_line": last}


def baseline(selections: set[tuple[str, ...]], timeout: float, source: Path) -> dict[tuple[str, ...], str]:
    """Each distinct test selection on the clean tree: 'pass' or why not."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-base-") as tmp:
        tree = _fresh_copy(Path(tmp), source)
        for sel in sorted(selections):
            status, seconds, last = _pytest(tree, sel, timeout)
            out[sel] = status if status == "pass" else f"{status}: {last}"
            print(f"baseline {' '.join(sel)}: {out[sel]} ({seconds:.0f} s)", flush=True)
    return out


def summary(results: list[dict]) -> dict:
    """Counts and kill rates overall, by module and by kind (killed / (killed + survived))."""

    def rates(key: str) -> dict:
        groups: dict[str, list[dict]] = {}
        for r in results:
            groups.setdefault(r[key], []).append(r)
        return {g: _rate(rs) for g, rs in sorted(groups.items())}

    return {**_rate(results), "by_module": rates("path"), "by_kind": rates("kind")}


def _rate(results: list[dict]) -> dict:
    killed = sum(r["verdict"].startswith("killed") for r in results)
    survived = sum(r["verdict"] == "survived" for r in results)
    return {
        "mutants": len(results),
        "killed": killed,
        "survived": survived,
        "other": len(results) - killed - survived,
        "kill_rate": round(killed / (killed + survived), 4) if killed + survived else None,
    }


def _write(path: Path, report: dict) -> None:
    """Atomic: a temporary file beside `path`, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)


def chosen_mutants(args, root: Path = ROOT) -> list[Mutant]:
    out = []
    for path in modules(root, tuple(args.under) or ("gradrank",)):
        found = [mt for mt in generate(path, root) if not args.kind or mt.kind in args.kind]
        out += sample(found, args.per_module, args.seed, path, root)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--under", action="append", default=[], help="a folder or module of gradrank/ (repeatable; default all)")
    ap.add_argument("--kind", action="append", default=[], choices=KINDS + tuple(sorted({p.kind for p in PATTERNS})))
    ap.add_argument("--per-module", type=int, default=None, help="mutants drawn per module (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="the draw's seed")
    ap.add_argument("--whole-suite", action="store_true", help="run the whole suite (tests/) for every mutant")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    ap.add_argument("--json", type=Path, help="write the report (or with --list, the mutants) to this file")
    ap.add_argument("--list", action="store_true", help="list the mutants and their tests, run nothing")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to mutate (default: this one)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the clean run of each test selection")
    args = ap.parse_args(argv)

    if args.json is not None and args.json.exists():
        print(f"{args.json} exists: choose a new file", file=sys.stderr)
        return 2
    root = args.root.resolve()
    table = load_map(root / MAP.relative_to(ROOT))
    problems = map_problems(table, root)
    if problems:
        print("tests/mutants_map.toml: " + "; ".join(problems), file=sys.stderr)
        return 2
    chosen = chosen_mutants(args, root)
    tests = {mt.id: ("tests",) if args.whole_suite else tests_for(mt.path, table) for mt in chosen}
    if args.list:
        for mt in chosen:
            print(f"{mt.id:60s} {mt.before!r} -> {mt.after!r}  [{' '.join(tests[mt.id]) or 'no tests mapped'}]")
        if args.json is not None:
            _write(args.json, {"mutants": [{**asdict(mt), "tests": list(tests[mt.id])} for mt in chosen]})
        return 0
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-snapshot-") as snap:
        # one snapshot of the worktree at the start: edits made while the audit runs never enter it
        return _audit(args, chosen, tests, _fresh_copy(Path(snap), root))


def _audit(args, chosen: list[Mutant], tests: dict[str, tuple[str, ...]], source: Path) -> int:
    results = [
        {**asdict(mt), "tests": [], "verdict": "unmapped", "seconds": 0.0, "last_line": ""} for mt in chosen if not tests[mt.id]
    ]
    todo = [mt for mt in chosen if tests[mt.id]]
    if not args.no_baseline:
        base = baseline({tests[mt.id] for mt in todo}, args.timeout * 3, source)
        bad = {mt.id for mt in todo if base[tests[mt.id]] != "pass"}
        results += [
            {
                **asdict(mt),
                "tests": list(tests[mt.id]),
                "verdict": "invalid (tests fail on clean code)",
                "seconds": 0.0,
                "last_line": "",
            }
            for mt in todo
            if mt.id in bad
        ]
        todo = [mt for mt in todo if mt.id not in bad]
    t0 = time.perf_counter()
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "root"}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for res in pool.map(lambda mt: run_mutant(mt, tests[mt.id], args.timeout, source), todo):
            results.append(res)
            print(f"{res['verdict']:17s} {res['id']:60s} {res['seconds']:6.1f} s  {res['last_line'][:80]}", flush=True)
            if args.json is not None:
                _write(
                    args.json,
                    {
                        "settings": settings,
                        "done": len(results),
                        "of": len(chosen),
                        "summary": summary(results),
                        "results": results,
                    },
                )
    report = {
        "settings": settings,
        "done": len(results),
        "of": len(chosen),
        "seconds": round(time.perf_counter() - t0),
        "summary": summary(results),
        "results": results,
    }
    if args.json is not None:
        _write(args.json, report)
    print(json.dumps({k: v for k, v in report["summary"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
