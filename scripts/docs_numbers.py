"""Numbers quoted in docs/: rerun the cheap commands that make them and compare them with the text.

    python scripts/docs_numbers.py --check            # rerun every case, exit 1 naming each stale line
    python scripts/docs_numbers.py --write            # rerun, and replace the stale lines in their page
    python scripts/docs_numbers.py --check --only advisor_short
    python scripts/docs_numbers.py --list             # the cases, their pages and commands
    python scripts/docs_numbers.py --check --quick    # the quick cases (tests/scripts/test_docs_numbers.py)

A case is a docs page, a gradrank command (tens of seconds on two cores; the long runs of
docs/advisor.md and docs/deep.md have their own scripts) and the table the page shows of its result:
the first Markdown table after the case's `anchor` (a text that occurs once in the page) must hold
exactly the rows `rows(result directory)` formats, in order. Like scripts/golden.py, the command runs
as `sys.executable -m gradrank ...` in a subprocess with the checkout's root first on PYTHONPATH,
OMP_NUM_THREADS = MKL_NUM_THREADS = 2 and PYTHONHASHSEED = 0, so nothing here imports gradrank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def sci(x: float) -> str:
    """3 significant digits as the docs write them: 8.20e-6, not 8.2e-06."""
    mantissa, exp = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exp)}"


def percent(x: float) -> str:
    """A relative gap as the docs write it: +9.7 %, −0.6 % (a typographic minus)."""
    return f"{100 * x:+.1f} %".replace("-", "\u2212")


def advisor_short_rows(run: Path) -> list[str]:
    """docs/advisor.md, "Shorter runs": the validation of the short two-layer run."""
    doc = json.loads((run / "advice.json").read_text(encoding="utf-8"))
    rec = doc["layers"][0]["recommended"]
    runs = {r["name"]: r for r in doc["validation"]["runs"]}
    verdict = doc["validation"]["verdict"]
    adam, best, default = runs["adam"], runs["galore_recommended"], runs["galore_default"]
    return [
        f"| full-rank AdamW | – | – | – | {sci(adam['final'])} | – |",
        f"| GaLore at the recommendation ({rec['projector']}, captures {rec['captured']:.3f} ≥ {doc['target']:g}) "
        f"| {best['ranks']['W']} | {best['intervals']['W']} | {best['refreshes']} | {sci(best['final'])} "
        f"| {percent(verdict['relative_gap'])} |",
        f"| GaLore at its defaults | {default['ranks']['W']} | {default['intervals']['W']} | {default['refreshes']} "
        f"| {sci(default['final'])} | {percent(verdict['default_relative_gap'])} |",
    ]


@dataclass
class Case:
    name: str
    page: str  # relative to the checkout's root
    anchor: str  # occurs once in the page; the first table after it is the case's
    args: list[str]  # gradrank's arguments; "{tmp}/run" is the output directory
    rows: Callable[[Path], list[str]]
    quick: bool = False  # run by tests/scripts/test_docs_numbers.py


CASES = [
    Case(
        "advisor_short",
        "docs/advisor.md",
        "--set data.n=150 --set data.d=200 --set model.width=250 --set train.steps=100 --set advise.adam_lr=0.003`",
        [
            "advise",
            *("--set", "data.n=150", "--set", "data.d=200", "--set", "model.width=250"),
            *("--set", "train.steps=100", "--set", "advise.adam_lr=0.003", "--no-report", "-q", "-o", "{tmp}/run"),
        ],
        advisor_short_rows,
        quick=True,
    ),
]


def run_case(case: Case, runs: Path | None = None) -> list[str]:
    """The rows the case's command gives today. With `runs`, its result directory is kept as
    runs/<case> and, when already there, read instead of rerun (for the test of this script)."""
    if runs is not None and (runs / case.name / "run").is_dir():
        return case.rows(runs / case.name / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory() as scratch:
        tmp = runs / case.name if runs is not None else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        args = [a.replace("{tmp}", str(tmp)) for a in case.args]
        proc = subprocess.run([sys.executable, "-m", "gradrank", *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{case.name}: gradrank {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return case.rows(tmp / "run")


def table_after(lines: list[str], anchor: str, where: str) -> tuple[int, int]:
    """(first, end) line indices of the body rows of the first Markdown table after `anchor`."""
    hits = [i for i, line in enumerate(lines) if anchor in line]
    if len(hits) != 1:
        raise ValueError(f"{where}: the anchor {anchor!r} occurs {len(hits)} times (must be once)")
    i = hits[0] + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    if i + 1 >= len(lines) or not lines[i + 1].startswith("|---"):
        raise ValueError(f"{where}: no Markdown table after the anchor {anchor!r}")
    first = end = i + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return first, end


def stale(case: Case, rows: list[str], text: str) -> list[tuple[str, str]]:
    """(the page's row, the command's row) for every row that differs (a missing row is '')."""
    lines = text.splitlines()
    first, end = table_after(lines, case.anchor, case.page)
    quoted = lines[first:end]
    quoted += [""] * (len(rows) - len(quoted))
    return [(q, r) for q, r in zip(quoted, rows) if q != r] + [(q, "") for q in quoted[len(rows) :]]


def rewrite(case: Case, rows: list[str], text: str) -> str:
    """The page with the case's table body replaced by `rows`."""
    lines = text.splitlines(keepends=True)
    first, end = table_after([ln.rstrip("\n") for ln in lines], case.anchor, case.page)
    return "".join(lines[:first] + [r + "\n" for r in rows] + lines[end:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--list", action="store_true")
    ap.add_argument("--only", action="append", default=[], help="a case's name (repeatable)")
    ap.add_argument("--quick", action="store_true", help="only the quick cases")
    ap.add_argument("--root", type=Path, default=ROOT, help="the folder holding the pages (default: this checkout)")
    ap.add_argument("--runs", type=Path, help="keep each case's result directory here, and reuse it when there")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if (not a.only or c.name in a.only) and (c.quick or not a.quick)]
    unknown = set(a.only) - {c.name for c in CASES}
    if unknown:
        ap.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    if a.list:
        for c in CASES:
            print(f"{c.name}{'  (quick)' if c.quick else ''}: {c.page}\n    python -m gradrank {' '.join(c.args)}")
        return 0
    failed = 0
    for c in cases:
        page = a.root / c.page
        text = page.read_text(encoding="utf-8")
        rows = run_case(c, a.runs)
        diff = stale(c, rows, text)
        if not diff:
            print(f"ok      {c.name} ({c.page})")
        elif a.write:
            page.write_text(rewrite(c, rows, text), encoding="utf-8")
            print(f"wrote   {c.name}: {len(diff)} row(s) of {c.page}")
        else:
            failed += 1
            print(f"STALE   {c.name} ({c.page})")
            for quoted, now in diff:
                print(f"    page:    {quoted}\n    command: {now}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
