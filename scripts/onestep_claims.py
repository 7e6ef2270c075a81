"""Measure the one-step claims of docs/reproduction.md (Claim 7) at the paper's sizes over 5 seeds.

Part A: test error against the step size for the single- and multi-index sample configs (NTK, and
mean field with the same steps in its own units). Part B: the alignment sweep
(sample_configs/onestep_alignment.toml, run through `gradrank sweep` when its directory is missing):
per (nu, regulariser) the test error and the update's alignments, and over all its points the
correlation of the test error, and of the improvement over random features, with each alignment.

    python scripts/onestep_claims.py --json runs/onestep_claims.json > runs/onestep_claims.md
    python scripts/onestep_claims.py --from-json runs/onestep_claims.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "sample_configs"
NTK_ETAS = [0.0, 1.0, 4.0, 16.0, 64.0, 256.0]
ALIGN = ("align_target", "align_spike", "align_residue")


def pm(values, digits=3) -> str:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if not v.size:
        return "–"
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return f"{v.mean():.{digits}g} ± {sd:.2g}"


def part_a(seeds: int) -> dict:
    import gradrank

    out = {}
    m = 1250
    for name, scaling, readout, etas in (
        ("single-index tanh, NTK", "ntk", "fresh", NTK_ETAS),
        ("multi-index triple, NTK", "ntk", "fresh", NTK_ETAS),
        ("single-index tanh, mean field", "mf", "fresh", [round(e / math.sqrt(m), 4) for e in NTK_ETAS]),
        ("multi-index triple, NTK, readout on the step's own rows (readout = same)", "ntk", "same", NTK_ETAS),
    ):
        path = CONFIGS / ("onestep_single_index.toml" if name.startswith("single") else "onestep_multi_index.toml")
        sets = {"model.scaling": scaling, "onestep.readout": readout, "output.report": False}
        res = gradrank.onestep(path, overrides=sets, eta=etas, seeds=seeds)
        out[name] = [p.to_dict() for p in res.points]
        print(f"part A {name}: done", file=sys.stderr)
    return out


def part_b(sweep_dir: Path) -> list[dict]:
    from gradrank.results import onestep as onestep_out
    from gradrank.sweeps import store as sweeps

    if not (sweep_dir / "sweep.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "gradrank",
            "sweep",
            str(CONFIGS / "onestep_alignment.toml"),
            "-o",
            str(sweep_dir),
            "-j",
            "2",
        ]
        subprocess.run(cmd, check=True)
    store = sweeps.Store(sweep_dir)
    rows = []
    for p in store.manifest()["points"]:
        res = onestep_out.read(store.point_dir(p["hash"]))
        rc, dc = res.config.regularizer, res.config.data
        reg = (
            "weight decay 0.01"
            if rc.weight_decay
            else "input noise 0.3"
            if rc.input_noise
            else "Jacobian 1.0"
            if rc.jacobian
            else "none, target sees spike"
            if dc.index_sees_spike
            else "none"
        )
        rf = next(x for x in res.points if x.eta == 0.0)
        for x in res.points:
            rows.append({"nu": dc.nu, "reg": reg, **x.to_dict(), "rf_test_error": rf.test_error})
    return rows


def print_a(a: dict) -> None:
    for name, pts in a.items():
        etas = list(dict.fromkeys(p["eta"] for p in pts))
        rf = {p["seed"]: p["test_error"] for p in pts if p["eta"] == 0.0}
        print(f"\n**{name}**\n")
        print(
            "| η | test error | train error | improvement over η = 0 | ridge λ (median) | target | spike q | residue X_Bᵀr | ‖W₁ − W₀‖ |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for e in etas:
            mine = [p for p in pts if p["eta"] == e]
            imp = [100 * (1 - p["test_error"] / rf[p["seed"]]) for p in mine]
            print(
                f"| {e:g} | {pm([p['test_error'] for p in mine])} | {pm([p['train_error'] for p in mine])} | {pm(imp, 2)} % | {np.median([p['ridge'] for p in mine]):.0e} | "
                + " | ".join(pm([p[k] for p in mine]) for k in ALIGN)
                + f" | {pm([p['update_s1'] for p in mine])} |"
            )


def print_b(rows: list[dict], seed: int = 0) -> None:
    import torch  # noqa: F401  (the bootstrap draws from a torch generator)

    from gradrank.core.fits import bootstrap_correlation
    from gradrank.rng import generator

    for e in (16.0, 64.0):
        print(f"\n**η = {e:g}** (mean ± sd over 5 seeds; improvement = 1 − test error / random features' of the same seed)\n")
        print("| ν | regulariser | test error | random features | improvement | target | spike q | residue X_Bᵀr |")
        print("|---|---|---|---|---|---|---|---|")
        for nu in sorted({r["nu"] for r in rows}):
            for reg in dict.fromkeys(r["reg"] for r in rows):
                mine = [r for r in rows if r["nu"] == nu and r["reg"] == reg and r["eta"] == e]
                if not mine:
                    continue
                imp = [100 * (1 - r["test_error"] / r["rf_test_error"]) for r in mine]
                print(
                    f"| {nu:g} | {reg} | {pm([r['test_error'] for r in mine])} | {pm([r['rf_test_error'] for r in mine])} | "
                    f"{pm(imp, 2)} % | " + " | ".join(pm([r[k] for r in mine]) for k in ALIGN) + " |"
                )
    print("\n**Correlations over every point of the sweep** (Pearson r, 95 % bootstrap CI over 2000 resamples; Spearman ρ)\n")
    print("| η | quantity | alignment | points | r | CI | ρ |")
    print("|---|---|---|---|---|---|---|")
    i = 0
    for e in (16.0, 64.0):
        mine = [r for r in rows if r["eta"] == e]
        for qty, y in (
            ("test error", [r["test_error"] for r in mine]),
            ("improvement", [1 - r["test_error"] / r["rf_test_error"] for r in mine]),
        ):
            for k in ALIGN:
                c = bootstrap_correlation([r[k] for r in mine], y, generator(seed, "onestep_bootstrap", 100 + i))
                i += 1
                print(
                    f"| {e:g} | {qty} | {k.removeprefix('align_')} | {c.points} | {c.pearson:.2f} | [{c.ci_low:.2f}, {c.ci_high:.2f}] | {c.spearman:.2f} |"
                )
    print("\n**Within one ν, across the regularisers** (η = 16, improvement against alignment)\n")
    print("| ν | alignment | points | r | CI |")
    print("|---|---|---|---|---|")
    for nu in sorted({r["nu"] for r in rows}):
        mine = [r for r in rows if r["nu"] == nu and r["eta"] == 16.0]
        for k in ("align_target", "align_spike"):
            c = bootstrap_correlation(
                [r[k] for r in mine],
                [1 - r["test_error"] / r["rf_test_error"] for r in mine],
                generator(seed, "onestep_bootstrap", 200 + i),
            )
            i += 1
            print(f"| {nu:g} | {k.removeprefix('align_')} | {c.points} | {c.pearson:.2f} | [{c.ci_low:.2f}, {c.ci_high:.2f}] |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sweep", type=Path, default=ROOT / "runs" / "onestep_alignment")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path)
    ap.add_argument("--only", choices=("a", "b"))
    args = ap.parse_args()
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        data = {"a": part_a(args.seeds) if args.only != "b" else {}, "b": part_b(args.sweep) if args.only != "a" else []}
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(data))
    if data["a"]:
        print_a(data["a"])
    if data["b"]:
        print_b(data["b"])


if __name__ == "__main__":
    main()
