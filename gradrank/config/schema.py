"""Typed configuration: TOML in, validated dataclasses out, one hash per resolved config.

Every field has a default (the paper's Figure 1 setting); unknown keys are rejected with
a suggestion; `--set key=value` overrides use dotted keys. Pure Python: no torch import.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradrank.errors import InputError
from gradrank.io import sha256_file


def _f(default, *, choices=None, lo=None, hi=None, lo_open=False, optional=False, item=None, doc=""):
    """A config field with its validation rule kept next to its default (item: a list's element type,
    each element checked against lo/hi)."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "optional": optional, "item": item, "doc": doc}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "erf", "softplus", "quadratic", "linear")
LINKS = ("triple", "linear", "tanh", "relu", "he2", "he3", "sign", "pair")
DATA_SOURCES = ("spiked", "digits", "mnist1d", "patches", "file")


@dataclass
class DataConfig:
    source: str = _f("spiked", choices=DATA_SOURCES, doc="spiked model, a built-in real set, or a file")
    path: str = _f("", doc="data file for source = file (.npz/.npy/.csv)")
    sha256: str = _f("", doc="content hash of data.path, filled in when the config is resolved; a mismatch is an error")
    n: int = _f(750, lo=1, doc="samples")
    d: int = _f(1000, lo=1, doc="input dimension")
    alpha: float = _f(0.0, lo=0.0, hi=10.0, doc="bulk eigenvalues k^-alpha")
    nu: float = _f(0.4, lo=0.0, hi=4.0, doc="spike strength zeta = n^nu")
    zeta: float = _f(None, lo=0.0, hi=1e100, optional=True, doc="explicit spike strength (overrides nu)")
    spike: str = _f("random", choices=("random", "eigvec"), doc="spike direction q")
    spike_index: int = _f(0, lo=0, doc="which eigenvector of the bulk for spike = eigvec (0 = largest)")
    latent: str = _f("gaussian", choices=("gaussian", "rademacher"), doc="law of z")
    basis: str = _f("identity", choices=("identity", "random"), doc="eigenbasis of the bulk covariance")
    normalize: str = _f("none", choices=("none", "trace"), doc="trace: eigenvalues rescaled to mean 1")
    target: str = _f("multi_index", choices=("multi_index", "single_index", "linear", "teacher", "noise"))
    link: str = _f("triple", choices=LINKS, doc="link g of the index model")
    index_sees_spike: bool = _f(False, doc="index directions act on X (true) or on the bulk X_B only")
    teacher_width: int = _f(4, lo=1)
    teacher_activation: str = _f("tanh", choices=ACTIVATIONS)
    label_noise: float = _f(0.0, lo=0.0, hi=1e6, doc="std of Gaussian noise added to the targets")
    n_test: int = _f(0, lo=0, doc="held-out samples drawn from the same model")
    center: bool = _f(True, doc="real/file data: subtract the column means")
    standardize: bool = _f(False, doc="real/file data: unit variance per column")
    embed_dim: int = _f(0, lo=0, doc="real/file data: random-feature embedding dimension (0 = off)")
    digits_class: int = _f(-1, lo=-1, hi=9, doc="real data: target = 1[label == class] (-1: label parity)")
    patch_size: int = _f(8, lo=2, hi=64, doc="patches: side p of the gray p x p patches (d = p^2)")


@dataclass
class ModelConfig:
    width: int = _f(1250, lo=1, doc="m")
    activation: str = _f("relu", choices=ACTIVATIONS)
    leaky_slope: float = _f(0.01, lo=0.0, hi=1.0)
    scaling: str = _f("ntk", choices=("ntk", "mf"), doc="gamma_m = c/sqrt(m) or c/m")
    c: float = _f(1.0, lo=0.0, lo_open=True, hi=1e6, doc="constant in gamma_m")
    planted: float = _f(0.0, lo=0.0, hi=1e6, doc="coefficient of the planted n^(-1/4) v q^T part of W")
    planted_vector: str = _f("ones", choices=("ones", "signs"), doc="the planted m-vector v")
    planted_normalize: str = _f("rows", choices=("rows", "none"), doc="normalisation after planting")
    outer: str = _f("rademacher", choices=("rademacher", "balanced"), doc="law of a in {+-1}^m")
    weights: str = _f("", doc="start from W (m x d) and a (m) in this .npz file instead of drawing them")
    weights_sha256: str = _f("", doc="content hash of model.weights, filled in when resolved; a mismatch is an error")
    depth: int = _f(2, lo=2, hi=64, doc="layers mlp: linear layers, readout included (2: the paper's network)")
    hidden: list = _f([], item=int, lo=1, doc="layers mlp: the depth - 1 hidden widths (empty: model.width each)")
    gain: float = _f(1.0, lo=0.0, lo_open=True, doc="layers mlp: row norm of hidden layers 2.. (sqrt(2) keeps a relu's scale)")


@dataclass
class LossConfig:
    kind: str = _f("mse", choices=("mse", "logistic"))


@dataclass
class RegularizerConfig:
    weight_decay: float = _f(0.0, lo=0.0, hi=1e6, doc="lambda of lambda/2 ||W||_F^2")
    input_noise: float = _f(0.0, lo=0.0, hi=1e6, doc="tau: inputs X + tau N")
    noise_mode: str = _f("single", choices=("single", "average", "surrogate"))
    noise_draws: int = _f(8, lo=1, doc="K for noise_mode = average")
    jacobian: float = _f(0.0, lo=0.0, hi=1e6, doc="strength of (1/n) sum_i ||grad_x f(x_i)||^2")


@dataclass
class AnalysisConfig:
    mu: str = _f("auto", choices=("auto", "population", "empirical"), doc="auto: population for spiked data")
    top_k: int = _f(8, lo=1, doc="singular triplets reported")
    quadrature: int = _f(64, lo=4, hi=128, doc="Gauss-Hermite points for population mu")
    edge_margin: float = _f(0.05, lo=0.0, doc="outliers: singular values above (1 + margin) ||E||")
    align_threshold: float = _f(0.5, lo=0.0, hi=1.0, doc="|cos| that counts as aligned")
    dominance: float = _f(5.0, lo=1.0, doc="ratio of the two spikes above which one dominates")
    identity_tol: float = _f(1e-8, lo=0.0, lo_open=True, doc="decomposition identity error tolerated")
    identity: str = _f(
        "probe",
        choices=("probe", "dense"),
        doc="identity error from 8 fixed random probes of every term (fast, unbiased estimate) or from every term formed densely",
    )
    spectrum: str = _f(
        "gram",
        choices=("gram", "svd"),
        doc="exact spectra from the n x n Gram (fast; values to ~1e-8 s_1) or an SVD of the n x m factor (~eps s_1)",
    )


@dataclass
class TrainConfig:
    steps: int = _f(200, lo=0)
    lr: float = _f(
        0.03, lo=0.0, lo_open=True, doc="learning rate, in units set by train.lr_scale (0.03: stable GD at the paper's size)"
    )
    lr_scale: str = _f("auto", choices=("auto", "none"), doc="auto: lr multiplied by m for mf, 1 for ntk")
    optimizer: str = _f(
        "gd", choices=("gd", "sgd", "adam", "adamw"), doc="torch.optim's: gd full batch; sgd, adam, adamw on mini-batches"
    )
    batch_size: int = _f(64, lo=1, doc="mini-batch for sgd, adam and adamw")
    record_every: int = _f(10, lo=1)
    checkpoint_every: int = _f(50, lo=1, doc="exact spectra of G and W - W0")
    train_outer: bool = _f(False)
    track: str = _f("warm", choices=("warm", "exact"), doc="top-k tracking: warm-started or exact SVD")


@dataclass
class OnestepConfig:
    """The one-step protocol (gradrank.studies.onestep, docs/onestep.md)."""

    eta: list = _f(
        [0.0, 1.0, 4.0, 16.0],
        lo=0.0,
        doc="step sizes, in the units of train.lr_scale (auto: times m for mf, 1 for ntk); 0 = random features",
    )
    steps: int = _f(1, lo=1, doc="full-batch gradient steps on W before the readout")
    readout: str = _f(
        "fresh",
        choices=("fresh", "same"),
        doc="the readout's training rows: n fresh samples of the model (Ba et al.'s sample splitting) or the step's own",
    )
    ridge_select: str = _f(
        "holdout", choices=("holdout", "fixed"), doc="ridge strength: best of ridge_grid on a held-out split, or ridge"
    )
    ridge: float = _f(1e-3, lo=0.0, lo_open=True, doc="fixed ridge strength lambda (ridge_select = fixed)")
    ridge_grid: list = _f([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], lo=0.0, lo_open=True, doc="candidates for holdout")
    holdout: float = _f(0.2, lo=0.0, hi=0.9, lo_open=True, doc="fraction of the training rows held out to choose the ridge")


@dataclass
class LayersConfig:
    """`gradrank layers` (gradrank.studies.layers, docs/deep.md)."""

    model: str = _f("mlp", doc="the model SPEC of `gradrank layers`: twolayer, mlp, minilm or path/to/file.py:function")
    model_sha256: str = _f("", doc="content hash of a SPEC's file, filled in when it is resolved")
    patterns: list = _f([], item=str, doc="fnmatch patterns over module names (empty: the model's own choice, else all)")
    batch_size: int = _f(0, lo=0, doc="mlp: samples per captured batch (0: one batch), factors accumulate over batches")
    sentences: int = _f(64, lo=2, hi=4096, doc="minilm: sentences (pairs of consecutive ones) from pydoc_data.topics")
    max_length: int = _f(32, lo=4, hi=512, doc="minilm: tokens per sentence (truncated)")
    show: str = _f("", doc="the layer whose spectrum the report plots (empty: the one with the most outliers)")


@dataclass
class AdviseConfig:
    model: str = _f("twolayer", doc="twolayer (the paper's network), mlp, minilm or path/file.py:function")
    model_sha256: str = _f("", doc="content hash of a user model file, filled in when resolved")
    ranks: list = _f([1, 2, 4, 8, 16, 32], item=int, lo=1, doc="projector ranks r")
    intervals: list = _f(
        [10, 50, 100, 200], item=int, lo=1, doc="refresh intervals T (steps); T = 1 (an SVD every step) costs most"
    )
    target: float = _f(0.9, lo=0.0, lo_open=True, hi=1.0, doc="captured share the recommendation must reach, in (0, 1]")
    projectors: list = _f([], item=str, doc="of svd, random, rows, theory (empty: all that apply; theory: two-layer only)")
    validate: bool = _f(True, doc="train with GaLore (recommended and default r, T) and full Adam")
    adam_lr: float = _f(1e-3, lo=0.0, lo_open=True, doc="learning rate of the validation's Adam and GaLore runs")
    galore_rank: int = _f(128, lo=1, doc="GaLore's commonly used rank (the defaults compared against)")
    galore_interval: int = _f(200, lo=1, doc="GaLore's commonly used update_proj_gap")
    galore_scale: float = _f(
        1.0,
        lo=0.0,
        lo_open=True,
        doc="GaLore's scale for both GaLore runs (1: the full-rank step size; its README uses 0.25 with lr 0.01 for LLMs)",
    )


@dataclass
class ComputeConfig:
    device: str = _f("cpu", choices=("cpu", "cuda"))
    dtype: str = _f("float64", choices=("float64", "float32"))
    max_memory_gb: float = _f(0.0, lo=0.0, doc="refuse runs estimated above this (0 = 80% of RAM)")


@dataclass
class OutputConfig:
    name: str = _f("", doc="run name shown in reports")
    report: bool = _f(True, doc="write report.html")
    pdf: bool = _f(False, doc="also write report.pdf")
    paper: str = _f("a4", choices=("a4", "letter"), doc="PDF page size")
    metrics: str = _f(
        "",
        doc="sweep reports: comma-separated results.csv columns or ratios a/b to show (empty: norms.S2/norms.S1, rank.outliers)",
    )


@dataclass
class Config:
    seed: int = _f(0, lo=0, hi=2**63 - 1)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    onestep: OnestepConfig = field(default_factory=OnestepConfig)
    advise: AdviseConfig = field(default_factory=AdviseConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """sha256 of the resolved config, output options excluded (they do not change results), and the
        onestep section while it holds its defaults (so every other command's hashes are what they were)."""
        d = self.to_dict()
        d.pop("output")
        if d["onestep"] == dataclasses.asdict(OnestepConfig()):
            d.pop("onestep")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def replace(self, **dotted: Any) -> "Config":
        """A copy with dotted-key overrides applied and validated."""
        raw = self.to_dict()
        for key, value in dotted.items():
            _assign(raw, key, value)
        return from_dict(raw)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "seed"}
_SECTION_CLASSES = {f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "seed"}


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_value(key: str, value: Any, f: dataclasses.Field) -> Any:
    """Validate one value against its field's type and rule; return it normalised."""
    meta = f.metadata
    if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), list):
        return _check_list(key, value, f)
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    if value is None:
        if meta.get("optional"):
            return None
        raise InputError(f"config key '{key}' needs a value")
    kind = type(default) if default is not None else float
    if kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"config key '{key}' must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InputError(f"config key '{key}' must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"config key '{key}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"config key '{key}' must be finite, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise InputError(f"config key '{key}' must be a string, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise InputError(f"config key '{key}' must be one of {', '.join(choices)}; got {value!r}{suggest(str(value), choices)}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise InputError(f"config key '{key}' must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise InputError(f"config key '{key}' must be <= {hi}, got {value!r}")
    return value


def _check_list(key: str, value: Any, f: dataclasses.Field) -> list:
    """A list of the field's item type (float unless set), each element checked against the field's
    bounds and choices; a single value is a list of one; empty only where the default is."""
    item = f.metadata.get("item") or float
    if not isinstance(value, list) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise InputError(f"config key '{key}' must be a list of {_ITEM_NAMES[item]}, got {value!r}")
    if not value and f.default_factory():
        raise InputError(f"config key '{key}' must not be empty")
    element = dataclasses.field(default=item(), metadata={**f.metadata, "item": None})
    return [_check_value(f"{key}[{i}]", v, element) for i, v in enumerate(value)]


_ITEM_NAMES = {float: "numbers", int: "integers", str: "strings"}


def from_dict(raw: dict) -> Config:
    """Validate a nested dict (from TOML or JSON) into a Config; unknown keys are errors."""
    if not isinstance(raw, dict):
        raise InputError("config must be a table of sections")
    top = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in top:
            raise InputError(f"unknown config key '{name}'{suggest(name, top)}")
        if name == "seed":
            kwargs["seed"] = _check_value("seed", value, top["seed"])
            continue
        if not isinstance(value, dict):
            raise InputError(f"config key '{name}' must be a table ([{name}])")
        cls = _SECTION_CLASSES[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        section = {}
        for key, v in value.items():
            if key not in fields:
                raise InputError(f"unknown config key '{name}.{key}'{suggest(key, fields)}")
            section[key] = _check_value(f"{name}.{key}", v, fields[key])
        kwargs[name] = cls(**section)
    cfg = Config(**kwargs)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    """Rules that involve more than one key."""
    if cfg.data.source == "file" and not cfg.data.path:
        raise InputError("config key 'data.path' is required when data.source = file")
    if cfg.analysis.mu == "population" and cfg.data.source != "spiked":
        raise InputError("config key 'analysis.mu' = population needs data.source = spiked (use empirical)")
    if cfg.data.spike == "eigvec" and cfg.data.spike_index >= cfg.data.d:
        raise InputError(f"config key 'data.spike_index' must be < data.d = {cfg.data.d}")


def resolve(cfg: Config) -> Config:
    """Replace 'auto' choices by what they mean for this config, and give every input file its
    absolute path and content hash, so results record them and the config hash identifies the run."""
    mu = cfg.analysis.mu
    if mu == "auto":
        mu = "population" if cfg.data.source == "spiked" else "empirical"
    files = {}
    if cfg.data.source == "file":
        files |= _input_file("data.path", cfg.data.path, "data.sha256", cfg.data.sha256)
    if cfg.model.weights:
        files |= _input_file("model.weights", cfg.model.weights, "model.weights_sha256", cfg.model.weights_sha256)
    for section in ("layers", "advise"):  # `gradrank layers` and `gradrank advise` take the same SPEC
        spec = getattr(cfg, section).model
        if ":" in spec:  # the user's path/to/file.py:function (no built-in SPEC name has a colon), hashed into the run identity
            key, hash_key = f"{section}.model", f"{section}.model_sha256"
            path, _, function = spec.rpartition(":")
            got = _input_file(key, path, hash_key, getattr(cfg, section).model_sha256, "model file")
            files |= {key: f"{got[key]}:{function}", hash_key: got[hash_key]}
    return cfg.replace(**{"analysis.mu": mu}, **files)


_HASHES: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a sweep resolves the same file per point


def _input_file(key: str, path: str, hash_key: str, expected: str, what: str = "file") -> dict:
    """{key: absolute path, hash_key: sha256 of its content}; a recorded hash that no longer
    matches the file is an error (the saved config would not reproduce the run)."""

    p = os.path.abspath(path)
    try:
        st = os.stat(p)
        ident = (p, st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        ident = None
    digest = _HASHES.get(ident) if ident else None
    if digest is None:
        try:
            digest = sha256_file(Path(p), what)
        except InputError as exc:
            raise InputError(f"config key '{key}': {exc}") from None
        if ident:
            _HASHES[ident] = digest
    if expected and expected != digest:
        raise InputError(
            f"config key '{hash_key}': {path} has changed since the config was written "
            f"(sha256 {digest[:16]}..., recorded {expected[:16]}...)"
        )
    return {key: p, hash_key: digest}


def parse_value(text: str) -> Any:
    """A --set value: TOML syntax when it parses (numbers, booleans, lists), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _assign(raw: dict, key: str, value: Any) -> None:
    if not isinstance(key, str):
        raise InputError(f"a config key must be a dotted string, got {key!r}")
    parts = key.split(".")
    if not all(parts):
        raise InputError(f"bad config key '{key}'")
    node = raw
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            options = [k for k, v in node.items() if isinstance(v, dict)]
            raise InputError(f"unknown config key '{key}'{suggest(p, options)}")
        node = node[p]
    if parts[-1] not in node:
        raise InputError(f"unknown config key '{key}'{suggest(parts[-1], node)}")
    if isinstance(value, dict) and isinstance(node[parts[-1]], dict):  # a table merges: keys set before stay
        _deep_update(node[parts[-1]], value, f"{key}.")
    else:
        node[parts[-1]] = value


def apply_sets(raw: dict, sets: list[str]) -> dict:
    """Apply `--set key=value` strings to a raw (unvalidated) config dict."""
    full = Config().to_dict()
    _deep_update(full, raw, "")
    for item in sets:
        if "=" not in item:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        _assign(full, key.strip(), parse_value(text.strip()))
    return full


def _deep_update(base: dict, new: dict, prefix: str) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v, f"{prefix}{k}.")
        elif k not in base:
            raise InputError(f"unknown config key '{prefix}{k}'{suggest(k, base)}")
        elif isinstance(base[k], dict):
            raise InputError(f"config key '{prefix}{k}' must be a table ([{prefix}{k}])")
        else:
            base[k] = v


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred lines; anything far larger is a mistake


def read_toml(path: str | Path) -> dict:
    """A TOML config file: a regular file (a FIFO or a device would hang or never end) of at most
    MAX_CONFIG_BYTES, UTF-8, nested no deeper than the parser can follow."""

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.__class__.__name__}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot read config file {path}: IsADirectoryError")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"config file {path}: not a regular file (a FIFO, a device or a socket)")
        if st.st_size > MAX_CONFIG_BYTES:
            raise InputError(f"config file {path}: {st.st_size} bytes, more than the {MAX_CONFIG_BYTES} allowed")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.__class__.__name__}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(f"config file {path}: more than the {MAX_CONFIG_BYTES} bytes allowed")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is accepted and dropped
    except UnicodeDecodeError:
        raise InputError(f"cannot read config file {path}: UnicodeDecodeError") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"config file {path}: {exc}") from None
    except RecursionError:
        raise InputError(f"config file {path}: nested too deeply") from None


def load(path: str | Path | None = None, sets: list[str] = (), seed: int | None = None, overrides: dict | None = None) -> Config:
    """The one way to build a config: file (or defaults) + --set overrides + dotted-key
    `overrides` (values as they are, e.g. file paths) + --seed, resolved.

    A top-level [sweep] table (the grid read by `gradrank sweep`, see gradrank.sweeps.spec) is not
    part of the config and is ignored here, so a sweep file also works with `gradrank analyze`."""
    raw = read_toml(path) if path else {}
    raw.pop("sweep", None)
    raw = apply_sets(raw, list(sets))
    for key, value in (overrides or {}).items():
        _assign(raw, key, value)
    if seed is not None:
        raw["seed"] = seed
    return resolve(from_dict(raw))


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped (TOML refuses
    raw controls and DEL, and JSON's surrogate-pair escapes)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        elif 0xD800 <= ord(c) <= 0xDFFF:  # a non-UTF-8 file name's byte: TOML has no way to hold it
            out.append(f"\\\\x{ord(c) - 0xDC00:02x}" if ord(c) >= 0xDC80 else f"\\\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(cfg: Config) -> str:
    """TOML text of a config (None-valued optional keys are omitted)."""
    d = cfg.to_dict()
    lines = [f"seed = {d.pop('seed')}"]
    for section, values in d.items():
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"
