"""The `gradrank layers` run directory, written whole or not at all: layers.json (schema 1, one
entry per layer under "layers"), layers.csv (one row per layer), spectra.npz (every singular value
of each layer's G and E), config.toml and provenance.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradrank import io
from gradrank.errors import InputError
from gradrank.results.files import read_json, write_dir
from gradrank.results.tables import csv_text
from gradrank.studies.layers import LayerResult, LayersResult

COLUMNS = (
    "name", "kind", "d_in", "d_out", "rows", "calls", "form", "route", "G", "G_fro", "S1", "S12", "S2", "E",
    "share_S1", "share_S12", "share_S2", "share_E", "stable_rank", "effective_rank", "outliers", "regime",
    "align_residue", "align_spike", "spike_source", "zeta", "spike_propagated", "identity_error",
)  # fmt: skip


def csv_row(r: LayerResult) -> dict:
    first = lambda v: v[0] if v else None  # noqa: E731
    return {
        "name": r.name,
        "kind": r.kind,
        "d_in": r.shape[0],
        "d_out": r.shape[1],
        "rows": r.rows,
        "calls": r.calls,
        "form": r.form,
        "route": r.spectrum_route,
        **{k: r.norms[k] for k in ("G", "G_fro", "S1", "S12", "S2", "E")},
        **{f"share_{k}": r.shares[k] for k in ("S1", "S12", "S2", "E")},
        "stable_rank": r.rank["stable"],
        "effective_rank": r.rank["effective"],
        "outliers": r.outliers,
        "regime": r.regime,
        "align_residue": first(r.alignment["residue"]),
        "align_spike": first(r.alignment["spike"]),
        "spike_source": r.spike["source"],
        "zeta": r.spike["zeta"],
        "spike_propagated": r.spike["propagated"],
        "identity_error": r.identity_error,
    }


def layers_csv(result: LayersResult) -> str:
    return csv_text(list(COLUMNS), [csv_row(r) for r in result.layers])


def spectra_arrays(result: LayersResult) -> dict[str, np.ndarray]:
    """G_i and E_i: every singular value of layer i's G and E (i in layers.json's order)."""
    out = {}
    for i, r in enumerate(result.layers):
        out[f"G_{i}"] = result.arrays[f"{r.name}/G"]
        out[f"E_{i}"] = result.arrays[f"{r.name}/E"]
    return out


def write(target: Path, result: LayersResult) -> Path:
    """The run directory, all or nothing (the report is rendered after)."""
    cfg = result.config
    prov = io.provenance(cfg.compute.device, result.dtype, cfg.seed, result.timings)
    return write_dir(
        target,
        "layers",
        cfg,
        {"layers.json": {**result.to_dict(), "provenance": prov}, "provenance.json": {"config_hash": cfg.hash(), **prov}},
        {"layers.csv": layers_csv(result)},
        lambda tmp: io.write_npz(tmp / "spectra.npz", spectra_arrays(result)),
    )


def read(root: Path) -> LayersResult:
    """A layers run directory back as a LayersResult (spectra.npz read without unpickling)."""
    root = Path(root)
    path = root / "layers.json"
    payload = read_json(path, "layers directory")
    try:
        result = LayersResult.from_dict(payload)
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: missing or malformed field {exc}") from None
    spectra = root / "spectra.npz"
    if spectra.is_file():
        keys = tuple(f"{t}_{i}" for i in range(len(result.layers)) for t in ("G", "E"))
        arrays = io.load_arrays(spectra, optional=keys)
        for i, r in enumerate(result.layers):
            for term in ("G", "E"):
                if f"{term}_{i}" in arrays:
                    result.arrays[f"{r.name}/{term}"] = arrays[f"{term}_{i}"]
    return result
