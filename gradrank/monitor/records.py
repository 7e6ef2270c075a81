"""The monitor's records (docs/watch.md): watch.json, one typed record of the whole run, and
layers.csv, its rows (one per recorded step and layer) as a table. Both are rewritten whole at
every recorded step, each atomically, into a directory gradrank owns (io.add_files)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from gradrank import io
from gradrank.config import Config
from gradrank.core import records as R
from gradrank.core.records import SCHEMA
from gradrank.errors import InputError

WATCH_FILE = "watch.json"
CSV_FILE = "layers.csv"


@dataclass
class LayerStep(R.Record):
    """One layer at one recorded step: G = H^T D (d_in x d_out, nn.Linear's weight.grad transposed)."""

    step: int
    layer: str
    norm_G: float  # ||G||_2
    fro_G: float  # ||G||_F
    stable_rank: float  # ||G||_F^2 / ||G||_2^2
    outliers: int  # singular values above the bulk edge (core/measures.py)
    share_S1: float  # ||S1||_F^2 / ||G||_F^2, general form (docs/deep.md)
    share_S12: float
    share_S2: float
    share_E: float
    drift_deg: float | None  # largest principal angle to the previous recorded step's top-r left subspace (None: first)
    captured: float | None  # ||U_prev^T G||_F^2 / ||G||_F^2, U_prev that step's top-r left singular vectors
    loss: float | None  # as given to mon.step(loss=...)
    autograd_error: float  # ||(H^T D - G_autograd) P|| / ||G_autograd P|| on random probes P
    rows: int  # n: rows of H captured over the step's backwards
    singular_values: list[float]  # top k, descending


CSV_COLUMNS = [f.name for f in dataclasses.fields(LayerStep) if f.name != "singular_values"]
"""layers.csv's columns: every scalar field of LayerStep, in its order."""


@dataclass
class Skip(R.Record):
    step: int
    layer: str
    reason: str


@dataclass
class WatchRecord(R.Record):
    """watch.json: the settings, the recorded steps and every row."""

    kind: str  # "watch"
    every: int
    topk: int
    drift_rank: int  # r of the drift and captured share (at most 4)
    layers: list[str]  # the watched layers, as named_modules names them
    steps: list[int]  # the recorded steps so far
    finished: bool  # mon.close() was reached
    rows: list[LayerStep]
    skipped: list[Skip]

    @property
    def config(self) -> Config:
        """The run directory's settings for gradrank.save (no report renderer yet: output.report off)."""
        return Config().replace(**{"output.report": False})


def csv_text(rows: list[LayerStep]) -> str:
    """layers.csv: a header, then one line per row; floats as repr (exactly the JSON's), None empty."""

    def cell(v) -> str:
        return "" if v is None else repr(v) if isinstance(v, float) else str(v)

    lines = [",".join(CSV_COLUMNS)] + [",".join(cell(getattr(r, c)) for c in CSV_COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def files(record: WatchRecord) -> dict[str, bytes]:
    """The run directory's files, as bytes."""
    doc = {"schema": SCHEMA, **record.to_dict()}
    return {
        WATCH_FILE: (json.dumps(doc, indent=2, allow_nan=True) + "\n").encode(),
        CSV_FILE: csv_text(record.rows).encode(),
    }


def write(target: Path, record: WatchRecord) -> Path:
    """A whole run directory from a record (gradrank.save), all or nothing, where gradrank owns the target."""
    with io.staged_dir(Path(target), "watch") as tmp:
        for name, data in files(record).items():
            io.write_bytes(tmp / name, data)
    return Path(target)


def read(directory: Path) -> WatchRecord:
    """watch.json read back through its record (InputError naming the file and field)."""
    path = Path(directory) / WATCH_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{directory}: not a gradrank watch directory (no readable {WATCH_FILE})") from None
    R.check_schema(doc, str(path))
    return R.check_kind(WatchRecord.from_dict(doc, str(path)), "watch", str(path))
