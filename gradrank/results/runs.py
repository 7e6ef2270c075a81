"""Run directories, each written whole or not at all: analyze/decompose runs, training runs, scaling studies."""

from __future__ import annotations

from pathlib import Path

from gradrank import io
from gradrank.config import to_toml


def write_run(target: Path, result, extra_files=None) -> Path:
    """config.toml, metrics.json, arrays.npz and provenance.json, all or nothing (the report is rendered after).

    `extra_files(tmp_dir)` writes a command's own files (e.g. train's trajectory.csv) into the
    staged directory."""
    cfg = result.config
    prov = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, result.timings)
    metrics = {**result.metrics, "config": cfg.to_dict(), "provenance": prov}
    with io.staged_dir(Path(target), metrics.get("kind", "analyze")) as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        io.write_json(tmp / "metrics.json", metrics)
        io.write_json(tmp / "provenance.json", {"config_hash": cfg.hash(), **prov})
        io.write_npz(tmp / "arrays.npz", result.arrays)
        if extra_files is not None:
            extra_files(tmp)
    return Path(target)


def write_train(target, tr) -> Path:
    """The run directory: write_run's files (final analysis, metrics.json with "kind": "train")
    plus trajectory.csv, checkpoints.npz and weights.npz (W, a, W0-free: reload with --weights)."""
    from gradrank.pipeline.training import trajectory_csv

    res = tr.result
    res.metrics = {
        "kind": "train",
        **res.metrics,
        "diverged": tr.diverged,
        "message": tr.message,
        "train": tr.info,
        "final": {k: tr.rows[-1][k] for k in ("train_loss", "test_loss", "objective")} if tr.rows else {},
    }
    k = min(res.config.analysis.top_k, res.metrics["sizes"]["d"], res.metrics["sizes"]["m"])

    def extra(tmp: Path) -> None:
        io.write_text(tmp / "trajectory.csv", trajectory_csv(tr.rows, k))
        io.write_npz(tmp / "checkpoints.npz", tr.checkpoints)
        io.write_npz(tmp / "weights.npz", {"W": tr.W.detach().cpu().double().numpy(), "a": tr.a.detach().cpu().double().numpy()})

    return write_run(Path(target), res, extra_files=extra)


def write_scaling(target: Path, result) -> Path:
    """scaling.json, scaling.csv and config.toml in a run directory, all or nothing."""
    import csv
    import io as _io
    from dataclasses import asdict

    cfg = result.config
    payload = {
        "kind": "scaling",
        "ns": result.ns,
        "seeds": result.seeds,
        "rows": result.rows,
        "fits": {q: (None if f is None else asdict(f)) for q, f in result.fits.items()},
        "prediction": result.prediction.to_dict(),
        "comparison": result.comparison,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "provenance": io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, {}),
    }
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(result.rows[0]))
    writer.writeheader()
    writer.writerows(result.rows)
    with io.staged_dir(Path(target), "scaling") as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        io.write_json(tmp / "scaling.json", payload)
        io.write_text(tmp / "scaling.csv", buf.getvalue())
    return Path(target)
