"""The advisor's recommendation against GaLore's commonly used settings (docs/advisor.md, "Validation").

For each config: record the training once (`gradrank advise` without validation), then train full-rank
AdamW once and GaLore-AdamW at the recommended (r, T) and at the defaults (rank advise.galore_rank
capped at each layer's smaller dimension, gap advise.galore_interval) at every GaLore scale asked for,
all from the same initial model. Writes one JSON per config and prints the markdown tables of the doc.

    python scripts/advise_validation.py sample_configs/advise_long.toml sample_configs/advise_mlp_long.toml \
        --scales 0.25,1 --out docs/data/advise-validation
    python scripts/advise_validation.py --tables docs/data/advise-validation/*.json   # the tables again
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from gradrank import config
from gradrank.io import write_json
from gradrank.studies import advise as advisor


def run(path: str, scales: list[float], sets: list[str]) -> dict:
    cfg = config.load(path, sets=[*sets, "advise.validate=false"])
    cfg, problem = advisor.prepare(cfg)
    initial = None if problem is None else copy.deepcopy(problem.model)
    start = time.perf_counter()
    payload = advisor.advise(cfg, problem=problem)
    recorded = time.perf_counter() - start
    recommended = {lay["name"]: lay["recommended_svd"] for lay in payload["layers"]}
    validations, adam = {}, None
    for scale in scales:
        v = advisor.validation(cfg.replace(**{"advise.galore_scale": scale}), recommended, problem, initial, adam)
        adam = next(r for r in v["runs"] if r["name"] == "adam")
        validations[str(scale)] = v
    layers = [
        {"name": lay["name"], "shape": lay["shape"], "recommended": lay["recommended"], "recommended_svd": lay["recommended_svd"]}
        for lay in payload["layers"]
    ]
    return {
        "config": path,
        "sets": sets,
        "model": payload["model"],
        "steps": payload["steps"],
        "intervals": payload["intervals"],
        "ranks": payload["ranks"],
        "target": payload["target"],
        "adam_lr": cfg.advise.adam_lr,
        "record_seconds": recorded,
        "layers": layers,
        "validation": validations,
    }


def table(out: dict) -> str:
    """The doc's table: one row per run and scale."""
    lines = [
        "| run | GaLore scale | ranks | gaps T | refreshes | final loss | vs full Adam | steps to 1e-3·L₀ | to 1e-6·L₀ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    adam_done = False
    for scale, v in out["validation"].items():
        adam = v["verdict"]["adam_final"]
        for r in v["runs"]:
            if r["name"] == "adam":
                if adam_done:
                    continue
                adam_done = True
                lines.append(
                    f"| full-rank AdamW | – | – | – | – | {r['final']:.3g} | – | {_reach(r, 1e-3)} | {_reach(r, 1e-6)} |"
                )
                continue
            ranks, gaps = _short(list(r["ranks"].values())), _short(list(r["intervals"].values()))
            gap = (r["final"] - adam) / abs(adam) if adam else float("inf")
            lines.append(
                f"| {r['label']} | {scale} | {ranks} | {gaps} | {r['refreshes']} | {r['final']:.3g} | {_rel(gap)} "
                f"| {_reach(r, 1e-3)} | {_reach(r, 1e-6)} |"
            )
    return "\n".join(lines)


def _reach(run: dict, share: float) -> str:
    """The first step whose loss is at most `share` of the initial loss (– if never)."""
    loss = run["loss"]
    return str(next((t for t, x in enumerate(loss) if x <= share * loss[0]), "–"))


def _rel(gap: float) -> str:
    return f"{gap:+.1%}" if abs(gap) < 100 else f"{gap:+.1e}×"


def _short(values: list[int]) -> str:
    """Per-layer values in layer order, or as counts (32 ×27, 16 ×6) for more than 4 layers."""
    if len(values) <= 4:
        return ", ".join(str(x) for x in values)
    counts: dict[int, int] = {}
    for x in values:
        counts[x] = counts.get(x, 0) + 1
    return ", ".join(f"{x} ×{c}" for x, c in sorted(counts.items(), reverse=True))


def report(out: dict) -> None:
    print(f"## {out['config']} ({out['steps']} steps, recorded in {out['record_seconds']:.0f} s)")
    for lay in out["layers"]:
        rec = lay["recommended_svd"]
        flag = "" if rec["meets_target"] else " (below target)"
        print(f"  {lay['name']} {lay['shape']}: svd r={rec['rank']} T={rec['interval']} captures {rec['captured']:.3f}{flag}")
    print(table(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--scales", default="0.25,1")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    ap.add_argument("--out", default="")
    ap.add_argument("--tables", action="store_true", help="the configs are JSON files this script wrote: print their tables")
    args = ap.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    targets = {path: Path(args.out) / (Path(path).stem + ".json") for path in args.configs if args.out and not args.tables}
    for target in targets.values():  # before hours of training: replace only what this script wrote
        if target.exists() and not _ours(target):
            print(f"error: {target} exists and is not a result of this script; not overwritten", file=sys.stderr)
            raise SystemExit(2)
    for path in args.configs:
        if args.tables:
            with open(path) as fh:
                report(json.load(fh))
            continue
        out = run(path, scales, args.sets)
        if path in targets:
            targets[path].parent.mkdir(parents=True, exist_ok=True)
            write_json(targets[path], out)  # atomic
        report(out)


def _ours(target: Path) -> bool:
    """A JSON object with this script's keys (a previous run's result)."""
    try:
        obj = json.loads(target.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and {"config", "steps", "record_seconds", "layers", "validation"} <= obj.keys()


if __name__ == "__main__":
    main()
