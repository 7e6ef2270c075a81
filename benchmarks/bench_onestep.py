"""The one-step protocol at the paper's size: a 4-eta x 5-seed study end to end, and the ridge
readout through the smaller system beside the obvious implementation, in the same run.

  study        onestep.study: data, W0, the gradient, the step, the held-out ridge choice over the
               8-candidate grid and the refit, test error, alignments, for every (eta, seed)
  ridge (ours) onestep.ridge on the n x n kernel Phi Phi^T (n <= m): a Cholesky solve for one
               lambda, one eigendecomposition for the whole grid
  ridge (obvious) for each lambda, torch.linalg.solve of the m x m normal equations
               (Phi^T Phi + n lambda I) a = Phi^T y
Both ridge variants are timed for one lambda (a fixed ridge) and for the 8-lambda grid on the same
features, and their coefficients compared.

Run: python benchmarks/bench_onestep.py [--n 750 --d 1000 --m 1250] [--threads 2] [--seeds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

from gradrank import config
from gradrank.studies import analyze as analysis
from gradrank.studies import onestep


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def obvious_ridge(Phi, y, lams):
    n, m = Phi.shape
    C, b = Phi.T @ Phi, Phi.T @ y
    eye = torch.eye(m, dtype=Phi.dtype)
    return torch.stack([torch.linalg.solve(C + n * lam * eye, b) for lam in lams], 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=750)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--m", type=int, default=1250)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = [f"data.n={args.n}", f"data.d={args.d}", f"model.width={args.m}", "onestep.eta=[0.0, 1.0, 4.0, 16.0]", "data.nu=0.0"]
    cfg = onestep.resolve(config.load(sets=sets))
    print(f"one-step benchmark: n={args.n} d={args.d} m={args.m}, {args.threads} torch threads, {os.cpu_count()} cores")

    t0 = time.perf_counter()
    res = onestep.study(cfg, seeds=list(range(args.seeds)))
    study_s = time.perf_counter() - t0
    points = len(res.points)
    print(
        f"study: {len(cfg.onestep.eta)} etas x {args.seeds} seeds = {points} points in {study_s:.1f} s ({study_s / points:.2f} s/point)"
    )
    print("  time by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))

    _, ds, net = analysis.prepare(cfg)
    Phi, y = onestep.features(net, ds.X), ds.y
    grid = cfg.onestep.ridge_grid
    rows = []
    print(
        f"\n{'ridge readout (Phi ' + str(args.n) + ' x ' + str(args.m) + ')':<34}{'ours s':>9}{'obvious s':>11}{'ratio':>8}  max rel diff"
    )
    for label, lams in (("one lambda (fixed)", [1e-3]), (f"{len(grid)}-lambda grid (holdout)", grid)):
        ours = best_of(lambda: onestep.ridge(Phi, y, lams))
        ref = best_of(lambda: obvious_ridge(Phi, y, lams))
        A, B = onestep.ridge(Phi, y, lams), obvious_ridge(Phi, y, lams)
        diff = float(((A - B).norm(dim=0) / B.norm(dim=0)).max())
        rows.append({"case": label, "ours_s": ours, "ref_s": ref, "ratio": ref / ours, "max_rel_diff": diff})
        print(f"{label:<34}{ours:>9.3f}{ref:>11.3f}{ref / ours:>7.1f}x  {diff:.1e}")
    ok = all(r["max_rel_diff"] < 1e-6 for r in rows) and all(math.isfinite(p.test_error) for p in res.points)
    if args.json:
        payload = {
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads},
            "sizes": {"n": args.n, "d": args.d, "m": args.m},
            "study": {"points": points, "seconds": study_s, "timings": res.timings},
            "ridge": rows,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    print("checks:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
