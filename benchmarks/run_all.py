"""Run every benchmark present and draw docs/performance.svg from the analysis results.

    python benchmarks/run_all.py            # full scaling curve (the largest size takes minutes)
    python benchmarks/run_all.py --quick    # a few minutes
    python benchmarks/run_all.py --plot-only benchmarks/results/analysis-cpu.json [more.json ...]

bench_analysis.py (this package's speed and memory), then bench_train.py and bench_sweep.py when
they exist; each prints its own table (ours, reference, ratio) and exits non-zero on a failed check.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
PLOT = HERE.parent / "docs" / "performance.svg"


def plot(paths: list[Path], out: Path = PLOT) -> Path:
    """Time against size (n*d*m) per result file: the full analysis, the exact spectrum and top_k,
    ours solid and the obvious implementation / dense SVD dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(paths), figsize=(5.5 * len(paths), 4.2), squeeze=False)
    styles = {"analysis": "C0", "exact": "C1", "topk": "C2", "gradient": "C3"}
    for ax, path in zip(axes[0], paths):
        data = json.loads(Path(path).read_text())
        rows = [r for r in data["rows"] if r.get("dtype") == "float64" and r["case"] in styles]
        for case, color in styles.items():
            pts = sorted(
                (r["n"] * r["d"] * r["m"], r["ours_s"], r.get("ref_s", r.get("floor_s"))) for r in rows if r["case"] == case
            )
            if not pts:
                continue
            size = [p[0] for p in pts]
            ax.loglog(size, [p[1] for p in pts], "o-", color=color, label=f"{case} (gradrank)")
            ref = [(p[0], p[2]) for p in pts if p[2] is not None]
            if ref and case != "topk":
                label = {"analysis": "obvious implementation", "exact": "dense SVD", "gradient": "two-product floor"}[case]
                ax.loglog(*zip(*ref), "x--", color=color, alpha=0.7, label=label)
        m = data["machine"]
        ax.set_title(f"{m.get('gpu') or m.get('cpu', '')[:40]}\n{m['device']}, {m['threads']} threads, float64", fontsize=9)
        ax.set_xlabel("n * d * m")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--plot-only", nargs="+", type=Path, default=None, help="only redraw the plot from these JSON files")
    args = ap.parse_args()
    if args.plot_only:
        print(f"wrote {plot(args.plot_only)}")
        return 0
    json_out = HERE / "results" / f"analysis-{args.device}{'-quick' if args.quick else ''}.json"
    cmd = [sys.executable, str(HERE / "bench_analysis.py"), "--device", args.device, "--json", str(json_out)]
    codes = [subprocess.call(cmd + (["--quick"] if args.quick else []))]
    for name in ("bench_train.py", "bench_sweep.py"):
        if (HERE / name).exists():
            print(f"\n== {name}", flush=True)
            codes.append(subprocess.call([sys.executable, str(HERE / name)]))
    print(f"wrote {plot([json_out])}")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
