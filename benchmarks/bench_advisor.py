"""Cost of the advisor's recording beside the same training without it, measured in the same run:
the two-layer model at the paper's size (n=750, d=1000, m=1250, full-batch GD) and the built-in deep
MLP (model.depth layers), with the default grid (ranks 1..32, intervals 10, 50, 100, 200, every
projector). The aim (docs/advisor.md): recording at most 20 % over the training.

The advice also times one full SVD per distinct layer shape (what a GaLore refresh costs); that
happens once, after the training, and is shown in its own column, not in the ratio.

Beside it the obvious implementation's refresh cost: a full SVD of every layer's gradient at every
refresh step (what GaLore does, and what the T = 1 column would need every step), from the measured
time of one SVD.

Run: python benchmarks/bench_advisor.py [--steps 30] [--threads 1] [--json out.json]
(CPU seconds of the process; one thread by default, so a shared machine's load does not enter.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gradrank import config
from gradrank.models.registry import resolve as resolve_spec
from gradrank.studies import advise as advisor


def two_layer(steps: int, sets: list[str]) -> dict:
    cfg = advisor.resolve(config.load(sets=[f"train.steps={steps}", *sets]))
    base, rec = _best(lambda record: advisor.record_twolayer(cfg, record=record))
    return _row("two-layer (paper size)", cfg, base, rec)


def deep_mlp(steps: int, sets: list[str]) -> dict:
    cfg = advisor.resolve(config.load(sets=[f"train.steps={steps}", "advise.model=mlp", *sets]))
    base, rec = _best(lambda record: advisor.record_module(resolve_spec("mlp", cfg), cfg, record=record))
    return _row(f"deep MLP (depth {cfg.model.depth})", cfg, base, rec)


def _timed(run, record: bool) -> dict:
    """One training, with the process's CPU seconds beside the wall clock (on a shared machine the
    CPU time of a one-thread run is the stable measure)."""
    cpu = time.process_time()
    out = run(record)
    out["cpu_seconds"] = time.process_time() - cpu
    return out


def _best(run, repeats: int = 2):
    """Without and with recording, alternated, each the fastest (CPU time) of `repeats` runs."""
    base = rec = None
    for _ in range(repeats):
        b, r = _timed(run, False), _timed(run, True)
        base = b if base is None or b["cpu_seconds"] < base["cpu_seconds"] else base
        rec = r if rec is None or r["cpu_seconds"] < rec["cpu_seconds"] else rec
    return base, rec


def _row(label, cfg, base, rec) -> dict:
    steps = cfg.train.steps
    plain, total = base["cpu_seconds"], rec["cpu_seconds"]
    refresh_steps = len({T * (t // T) for T in cfg.advise.intervals for t in range(steps)})
    cpu = time.process_time()
    svd = advisor.svd_seconds(rec["last"])  # the advice's one-off refresh-cost measurement, after the training
    svd_cpu = time.process_time() - cpu
    obvious = refresh_steps * sum(svd.values())
    return {
        "setting": label,
        "steps": steps,
        "layers": [list(le.shape) for le in rec["layers"]],
        "train_cpu_seconds": plain,
        "train_with_recording_cpu_seconds": total,
        "train_wall_seconds": base["train_seconds"],
        "train_with_recording_wall_seconds": rec["train_seconds"],
        "recording_seconds": rec["recording_seconds"],
        "svd_timing_cpu_seconds": svd_cpu,
        "ratio": total / plain,
        "overhead": total / plain - 1,
        "obvious_svd_seconds": obvious,
        "obvious_ratio": (plain + obvious) / plain,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    rows = [
        two_layer(args.steps, []),
        deep_mlp(args.steps, [f"model.depth={args.depth}", "data.n=750", "data.d=1000", "model.width=1250"]),
    ]
    print(
        f"{'setting':<28} {'steps':>5} {'train cpu s':>11} {'+recording':>11} {'ratio':>6}  {'SVD timing s':>12}"
        f"  {'obvious SVDs s':>14} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['setting']:<28} {r['steps']:>5} {r['train_cpu_seconds']:>11.2f} {r['train_with_recording_cpu_seconds']:>11.2f} "
            f"{r['ratio']:>6.3f}  {r['svd_timing_cpu_seconds']:>12.2f}  {r['obvious_svd_seconds']:>14.2f} {r['obvious_ratio']:>6.3f}"
        )
    with open("/proc/loadavg") as fh:
        print("load average:", fh.read().split()[:3])
    if args.json:
        with open(args.json, "w") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with open("/proc/loadavg") as la:
                load = la.read().split()[:3]
            json.dump({"threads": args.threads, "time": stamp, "loadavg": load, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
