"""Regenerate docs/reliability.md from a run of the reliability tests.

    python scripts/reliability_table.py            # runs the tests, then writes the page

The tests append one JSON row per verified case (tests/_reliability.py) to the file named by
GRADRANK_RELIABILITY_LOG; a row is written only after its assertions passed, so the table
shows what the run established, nothing more. The pytest outcome is printed at the top."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/cli/test_cli_errors.py",
    "tests/safety/test_fuzz_inputs.py",
    "tests/safety/test_kill_leaves_whole_outputs.py",
    "tests/safety/test_determinism_bitwise.py",
    "tests/core/test_numerical_extremes.py",
    "tests/safety/test_ownership_scripts_identity.py",
    "tests/safety/test_memory_guard.py",
    "tests/safety/test_store_safety.py",
    "tests/safety/test_bad_inputs.py",
    "tests/safety/test_determinism_across_threads.py",
    "tests/safety/test_trust_critical.py",
    "tests/safety/test_trust_api.py",
    "tests/safety/test_trust_inputs.py",
]
# The families of safety rules (docs/reliability.md, "Families"), and the areas whose rows count for each.
FAMILIES = {
    "Output ownership, scheduler options, input identity (critical)": ["critical", "outputs", "security", "kill"],
    "Memory guard": ["memory guard", "resource guard"],
    "Stores that lie": ["stores"],
    "Silent data changes": ["silent data"],
    "Trust at rounding level": ["trust", "numerics"],
    "No internal error on bad input": ["no internal error", "config", "data file", "weights file", "CLI", "process"],
    "Messages that blame the right thing": ["messages"],
    "Determinism": ["determinism"],
    "User code (a model file, its forward, loss or backward; exits and BaseExceptions)": ["user code"],
    "Captured gradients checked against autograd": ["captured gradients"],
    "The Python API validates like the CLI": ["API"],
    "Helper processes never import from the working directory": ["helper processes"],
}
DETERMINISM = """## What is guaranteed about determinism

- **Same seed, same thread count, same dtype and device: bitwise identical** `metrics.json` (timings
  aside) and arrays, whether a point runs alone, in the local process pool, on a Dask worker or as a
  SLURM array task (tests/safety/test_determinism_bitwise.py; a damaged sweep point recomputed on resume reproduces
  its metrics exactly, tests/safety/test_store_safety.py). The seed fixes everything through named streams
  (gradrank/rng.py).
- **Another thread count** (e.g. `-j 1` against `-j 2` on two cores, which gives each worker
  cores // jobs threads, or another machine): BLAS and torch reductions add in another order, so
  continuous results differ at rounding level: up to about 1e-12 relative in norms and singular
  values (9e-13 was seen), up to 1e-8 absolute in |cos| alignments. This is not a bug and is not
  hidden: compare such runs with a relative tolerance, not bitwise.
- **Discrete outputs** (regime label, per-outlier labels, outlier count, energy ranks) were identical
  between thread counts in every case tried (tests/safety/test_determinism_across_threads.py). They are thresholds
  on continuous values, so no implementation can promise more than this: a point whose singular
  value, alignment or spike ratio lies within rounding distance (about 1e-12 relative) of its
  threshold (`(1 + analysis.edge_margin) ||E||`, `analysis.align_threshold`, `analysis.dominance`)
  could be labelled differently by another thread count. For bitwise identical labels, fix the
  thread count (`--jobs` and the executor decide it; it is recorded in `provenance.threads`).
"""
AREAS = {
    "config": "Config layer and `--set` (malformed TOML, unknown or mistyped keys, out-of-range and wrong-type values)",
    "data file": "User data files (`gradrank decompose --data`)",
    "weights file": "Weight files (`--weights`)",
    "resource guard": "Resource guard (memory estimate before allocating)",
    "CLI": "CLI end to end (hypothesis)",
    "process": "Real processes (`python -m gradrank`)",
    "outputs": "Output paths",
    "security": "Security (pickling, path escape, HTML escaping)",
    "kill": "Faults injected: SIGKILL mid-run and mid-write",
    "determinism": "Determinism (CPU, float64, bitwise)",
    "numerics": "Numerical extremes and trust flags",
    "critical": "Critical rules: output ownership, scheduler options, input files in the run identity",
    "memory guard": "Memory guard: every allocation an input can cause, checked before it happens",
    "stores": "Sweep stores: damaged points, foreign manifests, executors that cannot start",
    "silent data": "Silent data changes: the CSV loader and `--set`",
    "user code": "User code: model files, forwards, losses, backwards that raise, exit or are damaged",
    "captured gradients": "Captured layer gradients against the parameter's autograd gradient",
    "API": "The Python API's arguments",
    "helper processes": "Processes gradrank starts (sweep workers, Dask) beside trap modules in the working directory",
    "no internal error": "No internal error on bad input",
    "trust": "Trust at rounding-level gradients",
    "messages": "Messages that blame the right key or file",
}
FILE_FAMILY = {
    "test_safety_critical.py": "Output ownership, scheduler options, input identity (critical)",
    "test_safety_memory.py": "Memory guard",
    "test_safety_stores.py": "Stores that lie",
    "test_safety_inputs.py": "No internal error on bad input",
    "test_safety_determinism.py": "Determinism",
    "test_determinism.py": "Determinism",
    "test_kill.py": "Output ownership, scheduler options, input identity (critical)",
    "test_numerics.py": "Trust at rounding level",
    "test_cli_errors.py": "No internal error on bad input",
    "test_fuzz.py": "No internal error on bad input",
}


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def cases(row: dict) -> int:
    """Cases a row stands for: its hypothesis examples, else one."""
    m = re.search(r"(\d+) hypothesis examples", row["tried"])
    return int(m.group(1)) if m else 1


def family_table(rows: list[dict], failed: dict[str, int]) -> list[str]:
    lines = ["## Families: cases tried and held", "", "| family | cases tried | held |", "|---|---|---|"]
    for family, areas in FAMILIES.items():
        held = sum(cases(r) for r in rows if r["area"] in areas)
        lines.append(f"| {family} | {held + failed.get(family, 0)} | {held} |")
    other = sum(cases(r) for r in rows if not any(r["area"] in a for a in FAMILIES.values()))
    if other:
        lines.append(f"| other | {other} | {other} |")
    lines += [
        "",
        "A case is a row below, or one hypothesis example of a generated row. Rows are recorded only after "
        "their assertions passed; a failing test adds one case tried and not held to its family.",
        "",
    ]
    return lines


def render(rows: list[dict], summary: str, seconds: float, failed: dict[str, int] | None = None) -> str:
    by_area = defaultdict(list)
    for r in rows:
        by_area[r["area"]].append(r)
    lines = [
        "# Reliability: inputs tried, faults injected, outcomes",
        "",
        "Generated by `python scripts/reliability_table.py` from a run of "
        + ", ".join(f"`{t}`" for t in TESTS)
        + f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{seconds:.0f} s on {os.cpu_count()} cores). Each row was recorded by a test after its assertions "
        "passed; the contract checked everywhere is: a valid result, or exit code 2 with one line naming "
        "the field or file and nothing written; never a traceback, never a half-written run directory.",
        "",
        f"pytest: **{summary}**",
        "",
        "What does the guarding:",
        "",
        "- `gradrank.io.load_arrays` / `declared_shapes`: `.npy` headers (also inside `.npz`) are read before "
        "anything is allocated: object dtypes (would need unpickling), non-numeric dtypes, negative shapes, "
        "shapes larger than the file holds (truncation) or than memory allows are refused; loading uses "
        "`allow_pickle=False`; NaN/Inf, empty and mis-shaped arrays are refused with the file's name.",
        "- `gradrank.config.resources.check_memory` / `check_files`: the run's peak memory is estimated from n, d, m and "
        "the dtype (for `decompose`, from the data file's header) and refused above `compute.max_memory_gb` "
        "(default 80% of free RAM) unless `--force`.",
        "- `gradrank.io.staged_dir` / `write_bytes`: every file is written under a hidden temporary name and renamed; "
        "a run directory is built under `.NAME.tmp-*` and renamed into place, replacing only an earlier gradrank "
        "output (never a file or a foreign directory).",
        "- `gradrank.models.closed_form`: data or gradients beyond the dtype's range (their squares would overflow) are "
        "refused (exit 2) instead of producing NaN spectra; the logistic loss uses softplus / sigmoid.",
        '- `metrics.json["trust"]` (shown as warnings in the summary): `finite`, `identity` (decomposition '
        'identity error, from 8 fixed probes or with `analysis.identity = "dense"` every term formed, vs '
        "`analysis.identity_tol`, 1e-4 in float32), `quadrature` (mu's quadrature change), "
        "`spectrum` (residual of the reported singular triplets against G itself) and `resolution` (||E|| above "
        "the dtype's floor s_1 sqrt(eps), below which outliers cannot be counted). Outliers are never counted "
        "below that floor; the spectrum falls back from the Gram matrix to an SVD of the factor when s_1/s_k is "
        "too large for the Gram route. `trust.checks.signal` is false when G is at rounding level: zero, "
        "near underflow, within n eps of coef ||X|| ||D|| (cancellation), or data that centring reduced to "
        "rounding error (identical rows).",
        "- `gradrank.io` (reading): every `.npz` member numpy would read (`X` before `X.npy`) is found and read "
        "here, its header checked; the float64 copy of a small dtype (8x a bool) counts against the limit; CSV "
        "is read in two passes (shape, then values) and never drops a row: a byte-order mark is accepted, a bad "
        "cell or a ragged row is exit 2 naming row and column. Config files: regular files of at most 1 MiB, "
        "nesting the parser cannot follow is exit 2.",
        "- `gradrank.config.resources.parts`: every size key (test set, teacher width, embedding, top-k, "
        "quadrature, noise draws, training records and checkpoints) and the data and weights files' headers "
        "enter the estimate, in every command and every sweep point; a sweep grid is sized before it is "
        "expanded (at most 100000 points).",
        "- `gradrank.sweeps.store.Store`: a point is done only when its run directory matches gradrank's "
        "marker (every file's sha256) and its metrics.json is this point's; otherwise it is failed in "
        "`--status` and results.csv alike, set aside as `points/HASH.broken-N` and recomputed on resume. "
        "Executors are checked before anything is written (sbatch/squeue on PATH, the controller or the "
        "scheduler answers); a refused submission removes the new store; a jobqueue with no worker after "
        "`sweep.dask.start_timeout` seconds (default 600) fails its points.",
        "",
    ]
    lines += family_table(rows, failed or {})
    lines += DETERMINISM.splitlines() + [""]
    for area in [*AREAS, *sorted(set(by_area) - set(AREAS))]:
        if area not in by_area:
            continue
        lines += [f"## {AREAS.get(area, area)}", "", "| input or fault | outcome |", "|---|---|"]
        lines += [f"| {cell(r['tried'])} | {cell(r['outcome'])} |" for r in by_area[area]]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "rows.jsonl"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:warnings", "-rf", *TESTS],
            cwd=ROOT,
            env={**os.environ, "GRADRANK_RELIABILITY_LOG": str(log)},
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    tail = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    summary = tail[-1].strip("= ") if tail else f"exit code {proc.returncode}"
    (ROOT / "docs").mkdir(exist_ok=True)
    failed: dict[str, int] = defaultdict(int)
    for line in proc.stdout.splitlines():
        m = re.match(r"FAILED tests/(\S+?\.py)::", line)
        if m:
            failed[FILE_FAMILY.get(m.group(1), "other")] += 1
    (ROOT / "docs" / "reliability.md").write_text(render(rows, summary, seconds, failed) + "\n", encoding="utf-8")
    print(f"docs/reliability.md: {len(rows)} rows; pytest: {summary}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
