"""Cost of per-step top-k tracking during training, beside the step itself and the obvious
implementation (a dense SVD of G every step), measured in the same run at the paper's size.

For each variant the same full-batch gradient-descent trajectory is replayed from W0:
  step         gradient() + dense G + the update (no spectral work)
  track k      spectral.top_k on the factored G, warm-started from the previous step's block
  exact        spectral.spectrum (all singular values + top-k triplets of G) every step
  dense SVD    torch.linalg.svd(G) every step (the obvious implementation)
Tracking times are checked at the last step against the dense SVD (values relative to s_1,
largest principal angle of the top-k subspace). Then `train.train` end to end with a record every
step (tracking + decomposition + ||E|| tracking) against records only at the ends.

Run: python benchmarks/bench_train.py [--steps 15] [--n 750 --d 1000 --m 1250] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from gradrank import config
from gradrank.core import spectra as spectral
from gradrank.models.closed_form import gradient
from gradrank.studies import analyze as analysis
from gradrank.studies import train as train


def replay(cfg, ds, net0, steps: int, lr: float, variant: str, k: int):
    """Per-step (step time, spectral time) along the GD trajectory, plus the last tracked result."""
    W = net0.W.clone()
    net = train.Network(W, net0.a, net0.gamma, net0.act)
    p = train.block_size(k, ds.d, net.m)
    block = torch.randn(ds.d, p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step_t, spec_t, iters, fallbacks, last = [], [], [], 0, None
    for _ in range(steps):
        t0 = time.perf_counter()
        grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
        G = grad.dense()
        t1 = time.perf_counter()
        if variant == "track":
            mv, rmv = grad.operator()
            last = spectral.top_k(mv, rmv, block, k, exact=lambda: spectral.spectrum(ds.X, grad.D, grad.coef, p))
            block = last.U
            iters.append(last.iterations)
            fallbacks += last.fallback
        elif variant == "exact":
            last = spectral.spectrum(ds.X, grad.D, grad.coef, k)
        elif variant == "dense":
            last = torch.linalg.svd(G, full_matrices=False)
        t2 = time.perf_counter()
        net.W = net.W - lr * G.T
        t3 = time.perf_counter()
        step_t.append(t1 - t0 + t3 - t2)
        spec_t.append(t2 - t1)
    return step_t, spec_t, iters, fallbacks, last, G


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--n", type=int, default=750)
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--m", type=int, default=1250)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.load(
        sets=[f"data.n={args.n}", f"data.d={args.d}", f"model.width={args.m}", f"train.lr={args.lr}", "output.report=false"]
    )
    _, ds, net0 = analysis.prepare(cfg)
    print(
        f"bench_train: n={args.n} d={args.d} m={args.m}, {args.steps} GD steps, lr={args.lr}, "
        f"threads={args.threads}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'variant':<22}{'step ms':>10}{'spectral ms':>13}{'ratio':>8}{'iters':>7}{'fallbacks':>10}  check vs dense SVD")
    for variant, k in (("step", 0), ("track", 2), ("track", 8), ("exact", 8), ("dense", 8)):
        step_t, spec_t, iters, fb, last, G = replay(cfg, ds, net0, args.steps, args.lr, variant, k)
        st, sp = median(step_t), median(spec_t[1:] or spec_t)  # the first tracked step is a cold start
        check = ""
        if variant == "track":
            U, s, _ = torch.linalg.svd(G, full_matrices=False)
            verr = float((last.s[:k] - s[:k]).abs().max() / s[0])
            cos = torch.linalg.svdvals(U[:, :k].T @ last.U[:, :k]).clamp(max=1).min()
            check = f"values {verr:.1e} s_1, angle {math.acos(float(cos)):.1e} rad"
        name = {
            "step": "step only",
            "track": f"track top-{k} (warm)",
            "exact": "spectrum() exact",
            "dense": "dense SVD (obvious)",
        }[variant]
        ratio = sp / st if variant != "step" else float("nan")
        print(
            f"{name:<22}{1e3 * st:>10.1f}{1e3 * sp:>13.1f}{ratio:>8.2f}{(sum(iters[1:]) / max(len(iters) - 1, 1) if iters else 0):>7.1f}"
            f"{fb:>10}  {check}"
        )
    # end to end: a record every step vs records only at the ends
    for every in (args.steps, 1):
        c = cfg.replace(**{"train.steps": args.steps, "train.record_every": every, "train.checkpoint_every": 10**6})
        t = time.perf_counter()
        tr = train.train(c)
        wall = time.perf_counter() - t
        print(
            f"train.train record_every={every:<4} {wall:7.2f} s total, {1e3 * wall / args.steps:7.1f} ms/step, "
            f"tracking fallbacks {tr.info['track_fallbacks']}, mean iterations {tr.info['track_iterations_mean']:.1f}"
        )


if __name__ == "__main__":
    main()
