"""The public Python API (docs/api.md): the same backend the command line calls.

Nothing here prints. Every function takes a config as a TOML path, a dict, a Config or None (the
paper's Figure 1 setting), dotted-key `overrides` and a `seed`, and returns a typed result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradrank.config import Config
from gradrank.errors import InputError


def resolve_config(config: Any = None, overrides: dict | None = None, seed: int | None = None) -> Config:
    """A resolved Config from a path, a dict (nested sections or dotted keys), a Config or None."""
    from gradrank import config as config_mod

    if isinstance(config, Config):
        raw: dict = config.to_dict()
    elif isinstance(config, dict):
        flat = {k: v for k, v in config.items() if "." in k}
        raw = {k: v for k, v in config.items() if "." not in k}
        overrides = {**flat, **(overrides or {})}
    elif config is None:
        raw = {}
    elif isinstance(config, (str, Path)):
        raw = config_mod.read_toml(config)
        raw.pop("sweep", None)
    else:
        raise InputError(f"config must be a path, a dict, a Config or None, got {type(config).__name__}")
    full = config_mod.apply_sets(raw, [])
    for key, value in (overrides or {}).items():
        config_mod.schema._assign(full, key, value)
    if seed is not None:
        full["seed"] = seed
    return config_mod.resolve(config_mod.from_dict(full))


def analyze(config: Any = None, overrides: dict | None = None, seed: int | None = None):
    """Data -> network -> gradient -> the four-term decomposition and its measures."""
    from gradrank.pipeline import analysis

    return analysis.analyze(resolve_config(config, overrides, seed))


def decompose(X, y=None, W=None, a=None, config: Any = None, overrides: dict | None = None):
    """The decomposition for the user's own arrays (numpy or torch): X (n x d), optional targets y
    (n), inner weights W (m x d) and outer weights a (m); the rest from the config. The spike q is
    X's top principal direction and mu the empirical mean (docs/model.md, real data)."""
    import numpy as np

    from gradrank.pipeline import analysis
    from gradrank.twolayer import data as data_mod
    from gradrank.twolayer import network

    cfg = resolve_config(config, {"analysis.mu": "empirical", **(overrides or {})})
    as_np = lambda v: None if v is None else np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)  # noqa: E731
    X, y, W, a = map(as_np, (X, y, W, a))
    if X is None or X.ndim != 2:
        raise InputError("X must be a 2-d array (n x d)")
    ds = data_mod.from_matrix(cfg, X, y)
    if (W is None) != (a is None):
        raise InputError("give both W and a, or neither")
    device, dtype = analysis.device_and_dtype(cfg)
    if W is None:
        net = network.init(cfg.replace(**{"data.d": ds.d}), ds)
    else:
        if W.ndim != 2 or W.shape[1] != ds.d or a.shape != (W.shape[0],):
            raise InputError(f"W must be (m, {ds.d}) and a (m,), got {W.shape} and {a.shape}")
        net = analysis.network_from_arrays(cfg, W, a)
    cfg = cfg.replace(**{"data.n": ds.n, "data.d": ds.d, "model.width": net.m})
    return analysis.analyze_prepared(cfg, ds.to(device, dtype), net.to(device, dtype))


def train(config: Any = None, overrides: dict | None = None, seed: int | None = None, on_record=None):
    """Training with the decomposition tracked over steps (docs/training.md)."""
    from gradrank.pipeline import training

    return training.train(training.resolve(resolve_config(config, overrides, seed)), on_record)


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
    from gradrank.anynet import spec
    from gradrank.pipeline import layers as layers_mod

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
    """`gradrank layers`: the SPEC in cfg.layers.model, with the memory guard unless forced."""
    from gradrank.pipeline import layers as layers_mod

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
    from gradrank.experiments import advisor
    from gradrank.results.advice import Advice

    cfg = resolve_config(
        config, {**(overrides or {}), **advise_overrides(model, ranks, intervals, target, projectors, validate)}, seed
    )
    cfg, problem = advisor.prepare(cfg)
    return Advice.from_payload(advisor.advise(cfg, progress, problem), cfg)


def advise_overrides(model=None, ranks=None, intervals=None, target=None, projectors=None, validate=None) -> dict:
    """The advise.* config keys for the options given; '1,2,4' strings (the CLI's) become lists."""
    from gradrank.measures.projectors import parse_list

    out = {
        "advise.model": model,
        "advise.ranks": None if ranks is None else parse_list(ranks, "--ranks"),
        "advise.intervals": None if intervals is None else parse_list(intervals, "--intervals"),
        "advise.target": target,
        "advise.projectors": None if projectors is None else parse_list(projectors, "--projector", str),
        "advise.validate": validate,
    }
    return {k: v for k, v in out.items() if v is not None}


def save(result, target: str | Path) -> Path:
    """Write a result's run directory (refusing any path gradrank does not own), then its report
    as the result's config asks (output.report, output.pdf)."""
    from gradrank.experiments.scaling import ScalingResult
    from gradrank.pipeline.layers import LayersResult
    from gradrank.pipeline.training import Trajectory
    from gradrank.results import runs
    from gradrank.results.advice import Advice, write_advice

    if isinstance(result, Advice):
        target, cfg = write_advice(Path(target), result), result.resolved_config
    elif isinstance(result, LayersResult):
        from gradrank.results.layers import write_layers

        target, cfg = write_layers(Path(target), result), result.config
    elif isinstance(result, Trajectory):
        target, cfg = runs.write_train(Path(target), result), result.result.config
    elif isinstance(result, ScalingResult):
        target, cfg = runs.write_scaling(Path(target), result), result.config
    else:
        target, cfg = runs.write_run(Path(target), result), result.config
    formats = (["html"] if cfg.output.report else []) + (["pdf"] if cfg.output.pdf else [])
    if formats:
        from gradrank.report import render

        render.render_dir(target, formats)
    return Path(target)
