"""Speed and memory of the per-layer analysis (gradrank layers) beside the obvious way, same run.

Cases:
  minilm   all-MiniLM-L6-v2, one batch of 64 sentences, its 36 linear layers.
  mlp      the deep MLP at the paper's size (n=750, d=1000, width 1250, depth 6).
For each: ours = capture (one forward, one backward returning the layer-output errors and the weight
gradients) + the whole per-layer analysis (spike split, four terms, exact spectra of G and E,
measures, identity); fb = one forward and backward (loss.backward()); obvious = loss.backward()
then torch.linalg.svdvals of every weight gradient. Before any time is reported, our singular
values are checked against svdvals (normwise 2 sqrt(eps) s_1). Times: fb, the svdvals part and ours
measured in interleaved rounds (a warm-up round first), each the best of --repeats; obvious = fb +
the svdvals part, ours = capture + analysis of its best run.
  memory   peak RSS in fresh processes over the model's loaded baseline: capturing every layer's
           factors for the batch vs one training step (forward, backward, SGD step).

Run: python benchmarks/bench_layers.py [--cases minilm,mlp] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from gradrank import config
from gradrank.models import capture as capture_mod
from gradrank.models import registry as spec
from gradrank.studies import layers

RESULTS = Path(__file__).parent / "results"


def problem_for(case: str):
    if case == "minilm":
        cfg = config.load(sets=['layers.model="minilm"', "layers.sentences=64"])
    else:
        cfg = config.load(sets=["model.depth=6", "model.gain=1.4142135623730951"])
    return cfg, spec.resolve(cfg.layers.model, cfg)


def forward_backward(problem, names):
    problem.model.zero_grad(set_to_none=True)
    ((inputs, targets),) = problem.batches
    problem.loss(spec.forward(problem, inputs), targets).backward()
    mods = dict(problem.model.named_modules())
    return [mods[n].weight.grad for n in names]


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def obvious(problem, names) -> tuple[float, list]:
    """The obvious way after its forward and backward: svdvals of every weight gradient (timed alone)."""
    grads = forward_backward(problem, names)
    return timed(lambda: [torch.linalg.svdvals(g) for g in grads])


def check_E(problem, cfg, res) -> float:
    """Largest |our E value - svdvals(E)| / s_1(G) over the layers, E = G - (S1 + S12 + S2) formed
    densely in float64 from a fresh capture's decomposition (untimed)."""
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model, problem.layers))
    worst = 0.0
    with torch.no_grad():
        for r in res.layers:
            _, grad, dec, *_ = layers.decompose_layer(cap.layers[r.name], problem.spike)
            left, right = dec.spikes()
            G = grad.dense().double()
            s = torch.linalg.svdvals(G - left.double() @ right.double())
            mine = torch.as_tensor(res.arrays[f"{r.name}/E"], dtype=torch.float64)[: s.numel()]
            worst = max(worst, float((mine - s).abs().max()) / float(r.norms["G"]))
    return worst


def case_speed(case: str, repeats: int) -> dict:
    cfg, problem = problem_for(case)
    names = list(spec.linear_layers(problem.model, problem.layers))
    # interleaved (fb, obvious, ours) rounds after a warm-up round, so that a change of load hits all
    # three alike; each part is the fastest of its `repeats` measurements
    fb, svd, ours = [], [], []
    for rnd in range(repeats + 1):
        t_f = timed(lambda: forward_backward(problem, names))[0]
        t_s, svals = obvious(problem, names)
        t_o, res = timed(lambda: layers.analyze_problem(problem, cfg))
        if rnd:
            fb.append(t_f), svd.append(t_s), ours.append((t_o, res.timings))
    t_fb, t_svd = min(fb), min(svd)
    t_obv = t_fb + t_svd
    t_ours, timings = min(ours, key=lambda r: r[0])
    eps = torch.finfo(getattr(torch, res.dtype)).eps
    worst = 0.0
    for r, s in zip(res.layers, svals):
        mine = torch.as_tensor(res.arrays[f"{r.name}/G"], dtype=torch.float64)[: s.numel()]
        worst = max(worst, float((mine - s.double()).abs().max()) / float(s[0]))
    worst_E = check_E(problem, cfg, res)
    ok = worst <= 2 * eps**0.5 and worst_E <= 2 * eps**0.5
    t_analysis = timings["analysis"]
    return {
        "case": case,
        "layers": len(res.layers),
        "rows": res.layers[0].rows,
        "routes": sorted({r.spectrum_route for r in res.layers}),
        "threads": torch.get_num_threads(),
        "fb_s": t_fb,
        "obvious_s": t_obv,
        "obvious_svd_s": t_svd,
        "ours_s": t_ours,
        "ours_capture_s": timings["capture"],
        "ours_analysis_s": t_analysis,
        "ours_over_fb": t_ours / t_fb,
        "analysis_over_fb": t_analysis / t_fb,
        "obvious_over_ours": t_obv / t_ours,
        "svd_over_analysis": t_svd / t_analysis,
        "max_value_error_over_s1": worst,
        "max_E_value_error_over_s1": worst_E,
        "max_identity_error": max(r.identity_error for r in res.layers),
        "loadavg_before": LOAD[0],
        "loadavg_after": loadavg(),
        "ok": ok,
    }


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


LOAD = [""]


def peak_rss_mib() -> float:
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def child(case: str, mode: str) -> None:
    """In a fresh process: peak RSS after loading (baseline) and after the mode's work."""
    cfg, problem = problem_for(case)
    names = spec.linear_layers(problem.model, problem.layers)
    with torch.no_grad():
        spec.forward(problem, problem.batches[0][0])  # the forward's own buffers count in the baseline
    base = peak_rss_mib()
    if mode == "step":
        opt = torch.optim.SGD(problem.model.parameters(), lr=1e-3)
        forward_backward(problem, list(names))
        opt.step()
        kept = 0
    else:
        cap = capture_mod.capture(problem, names)
        kept = sum(t.numel() * t.element_size() for f in cap.layers.values() for t in (f.H, f.D, f.J, f.G) if t is not None)
    print(json.dumps({"base_mib": base, "peak_mib": peak_rss_mib(), "captured_mib": kept / 2**20}))


def case_memory(case: str) -> dict:
    out = {}
    for mode in ("step", "capture"):
        proc = subprocess.run([sys.executable, __file__, "--child", case, mode], capture_output=True, text=True, check=True)
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    step = out["step"]["peak_mib"] - out["step"]["base_mib"]
    cap = out["capture"]["peak_mib"] - out["capture"]["base_mib"]
    ratio = cap / max(step, 1e-9)
    return {"case": f"memory-{case}", "step_mib": step, "capture_mib": cap, "captured_factors_mib": out["capture"]["captured_mib"],
            "capture_over_step": ratio, "ok": ratio <= 2.0}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="minilm,mlp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory cases")
    ap.add_argument("--child", nargs=2, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(*args.child)
        return 0
    rows = []
    for case in args.cases.split(","):
        LOAD[0] = loadavg()
        rows.append(case_speed(case, args.repeats))
        r = rows[-1]
        print(
            f"{case}: {r['layers']} layers, {r['rows']} rows, routes {r['routes']}, {r['threads']} threads: "
            f"one forward+backward {r['fb_s']:.3f} s; "
            f"ours {r['ours_s']:.3f} s (capture {r['ours_capture_s']:.3f} + analysis {r['ours_analysis_s']:.3f}); "
            f"obvious (backward + svdvals) {r['obvious_s']:.3f} s (svdvals {r['obvious_svd_s']:.3f}); "
            f"ours/fb {r['ours_over_fb']:.2f}x, analysis/fb {r['analysis_over_fb']:.2f}x, "
            f"obvious/ours {r['obvious_over_ours']:.2f}x, svdvals/analysis {r['svd_over_analysis']:.2f}x; "
            f"G values within {r['max_value_error_over_s1']:.1e} s1, E values within {r['max_E_value_error_over_s1']:.1e} s1: "
            f"{'ok' if r['ok'] else 'FAILED'}; load {r['loadavg_before']} -> {r['loadavg_after']}",
            flush=True,
        )
        if args.no_memory:
            continue
        rows.append(case_memory(case))
        m = rows[-1]
        print(
            f"memory-{case}: one training step +{m['step_mib']:.1f} MiB, capture +{m['capture_mib']:.1f} MiB "
            f"(factors {m['captured_factors_mib']:.1f} MiB): {m['capture_over_step']:.2f}x",
            flush=True,
        )
    payload = {"machine": platform.platform(), "threads": torch.get_num_threads(), "rows": rows}
    path = args.json or RESULTS / f"layers-cpu-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
