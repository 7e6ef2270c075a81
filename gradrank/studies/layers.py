"""The four-term decomposition of every linear layer's gradient (docs/deep.md).

Per layer, the captured factors G = H^T D / n (n rows, core/factors.py) go to the one engine
(core/engine.py), the same that analyses the paper's two-layer network: the input splits as
H = H_B + zeta z q^T (q the data spike where it is known exactly, else the principal direction of
the centred H by the one spike rule, core/spike.py), D as D = diag(r) J ("residue" form: scalar
outputs, samples that do not interact, checked to rounding; with C outputs D = sum_c diag(R_c) J_c)
or with r = 1 and J = D ("general" form), mu = the mean of J's rows.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradrank import config as config_mod
from gradrank.config import Config
from gradrank.config.resources import check_bytes
from gradrank.core import engine
from gradrank.core import records as R
from gradrank.core import spike as spike_rule
from gradrank.core.factors import Factors
from gradrank.core.measures import abs_cos
from gradrank.core.spectra import Spectrum, one_thread_each
from gradrank.core.spike import Spike
from gradrank.errors import InputError
from gradrank.models import capture as capture_mod
from gradrank.models.registry import DataSpike, Problem, linear_layers, resolve

SCHEMA = 1


@dataclass
class LayerSpike(R.Record):
    """Where a layer's input spike came from and how strong it is."""

    source: str  # "data" (the data's own q, z, zeta) or "principal" (the spike rule, core/spike.py)
    zeta: float
    propagated: float | None  # |cos(q, H_c^T z)| with the data latent z (None: no latent known)


@dataclass
class LayerResult(R.Record):
    """One layer's measures (layers.json, one entry of "layers")."""

    name: str  # the qualified name named_modules gives
    kind: str  # linear or conv1d
    shape: list[int]  # [d_in, d_out] of G = H^T D / n (nn.Linear's weight.grad transposed)
    samples: int  # N samples over all batches
    rows: int  # n: rows of H (samples x tokens x calls, padding dropped)
    calls: int  # calls per forward (weight tying: > 1)
    form: str  # "residue" (D = diag(r) J) or "general" (r = 1, J = D)
    factorization_error: float | None  # ||D - diag(r) J|| / ||D|| (None: no J captured, e.g. > MAX_OUTPUTS outputs)
    spike: LayerSpike
    spectrum_route: str  # factored (n < min(d_in, d_out)) or dense
    norms: R.Norms
    shares: R.Shares
    singular_values: list[float]  # top k, descending
    identity_error: float
    rank: R.Ranks  # stable, effective, energy90, energy99, outliers
    outliers: int
    bulk_edge: float
    regime: str
    outlier_labels: list[str]
    alignment: R.Alignment  # |cos| of the top singular vectors with the residue direction H_B^T r, the spike q, ...
    captured: R.Directions
    spectral_residual: float
    autograd_error: float = 0.0  # ||(H^T D / n - G_autograd) P|| / ||G_autograd P|| on random probes P (checked before analysis)

    def to_dict(self) -> dict:
        """Every key, None as null (layers.json's layout: norms.reg and norms.bulk are written as null)."""
        return dataclasses.asdict(self)


@dataclass
class LayersResult:
    config: Config
    model: str
    source_sha256: str
    dtype: str
    samples: int
    loss: float
    layers: list[LayerResult]
    skipped: dict[str, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # "<layer>/G", "<layer>/E": every singular value
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "kind": "layers",
            "model": self.model,
            "source_sha256": self.source_sha256,
            "dtype": self.dtype,
            "samples": self.samples,
            "loss": self.loss,
            "layers": [r.to_dict() for r in self.layers],
            "skipped": [{"name": k, "reason": v} for k, v in self.skipped.items()],
            "timings": self.timings,
            "config": self.config.to_dict(),
            "config_hash": self.config.hash(),
        }

    @classmethod
    def from_dict(cls, d: dict, arrays: dict | None = None) -> "LayersResult":
        if d.get("schema") != SCHEMA or d.get("kind") != "layers":
            raise InputError(f"not a layers.json of schema {SCHEMA} (schema {d.get('schema')!r}, kind {d.get('kind')!r})")
        return cls(
            config_mod.from_dict(d["config"]),
            d["model"],
            d["source_sha256"],
            d["dtype"],
            d["samples"],
            d["loss"],
            [LayerResult.from_dict(r, "layers.json", f"layers[{i}]") for i, r in enumerate(d["layers"])],
            {s["name"]: s["reason"] for s in d["skipped"]},
            dict(arrays or {}),
            d.get("timings", {}),
        )

    def layer(self, name: str) -> LayerResult:
        for r in self.layers:
            if r.name == name:
                return r
        raise InputError(f"no analysed layer named {name!r}")


def input_spike(f: capture_mod.LayerFactors, known: DataSpike | None) -> tuple[Spike, str]:
    """(the split H = H_B + zeta z q^T, its source): the data's own spike where this layer's rows are
    the data's samples, else the one spike rule (core/spike.py) on H."""
    if _data_spike(f, known):
        z = known.z[f.sample]
        return Spike(known.q, z, known.zeta, torch.addr(f.H, z, known.q, alpha=-known.zeta)), "data"
    return spike_rule.principal(f.H), "principal"


def _data_spike(f: capture_mod.LayerFactors, known: DataSpike | None) -> bool:
    return known is not None and known.layer == f.name and f.calls == 1 and f.sample is not None and f.rows == f.samples


def decompose_layer(
    f: capture_mod.LayerFactors, known: DataSpike | None = None, shared: dict | None = None
) -> tuple[Factors, Spike, str]:
    """(factors, input split, spike source) of one captured layer. shared: a cache of the input split
    for layers reading the same input rows (a transformer's query, key and value: the capture keeps
    one H for them)."""
    key = None if shared is None or _data_spike(f, known) else (f.H.data_ptr(), tuple(f.H.shape), f.H.stride(), f.H.dtype)
    if key is not None and key in shared:
        spike, source = shared[key]
    else:
        spike, source = input_spike(f, known)
        if key is not None:
            shared[key] = spike, source
    return f.factors(), spike, source


def analyze_layer(
    f: capture_mod.LayerFactors, cfg: Config, known: DataSpike | None = None, shared: dict | None = None
) -> tuple[LayerResult, dict]:
    """One layer's decomposition and measures (the engine), and its full spectra (G's and E's values)."""
    factors, spike, source = decompose_layer(f, known, shared)
    out = engine.run(factors, spike, cfg.analysis)
    m = out.measures
    propagated = None
    if known is not None and f.sample is not None:
        z = known.z[f.sample]
        propagated = abs_cos(spike.q[:, None], f.H.T @ z - f.H.mean(0) * z.sum())[0]  # H_c^T z
    res = LayerResult(
        name=f.name,
        kind=f.kind,
        shape=[f.H.shape[1], f.D.shape[1]],
        samples=f.samples,
        rows=f.rows,
        calls=f.calls,
        form=out.form,
        factorization_error=out.factorization_error,
        spike=LayerSpike(source, spike.zeta, propagated),
        spectrum_route=out.route,
        norms=m.norms,
        shares=m.shares,
        singular_values=m.singular_values,
        identity_error=m.identity_error,
        rank=m.rank,
        outliers=m.rank.outliers,
        bulk_edge=m.bulk_edge,
        regime=m.regime,
        outlier_labels=m.outlier_labels,
        alignment=m.alignment,
        captured=m.captured,
        spectral_residual=m.spectral_residual,
        autograd_error=f.autograd_error,
    )
    arrays = {f"{f.name}/G": _np(out.spec_G), f"{f.name}/E": _np(out.spec_E)}
    return res, arrays


def _np(spec: Spectrum) -> np.ndarray:
    return spec.values.detach().cpu().double().numpy()


def analyze_problem(problem: Problem, cfg: Config, guard=None, on_layer=None) -> LayersResult:
    """Capture every chosen layer's factors over the problem's batches, then decompose each.

    guard(bytes): called with the capture's estimated peak before it accumulates (the memory guard);
    on_layer(i, total, name): progress."""
    timings: dict[str, Any] = {}
    patterns = list(cfg.layers.patterns) or problem.layers
    layers = linear_layers(problem.model, patterns)
    clock = time.perf_counter()
    cap = capture_mod.capture(problem, layers, guard=guard)
    timings.update(cap.timings)
    timings["capture"] = time.perf_counter() - clock
    result = analyze_capture(cap, cfg, problem, on_layer)
    result.timings = {**timings, **result.timings}
    return result


def analyze_capture(cap, cfg: Config, problem: Problem, on_layer=None) -> LayersResult:
    """Decompose every captured layer (the problem gives the name, the file hash and the known spike),
    one after the other on one torch and BLAS thread (docs/performance.md, "Threads, per-layer
    analysis": on a loaded machine torch's thread team waits on taken cores); layers reading the same
    input rows share its split."""
    items = list(cap.layers.items())
    clock = time.perf_counter()
    results, arrays, shared = [], {}, {}
    with torch.no_grad(), one_thread_each(items[0][1].H.device):
        for i, (name, f) in enumerate(items):
            if on_layer is not None:
                on_layer(i, len(items), name)
            res, arr = analyze_layer(f, cfg, problem.spike, shared)
            results.append(res)
            arrays.update(arr)
    timings = {"analysis": time.perf_counter() - clock}
    dtype = str(items[0][1].H.dtype).removeprefix("torch.")
    cfg = cfg.replace(**{"layers.model": problem.name, "layers.model_sha256": problem.source_sha256})
    return LayersResult(
        cfg, problem.name, problem.source_sha256, dtype, cap.samples, cap.loss, results, cap.skipped, arrays, timings
    )


def run(cfg: Config, force: bool = False, on_layer=None) -> LayersResult:
    """The SPEC in cfg.layers.model resolved and analysed, the memory guard applied unless forced."""

    problem = resolve(cfg.layers.model, cfg)
    guard = None if force else (lambda need: check_bytes(cfg, need, f"--model {problem.name}: capturing every chosen layer"))
    return analyze_problem(problem, cfg, guard, on_layer)
