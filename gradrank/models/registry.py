"""The SPEC registry: a model SPEC resolved to a Problem, a model, its batches and a loss (docs/deep.md).

SPEC is a built-in name, `twolayer` (the paper's network, gradrank.models.twolayer), `mlp` (the
deep MLP on the spiked data) or `minilm` (all-MiniLM-L6-v2 from its wheel, offline), or
`path/to/file.py:function`: the user's own file, imported and run as it is (it is the user's code,
with the user's rights), whose function takes the resolved config (or nothing) and returns a dict
with `model`, `inputs`, `targets`, `loss` and optionally `layers`. The built-in names map to
gradrank's own "module:function" (imported by name when resolved, so the model modules may import
this one); a user file is hashed (`file_digest`) into the run identity.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from gradrank import config as config_mod
from gradrank.config import ComputeConfig, Config
from gradrank.errors import InputError
from gradrank.io import sha256_file

# the built-in SPECs: name -> gradrank's "module:function" returning the Problem for a config
BUILT_IN = {
    "twolayer": "gradrank.models.twolayer:problem",
    "mlp": "gradrank.models.mlp:problem",
    "minilm": "gradrank.models.minilm:problem",
}
_KEYS = {"model", "inputs", "targets", "loss"}
_OPTIONAL = {"layers", "batches"}


@dataclass
class DataSpike:
    """The known spike of one layer's input, X = X_B + zeta z q^T (the data at the first layer), and
    the per-sample latent z, against which every deeper layer's input spike is compared."""

    layer: str
    q: torch.Tensor
    z: torch.Tensor
    zeta: float


@dataclass
class Problem:
    name: str  # a built-in name (BUILT_IN) or "path/file.py:function"
    model: torch.nn.Module
    batches: list[tuple[Any, Any]]  # (inputs, targets); inputs a Tensor, a tuple (model(*inputs)) or a dict (model(**inputs))
    loss: Callable[[Any, Any], torch.Tensor]  # (outputs, targets) -> mean loss, 0-d tensor
    layers: list[str] | None = None  # fnmatch patterns over named_modules names
    source_sha256: str = ""  # a user file's sha256 (hashed into the run identity)
    spike: DataSpike | None = None  # built-in spiked data: the spike known exactly
    token_masks: list[torch.Tensor] | None = None  # per batch: which (sample, token) rows are real (not padding)

    def __post_init__(self):
        if not getattr(self.loss, "guarded", False):  # every call of the loss goes through user_call
            self.loss = _guarded_loss(self.loss, self.name)


def user_call(where: str, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) where fn is (or runs) the user's code: whatever it raises or exits with
    (an exception, sys.exit(0), a BaseException subclass) is one InputError naming `where`, so a
    user's exit never reads as success and nothing is written after it. Ctrl-C (KeyboardInterrupt)
    stays an interruption."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code: one line, the traceback with --debug
        raise InputError(f"{where} raised {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (an exit from the user's code is an error here)"
    return f"{exc.__class__.__name__}: {_line(exc)}"


def resolve(spec: str, cfg: Config | None = None) -> Problem:
    """The Problem a SPEC names; InputError (one line naming it) for every misuse."""
    if cfg is None:
        cfg = config_mod.load()
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"--model: empty SPEC (use {_NAMES} or path/to/file.py:function)")
    spec = spec.strip()
    if spec in BUILT_IN:
        module, _, function = BUILT_IN[spec].partition(":")
        return getattr(importlib.import_module(module), function)(cfg)
    return _user_problem(spec, cfg)


_NAMES = ", ".join(BUILT_IN)


def is_file(spec: str) -> bool:
    """Whether a SPEC names a user's file (path/to/file.py:function), not a built-in model."""
    return spec not in BUILT_IN and ":" in spec


def _split(spec: str) -> tuple[Path, str]:
    """(path, function) of a user file's SPEC, checked."""
    path_text, sep, fn_name = spec.rpartition(":")
    if not sep or not path_text or not fn_name.isidentifier():
        raise InputError(f"--model {spec!r}: not {_NAMES} or path/to/file.py:function")
    path = Path(path_text)
    if path.suffix != ".py":
        raise InputError(f"--model {spec!r}: {path_text} is not a .py file")
    return path, fn_name


def file_digest(spec: str, expected: str = "", key: str = "") -> str:
    """The sha256 of a user file SPEC's file; a recorded `expected` hash (config key `key`) that no
    longer matches is an error: the saved config would not reproduce the run."""
    path, _ = _split(spec)
    try:
        digest = sha256_file(path, "model file")
    except InputError as exc:
        raise InputError(f"--model {spec}: {exc}") from None
    if expected and expected != digest:
        raise InputError(f"config key '{key}': {path} has changed since the config was written")
    return digest


def _user_problem(spec: str, cfg: Config) -> Problem:
    path, fn_name = _split(spec)
    digest = sha256_file(path, "model file")
    fn = _load_function(path, fn_name, spec)
    try:
        takes = len(
            [p for p in inspect.signature(fn).parameters.values() if p.default is p.empty and p.kind <= p.POSITIONAL_OR_KEYWORD]
        )
    except (TypeError, ValueError):
        takes = 1
    out = user_call(f"--model {spec}: {fn_name}()", fn, *((cfg,) if takes else ()))
    return from_dict(out, spec, digest)


def _load_function(path: Path, fn_name: str, spec: str):
    name = "gradrank_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"--model {spec}: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        user_call(f"--model {spec}: importing {path}", module_spec.loader.exec_module, module)
    except InputError:
        sys.modules.pop(name, None)
        raise
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise InputError(f"--model {spec}: {path} has no function {fn_name}")
    return fn


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or "(no message)"


def from_dict(out: Any, name: str, digest: str = "") -> Problem:
    """A Problem from the dict a user's function returns (model, inputs, targets, loss, layers?),
    or with `batches` (a list of (inputs, targets)) instead of inputs and targets."""
    if not isinstance(out, dict):
        raise InputError(f"--model {name}: the function must return a dict, got {type(out).__name__}")
    keys = set(out)
    required = (_KEYS - {"inputs", "targets"}) if "batches" in keys else _KEYS
    missing = sorted(required - keys)
    if missing:
        raise InputError(f"--model {name}: the returned dict lacks {', '.join(map(repr, missing))}")
    unknown = sorted(keys - _KEYS - _OPTIONAL)
    if unknown:
        raise InputError(f"--model {name}: the returned dict has unknown keys {', '.join(map(repr, unknown))}")
    if "batches" in keys and ({"inputs", "targets"} & keys):
        raise InputError(f"--model {name}: give 'batches' or 'inputs' and 'targets', not both")
    model = out["model"]
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"--model {name}: 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(out["loss"]):
        raise InputError(f"--model {name}: 'loss' must be callable (outputs, targets) -> mean loss")
    batches = out["batches"] if "batches" in keys else [(out["inputs"], out["targets"])]
    if (
        not isinstance(batches, (list, tuple))
        or not batches
        or not all(isinstance(b, (list, tuple)) and len(b) == 2 for b in batches)
    ):
        raise InputError(f"--model {name}: 'batches' must be a non-empty list of (inputs, targets) pairs")
    for inputs, _ in batches:
        _check_inputs(inputs, name)
    layers = out.get("layers")
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not all(isinstance(p, str) and p for p in layers):
            raise InputError(f"--model {name}: 'layers' must be a list of name patterns")
        layers = list(layers)
    return Problem(name, model, [tuple(b) for b in batches], out["loss"], layers, digest)


def _guarded_loss(loss: Callable, name: str) -> Callable:
    """The user's loss, every call of it through user_call."""

    def guarded(outputs, targets):
        return user_call(f"--model {name}: the loss", loss, outputs, targets)

    guarded.guarded = True
    return guarded


def _check_inputs(inputs: Any, name: str) -> None:
    ok = (
        isinstance(inputs, torch.Tensor)
        or (isinstance(inputs, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in inputs))
        or (isinstance(inputs, dict) and all(isinstance(k, str) for k in inputs))
    )
    if not ok:
        raise InputError(f"--model {name}: 'inputs' must be a Tensor, a tuple of Tensors or a dict, got {type(inputs).__name__}")


def _linear_kinds() -> tuple[type, ...]:
    """nn.Linear, and the Conv1D of transformers (a linear layer with its weight transposed) when installed."""
    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # noqa: BLE001 - transformers absent or broken: only nn.Linear
        return kinds
    return kinds + (Conv1D,)


def is_conv1d(module: torch.nn.Module) -> bool:
    return not isinstance(module, torch.nn.Linear) and isinstance(module, _linear_kinds())


def linear_layers(model: torch.nn.Module, patterns: list[str] | None = None) -> dict[str, torch.nn.Module]:
    """Every nn.Linear and transformers' Conv1D by qualified name, in named_modules order (a module
    reachable under two names appears once, by its first), kept where a pattern matches (fnmatch)."""
    kinds = _linear_kinds()
    found = {name: m for name, m in model.named_modules() if isinstance(m, kinds)}  # "" when the model itself is one
    if not found:
        raise InputError(f"the model ({type(model).__name__}) has no linear layer (nn.Linear or Conv1D)")
    if not patterns:
        return found
    for p in patterns:
        if not any(fnmatch.fnmatchcase(n, p) for n in found):
            raise InputError(f"layer pattern {p!r} matches no linear layer (the first are {', '.join(list(found)[:4])})")
    return {n: m for n, m in found.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def device(cc: ComputeConfig) -> torch.device:
    """The compute section's device, checked (every built-in model and the two-layer pipeline; a
    user's file places its own model)."""
    if cc.device == "cuda" and not torch.cuda.is_available():
        raise InputError("config key 'compute.device' = cuda, but no CUDA device is available")
    return torch.device(cc.device)


def forward(problem: Problem, inputs: Any) -> Any:
    """The one place a model is called on a batch's inputs (through user_call: the model is the user's code)."""
    where = f"--model {problem.name}: the forward pass"
    if isinstance(inputs, dict):
        return user_call(where, problem.model, **inputs)
    if isinstance(inputs, (tuple, list)):
        return user_call(where, problem.model, *inputs)
    return user_call(where, problem.model, inputs)


def backward(problem: Problem, fn: Callable, *args, **kwargs):
    """A backward pass (autograd.grad or .backward): it runs the user's autograd functions and hooks."""
    return user_call(f"--model {problem.name}: the backward pass", fn, *args, **kwargs)
