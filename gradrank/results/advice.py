"""The advisor's result (advice.json, "schema": 1) as typed records, and its run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from gradrank import io
from gradrank.config import Config
from gradrank.core.records import Record, check_kind, check_schema
from gradrank.results.files import read_record, write_dir

RESULT = "advice.json"


@dataclass
class EnergyRecord(Record):
    projector: str
    rank: int
    interval: int
    captured: float  # mean_t ||P_t0(G_t)||^2 / ||G_t||^2 (1 for a rank at or above the smaller dimension)
    full: bool = False  # rank >= the layer's smaller dimension: captures everything


@dataclass
class Recommendation(Record):
    projector: str
    rank: int
    interval: int
    captured: float
    full: bool = False
    meets_target: bool = True  # False: nothing in the grid reached the target; the best available


@dataclass
class Drift(Record):
    interval: int
    rank: int
    mean_angle: float  # degrees: largest principal angle between consecutive refreshes' subspaces, mean
    max_angle: float
    refreshes: int


@dataclass
class IntervalCost(Record):
    """At refresh interval T: the refreshes over the run and the full SVDs' share of its time."""

    interval: int
    refreshes: int
    svd_share: float | None


@dataclass
class Refresh(Record):
    """What a projector refresh costs for the layer: per refresh the top-k solver's time and
    iterations, GaLore's full SVD (None where not measured), one training step, per interval."""

    refreshes: int
    topk_seconds: float
    topk_iterations: float
    svd_seconds: float | None
    step_seconds: float
    per_interval: list[IntervalCost]


@dataclass
class LayerAdvice(Record):
    name: str
    shape: list[int]
    side: str  # 'right' or 'left': the side GaLore projects
    energy: list[EnergyRecord]
    recommended: Recommendation
    recommended_svd: Recommendation | None
    drift: list[Drift]
    refresh: Refresh

    def captured(self, projector: str, rank: int, interval: int) -> float:
        for e in self.energy:
            if (e.projector, e.rank, e.interval) == (projector, rank, interval):
                return e.captured
        raise KeyError((projector, rank, interval))


@dataclass
class ValidationRun(Record):
    name: str
    label: str
    ranks: dict[str, int]  # layer -> GaLore rank (empty for full-rank AdamW)
    intervals: dict[str, int]
    refreshes: int
    loss: list[float]
    final: float
    seconds: float


@dataclass
class Verdict(Record):
    """GaLore at the recommendation against full AdamW and GaLore's defaults (gaps relative to Adam's final loss)."""

    adam_final: float
    recommended_final: float
    default_final: float
    relative_gap: float
    default_relative_gap: float
    gap_of_decrease: float
    within_5_percent: bool
    fewer_refreshes: bool
    smaller_rank: bool


@dataclass
class Validation(Record):
    steps: int
    lr: float
    scale: float
    runs: list[ValidationRun]
    verdict: Verdict


@dataclass
class Timing(Record):
    train_seconds: float
    recording_seconds: float
    overhead: float  # recording time / the rest of training's


@dataclass
class Training(Record):
    """The training the energy was measured on, and its full-batch loss at `steps`."""

    optimizer: str
    lr: float
    steps: list[int]
    loss: list[float]


@dataclass(kw_only=True)
class Advice(Record):
    """advice.json: per layer the energy maps, the recommendation, drift and refresh cost; the
    training it was measured on; the validation against galore-torch."""

    schema: int
    kind: str = "advise"
    model: str
    steps: int
    target: float
    ranks: list[int]
    intervals: list[int]
    projectors: list[str]
    layers: list[LayerAdvice]
    timing: Timing
    training: Training
    validation: Validation | None
    skipped: list[str] = field(default_factory=list)  # linear layers the loss gives no gradient
    config: Config
    config_hash: str
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d, source: str = RESULT, _path: str = "") -> Advice:
        if isinstance(d, dict):
            check_schema(d, source)
        return check_kind(super().from_dict(d, source, _path), "advise", source)

    @classmethod
    def from_payload(cls, payload: dict, cfg: Config) -> Advice:
        """The advisor's payload (gradrank.studies.advise.advise) with the config it ran under."""
        prov = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, payload.get("timing"))
        return cls.from_dict({**payload, "config": cfg.to_dict(), "config_hash": cfg.hash(), "provenance": prov}, "advice")

    def layer(self, name: str) -> LayerAdvice:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{escape(lay.name)}</td><td>{lay.shape[0]}×{lay.shape[1]}</td><td>{escape(lay.recommended.projector)}</td>"
            f"<td>{lay.recommended.rank}</td><td>{lay.recommended.interval}</td><td>{lay.recommended.captured:.3f}</td></tr>"
            for lay in self.layers
        )
        return (
            f"<p>gradrank advice for {escape(self.model)} ({self.steps} steps, target {self.target})</p>"
            "<table><tr><th>layer</th><th>shape</th><th>projector</th><th>r</th><th>T</th><th>captured</th></tr>"
            f"{rows}</table>"
        )


def write(target: Path, advice: Advice) -> Path:
    """advice.json, config.toml and provenance.json in a run directory, all or nothing."""
    files = {RESULT: advice.to_dict(), "provenance.json": {"config_hash": advice.config_hash, **advice.provenance}}
    return write_dir(target, "advise", advice.config, files, {})


def read(run_dir: Path) -> Advice:
    return read_record(Path(run_dir) / RESULT, Advice, "advice directory")
