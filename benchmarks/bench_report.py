"""Whole-process cost of the report, and `decompose` beside a plain dense numpy script.

Cases (wall times of fresh processes, the median of --repeats alternating runs, same machine, same run):
  analyze   `gradrank analyze -q` (default config) with and without the report side by side; the
            report's cost is the difference, printed against the rest of the process (the target:
            at most a quarter of it).
  inproc    inside one process: imports, the first and a warm analysis, writing the run directory,
            the first and a second report render (HTML): where the time goes.
  decompose `gradrank decompose --data FILE --weights W.npz` (no report) beside a plain numpy script
            on the same file and weights: centre X, forward pass, the dense d x m gradient G, its full
            SVD, q (the file's, else X's top principal direction), the empirical mu and the four terms formed densely,
            E's SVD. Before the times are printed the two ‖G‖ and ‖E‖ are checked to agree (1e-8 relative).

Run: python benchmarks/bench_report.py [--repeats 5] [--json PATH]
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


def inproc(tmp: Path) -> dict:
    code = r"""
import json, sys, time
t0 = time.perf_counter()
import torch  # noqa: F401 - the import is timed apart from the first analysis
from gradrank import api
from gradrank.pipeline import analysis  # noqa: F401
from gradrank.results import runs
t1 = time.perf_counter()
r = api.analyze(None, {"output.report": False})
t2 = time.perf_counter()
api.analyze(None, {"output.report": False})
t3 = time.perf_counter()
runs.write_run(sys.argv[1] + "/a", r)
t4 = time.perf_counter()
from gradrank.report import render
render.render_dir(sys.argv[1] + "/a", ["html"])
t5 = time.perf_counter()
render.render_dir(sys.argv[1] + "/a", ["html"], out_dir=sys.argv[1] + "/b")
t6 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "first_analysis": t2 - t1, "warm_analysis": t3 - t2, "write_run": t4 - t3,
                  "first_report": t5 - t4, "second_report": t6 - t5}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp)], env=env_with_path(), capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def env_with_path() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    env = env_with_path()
    gr = [sys.executable, "-m", "gradrank"]
    out: dict = {"host": os.uname().nodename, "cpus": os.cpu_count(), "load": os.getloadavg()}
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
        ip = inproc(tmp)
        out["inproc"] = ip
        print("inside one process: " + ", ".join(f"{k} {v:.3f} s" for k, v in ip.items()))
        print(f"  first analysis / warm analysis = {ip['first_analysis'] / ip['warm_analysis']:.2f}")
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
        ours, ref = [], []
        for i in range(args.repeats):
            target = tmp / f"dec{i}"
            ours.append(
                wall(
                    [
                        *gr,
                        "decompose",
                        "--data",
                        str(data),
                        "--weights",
                        str(wts),
                        "--set",
                        "output.report=false",
                        "--set",
                        "model.scaling=ntk",
                        "--set",
                        "model.activation=relu",
                        "--set",
                        "loss.kind=mse",
                        "-q",
                        "-o",
                        str(target),
                    ],
                    env,
                )
            )
            t = time.perf_counter()
            res = subprocess.run(
                [sys.executable, str(script), str(data), str(wts), str(1.0 / m**0.5)], capture_output=True, text=True, check=True
            )
            ref.append(time.perf_counter() - t)
        dense = json.loads(res.stdout)
        metrics = json.loads((tmp / "dec0" / "metrics.json").read_text())
        okG = abs(metrics["norms"]["G"] - dense["G"]) <= 1e-8 * dense["G"]
        okE = abs(metrics["norms"]["E"] - dense["E"]) <= 1e-8 * dense["G"]
        o, r = statistics.median(ours), statistics.median(ref)
        out["decompose"] = {
            "ours_s": o,
            "numpy_s": r,
            "ratio": o / r,
            "G_agrees": okG,
            "E_agrees": okE,
            "numpy_compute_s": dense["seconds"],
        }
        print("decompose (paper size file, given weights), whole process, median of", args.repeats)
        print(
            f"  gradrank decompose {o:7.2f} s   numpy dense script {r:7.2f} s (its compute alone {dense['seconds']:.2f} s)"
            f"   ratio {o / r:.2f}"
        )
        print(
            f"  check: ‖G‖ {'agrees' if okG else 'DISAGREES'} ({metrics['norms']['G']:.10g} vs {dense['G']:.10g}), "
            f"‖E‖ {'agrees' if okE else 'DISAGREES'} ({metrics['norms']['E']:.10g} vs {dense['E']:.10g})"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not (out["decompose"]["G_agrees"] and out["decompose"]["E_agrees"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
