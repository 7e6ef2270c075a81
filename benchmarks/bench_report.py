"""Whole-process cost of the report, the first analysis of a process, and `decompose` beside a
plain dense numpy script.

Cases (wall times, median over --repeats fresh processes, alternating; same machine, same run):
  analyze   `gradrank analyze -q` (default config) with and without the report side by side; the
            report's cost is the difference, printed against the rest of the process (the target:
            at most a quarter of it).
  first     each fresh process imports torch and gradrank, then times `from gradrank import api`
            (the package's own modules), analysis #1 and analysis #2 (default config, no report):
            #1 / #2 with the api import counted in #1 and apart from it. One more process gives
            the stages after them: writing the run directory, the first and a second HTML report.
  decompose `gradrank decompose --data FILE --weights W.npz` with and without its report (default on)
            beside a plain numpy script on the same file and weights: centre X, forward pass, the
            dense d x m gradient G, its full SVD, q (the file's, else X's top principal direction),
            the empirical mu and the four terms formed densely, E's SVD. Before the times are printed
            the two ‖G‖ and ‖E‖ are checked to agree (1e-8 relative). `python -c "import torch"` as a
            whole process is timed too: the part of ours a script that does not import torch never pays.

The load average (1 min) is printed before and after: on a loaded machine every time is several
times the idle one, and the ratios within one run are what to compare.

Run: python benchmarks/bench_report.py [--repeats 5] [--threads N] [--json PATH]
(--threads 1: every process, ours and the script, on one thread; on a loaded machine the stable comparison)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"

NUMPY_SCRIPT = r"""
import sys, json, time
import numpy as np
t0 = time.perf_counter()
data, weights, gamma = sys.argv[1], sys.argv[2], float(sys.argv[3])
with np.load(data) as z:
    X, y = z["X"], z["y"]
    q = z["q"] if "q" in z.files else None          # a file that carries the spike keeps it
with np.load(weights) as z:
    W, a = z["W"], z["a"]
X = X - X.mean(0)                                   # data.center
n, d = X.shape
Z = X @ W.T
S = np.maximum(Z, 0.0)                               # relu
f = gamma * S @ a
r = f - y                                            # mse residue
Sp = (Z > 0).astype(float)
D = Sp * a * r[:, None]
G = gamma / n * X.T @ D                              # d x m, dense
U, s, Vt = np.linalg.svd(G, full_matrices=False)
q = np.linalg.svd(X, full_matrices=False)[2][0] if q is None else q / np.linalg.norm(q)  # else X's top principal direction
Xq = X @ q
zeta = np.sqrt(np.mean(Xq ** 2))
zz = Xq / zeta
X_B = X - np.outer(Xq, q)
mu = Sp.mean(0)                                      # empirical mu
D_perp = r[:, None] * a[None, :] * (Sp - mu[None, :])
S1 = gamma / n * np.outer(X_B.T @ r, a * mu)
S12 = gamma / n * zeta * (zz @ r) * np.outer(q, a * mu)
S2 = gamma / n * zeta * np.outer(q, D_perp.T @ zz)
E = G - S1 - S12 - S2
sE = np.linalg.svd(E, compute_uv=False)
print(json.dumps({"G": float(s[0]), "E": float(sE[0]), "seconds": time.perf_counter() - t0}))
"""


def wall(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t


FIRST = r"""
import json, sys, time
import torch  # noqa: F401 - imported before the clock: every command pays it, the analysis not
import gradrank  # noqa: F401
t0 = time.perf_counter()
from gradrank import api
t1 = time.perf_counter()
r = api.analyze(None, {"output.report": False})
t2 = time.perf_counter()
api.analyze(None, {"output.report": False})
t3 = time.perf_counter()
out = {"api_import": t1 - t0, "first_analysis": t2 - t1, "warm_analysis": t3 - t2}
if len(sys.argv) > 1:  # the stages after the analysis
    from gradrank.report import render
    from gradrank.results import runs

    runs.write_run(sys.argv[1] + "/a", r)
    t4 = time.perf_counter()
    render.render_dir(sys.argv[1] + "/a", ["html"])
    t5 = time.perf_counter()
    render.render_dir(sys.argv[1] + "/a", ["html"], out_dir=sys.argv[1] + "/b")
    t6 = time.perf_counter()
    out |= {"write_run": t4 - t3, "first_report": t5 - t4, "second_report": t6 - t5}
print(json.dumps(out))
"""


def first_analysis(tmp: Path | None = None) -> dict:
    """One fresh process: the api import, analysis #1 and #2 (and with tmp the later stages)."""
    cmd = [sys.executable, "-c", FIRST, *([str(tmp)] if tmp else [])]
    out = subprocess.run(cmd, env=env_with_path(), capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def env_with_path() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="OMP/MKL/OpenBLAS threads of every process (default: theirs)")
    args = ap.parse_args()
    if args.threads:  # for every process below, ours and the script alike
        os.environ |= {f"{v}_NUM_THREADS": str(args.threads) for v in ("OMP", "MKL", "OPENBLAS")}
    env = env_with_path()
    gr = [sys.executable, "-m", "gradrank"]
    out: dict = {"host": os.uname().nodename, "cpus": os.cpu_count(), "threads": args.threads, "load": os.getloadavg()}
    print(f"{out['cpus']} CPUs, threads {args.threads or 'default'}, load average before: {out['load'][0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with_r, without = [], []
        for i in range(args.repeats):
            with_r.append(wall([*gr, "analyze", "-q", "-o", str(tmp / f"r{i}")], env))
            without.append(wall([*gr, "analyze", "-q", "--no-report", "-o", str(tmp / f"n{i}")], env))
        a, b = statistics.median(with_r), statistics.median(without)
        out["analyze"] = {"with_report_s": a, "without_report_s": b, "report_s": a - b, "report_over_rest": (a - b) / b}
        print("analyze (default config), whole process, median of", args.repeats)
        print(f"  with report     {a:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in with_r)})")
        print(f"  without report  {b:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in without)})")
        print(f"  report cost     {a - b:7.2f} s = {(a - b) / b:.2f} x the rest of the process (target <= 0.25)")
        runs_ = [first_analysis() for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs_) for k in runs_[0]}
        with_api = statistics.median((r["api_import"] + r["first_analysis"]) / r["warm_analysis"] for r in runs_)
        apart = statistics.median(r["first_analysis"] / r["warm_analysis"] for r in runs_)
        stages = first_analysis(tmp)
        out["first"] = {
            "median": med,
            "first_over_warm_with_api_import": with_api,
            "first_over_warm": apart,
            "runs": runs_,
            "stages": stages,
        }
        print(f"first analysis of a process (after import torch, gradrank), median of {args.repeats} processes")
        print(
            f"  from gradrank import api {med['api_import']:6.3f} s   analysis #1 {med['first_analysis']:6.3f} s"
            f"   analysis #2 {med['warm_analysis']:6.3f} s"
        )
        print(f"  #1 / #2 = {apart:.2f} with the api import apart, {with_api:.2f} with it counted in #1 (per process, median)")
        print(
            "  after them, one process: "
            + ", ".join(f"{k} {stages[k]:.3f} s" for k in ("write_run", "first_report", "second_report"))
        )
        # decompose beside a plain numpy script, same file and weights
        data, wts = tmp / "data.npz", tmp / "w.npz"
        subprocess.run([*gr, "generate", "-o", str(data)], env=env, check=True, capture_output=True, cwd=ROOT)
        import numpy as np

        with np.load(data) as z:
            d = z["X"].shape[1]
        m = 1250
        rng = np.random.default_rng(0)
        W = rng.standard_normal((m, d))
        W /= np.linalg.norm(W, axis=1, keepdims=True)
        np.savez(wts, W=W, a=rng.choice([-1.0, 1.0], m))
        script = tmp / "dense.py"
        script.write_text(NUMPY_SCRIPT)
        dec = [*gr, "decompose", "--data", str(data), "--weights", str(wts), "-q"]
        dec += ["--set", "model.scaling=ntk", "--set", "model.activation=relu", "--set", "loss.kind=mse"]
        times: dict[str, list[float]] = {"with_report": [], "without_report": [], "numpy": [], "torch_import": []}
        for i in range(args.repeats):
            times["with_report"].append(wall([*dec, "-o", str(tmp / f"decr{i}")], env))
            times["without_report"].append(wall([*dec, "--set", "output.report=false", "-o", str(tmp / f"dec{i}")], env))
            t = time.perf_counter()
            res = subprocess.run(
                [sys.executable, str(script), str(data), str(wts), str(1.0 / m**0.5)], capture_output=True, text=True, check=True
            )
            times["numpy"].append(time.perf_counter() - t)
            times["torch_import"].append(wall([sys.executable, "-c", "import torch"], env))
        dense = json.loads(res.stdout)
        metrics = json.loads((tmp / "dec0" / "metrics.json").read_text())
        okG = abs(metrics["norms"]["G"] - dense["G"]) <= 1e-8 * dense["G"]
        okE = abs(metrics["norms"]["E"] - dense["E"]) <= 1e-8 * dense["G"]
        med = {k: statistics.median(v) for k, v in times.items()}
        out["decompose"] = {
            **{f"{k}_s": v for k, v in med.items()},
            "ratio_with_report": med["with_report"] / med["numpy"],
            "ratio_without_report": med["without_report"] / med["numpy"],
            "ratio_without_report_less_torch_import": (med["without_report"] - med["torch_import"]) / med["numpy"],
            "G_agrees": okG,
            "E_agrees": okE,
            "numpy_compute_s": dense["seconds"],
            "runs": times,
        }
        print("decompose (paper size file, given weights), whole process, median of", args.repeats)
        print(
            f"  gradrank decompose   with report {med['with_report']:6.2f} s   without {med['without_report']:6.2f} s"
            f"   numpy dense script {med['numpy']:6.2f} s (its compute alone {dense['seconds']:.2f} s)"
        )
        print(
            f"  ratio to the script: {med['with_report'] / med['numpy']:.2f} with the report,"
            f" {med['without_report'] / med['numpy']:.2f} without; `python -c 'import torch'` alone"
            f" {med['torch_import']:.2f} s, so without the report and less torch's import"
            f" {(med['without_report'] - med['torch_import']) / med['numpy']:.2f}"
        )
        print(
            f"  check: ‖G‖ {'agrees' if okG else 'DISAGREES'} ({metrics['norms']['G']:.10g} vs {dense['G']:.10g}), "
            f"‖E‖ {'agrees' if okE else 'DISAGREES'} ({metrics['norms']['E']:.10g} vs {dense['E']:.10g})"
        )
        out["load_after"] = os.getloadavg()
        print(
            f"load average (1, 5, 15 min): before {out['load'][0]:.2f} {out['load'][1]:.2f} {out['load'][2]:.2f},"
            f" after {out['load_after'][0]:.2f} {out['load_after'][1]:.2f} {out['load_after'][2]:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not (out["decompose"]["G_agrees"] and out["decompose"]["E_agrees"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
