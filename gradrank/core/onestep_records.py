"""The one-step protocol's records (docs/onestep.md): onestep.json (`OnestepResult`, one `OnestepPoint`
per (eta, seed), an `EtaSummary` per eta, a `Correlation` per alignment) and the per-eta summary of
metrics.json (`OnestepSummary`) that a sweep's table reads."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gradrank.config import Config
from gradrank.core.fits import Correlation
from gradrank.core.records import SCHEMA, Record, check_kind, check_schema
from gradrank.errors import InputError


@dataclasses.dataclass
class OnestepPoint(Record):
    """One (eta, seed): the readout's errors, the ridge used and the update's alignments."""

    eta: float
    seed: int
    test_error: float
    train_error: float
    ridge: float
    align_target: float
    align_spike: float
    align_residue: float
    align_target_2: float
    align_spike_2: float
    align_residue_2: float
    update_s1: float  # top two singular values of W1 - W0
    update_s2: float
    update_fro: float
    diverged: bool = False


@dataclasses.dataclass
class EtaMeans(Record):
    """Mean and sd over seeds at one eta; improvement = 1 - test error / random features' (eta = 0)."""

    seeds: int
    test_error: float
    test_error_sd: float
    improvement: float
    align_target: float
    align_target_sd: float
    align_spike: float
    align_spike_sd: float
    align_residue: float
    align_residue_sd: float


@dataclasses.dataclass
class EtaSummary(Record):
    """EtaMeans at the step size eta (onestep.json's by_eta)."""

    eta: float
    seeds: int
    test_error: float
    test_error_sd: float
    improvement: float
    align_target: float
    align_target_sd: float
    align_spike: float
    align_spike_sd: float
    align_residue: float
    align_residue_sd: float

    def means(self) -> EtaMeans:
        return EtaMeans(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EtaMeans)})


@dataclasses.dataclass(kw_only=True)
class OnestepSummary(Record):
    """metrics.json of a one-step directory: per eta (key f"{eta:g}") the means over seeds, what a sweep's table reads."""

    kind: str = "onestep"
    schema: int = SCHEMA
    steps: int
    rf_test_error: float | None
    best_eta: float
    best_test_error: float
    best_improvement: float | None
    eta: dict[str, EtaMeans]
    config_hash: str

    @classmethod
    def from_dict(cls, d, source: str = "metrics.json", _path: str = ""):
        return check_kind(super().from_dict(d, source, _path), "onestep", source)


@dataclasses.dataclass
class OnestepResult(Record):
    """onestep.json: every (eta, seed) point, the means per eta, the correlation of test error with
    each alignment (alignment column -> Correlation), with the resolved config, its hash and provenance."""

    config: Config
    etas: list[float]
    seeds: list[int]
    steps: int
    lr_multiplier: float
    points: list[OnestepPoint]
    by_eta: list[EtaSummary]
    correlations: dict[str, Correlation]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind = "onestep"

    def to_dict(self) -> dict:
        d = super().to_dict()
        config, provenance = d.pop("config"), d.pop("provenance")
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            **d,
            "config": config,
            "config_hash": self.config.hash(),
            "provenance": provenance,
        }

    @classmethod
    def from_dict(cls, d, source: str = "onestep.json", _path: str = ""):
        if isinstance(d, dict):
            check_schema(d, source)
            if d.get("kind") != cls.kind:
                raise InputError(f"{source}: field 'kind' must be {cls.kind!r}, got {d.get('kind')!r}")
        return super().from_dict(d, source, _path)

    def metrics(self) -> OnestepSummary:
        """The flat summary a sweep's table reads (metrics.json): per eta, the means over seeds."""
        rf = next((s for s in self.by_eta if s.eta == 0.0), None)
        best = min(self.by_eta, key=lambda s: s.test_error if math.isfinite(s.test_error) else math.inf)
        return OnestepSummary(
            steps=self.steps,
            rf_test_error=None if rf is None else rf.test_error,
            best_eta=best.eta,
            best_test_error=best.test_error,
            best_improvement=best.improvement,
            eta={f"{s.eta:g}": s.means() for s in self.by_eta},
            config_hash=self.config.hash(),
        )
