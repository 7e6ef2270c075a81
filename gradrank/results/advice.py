"""The advisor's result (advice.json, "schema": 1): typed records with to_dict/from_dict, and its run directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradrank import io
from gradrank.config import Config, from_dict
from gradrank.errors import InputError
from gradrank.results.runs import write_dir

SCHEMA = 1


def _build(cls, d: Any, where: str):
    """A dataclass from its dict, nested records included; a missing or foreign field is bad input."""
    if not isinstance(d, dict):
        raise InputError(f"advice.json: {where} must be an object")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise InputError(f"advice.json: {where} has no field '{f.name}'")
        value = d[f.name]
        sub = _NESTED.get((cls.__name__, f.name))
        if sub is not None and value is not None:
            value = (
                [_build(sub, v, f"{where}.{f.name}") for v in value]
                if isinstance(value, list)
                else _build(sub, value, f"{where}.{f.name}")
            )
        kwargs[f.name] = value
    return cls(**kwargs)


class _Record:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return _build(cls, d, cls.__name__)


@dataclass
class EnergyRecord(_Record):
    projector: str
    rank: int
    interval: int
    captured: float  # mean_t ||P_t0(G_t)||^2 / ||G_t||^2 (1 for a rank at or above the smaller dimension)
    full: bool = False  # rank >= the layer's smaller dimension: captures everything


@dataclass
class Recommendation(_Record):
    projector: str
    rank: int
    interval: int
    captured: float
    full: bool = False
    meets_target: bool = True  # False: nothing in the grid reached the target; the best available


@dataclass
class Drift(_Record):
    interval: int
    rank: int
    mean_angle: float  # degrees: largest principal angle between consecutive refreshes' subspaces, mean
    max_angle: float
    refreshes: int


@dataclass
class LayerAdvice(_Record):
    name: str
    shape: list[int]
    side: str  # 'right' or 'left': the side GaLore projects
    energy: list[EnergyRecord]
    recommended: Recommendation
    recommended_svd: Recommendation | None
    drift: list[Drift]
    refresh: dict  # refreshes, topk_seconds, topk_iterations, svd_seconds, step_seconds, per_interval

    def captured(self, projector: str, rank: int, interval: int) -> float:
        for e in self.energy:
            if (e.projector, e.rank, e.interval) == (projector, rank, interval):
                return e.captured
        raise KeyError((projector, rank, interval))


@dataclass
class ValidationRun(_Record):
    name: str
    label: str
    ranks: dict
    intervals: dict
    refreshes: int
    loss: list[float]
    final: float
    seconds: float


@dataclass
class Validation(_Record):
    steps: int
    lr: float
    scale: float
    runs: list[ValidationRun]
    verdict: dict


_NESTED = {
    ("LayerAdvice", "energy"): EnergyRecord,
    ("LayerAdvice", "recommended"): Recommendation,
    ("LayerAdvice", "recommended_svd"): Recommendation,
    ("LayerAdvice", "drift"): Drift,
    ("Validation", "runs"): ValidationRun,
    ("Advice", "layers"): LayerAdvice,
    ("Advice", "validation"): Validation,
}


@dataclass
class Advice(_Record):
    """advice.json: per layer the energy maps, the recommendation, drift and refresh cost; the
    training it was measured on; the validation against galore-torch."""

    schema: int
    kind: str
    model: str
    steps: int
    target: float
    ranks: list[int]
    intervals: list[int]
    projectors: list[str]
    layers: list[LayerAdvice]
    timing: dict
    training: dict
    validation: Validation | None
    skipped: list[str] = field(default_factory=list)  # linear layers the loss gives no gradient
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Advice":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise InputError(f"advice.json: not a schema-{SCHEMA} advice file")
        return _build(cls, d, "advice")

    @classmethod
    def from_payload(cls, payload: dict, cfg: Config) -> "Advice":
        prov = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, payload.get("timing"))
        return cls.from_dict({**payload, "config": cfg.to_dict(), "config_hash": cfg.hash(), "provenance": prov})

    @property
    def resolved_config(self) -> Config:
        return from_dict(self.config)

    def layer(self, name: str) -> LayerAdvice:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def _repr_html_(self) -> str:
        from html import escape

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


def write_advice(target: Path, advice: Advice) -> Path:
    """advice.json, config.toml and provenance.json in a run directory, all or nothing."""
    cfg = advice.resolved_config
    files = {"advice.json": advice.to_dict(), "provenance.json": {"config_hash": advice.config_hash, **advice.provenance}}
    return write_dir(target, "advise", cfg, files, {})


def read_advice(run_dir: Path) -> Advice:
    import json

    path = Path(run_dir) / "advice.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{path.parent}: not a gradrank advice directory (no readable advice.json)") from None
    return Advice.from_dict(obj)
