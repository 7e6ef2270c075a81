"""The measured tables of docs/deep.md: the deep MLP at the paper's size over 5 seeds, and
all-MiniLM-L6-v2's 36 linear layers.

    python scripts/deep_table.py mlp      # writes docs/data/deep_mlp.csv
    python scripts/deep_table.py minilm   # writes docs/data/minilm_layers.csv
    python scripts/deep_table.py table    # prints the markdown tables from both CSVs

Every row is one layer of one run of `gradrank.studies.layers.run`, the same code path as
`gradrank layers`."""

from __future__ import annotations

import csv
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"
SEEDS = range(5)
MLP_GRID = [(act, nu) for act in ("relu", "tanh") for nu in (0.1, 0.4, 0.7)]
GAIN = {"relu": math.sqrt(2.0), "tanh": 1.0}  # He for relu (second moment kept), the paper's unit rows for tanh
DEPTH = 6
FIELDS = [
    "setting", "seed", "layer", "index", "d_in", "d_out", "form", "outliers", "regime", "share_S1", "share_S12",
    "share_S2", "share_E", "stable_rank", "cos_u1_residue", "cos_u1_spike", "cos_u2_spike", "max_cos_spike",
    "spike_source", "zeta", "propagated", "identity_error", "seconds",
]  # fmt: skip


def row(setting: str, seed: int, i: int, r, seconds: float) -> dict:
    res, spk = r.alignment["residue"], r.alignment["spike"]
    return {
        "setting": setting,
        "seed": seed,
        "layer": r.name,
        "index": i,
        "d_in": r.shape[0],
        "d_out": r.shape[1],
        "form": r.form,
        "outliers": r.outliers,
        "regime": r.regime,
        **{f"share_{k}": r.shares[k] for k in ("S1", "S12", "S2", "E")},
        "stable_rank": r.rank["stable"],
        "cos_u1_residue": res[0],
        "cos_u1_spike": spk[0],
        "cos_u2_spike": spk[1] if len(spk) > 1 else "",
        "max_cos_spike": max(spk[:2]),
        "spike_source": r.spike["source"],
        "zeta": r.spike["zeta"],
        "propagated": "" if r.spike["propagated"] is None else r.spike["propagated"],
        "identity_error": r.identity_error,
        "seconds": seconds,
    }


def write(path: Path, rows: list[dict]) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def run_mlp() -> None:
    from gradrank import config
    from gradrank.studies import layers

    rows = []
    for act, nu in MLP_GRID:
        for seed in SEEDS:
            cfg = config.load(
                sets=[f"model.depth={DEPTH}", f"model.activation={act}", f"model.gain={GAIN[act]!r}", f"data.nu={nu}"], seed=seed
            )
            t = time.perf_counter()
            res = layers.run(cfg)
            dt = time.perf_counter() - t
            rows += [row(f"{act} nu={nu}", seed, i, r, dt) for i, r in enumerate(res.layers)]
            print(f"{act} nu={nu} seed={seed}: {dt:.1f} s", flush=True)
            write(DATA / "deep_mlp.csv", rows)


def run_minilm() -> None:
    from gradrank import config
    from gradrank.studies import layers

    rows = []
    for seed in range(3):
        cfg = config.load(sets=['layers.model="minilm"'], seed=seed)
        t = time.perf_counter()
        res = layers.run(cfg)
        dt = time.perf_counter() - t
        rows += [row("minilm", seed, i, r, dt) for i, r in enumerate(res.layers)]
        print(f"minilm seed={seed}: {dt:.1f} s, {res.layers[0].rows} token rows", flush=True)
        write(DATA / "minilm_layers.csv", rows)


def _stats(values: list[float]) -> str:
    vals = [float(v) for v in values if v != ""]
    if not vals:
        return "—"
    mean = sum(vals) / len(vals)
    sd = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1)) ** 0.5
    return f"{mean:.2f} ± {sd:.2f}" if len(vals) > 1 else f"{mean:.2f}"


def table(path: Path, key=("setting", "index")) -> str:
    rows = list(csv.DictReader(open(path)))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in key)].append(r)
    cols = [
        "outliers",
        "share_S1",
        "share_S12",
        "share_S2",
        "share_E",
        "stable_rank",
        "cos_u1_residue",
        "max_cos_spike",
        "propagated",
    ]
    out = ["| setting | layer | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for (setting, _), g in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]))):
        out.append(f"| {setting} | {g[0]['layer']} | " + " | ".join(_stats([r[c] for r in g]) for c in cols) + " |")
    worst = max(float(r["identity_error"]) for r in rows)
    return "\n".join(out) + f"\n\n({len(rows)} layer rows; largest identity_error {worst:.1e})"


def by_type(path: Path) -> str:
    """MiniLM: the six kinds of linear layer, over the 6 blocks and every seed."""
    rows = list(csv.DictReader(open(path)))
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["layer"].split(".", 3)[3]].append(r)
    cols = ["outliers", "share_S1", "share_S2", "share_E", "stable_rank", "cos_u1_residue", "max_cos_spike"]
    out = ["| layer kind (6 blocks × seeds) | layers with outliers | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for kind, g in groups.items():
        lowrank = sum(1 for r in g if int(r["outliers"]) > 0)
        out.append(f"| {kind} | {lowrank}/{len(g)} | " + " | ".join(_stats([r[c] for r in g]) for c in cols) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "table"
    if what == "mlp":
        run_mlp()
    elif what == "minilm":
        run_minilm()
    else:
        for name in ("deep_mlp.csv", "minilm_layers.csv"):
            if (DATA / name).is_file():
                print(table(DATA / name), "\n")
        if (DATA / "minilm_layers.csv").is_file():
            print(by_type(DATA / "minilm_layers.csv"))
