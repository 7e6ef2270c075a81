"""Measure every claim of the paper (docs/reproduction.md) at the paper's sizes over several seeds.

Prints markdown tables (mean ± sd over seeds) for docs/reproduction.md and writes the raw
per-run numbers as JSON. Every run goes through gradrank.studies.analyze.analyze, the same pipeline
as `gradrank analyze` with the sample configs.

    python scripts/reproduce.py --seeds 5 --json runs/reproduce.json > runs/reproduce.md
    python scripts/reproduce.py --only fig2 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from gradrank import config
from gradrank.studies import analyze as analysis

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "sample_configs"

# claim -> (sample config, [(label, --set overrides)])
CLAIMS = {
    "fig1_iso": (
        "fig1_isotropic.toml",
        [
            (f"{act} {loss} nu={nu}", [f"data.nu={nu}", f"model.activation={act}", f"loss.kind={loss}"])
            for act, loss in (("relu", "mse"), ("tanh", "mse"), ("relu", "logistic"))
            for nu in (0.1, 0.2, 0.3, 0.4, 0.6)
        ],
    ),
    "fig1_planted": (
        "fig1_planted.toml",
        [
            (f"{vec} nu={nu}", [f"data.nu={nu}", f"model.planted_vector={vec}"])
            for vec in ("ones", "signs")
            for nu in (0.1, 0.2, 0.3, 0.4, 0.6)
        ],
    ),
    "planted_edge": (
        "fig1_planted.toml",
        [(f"{vec} nu={nu}", [f"data.nu={nu}", f"model.planted_vector={vec}"]) for vec in ("ones", "signs") for nu in (0.3, 0.4)],
    ),
    "fig2": (
        "fig2_activations.toml",
        [
            (act, [f"model.activation={act}"])
            for act in ("relu", "leaky_relu", "gelu", "softplus", "tanh", "erf", "sigmoid", "quadratic")
        ],
    ),
    "mf_ntk": (
        "mf_vs_ntk.toml",
        [
            (f"{act} {sc} nu={nu}", [f"model.scaling={sc}", f"data.nu={nu}", f"model.activation={act}"])
            for act in ("relu", "tanh")
            for nu in (0.1, 0.3, 0.6)
            for sc in ("ntk", "mf")
        ],
    ),
    "regularizers": (
        "regularizers.toml",
        [
            ("none", []),
            ("weight decay 0.02", ["regularizer.weight_decay=0.02"]),
            ("weight decay 0.05", ["regularizer.weight_decay=0.05"]),
            ("input noise 0.3 (single)", ["regularizer.input_noise=0.3"]),
            ("input noise 1.0 (single)", ["regularizer.input_noise=1.0"]),
            ("jacobian 0.1", ["regularizer.jacobian=0.1"]),
            ("jacobian 1", ["regularizer.jacobian=1.0"]),
        ],
    ),
    "real": (
        None,
        [
            ("digits", ["@real_digits.toml"]),
            ("mnist1d", ["@real_mnist1d.toml"]),
            ("patches", ["@real_patches.toml"]),
            ("digits, no embedding", ["@real_digits.toml", "data.embed_dim=0", "model.width=1250"]),
            ("mnist1d, no embedding", ["@real_mnist1d.toml", "data.embed_dim=0"]),
            ("patches, no embedding", ["@real_patches.toml", "data.embed_dim=0"]),
        ],
    ),
}

COLUMNS = {  # claim -> columns of its table ("x/y": the ratio, run by run)
    "fig1_iso": ("outliers", "s1", "s2", "s3", "S1", "S12", "S2", "E", "res_u1", "spk_u1", "spk_u2", "cap_spk"),
    "fig1_planted": ("outliers", "s1", "s2", "s3", "S1", "S12", "S2", "E", "res_u1", "spk_u1", "spk_u2", "cap_spk"),
    "planted_edge": (
        "outliers",
        "out_Ebulk",
        "s1",
        "s2",
        "s3",
        "E_s1",
        "E_s2",
        "res_u1",
        "spk_u1",
        "res_u2",
        "spk_u2",
        "rmu_v2",
        "rspk_v2",
    ),
    "fig2": ("outliers", "s1", "s2", "s3", "s1/s3", "S1", "S2", "E", "S1/E", "res_u1"),
    "mf_ntk": ("outliers", "s1", "S1", "S12", "S2", "E", "res_u1", "cap_spk"),
    "regularizers": ("reg", "outliers", "s1", "s2", "S1", "S2", "E", "res_u1", "spk_u1", "spk_u2", "cap_res", "cap_spk"),
    "real": (
        "nu_hat",
        "alpha_fit",
        "alpha_r2",
        "outliers",
        "s1",
        "s2",
        "s3",
        "S1",
        "S12",
        "S2",
        "E",
        "res_u1",
        "spk_u1",
        "res_u2",
        "spk_u2",
    ),
}


def measure(base: str | None, sets: list[str], seed: int) -> dict:
    path = None
    sets = list(sets)
    if sets and sets[0].startswith("@"):
        path = CONFIGS / sets.pop(0)[1:]
    elif base:
        path = CONFIGS / base
    cfg = config.load(path, [*sets, "analysis.top_k=4", "output.report=false"], seed)
    res = analysis.analyze(cfg)
    m, sE = res.metrics, res.arrays["E_singular_values"]
    s, al, nr = m["singular_values"], m["alignment"], m["norms"]
    return {
        "seed": seed,
        "regime": m["regime"],
        "outliers": m["rank"]["outliers"],
        "s1": s[0],
        "s2": s[1],
        "s3": s[2],
        "S1": nr["S1"],
        "S12": nr["S12"],
        "S2": nr["S2"],
        "E": nr["E"],
        "reg": nr.get("reg", 0.0),
        "res_u1": al["residue"][0],
        "spk_u1": al["spike"][0],
        "res_u2": al["residue"][1],
        "spk_u2": al["spike"][1],
        "cap_res": m["captured"]["residue"],
        "cap_spk": m["captured"]["spike"],
        "nu_hat": m["data"]["nu"],
        "alpha_fit": m["data"]["alpha_fit"],
        "alpha_r2": m["data"]["alpha_fit_r2"],
        "identity_error": m["identity_error"],
        "E_s1": float(sE[0]),
        "E_s2": float(sE[1]),
        "out_Ebulk": sum(v > (1 + cfg.analysis.edge_margin) * float(sE[1]) for v in s),
        "rspk_v2": al["right_spike"][1],
        "rmu_v2": al["right_mu"][1],
    }


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {sd:.2g}"


def value(run: dict, col: str) -> float:
    if "/" in col:
        num, den = col.split("/")
        return run[num] / run[den]
    return run[col]


def table(claim: str, rows: dict[str, list[dict]]) -> str:
    cols = COLUMNS[claim]
    out = ["| setting | regime (count) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for label, runs in rows.items():
        regimes = ", ".join(f"{r} ({c})" for r, c in Counter(x["regime"] for x in runs).most_common())
        out.append(f"| {label} | {regimes} | " + " | ".join(fmt([value(x, c) for x in runs]) for c in cols) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated claims: " + ", ".join(CLAIMS))
    ap.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    ap.add_argument("--from-json", type=Path, default=None, help="print the tables of a saved --json file, run nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        for claim, rows in json.loads(args.from_json.read_text()).items():
            print(f"\n### {claim}\n\n{table(claim, rows)}\n")
        return 0
    chosen = [c for c in args.only.split(",") if c] or list(CLAIMS)
    results = {}
    for claim in chosen:
        base, settings = CLAIMS[claim]
        rows = {}
        for label, sets in settings:
            t = time.perf_counter()
            rows[label] = [measure(base, sets, seed) for seed in range(args.seeds)]
            print(f"{claim}: {label} ({time.perf_counter() - t:.1f} s)", file=sys.stderr, flush=True)
        results[claim] = rows
        print(f"\n### {claim}\n\n{table(claim, rows)}\n", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
