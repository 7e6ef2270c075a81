"""The training part of a run's report (trajectory.csv): first and last values of the tracked
quantities, where the outlier count changes, and the trajectory figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradrank.report import figures
from gradrank.report.common import g, numeric_columns, read_csv


def add_training(ctx: dict, run_dir: Path, draw) -> None:
    """ctx["training"] and the trajectory figure, when the run directory holds trajectory.csv."""
    rows = read_csv(run_dir / "trajectory.csv")
    if rows:
        cols = numeric_columns(rows)
        ctx["training"] = training_facts(cols)
        draw("trajectory", "training trajectory", figures.trajectory, cols)


def training_facts(cols: dict[str, np.ndarray]) -> dict:
    """First/last values of the tracked quantities, and where the outlier count changes."""
    facts = dict.fromkeys(("steps", "records", "train_loss", "test_loss", "outliers", "stable_rank", "S1", "S2")) | {
        "changes": []
    }
    if "step" in cols and cols["step"].size:
        facts["steps"] = g(float(cols["step"][-1]))
        facts["records"] = int(cols["step"].size)
    for key in ("train_loss", "test_loss", "outliers", "stable_rank", "S1", "S2"):
        if key in cols and cols[key].size:
            facts[key] = (g(float(cols[key][0])), g(float(cols[key][-1])))
    facts["batch"] = bool("batch_G" in cols and np.isfinite(cols["batch_G"]).any())
    if "step" in cols and "outliers" in cols:
        o = cols["outliers"]
        facts["changes"] = [
            (g(float(cols["step"][i])), int(o[i - 1]), int(o[i]))
            for i in range(1, o.size)
            if np.isfinite(o[i]) and np.isfinite(o[i - 1]) and o[i] != o[i - 1]
        ][:8]
    return facts
