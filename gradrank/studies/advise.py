"""The projector advisor (docs/advisor.md): train, record per weight what the energy maps need,
recommend (r, T) per layer, and validate against the GaLore authors' optimiser (galore-torch).

Every training runs in gradrank.studies.loop. The recording rides on the training the user asked
for: the two-layer model through `gradrank.studies.train.train` (its closed-form gradient and its
decomposition, which the theory projector needs; its `on_step` sees each update's gradient), any
other SPEC of gradrank.models.registry by full-batch training of every parameter with
train.optimizer (gd, adam or adamw). The validation trains copies of the initial model (the
SPEC's, `twolayer`'s for the two-layer model) with full-rank AdamW, GaLore-AdamW at the recommended
(r, T) of every layer and GaLore-AdamW at its commonly used (rank, update_proj_gap), all
full-batch at advise.adam_lr.

The result is a plain payload (the dict behind advice.json); gradrank.results.advice types it.
"""

from __future__ import annotations

import contextlib
import copy
import io as _io
import math
import time
import warnings
from typing import Any, Callable

import torch

from gradrank.config import Config
from gradrank.config.resources import check_bytes, check_generated
from gradrank.core.projectors import (
    PROJECTORS,
    EnergyRecorder,
    LayerEnergy,
    SideGradient,
    check_grid,
    galore_side,
    parse_list,
    recommend,
)
from gradrank.errors import InputError
from gradrank.models import registry
from gradrank.models import twolayer as twolayer_mod
from gradrank.models.capture import batch_size, check_model
from gradrank.models.mu import compute_mu, decompose
from gradrank.studies import analyze as analysis
from gradrank.studies import loop
from gradrank.studies import train as training

SCHEMA = 1
TWOLAYER = "twolayer"


def resolve(cfg: Config) -> Config:
    """The two-layer model's training defaults (a test set) and a user model file's content hash."""
    spec = cfg.advise.model
    if spec == TWOLAYER:
        return training.resolve(cfg)
    if registry.is_file(spec):
        digest = registry.file_digest(spec, cfg.advise.model_sha256, "advise.model_sha256")
        cfg = cfg.replace(**{"advise.model_sha256": digest})
    return cfg


def grid(cfg: Config, shortest: list[int], twolayer: bool) -> tuple[list[int], list[int], list[str]]:
    """(ranks, intervals, projectors) of the config, checked against the layers' smaller dimensions."""
    ac = cfg.advise
    ranks = parse_list(ac.ranks, "advise.ranks")
    intervals = parse_list(ac.intervals, "advise.intervals")
    if not ac.projectors:
        projectors = [p for p in PROJECTORS if twolayer or p != "theory"]
    else:
        projectors = parse_list(ac.projectors, "advise.projectors", str)
    check_grid(ranks, intervals, ac.target, projectors, shortest, twolayer)
    return ranks, intervals, projectors


def svd_seconds(last: dict[str, torch.Tensor], repeats: int = 2) -> dict[str, float]:
    """What one GaLore refresh costs per layer: its full float32 SVD of the layer's last parameter-shaped
    gradient (best of 2), timed once per distinct shape (layers of one shape share it). Measured after
    the training, so it is not part of the recording's cost (docs/advisor.md)."""
    by_shape: dict[tuple, float] = {}
    out = {}
    for name, P in last.items():
        shape = tuple(P.shape)
        if shape not in by_shape:
            best = math.inf
            M = P.detach().float()
            for _ in range(repeats):
                start = time.perf_counter()
                torch.linalg.svd(M, full_matrices=False)
                best = min(best, time.perf_counter() - start)
            by_shape[shape] = best
        out[name] = by_shape[shape]
    return out


# ---------------------------------------------------------------------------- recording


def record_twolayer(cfg: Config, record: bool = True) -> dict:
    """Train the two-layer model (cfg.train) with the energy recorder on W's update gradients."""
    acfg = cfg.analysis
    shape = (cfg.model.width, cfg.data.d)
    state: dict[str, Any] = {"rec": None, "seconds": 0.0, "P": None}

    def theory_of(grad, ds, net, side):
        def theory():  # span{X_B^T r, q} on the input side, {a o mu, a o Sigma'_perp^T (z o r)} on the output side
            mu, _ = compute_mu(acfg.mu, grad, ds, net, acfg.quadrature)
            dec = decompose(grad, ds, net, mu)
            if side == "right":
                return torch.stack([dec.S1.left, dec.S12.left], 1)
            return torch.stack([dec.S1.right, dec.S2.right], 1)

        return theory

    def on_step(t, grad, G, ds, net):
        start = time.perf_counter()
        P = G.T  # the parameter-shaped gradient of W (m x d)
        if state["rec"] is None:
            ranks, intervals, projectors = grid(cfg, [min(P.shape)], True)
            state["rec"] = EnergyRecorder("W", tuple(P.shape), ranks, intervals, projectors, cfg.seed, 0)
        state["rec"].observe(t, SideGradient.of(P, theory_of(grad, ds, net, galore_side(P.shape))))
        state["P"] = P
        state["seconds"] += time.perf_counter() - start

    grid(cfg, [min(shape)], True)  # bad grids fail before any work
    start = time.perf_counter()
    tr = training.train(cfg, on_step=on_step if record else None)
    seconds = time.perf_counter() - start
    if tr.diverged:
        raise InputError(f"train: {tr.message}")
    out = {"train_seconds": seconds, "recording_seconds": state["seconds"], "rows": tr.rows}
    if record and state["rec"] is not None:
        out["layers"] = [state["rec"].result()]
        out["last"] = {"W": state["P"]}
    return out


def full_batch_gd(problem, steps: int, lr: float, on_step: Callable | None = None, kind: str = "gd") -> list[float]:
    """Full-batch training of every parameter by gradrank.studies.loop (gd: w <- w - lr dL/dw) on the mean
    of the batch losses (batches of equal weight). Returns the loss at each visited parameter value."""
    opt = loop.optimizer(kind, [p for p in problem.model.parameters() if p.requires_grad], lr)
    run = loop.run(opt, loop.problem_step(problem), steps, [] if on_step is None else [on_step])
    if run.diverged:
        raise InputError(f"train: {run.message}")
    return run.losses


def record_module(problem, cfg: Config, record: bool = True) -> dict:
    """Train a SPEC's model full batch (train.optimizer) recording every linear layer's weight gradients."""
    _check_full_batch(cfg)
    layers = registry.linear_layers(problem.model, _patterns(problem, cfg))
    if not layers:
        raise InputError(f"--model {cfg.advise.model}: the model has no linear layer to advise on")
    shapes = {name: tuple(mod.weight.shape) for name, mod in layers.items()}
    ranks, intervals, projectors = grid(cfg, [min(s) for s in shapes.values()], False)
    recs = {name: EnergyRecorder(name, shapes[name], ranks, intervals, projectors, cfg.seed, i) for i, name in enumerate(layers)}
    state = {"seconds": 0.0, "last": {}}

    state["skipped"] = []

    def on_step(t):
        start = time.perf_counter()
        if t == 0:  # a layer the loss never reaches (e.g. MiniLM's pooler under mean pooling) has nothing to advise on
            state["skipped"] = [name for name, mod in layers.items() if mod.weight.grad is None]
            for name in state["skipped"]:
                del recs[name]
        for name, rec in recs.items():
            grad = layers[name].weight.grad
            grad = grad if grad is not None else torch.zeros_like(layers[name].weight)
            rec.observe(t, SideGradient.of(grad))
            state["last"][name] = grad
        state["seconds"] += time.perf_counter() - start

    start = time.perf_counter()
    losses = full_batch_gd(problem, cfg.train.steps, cfg.train.lr, on_step if record else None, cfg.train.optimizer)
    seconds = time.perf_counter() - start
    out = {"train_seconds": seconds, "recording_seconds": state["seconds"], "losses": losses, "skipped": state["skipped"]}
    if record:
        out["layers"] = [rec.result() for rec in recs.values()]
        out["last"] = state["last"]
    return out


# ---------------------------------------------------------------------------- validation


def _galore():
    """galore-torch's AdamW (its import prints an optional-kernel notice of bitsandbytes on stderr: kept quiet)."""

    try:
        with contextlib.redirect_stderr(_io.StringIO()), contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from galore_torch import GaLoreAdamW
    except ImportError:
        raise InputError(
            "advise.validate needs galore-torch: pip install 'gradrank[galore]' (or set advise.validate = false)"
        ) from None
    return GaLoreAdamW


def _check_full_batch(cfg: Config) -> None:
    if cfg.train.optimizer == "sgd":
        raise InputError("config key 'train.optimizer' = sgd: a --model network trains full batch (gd, adam or adamw)")


def validate(
    problem, model, weights: dict[str, str], cfg: Config, recommended: dict[str, dict], adam: dict | None = None
) -> dict:
    """Full AdamW, GaLore-AdamW at each layer's recommended (r, T) (svd projector) and at the common
    defaults (advise.galore_rank capped at the layer's smaller dimension, advise.galore_interval),
    from the same initial model (a copy of `model`, trained on the problem's batches and loss),
    full batch, advise.adam_lr, train.steps steps, each run by gradrank.studies.loop.

    weights: layer name -> the dotted name of its weight parameter in `model`. adam: the full AdamW
    run of an earlier call with the same model, lr and steps (it does not depend on the GaLore scale)."""

    ac, steps = cfg.advise, cfg.train.steps
    GaLoreAdamW = _galore()
    start_state = copy.deepcopy(model.state_dict())

    def fresh():
        m = copy.deepcopy(model)
        m.load_state_dict(start_state)
        return m

    def groups(rt: dict[str, tuple[int, int]]):
        def params_of(m):
            named = dict(m.named_parameters())
            low = {weights[name]: rt[name] for name in rt}
            plain = [p for n, p in named.items() if n not in low and p.requires_grad]
            out = [{"params": plain}] if plain else []
            for n, (r, T) in low.items():
                out.append({"params": [named[n]], "rank": r, "update_proj_gap": T, "scale": ac.galore_scale, "proj_type": "std"})
            return out

        return params_of

    def galore(params):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GaLoreAdamW(params, lr=ac.adam_lr, weight_decay=0.0, no_deprecation_warning=True)

    shapes = {name: tuple(dict(model.named_parameters())[weights[name]].shape) for name in recommended}
    rec_rt = {name: (r["rank"], r["interval"]) for name, r in recommended.items()}
    def_rt = {name: (min(ac.galore_rank, *shapes[name]), ac.galore_interval) for name in recommended}
    runs = []
    plans = [
        ("adam", "full-rank AdamW", None),
        ("galore_recommended", "GaLore at the recommended (r, T)", rec_rt),
        ("galore_default", f"GaLore at rank {ac.galore_rank}, gap {ac.galore_interval}", def_rt),
    ]
    for key, label, rt in plans:
        if rt is None and adam is not None:
            runs.append(adam)
            continue
        start = time.perf_counter()
        m = fresh()
        if rt is None:
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=ac.adam_lr, eps=1e-6, weight_decay=0.0)
        else:
            opt = galore(groups(rt)(m))
        losses = loop.run(opt, loop.problem_step(problem, m), steps).losses  # a divergent run ends in NaN
        runs.append(
            {
                "name": key,
                "label": label,
                "ranks": {n: v[0] for n, v in (rt or {}).items()},
                "intervals": {n: v[1] for n, v in (rt or {}).items()},
                "refreshes": sum(math.ceil(steps / v[1]) for v in (rt or {}).values()),
                "loss": losses,
                "final": losses[-1],
                "seconds": time.perf_counter() - start,
            }
        )
    return {"steps": steps, "lr": ac.adam_lr, "scale": ac.galore_scale, "runs": runs, "verdict": verdict(runs, recommended)}


def verdict(runs: list[dict], recommended: dict[str, dict]) -> dict:
    """Whether GaLore at the recommendation reaches full Adam's final loss within 5 %, and with fewer
    refreshes or a smaller rank than the defaults."""
    by = {r["name"]: r for r in runs}
    adam, rec, dft = by["adam"]["final"], by["galore_recommended"], by["galore_default"]
    gap = (rec["final"] - adam) / abs(adam) if adam else float("inf")
    return {
        "adam_final": adam,
        "recommended_final": rec["final"],
        "default_final": dft["final"],
        "relative_gap": gap,
        "default_relative_gap": (dft["final"] - adam) / abs(adam) if adam else float("inf"),
        # the same gap as a share of Adam's decrease from the common start (finite when Adam reaches ~0)
        "gap_of_decrease": (rec["final"] - adam) / (by["adam"]["loss"][0] - adam)
        if by["adam"]["loss"][0] != adam
        else float("nan"),
        "within_5_percent": bool(math.isfinite(rec["final"]) and rec["final"] <= adam + 0.05 * abs(adam)),
        "fewer_refreshes": rec["refreshes"] < dft["refreshes"],
        "smaller_rank": all(rec["ranks"][n] < dft["ranks"][n] for n in rec["ranks"]),
    }


# ---------------------------------------------------------------------------- the whole advice


def _layer_payload(le: LayerEnergy, target: float, svd_seconds: float | None, steps: int, step_seconds: float) -> dict:
    rec = recommend(le.energy, target)
    svd_only = [e for e in le.energy if e["projector"] == "svd"]
    intervals = sorted({e["interval"] for e in le.energy})
    refresh = dict(le.refresh)
    refresh["svd_seconds"] = svd_seconds
    refresh["step_seconds"] = step_seconds
    refresh["per_interval"] = [
        {
            "interval": T,
            "refreshes": math.ceil(steps / T),
            "svd_share": (math.ceil(steps / T) * svd_seconds) / (steps * step_seconds) if svd_seconds and step_seconds else None,
        }
        for T in intervals
    ]
    return {
        "name": le.name,
        "shape": list(le.shape),
        "side": le.side,
        "energy": le.energy,
        "recommended": rec,
        "recommended_svd": recommend(svd_only, target) if svd_only else None,
        "drift": le.drift,
        "refresh": refresh,
    }


def prepare(cfg: Config):
    """(resolved config, the SPEC's Problem or None for the two-layer model), every option checked:
    bad input fails here, before any output directory is touched or any training runs."""
    cfg = resolve(cfg)
    if cfg.train.steps < 1:
        raise InputError("config key 'train.steps' must be >= 1 for advise")
    if cfg.advise.model in (TWOLAYER, "mlp"):  # the memory guard before the data is generated
        check_generated(cfg, train=cfg.advise.model == TWOLAYER)
    if cfg.advise.model == TWOLAYER:  # recorded through `gradrank train`; the SPEC's Problem serves the validation
        grid(cfg, [min(cfg.model.width, cfg.data.d)], True)
        _, ds, net = analysis.prepare(cfg)  # honours model.weights
        return cfg, twolayer_mod.problem_of(ds, net, cfg.loss.kind)
    problem = registry.resolve(cfg.advise.model, cfg)
    layers = registry.linear_layers(problem.model, _patterns(problem, cfg))
    if not layers:
        raise InputError(f"--model {cfg.advise.model}: the model has no linear layer to advise on")
    check_model(problem, layers)  # float16/bfloat16, complex or non-finite weights: exit 2, as in `layers`
    grid(cfg, [min(mod.weight.shape) for mod in layers.values()], False)
    _check_full_batch(cfg)
    check_bytes(
        cfg, training_bytes(problem, layers), f"--model {problem.name}: training and recording every chosen layer", force=False
    )
    return cfg, problem


def training_bytes(problem, layers: dict[str, torch.nn.Module]) -> int:
    """Estimated peak of advising on a SPEC's model, for the memory guard: its parameters six times
    (weights, gradients, two Adam states, the initial copy, one validation copy), every chosen layer's
    rows over the full batch (its input; its output, the activation after it and the output's gradient
    in the backward pass) and four d_out x d_in matrices per layer (the step's gradient, its SVD's
    factors, the recorder's projector)."""
    params = sum(p.numel() * p.element_size() for p in problem.model.parameters())
    if problem.token_masks:  # a sequence model: one row per (sample, token)
        rows = sum(mask.numel() for mask in problem.token_masks)
    else:
        rows = sum(batch_size(inputs) for inputs, _ in problem.batches)
    per_layer = 0
    for mod in layers.values():
        d_out, d_in = mod.weight.shape
        per_layer += mod.weight.element_size() * (rows * (d_in + 3 * d_out) + 4 * d_out * d_in)
    return 6 * params + per_layer


def advise(cfg: Config, progress: Callable[[str], None] | None = None, problem=None) -> dict:
    """The advice payload for a config from `prepare` (and its Problem for a SPEC)."""
    say = progress or (lambda _msg: None)
    spec, steps = cfg.advise.model, cfg.train.steps
    if problem is None:
        cfg, problem = prepare(cfg)
    initial = copy.deepcopy(problem.model)  # the model before training: the validation starts from it
    if spec == TWOLAYER:
        say(f"training the two-layer model for {steps} steps ({cfg.train.optimizer}), recording")
        run = record_twolayer(cfg)
        loss_curve = [r["train_loss"] for r in run["rows"]]
        loss_steps = [r["step"] for r in run["rows"]]
    else:
        say(f"training {problem.name} for {steps} steps (full-batch {cfg.train.optimizer}), recording")
        run = record_module(problem, cfg)
        loss_curve, loss_steps = run["losses"], list(range(steps + 1))
    step_seconds = run["train_seconds"] / steps
    svd = svd_seconds(run["last"])
    layers = [_layer_payload(le, cfg.advise.target, svd.get(le.name), steps, step_seconds) for le in run["layers"]]
    payload = {
        "schema": SCHEMA,
        "kind": "advise",
        "model": spec,
        "steps": steps,
        "target": cfg.advise.target,
        "ranks": parse_list(cfg.advise.ranks, "advise.ranks"),
        "intervals": parse_list(cfg.advise.intervals, "advise.intervals"),
        "projectors": sorted({e["projector"] for lay in layers for e in lay["energy"]}, key=PROJECTORS.index),
        "layers": layers,
        "timing": {
            "train_seconds": run["train_seconds"],
            "recording_seconds": run["recording_seconds"],
            "overhead": run["recording_seconds"] / max(run["train_seconds"] - run["recording_seconds"], 1e-12),
        },
        "training": {"optimizer": cfg.train.optimizer, "lr": cfg.train.lr, "steps": loss_steps, "loss": loss_curve},
        "skipped": run.get("skipped", []),
        "validation": None,
    }
    recommended = {lay["name"]: lay["recommended_svd"] for lay in layers if lay["recommended_svd"]}
    if cfg.advise.validate and len(recommended) == len(layers):
        say("validating: full AdamW, GaLore at the recommendation and at its defaults")
        payload["validation"] = validation(cfg, recommended, problem, initial)
    return payload


def validation(cfg: Config, recommended: dict[str, dict], problem=None, initial=None, adam: dict | None = None) -> dict:
    """`validate` from the initial model of a Problem from `prepare` (built here when not given)."""
    if problem is None:
        cfg, problem = prepare(cfg)
    initial = problem.model if initial is None else initial
    # the two-layer model's recorded layer is W, the weight of its module `inner`
    names = {name: "inner.weight" if cfg.advise.model == TWOLAYER else f"{name}.weight" for name in recommended}
    return validate(problem, initial, names, cfg, recommended, adam)


def _patterns(problem, cfg: Config) -> list[str] | None:
    """Which linear layers: the SPEC's own choice, else layers.patterns, else all."""
    return problem.layers or list(cfg.layers.patterns) or None
