"""Speed and memory of the analysis beside the obvious implementation, measured in the same run.

Cases (each at every size and dtype asked for; times are the best of a few repeats after a warm-up):
  analysis  gradrank's analyze_state (gradient, exact spectrum of G and E, top-k vectors, every
            term and metric) vs the obvious implementation: autograd G on the dense loss, a
            dense SVD of G, and S1, S12, S2, E formed densely with an SVD each.
  gradient  closed-form G (gradient() + dense()) vs the floor of its two products X W^T, X^T D.
  exact     spectral.spectrum (all values + top-k triplets) vs a dense SVD of G.
  topk      spectral.top_k (block Krylov, residual 2e-5 s_1) vs a dense SVD of G.
  memory    peak RSS of a whole `analysis.analyze` (setup included) in a fresh subprocess.
  help      `gradrank --help` wall time in a subprocess.
Before a time is reported its result is checked against the reference: singular values to
1e-8 * s_1 (normwise) and top-k subspace angles < 1e-6 in float64 (1e-3 / 1e-2 in float32);
top_k reports the residual, angle and value error it reached. A failed check is printed and
recorded as "ok": false.

Run: python benchmarks/bench_analysis.py [--quick] [--device cuda] [--json PATH]
(or python benchmarks/run_all.py). The dense references are skipped above --ref-max (m*d).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from gradrank import config
from gradrank.core import spectra as spectral
from gradrank.models.closed_form import gradient, loss_and_residue
from gradrank.models.mu import compute_mu
from gradrank.studies import analyze as analysis

PAPER = (750, 1000, 1250)
CURVE = [(256, 512, 2048), (512, 1024, 4096), PAPER, (1024, 2048, 8192), (2048, 4096, 16384)]
QUICK = [(256, 512, 2048), PAPER, (512, 1024, 4096)]
RESULTS = Path(__file__).parent / "results"
TOPK_TOL = 2e-5  # residual / s_1 at which top_k stops; its subspace angle is about residual / gap


def cfg_for(n, d, m, dtype, device, k=8):
    return config.load(
        sets=[
            f"data.n={n}",
            f"data.d={d}",
            f"model.width={m}",
            f"compute.dtype={dtype}",
            f"compute.device={device}",
            f"analysis.top_k={k}",
        ]
    )


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def best_time(fn, device, repeats=3, budget=20.0):
    """Best wall time of `repeats` calls after one warm-up (fewer repeats when a call is slow;
    none when the warm-up itself took over budget / 4, whose time is then the one reported)."""
    t = time.perf_counter()
    out = fn()
    sync(device)
    first = time.perf_counter() - t
    if first > budget / 4:
        return first, out
    times = []
    while len(times) < repeats:
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if sum(times) > budget:
            break
    return min(times), out


def angle(A: torch.Tensor, B: torch.Tensor) -> float:
    """Largest principal angle between the column spans of A and B (both orthonormalised)."""
    qa, qb = torch.linalg.qr(A.double())[0], torch.linalg.qr(B.double())[0]
    c = torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)
    return float(torch.sqrt(1 - c.min() ** 2))


def tolerances(dtype):
    return (1e-8, 1e-6) if dtype == "float64" else (1e-3, 1e-2)


def obvious(cfg, ds, net):
    """The obvious implementation: autograd G, dense SVD of G, each term dense with its own SVD."""
    W = net.W.clone().requires_grad_(True)
    f = net.gamma * (net.act.f(ds.X @ W.T) @ net.a)
    ell, r = loss_and_residue(cfg.loss.kind, f, ds.y)
    ell.mean().backward()
    G = W.grad.T
    r = r.detach()
    svd = torch.linalg.svd(G, full_matrices=False)
    Sp = net.act.d1(ds.X @ net.W.T)
    mu = compute_mu(cfg.analysis.mu, None, ds, net, cfg.analysis.quadrature)[0]
    c, a_mu = net.gamma / ds.n, net.a * mu
    Sp_perp = Sp - mu
    terms = {
        "S1": c * torch.outer(ds.X_B.T @ r, a_mu),
        "S12": c * ds.zeta * float(ds.z @ r) * torch.outer(ds.q, a_mu),
        "S2": c * ds.zeta * torch.outer(ds.q, net.a * (Sp_perp.T @ (ds.z * r))),
        "E": c * ds.X_B.T @ ((r[:, None] * net.a[None, :]) * Sp_perp),
    }
    norms = {k: torch.linalg.svd(T, full_matrices=False)[1][0] for k, T in terms.items()}
    ident = (G - sum(terms.values())).norm() / G.norm()
    return svd, norms, float(ident)


def case_analysis(n, d, m, dtype, device, with_ref):
    cfg, ds, net = analysis.prepare(cfg_for(n, d, m, dtype, device))
    k = cfg.analysis.top_k
    t_ours, res = best_time(lambda: analysis.analyze_state(cfg, ds, net), device)
    row = {
        "case": "analysis",
        "n": n,
        "d": d,
        "m": m,
        "dtype": dtype,
        "ours_s": t_ours,
        "identity_error": res.metrics["identity_error"],
    }
    if not with_ref:
        return row
    t_ref, (svd, norms, ident) = best_time(lambda: obvious(cfg, ds, net), device)
    U, S, Vh = svd
    tol_v, tol_a = tolerances(dtype)
    vals = torch.as_tensor(res.arrays["singular_values"], dtype=S.dtype, device=S.device)
    err_v = float((vals - S).abs().max() / S[0])
    ours_norms = res.metrics["norms"]
    err_n = max(
        abs(ours_norms[key] - float(v)) / max(float(v), float(S[0]) * 1e-300)
        for key, v in norms.items()
        if float(v) > float(S[0]) * tol_v
    )
    Uo = torch.as_tensor(res.arrays["U"], dtype=S.dtype, device=S.device)
    Vo = torch.as_tensor(res.arrays["V"], dtype=S.dtype, device=S.device)
    ang = max(angle(Uo, U[:, :k]), angle(Vo, Vh[:k].T))
    ok = err_v <= tol_v and err_n <= tol_v and ang <= tol_a
    return row | {
        "ref_s": t_ref,
        "ratio": t_ref / t_ours,
        "value_err": err_v,
        "norm_err": err_n,
        "angle": ang,
        "ref_identity_error": ident,
        "ok": ok,
    }


def case_gradient(n, d, m, dtype, device):
    cfg, ds, net = analysis.prepare(cfg_for(n, d, m, dtype, device))
    X, y = ds.X, ds.y
    t_ours, G = best_time(lambda: gradient(net, X, y, cfg.loss.kind).dense(), device, repeats=5)
    D = gradient(net, X, y, cfg.loss.kind).D
    t_floor, _ = best_time(lambda: (X @ net.W.T, X.T @ D), device, repeats=5)
    W = net.W.clone().requires_grad_(True)
    loss_and_residue(cfg.loss.kind, net.gamma * (net.act.f(X @ W.T) @ net.a), y)[0].mean().backward()
    err = float((G - W.grad.T).abs().max() / W.grad.abs().max())
    tol = 1e-10 if dtype == "float64" else 1e-4
    return {
        "case": "gradient",
        "n": n,
        "d": d,
        "m": m,
        "dtype": dtype,
        "ours_s": t_ours,
        "floor_s": t_floor,
        "ratio": t_ours / t_floor,
        "autograd_err": err,
        "ok": err <= tol,
    }


def case_spectra(n, d, m, dtype, device, with_ref, k=16):
    cfg, ds, net = analysis.prepare(cfg_for(n, d, m, dtype, device))
    grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    L, R, c = ds.X, grad.D, grad.coef
    t_exact, sp = best_time(lambda: spectral.spectrum(L, R, c, k), device, repeats=3 if n < 2048 else 1)
    mv, rmv = spectral.factored(L, R, c)
    g = torch.Generator().manual_seed(0)
    b = k + max(k, 8)  # block: k and as many extra columns (at least 8)
    cold = lambda: spectral.top_k(mv, rmv, mv(torch.randn(m, b, generator=g, dtype=torch.float64).to(L)), k, tol=TOPK_TOL)  # noqa: E731
    t_topk, tk = best_time(cold, device, repeats=3)
    tol_v, tol_a = tolerances(dtype)
    rows = []
    if with_ref:
        G = grad.dense()
        t_ref, (U, S, Vh) = best_time(lambda: torch.linalg.svd(G, full_matrices=False), device)
        ref = (U[:, :k], S, Vh[:k].T, "dense SVD")
    else:  # too large for a dense SVD here: the exact route (itself checked at smaller sizes) is the reference
        t_ref, ref = None, (sp.U, sp.values, sp.V, "exact spectrum")
    Ur, Sr, Vr, ref_name = ref
    s1 = float(Sr[0])
    for name, t, U, s, V, vals in (
        ("exact", t_exact, sp.U, sp.s, sp.V, sp.values),
        ("topk", t_topk, tk.U[:, :k], tk.s[:k], tk.V[:, :k], None),
    ):
        if name == "exact" and t_ref is None:
            rows.append({"case": name, "n": n, "d": d, "m": m, "dtype": dtype, "k": k, "ours_s": t, "reference": None})
            continue
        err_v = float(((vals if vals is not None else s) - Sr[: (len(vals) if vals is not None else k)]).abs().max()) / s1
        ang = max(angle(U, Ur), angle(V, Vr))
        row = {
            "case": name,
            "n": n,
            "d": d,
            "m": m,
            "dtype": dtype,
            "k": k,
            "ours_s": t,
            "reference": ref_name,
            "value_err": err_v,
            "angle": ang,
        }
        if t_ref is not None:
            row |= {"ref_s": t_ref, "ratio": t_ref / t}
        if name == "exact":
            row["ok"] = err_v <= tol_v and ang <= tol_a
        else:
            row |= {"residual": tk.residual, "iterations": tk.iterations, "ok": ang <= 1e-3}
        rows.append(row)
    return rows


def peak_rss_mib() -> float:
    """This process's RSS high-water mark (VmHWM, reset by exec; ru_maxrss where /proc is absent)."""
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(n, d, m, dtype, device):
    """Runs in a fresh process: peak RSS (MiB) of a whole analyze() after importing torch."""
    base = peak_rss_mib()
    res = analysis.analyze(cfg_for(n, d, m, dtype, device))
    peak = peak_rss_mib()
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    print(
        json.dumps(
            {"peak_rss_mib": peak, "import_rss_mib": base, "gpu_peak_mib": gpu, "identity_error": res.metrics["identity_error"]}
        )
    )


def case_memory(n, d, m, dtype, device):
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", f"{n},{d},{m}", "--dtypes", dtype, "--device", device],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return {"case": "memory", "n": n, "d": d, "m": m, "dtype": dtype, **info, "ok": info["peak_rss_mib"] < 3 * 1024}


def case_help():
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gradrank", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    torch_loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gradrank.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"case": "help", "ours_s": min(times), "imports_torch": torch_loaded == "True", "ok": torch_loaded == "False"}


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}{unit}"
    return str(v)


def table(rows) -> str:
    """Markdown table of all rows (ours, reference, ratio, accuracy)."""
    head = "| case | n, d, m | dtype | ours (s) | reference (s) | ratio | accuracy | peak RSS (MiB) | checks |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        size = f"{r['n']}, {r['d']}, {r['m']}" if "n" in r else "-"
        ref = r.get("ref_s", r.get("floor_s"))
        acc = []
        if "value_err" in r:
            acc.append(f"values {r['value_err']:.1e}")
        if "angle" in r:
            acc.append(f"angle {r['angle']:.1e}")
        if "autograd_err" in r:
            acc.append(f"vs autograd {r['autograd_err']:.1e}")
        if "residual" in r:
            acc.append(f"residual {r['residual']:.1e}, {r['iterations']} it")
        if r.get("gpu_peak_mib") is not None:
            acc.append(f"GPU peak {r['gpu_peak_mib']:.0f} MiB")
        if "identity_error" in r and r["case"] == "analysis":
            acc.append(f"identity {r['identity_error']:.1e}")
        lines.append(
            f"| {r['case']} | {size} | {r.get('dtype', '-')} | {fmt(r.get('ours_s'))} | {fmt(ref)} | "
            f"{fmt(r.get('ratio'))} | {'; '.join(acc) or '-'} | {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('ok'))} |"
        )
    return "\n".join(lines)


def machine(device) -> dict:
    info = {
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, float64 + paper-size float32 (a few minutes)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--sizes", default=None, help="n,d,m;n,d,m;... (default: the scaling curve)")
    ap.add_argument("--ref-max", type=float, default=2.0e7, help="largest d*m with a dense reference")
    ap.add_argument("--cases", default="analysis,gradient,spectra,memory,help")
    ap.add_argument("--json", type=Path, default=None, help="output JSON (default benchmarks/results/analysis-DEVICE.json)")
    ap.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_memory:
        child_memory(*map(int, args.child_memory.split(",")), args.dtypes, args.device)
        return 0
    sizes = [tuple(map(int, s.split(","))) for s in args.sizes.split(";")] if args.sizes else (QUICK if args.quick else CURVE)
    dtypes = args.dtypes.split(",")
    cases = args.cases.split(",")
    rows = []
    out = args.json or RESULTS / f"analysis-{args.device}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    head = {
        "machine": machine(args.device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "argv": sys.argv[1:],
        "load_before": os.getloadavg(),
    }

    def add(r):
        for row in r if isinstance(r, list) else [r]:
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
        out.write_text(json.dumps(head | {"load_after": os.getloadavg(), "rows": rows}, indent=1, default=float))

    print(table([]))
    if "help" in cases:
        add(case_help())
    for dtype in dtypes:
        for n, d, m in sizes:
            if args.quick and dtype != "float64" and (n, d, m) != PAPER:
                continue
            with_ref = d * m <= args.ref_max
            if "gradient" in cases:
                add(case_gradient(n, d, m, dtype, args.device))
            if "analysis" in cases:
                add(case_analysis(n, d, m, dtype, args.device, with_ref))
            if "spectra" in cases:
                add(case_spectra(n, d, m, dtype, args.device, with_ref))
            if "memory" in cases and (n, d, m) in (PAPER, CURVE[-1]):
                add(case_memory(n, d, m, dtype, args.device))
    print(f"\nwrote {out}")
    bad = [r for r in rows if r.get("ok") is False]
    for r in bad:
        print(f"CHECK FAILED: {r}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
