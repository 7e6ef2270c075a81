"""The public Python API (docs/api.md): the same backend the command line calls.

Nothing here prints. Every function takes a config as a TOML path, a dict, a Config or None (the
paper's Figure 1 setting), dotted-key `overrides` and a `seed`, and returns a typed result.
"""

from __future__ import annotations

import copy
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradrank import config as config_mod
from gradrank.config import Config
from gradrank.config.resources import check_generated, check_memory
from gradrank.core.projectors import parse_list
from gradrank.data import spiked as data_mod
from gradrank.errors import InputError
from gradrank.models import registry as spec
from gradrank.models import twolayer as network
from gradrank.report import figures as F
from gradrank.report import render
from gradrank.report.common import rounding_floor
from gradrank.report.render import render_dir
from gradrank.report.run import headline
from gradrank.results import kinds
from gradrank.results.advice import Advice
from gradrank.studies import advise as advisor
from gradrank.studies import analyze as analysis
from gradrank.studies import layers as layers_mod
from gradrank.studies import onestep as onestep_mod
from gradrank.studies import train as training
from gradrank.studies.analyze import Analysis
from gradrank.sweeps import executors
from gradrank.sweeps import spec as sw
from gradrank.sweeps import store as sweeps
from gradrank.sweeps.spec import MAX_POINTS


class Result(Analysis):
    """An analysis (or a stored run read back by `load`): `config`, typed `metrics`
    (`metrics.norms.G`, `metrics.to_dict()` as metrics.json holds it), `arrays` (arrays.npz) and
    `terms`, the four terms as factors (S1, S12, S2 as scale * left right^T, E = coef L^T R; None
    for a loaded run). In a notebook it shows its summary and figures."""

    def figures(self) -> dict:
        """The run report's figures as matplotlib Figures: spectrum, norms, alignment (and data where
        the bulk eigenvalues are known)."""

        m, arrays = self.metrics, self.arrays
        out = {}
        with F.collect() as made:
            if "singular_values" in arrays:
                floor = rounding_floor({"compute": {"dtype": self.config.compute.dtype}})
                F.spectrum(arrays["singular_values"], arrays.get("E_singular_values"), m.norms.to_dict(), m.bulk_edge, floor)
                out["spectrum"] = made[-1]
            F.term_norms(m.norms.to_dict(), m.shares.to_dict())
            out["norms"] = made[-1]
            F.alignment(m.alignment.to_dict(), m.rank.outliers)
            out["alignment"] = made[-1]
        return out

    def save(self, target: str | Path) -> Path:
        """The run directory at target (see `gradrank.save`)."""
        return save(self, target)

    def _repr_html_(self) -> str:
        m = self.metrics
        rows = [
            ("n × d × m", f"{m.sizes.n} × {m.sizes.d} × {m.sizes.m}"),
            ("regime", m.regime),
            ("outliers", str(m.rank.outliers)),
            *((f"‖{k}‖", f"{getattr(m.norms, k):.4g}") for k in ("G", "S1", "S12", "S2", "E")),
            ("stable rank", f"{m.rank.stable:.4g}"),
            ("identity error", f"{m.identity_error:.2e}"),
        ]
        table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        warn = "".join(f"<p><b>warning:</b> {html.escape(w)}</p>" for w in [*m.trust.warnings, *m.trust.notes])
        svgs = []
        for i, (name, fig) in enumerate(self.figures().items()):
            svgs.append(F.svg(fig, f"nb{id(self)}-{i}", name))
        return (
            f"<div><p>{html.escape(headline(m.to_dict()))}</p>{warn}<table>{table}</table>"
            + "".join(f"<div>{s}</div>" for s in svgs)
            + "</div>"
        )


def _result(a: Analysis) -> Result:
    return Result(a.config, a.metrics, a.arrays, a.timings, a.terms)


def resolve_config(config: Any = None, overrides: dict | None = None, seed: int | None = None) -> Config:
    """A resolved Config from a path, a dict (nested sections or dotted keys), a Config or None."""

    full = resolve_raw(config, overrides)
    if seed is not None:
        full["seed"] = seed
    return config_mod.resolve(config_mod.from_dict(full))


def resolve_raw(config: Any, overrides: dict | None = None) -> dict:
    """The full nested config dict (every section present) of a path (its [sweep] table dropped), a
    dict (sections and dotted keys), a Config or None, with dotted-key overrides applied."""

    dotted: dict = {}
    if isinstance(config, Config):
        raw = config.to_dict()
    elif isinstance(config, dict):
        bad = [k for k in config if not isinstance(k, str)]
        if bad:
            raise InputError(f"config: a key must be a string, got {bad[0]!r}")
        raw = copy.deepcopy({k: v for k, v in config.items() if "." not in k})
        dotted = {k: v for k, v in config.items() if "." in k}
    elif config is None:
        raw = {}
    elif isinstance(config, (str, Path)):
        raw = config_mod.read_toml(config)
        raw.pop("sweep", None)
    else:
        raise InputError(f"config must be a path, a dict, a Config or None, got {type(config).__name__}")
    full = config_mod.apply_sets(raw, [])
    for key, value in {**dotted, **(overrides or {})}.items():
        config_mod.schema._assign(full, key, value)
    return full


def analyze(config: Any = None, overrides: dict | None = None, seed: int | None = None):
    """Data -> network -> gradient -> the four-term decomposition and its measures."""

    return _result(analysis.analyze(resolve_config(config, overrides, seed)))


def decompose(X, y=None, W=None, a=None, config: Any = None, overrides: dict | None = None):
    """The decomposition for the user's own arrays (numpy or torch): X (n x d), optional targets y
    (n), inner weights W (m x d) and outer weights a (m); the rest from the config. The spike q is
    X's top principal direction and mu the empirical mean (docs/model.md, real data)."""

    cfg = resolve_config(config, {"analysis.mu": "empirical", **(overrides or {})})
    X = _array("X", X, 2)
    n, d = X.shape
    if n < 2:
        raise InputError(f"X must have at least 2 rows (samples), got shape {X.shape}")
    y = None if y is None else _array("y", y, 1, (n,))
    if (W is None) != (a is None):
        raise InputError("give both W and a, or neither")
    if W is not None:
        W = _array("W", W, 2)
        if W.shape[1] != d:
            raise InputError(f"W must have shape (m, {d}) to match X, got {W.shape}")
        a = _array("a", a, 1, (W.shape[0],))
    m = cfg.model.width if W is None else W.shape[0]
    check_memory(cfg, n, d, m, train=False)
    ds = data_mod.from_matrix(cfg.data, cfg.seed, cfg.loss.kind, X, y)
    device, dtype = analysis.device_and_dtype(cfg.compute)
    if W is None:
        net = network.init(cfg.model, cfg.seed, ds)
    else:
        net = analysis.network_from_arrays(cfg.model, W, a)
    cfg = cfg.replace(**{"data.n": ds.n, "data.d": ds.d, "model.width": net.m})
    return _result(analysis.analyze_prepared(cfg, ds.to(device, dtype), net.to(device, dtype)))


def _array(name: str, value, ndim: int, shape: tuple | None = None):
    """A user's array (numpy, torch or nested lists) as float64, checked like a data file's: real
    numbers (no complex, object or string dtype), finite, `ndim` dimensions, `shape` when given."""

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: not an array ({exc.__class__.__name__})") from None
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise InputError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or Inf")
    return arr


def train(config: Any = None, overrides: dict | None = None, seed: int | None = None, on_record=None, optimizer=None):
    """Training with the decomposition tracked over steps (docs/training.md). optimizer, if given, is a
    function of W's parameter list returning the torch.optim.Optimizer that trains it (in place of
    train.optimizer's; train.optimizer = gd still means full batch, any other mini-batches)."""

    tr = training.train(training.resolve(resolve_config(config, overrides, seed)), on_record, optimizer=optimizer)
    tr.result = _result(tr.result)
    return tr


def load(run_dir: str | Path):
    """A result directory read back through its typed records (exit 2 / InputError on a foreign or
    malformed file, naming the file and field), by its kind (gradrank.results.kinds): an analysis or
    training run as a Result (a training run's metrics are its TrainSummary: the final analysis'
    fields, and `kind`, `train`, `final`), any other kind as its record (Advice, OnestepResult,
    ScalingStudy, RegPath, LayersResult)."""

    kind = kinds.of_dir(Path(run_dir))
    if kind.name != "analyze":
        return kind.read(Path(run_dir))
    run = kind.read(Path(run_dir))
    return Result(run.config, run.metrics, run.arrays, {}, None)


@dataclass
class SweepResult:
    """A sweep's directory, its points (hash -> swept values) and the hashes of the failed ones."""

    directory: Path
    points: dict[str, dict] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def table(self) -> list[dict]:
        """results.csv's rows as dicts (rebuilt from the store): the swept values, status and metrics."""

        return sweeps.table_rows(sweeps.Store(self.directory))[1]

    def load(self, point: str) -> Result:
        """One point's run (by config hash)."""
        return load(self.directory / "points" / point)


def sweep(
    config: Any = None,
    overrides: dict | None = None,
    seed: int | None = None,
    *,
    grid: dict | None = None,
    seeds: int | None = None,
    zip_axes: bool = False,
    out: str | Path,
    executor: str = "local",
    jobs: int | None = None,
) -> SweepResult:
    """A sweep (docs/sweeps.md) into the directory `out`: the config's [sweep] table (for a TOML
    path) with `grid` ({dotted key: list of values}) and `seeds` added, run on `executor`
    (local, dask, slurm) and resumable like `gradrank sweep`. The report is written when the
    config's output.report or output.pdf asks."""

    spec = sw.read_spec(config)[1] if isinstance(config, (str, Path)) else sw.SweepSpec()
    raw = resolve_raw(config, overrides)
    if seed is not None:
        raw["seed"] = seed
    base = config_mod.from_dict(raw)
    for key, values in (grid or {}).items():
        if not isinstance(key, str):
            raise InputError(f"grid: a key must be a dotted config key string, got {key!r}")
        if not isinstance(values, (str, list, tuple)):
            raise InputError(f"grid: '{key}' must be a list of values (or a '0,1,2' string), got {type(values).__name__}")
        spec.axes[key] = sw.parse_values(values, key) if isinstance(values, str) else list(values)
    if seeds is not None:
        spec.seeds = seeds
    if zip_axes:
        spec.mode = "zip"
    spec = sw.check_spec(spec)
    pts = sw.points(base, spec)
    target = Path(out)
    ex = executors.make(executor, target, jobs=jobs, slurm=spec.slurm, dask=spec.dask)
    store = sweeps.open_store(target, base, spec, pts, ex.info())
    failed = sw.run(store, pts, spec.command, ex, sweeps.run_point)
    formats = (["html"] if base.output.report else []) + (["pdf"] if base.output.pdf else [])
    if formats:
        render.render_dir(target, formats)
    return SweepResult(target, {p.hash: p.values for p in pts}, [p.hash for p in failed])


def onestep(
    config: Any = None,
    overrides: dict | None = None,
    seed: int | None = None,
    eta=None,
    steps: int | None = None,
    seeds: int = 1,
    ridge: float | None = None,
    on_point=None,
):
    """The one-step protocol (docs/onestep.md): for each eta (default onestep.eta) and seed (seed ..
    seed + seeds - 1), W1 = W0 - eta * scale * G, a ridge readout, the test error and alignments."""

    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_POINTS:
        raise InputError(f"seeds must be an integer from 1 to {MAX_POINTS}, got {seeds!r}")
    if eta is not None and not isinstance(eta, (list, tuple)):
        eta = [eta]
    for value in eta or ():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise InputError(f"eta must be a number >= 0 or a list of them, got {value!r}")
    for name, value in (("steps", steps), ("ridge", ridge)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InputError(f"{name} must be a number, got {value!r}")
    cfg = onestep_mod.configure(resolve_config(config, overrides, seed), eta, steps, ridge)
    return onestep_mod.study(cfg, [cfg.seed + i for i in range(seeds)], on_point)


def layers(
    model,
    inputs=None,
    targets=None,
    loss=None,
    layers: list[str] | None = None,
    batches=None,
    config: Any = None,
    overrides: dict | None = None,
    seed: int | None = None,
):
    """The four-term decomposition of every linear layer's gradient (docs/deep.md).

    model: an nn.Module called on `inputs` (a Tensor, a tuple of positional tensors or a dict of
    keyword tensors), with `loss(outputs, targets)` the mean loss; or `batches`, a list of
    (inputs, targets) whose factors accumulate; or a SPEC string (mlp, minilm, path/file.py:function)
    resolved with the config. layers: fnmatch patterns over module names (default: every linear layer)."""

    cfg = resolve_config(config, overrides, seed)
    if isinstance(model, str):
        if any(v is not None for v in (inputs, targets, loss, batches)):
            raise InputError("a SPEC string takes no inputs, targets, loss or batches (its function returns them)")
        cfg = resolve_config(cfg, {"layers.model": model, **({"layers.patterns": list(layers)} if layers else {})})
        return layers_mod.run(cfg, force=True)
    given = {
        "model": model,
        "loss": loss,
        **({"batches": batches} if batches is not None else {"inputs": inputs, "targets": targets}),
    }
    if layers is not None:
        given["layers"] = layers
    problem = spec.from_dict(given, "api")
    return layers_mod.analyze_problem(problem, cfg)


def layers_from_config(cfg: Config, force: bool = False, on_layer=None):
    """`gradrank layers`: the SPEC in cfg.layers.model, with the memory guard unless forced (a built-in
    spiked model's data checked before it is generated, every model's capture before it accumulates)."""

    if not force and cfg.layers.model in ("twolayer", "mlp"):
        check_generated(cfg)
    return layers_mod.run(cfg, force=force, on_layer=on_layer)


def advise(
    config: Any = None,
    overrides: dict | None = None,
    seed: int | None = None,
    model: str | None = None,
    ranks=None,
    intervals=None,
    target: float | None = None,
    projectors=None,
    validate: bool | None = None,
    progress=None,
):
    """Captured gradient energy of rank-r projectors refreshed every T steps, per layer, a
    recommended (r, T), validated against GaLore (docs/advisor.md). Returns an Advice."""

    cfg = resolve_config(
        config, {**(overrides or {}), **advise_overrides(model, ranks, intervals, target, projectors, validate)}, seed
    )
    cfg, problem = advisor.prepare(cfg)
    return Advice.from_payload(advisor.advise(cfg, progress, problem), cfg)


def advise_overrides(model=None, ranks=None, intervals=None, target=None, projectors=None, validate=None) -> dict:
    """The advise.* config keys for the options given; '1,2,4' strings (the CLI's) become lists."""

    out = {
        "advise.model": model,
        "advise.model_sha256": None if model is None else "",  # a new SPEC's file is hashed afresh
        "advise.ranks": None if ranks is None else parse_list(ranks, "--ranks"),
        "advise.intervals": None if intervals is None else parse_list(intervals, "--intervals"),
        "advise.target": target,
        "advise.projectors": None if projectors is None else parse_list(projectors, "--projector", str),
        "advise.validate": validate,
    }
    return {k: v for k, v in out.items() if v is not None}


def save(result, target: str | Path) -> Path:
    """Write a result's run directory (refusing any path gradrank does not own), then its report
    as the result's config asks (output.report, output.pdf). The writer is the result kind's
    (gradrank.results.kinds)."""

    kind = kinds.of_result(result)
    if getattr(getattr(result, "metrics", None), "kind", None) == "train":
        raise InputError("a loaded training run has no trajectory to save; copy its directory instead")
    target, cfg = kind.write(Path(target), result), kind.config(result)
    formats = (["html"] if cfg.output.report else []) + (["pdf"] if cfg.output.pdf else [])
    if formats:
        render_dir(target, formats)
    return Path(target)
