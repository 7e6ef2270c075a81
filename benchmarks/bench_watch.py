"""Cost of gradrank.watch beside the same training without it, alternating in one run: an MLP
(784 -> 512 -> 512 -> 10, batch 256, SGD, float32) trained for --steps steps plain, with the monitor
recording every 50 steps, and recording every step; beside them the obvious monitor (autograd's
.grad, then torch.linalg.svdvals of each weight at each recorded step). Issue 26's aims: at most 5 %
over the training recording every 50 steps, at most 1x a training step recording every step.

Run: python benchmarks/bench_watch.py [--steps 200] [--threads 1] [--json out.json]
(CPU seconds of the process; one thread by default, so a shared machine's load does not enter.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import gradrank


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
    )


def run(mode: str, steps: int, out: Path) -> float:
    """CPU seconds of `steps` training steps with the monitor `mode` (plain, every50, every1, svdvals50)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(256, 784, generator=g), torch.randint(0, 10, (256,), generator=g)) for _ in range(8)]
    mon = gradrank.watch(model, out=out, every=50 if mode == "every50" else 1) if mode.startswith("every") else None
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    start = time.process_time()
    for step in range(steps):
        x, y = data[step % len(data)]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if mon is not None:
            mon.step(loss=loss)
        elif mode == "svdvals50" and step % 50 == 0:
            [torch.linalg.svdvals(m.weight.grad) for m in linear]
        opt.step()
        opt.zero_grad()
    if mon is not None:
        mon.close()
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    modes = ("plain", "every50", "svdvals50", "every1")
    times = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):  # alternating, so drift of the machine's speed enters every mode alike
            for m in modes:
                times[m].append(run(m, args.steps, Path(tmp) / f"{m}-{rep}"))
    best = {m: min(t) for m, t in times.items()}
    step = best["plain"] / args.steps
    print(f"{'mode':10s} {'CPU s':>8s} {'over plain':>11s}")
    for m in modes:
        print(f"{m:10s} {best[m]:8.3f} {100 * (best[m] / best['plain'] - 1):10.1f}%")
    extra = (best["every1"] - best["plain"]) / args.steps
    print(f"recording every step: {extra / step:.2f} training steps each (aim <= 1)")
    if args.json:
        args.json.write_text(json.dumps({"steps": args.steps, "threads": args.threads, "seconds": times}, indent=2))


if __name__ == "__main__":
    main()
