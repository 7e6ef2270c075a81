"""Regularisation path: the decomposition over a range of strengths for each regulariser, over
seeds, answering "which component does each regulariser suppress or boost?".

Each point is the exact decomposition (analysis.analyze_state) either at initialisation
(steps = 0: weight decay and the Jacobian penalty then only add their own term "reg", input
noise changes the data) or after `steps` steps of training with the regulariser on (they then
act through the weights as well). Reported per point: ||S1||, ||S12||, ||S2||, ||E||, ||reg||,
the ratio ||S1||/||S2||, and how strongly the whole G (penalty included) points along the residue
direction X_B^T r and along q (||u^T G|| for the unit vectors u). The direction of each
regulariser is the mean over seeds of log(ratio at the largest strength / ratio at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gradrank.config import Config
from gradrank.core.floors import NORM_FLOOR
from gradrank.errors import InputError
from gradrank.studies import analyze as analysis
from gradrank.studies import train

KEYS = {"weight_decay": "regularizer.weight_decay", "jacobian": "regularizer.jacobian", "input_noise": "regularizer.input_noise"}
GRIDS = {"weight_decay": [0.0, 0.01, 0.1, 1.0], "jacobian": [0.0, 0.1, 1.0, 10.0], "input_noise": [0.0, 0.03, 0.1, 0.3]}
COLUMNS = [
    "regularizer",
    "strength",
    "seed",
    "S1",
    "S12",
    "S2",
    "E",
    "reg",
    "G",
    "S1_over_S2",
    "G_residue",
    "G_spike",
    "G_residue_over_spike",
    "outliers",
    "regime",
    "loss",
]


@dataclass
class PathResult:
    rows: list[dict]
    summary: dict
    grids: dict[str, list[float]]
    seeds: list[int]
    steps: int
    timings: dict = field(default_factory=dict)
    config: Config | None = None  # the base config the path was run from


def parse_grid(items: list[str]) -> dict[str, list[float]]:
    """`--grid weight_decay=0,0.1,1` items -> {name: strengths}; unnamed regularisers keep the default."""
    grids = {}
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip()
        if name not in KEYS:
            raise InputError(f"--grid: unknown regulariser '{name}' (choose from {', '.join(KEYS)})")
        try:
            vals = sorted({float(v) for v in values.split(",") if v.strip()})
        except ValueError:
            raise InputError(f"--grid {name}: strengths must be numbers, got {values!r}") from None
        if not vals or vals[0] < 0 or not all(math.isfinite(v) for v in vals):
            raise InputError(f"--grid {name}: give finite strengths >= 0, got {values!r}")
        grids[name] = vals if vals[0] == 0.0 else [0.0, *vals]  # 0 is the reference of every path
    return grids


def point(cfg: Config, steps: int):
    """The decomposition metrics for one config: at initialisation or after `steps` training steps."""

    if steps == 0:
        return analysis.analyze(cfg).metrics

    tc = {"train.steps": steps, "train.record_every": steps, "train.checkpoint_every": steps}
    tr = train.train(cfg.replace(**tc))
    if tr.diverged:
        raise InputError(f"regpath: {tr.message} (regularizer point {cfg.regularizer})")
    return tr.result.metrics


def run(
    cfg: Config,
    grids: dict[str, list[float]] | None = None,
    seeds: list[int] = (0,),
    steps: int = 0,
    on_point: Callable[[dict], None] | None = None,
) -> PathResult:
    grids = {**GRIDS, **(grids or {})}
    base = cfg.replace(**{k: 0.0 for k in KEYS.values()})
    rows = []
    for name, strengths in grids.items():
        for seed in seeds:
            for lam in strengths:
                m = point(base.replace(**{KEYS[name]: lam, "seed": seed}), steps)
                nr, dr = m.norms, m.directions
                row = {
                    "regularizer": name,
                    "strength": lam,
                    "seed": seed,
                    "S1": nr.S1,
                    "S12": nr.S12,
                    "S2": nr.S2,
                    "E": nr.E,
                    "reg": nr.reg or 0.0,
                    "G": nr.G,
                    "S1_over_S2": nr.S1 / max(nr.S2, NORM_FLOOR),
                    "G_residue": dr.residue,
                    "G_spike": dr.spike,
                    "G_residue_over_spike": dr.residue / max(dr.spike, NORM_FLOOR),
                    "outliers": m.rank.outliers,
                    "regime": m.regime,
                    "loss": m.loss,
                }
                rows.append(row)
                if on_point is not None:
                    on_point(row)
    return PathResult(rows, summarize(rows), grids, list(seeds), steps, config=cfg)


def summarize(rows: list[dict]) -> dict:
    """Per regulariser: mean and spread over seeds of log(x at the largest strength / x at 0), for
    x = ||S1||, ||S2||, ||S1||/||S2|| and G's residue/spike components, plus the verdict."""
    out = {}
    for name in dict.fromkeys(r["regularizer"] for r in rows):
        mine = [r for r in rows if r["regularizer"] == name]
        top = max(r["strength"] for r in mine)
        logs = {}
        for key in ("S1", "S2", "S1_over_S2", "G_residue", "G_spike", "G_residue_over_spike"):
            per_seed = []
            for seed in dict.fromkeys(r["seed"] for r in mine):
                at = {r["strength"]: r[key] for r in mine if r["seed"] == seed}
                per_seed.append(math.log(max(at[top], NORM_FLOOR) / max(at[0.0], NORM_FLOOR)))
            logs[key] = {"mean": float(np.mean(per_seed)), "min": float(np.min(per_seed)), "max": float(np.max(per_seed))}
        ratio = logs["S1_over_S2"]
        stable = ratio["min"] > 0 or ratio["max"] < 0
        if max(abs(ratio["min"]), abs(ratio["max"])) < 1e-9:
            verdict, stable = "leaves ||S1||/||S2|| unchanged (at these weights it only adds its own term)", True
        else:
            verdict = (
                "raises ||S1||/||S2|| (favours the residue spike)"
                if ratio["mean"] > 0
                else "lowers ||S1||/||S2|| (favours the data spike)"
            )
        out[name] = {
            "strength": top,
            "log_change": logs,
            "seed_stable": stable,
            "verdict": verdict + ("" if stable else "; not consistent across seeds"),
        }
    return out
