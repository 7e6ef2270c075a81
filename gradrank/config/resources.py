"""Resource guard: estimate a run's peak memory before starting it, from every size the config
(and its input files' headers) can set."""

from __future__ import annotations

import os

from gradrank.config import Config
from gradrank.errors import InputError
from gradrank.io import available_bytes, declared_shapes


def estimate_bytes(n: int, d: int, m: int, dtype: str) -> int:
    """Peak working set of one analysis: X, X_B (n x d, twice for casts), five n x m factors
    (pre-activations, sigma, Sigma', D, D_perp) and four d x m matrices (W; and G, a penalty, a copy
    or training's W_0 and optimiser state where they are formed: the default analysis forms none)."""
    item = 8 if dtype == "float64" else 4
    return item * (4 * n * d + 5 * n * m + 4 * d * m + 2 * min(n, d) ** 2) + 8 * 2 * n * d


def limit_bytes(cfg: Config) -> float:
    """compute.max_memory_gb, or 80% of the memory available now."""
    return cfg.compute.max_memory_gb * 2**30 if cfg.compute.max_memory_gb else 0.8 * available_bytes()


def check_bytes(cfg: Config, need: int, what: str, force: bool = True) -> int:
    """Refuse (InputError) `what` when its estimated `need` exceeds the limit (`force`: the command
    has a --force to name)."""
    limit = limit_bytes(cfg)
    if need > limit:
        raise InputError(
            f"{what} needs about {need / 2**30:.2f} GiB, more than the {limit / 2**30:.2f} GiB allowed "
            f"({'pass --force or ' if force else ''}raise compute.max_memory_gb)"
        )
    return need


MAX_RESULT_FILE_BYTES = 256 * 2**20
"""The largest result JSON file gradrank reads (its own are kilobytes to a few megabytes: arrays go
to .npz files); parsing takes several times the file's size in memory."""


def check_result_file(path, limit: int = MAX_RESULT_FILE_BYTES) -> int:
    """Refuse (InputError naming the file) a result file above `limit` bytes, before reading it."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return 0  # a missing file is the reader's error to name
    if size > limit:
        raise InputError(
            f"{path}: {size / 2**30:.2f} GiB, larger than any result file gradrank writes "
            f"(limit {limit / 2**20:.0f} MiB); not read"
        )
    return size


def sizes(cfg: Config, n: int | None = None, d: int | None = None, m: int | None = None) -> tuple[int, int, int, int]:
    """(n, d as the network sees it, m, test rows): from the arguments, else the input files' headers
    (data.path for source = file, model.weights), else the config keys."""

    dc, n_test = cfg.data, cfg.data.n_test
    if dc.source == "file" and dc.path and (n is None or d is None):
        shapes = declared_shapes(dc.path, ("X", "X_test"))
        X, Xt = shapes.get("X", ()), shapes.get("X_test", ())
        if len(X) == 2:
            n, d = n or X[0], d or X[1]
        n_test = Xt[0] if len(Xt) == 2 else 0
    if cfg.model.weights and m is None:
        W = declared_shapes(cfg.model.weights, ("W",)).get("W", ())
        m = W[0] if len(W) == 2 else None
    if dc.source == "patches":
        d = d or dc.patch_size**2
    n, d, m = n or dc.n, d or dc.d, m or cfg.model.width
    return n, (dc.embed_dim or d), m, n_test


def parts(cfg: Config, n: int | None = None, d: int | None = None, m: int | None = None) -> dict[str, tuple[str, int]]:
    """Each size key's share of the peak memory: label -> (the keys and values, bytes)."""
    n, d, m, n_test = sizes(cfg, n, d, m)
    dc, rc, tc, k = cfg.data, cfg.regularizer, cfg.train, cfg.analysis.top_k
    item = 8 if cfg.compute.dtype == "float64" else 4
    draws = rc.noise_draws if rc.input_noise and rc.noise_mode == "average" else 1  # K draws stacked: nK rows
    main = f"config keys 'data.n', 'data.d', 'model.width' = {n}, {d}, {m}" + (f" with {draws} noise draws" if draws > 1 else "")
    out = {"main": (main, estimate_bytes(n * draws, d, m, cfg.compute.dtype))}
    out["n_test"] = ("config key 'data.n_test' = " + str(n_test), (item + 8) * n_test * (d + m))
    if dc.target == "teacher":
        out["teacher"] = (f"config key 'data.teacher_width' = {dc.teacher_width}", 8 * dc.teacher_width * (d + n + n_test))
    if dc.embed_dim:
        out["embed"] = (f"config key 'data.embed_dim' = {dc.embed_dim}", 8 * dc.embed_dim * (2 * (n + n_test) + d))
    out["top_k"] = (f"config key 'analysis.top_k' = {k}", 4 * item * min(k, n + d + m) * (n + d + m))
    out["quadrature"] = (
        f"config keys 'analysis.quadrature', 'model.width' = {cfg.analysis.quadrature}, {m}",
        8 * 4 * cfg.analysis.quadrature * m,
    )
    if cfg.train.steps:
        kk = min(k, d, m)
        checkpoints = tc.steps // tc.checkpoint_every + 2
        records = tc.steps // tc.record_every + 2
        out["train"] = (
            f"config keys 'train.steps', 'train.record_every', 'train.checkpoint_every' = "
            f"{tc.steps}, {tc.record_every}, {tc.checkpoint_every}",
            8 * checkpoints * (3 * min(d, m) + 2 * d * kk + kk) + 8192 * records,
        )
    return out


def check_memory(cfg: Config, n: int | None = None, d: int | None = None, m: int | None = None, train: bool | None = None) -> int:
    """Refuse (InputError) a run estimated above compute.max_memory_gb (default: 80% of free RAM),
    naming the key whose size dominates. Training's record counts only for `train` (default: the
    config has steps, as `gradrank train` and a train sweep resolve it)."""
    p = parts(cfg, n, d, m)
    if train is False:
        p.pop("train", None)
    need = sum(b for _, b in p.values())
    limit = limit_bytes(cfg)
    if need > limit:
        label, _ = max(p.values(), key=lambda lb: lb[1])
        raise InputError(
            f"{label} need about {need / 2**30:.3g} GiB, "
            f"more than the {limit / 2**30:.3g} GiB allowed (pass --force or raise compute.max_memory_gb)"
        )
    return need


def check_generated(cfg: Config, train: bool = False) -> int:
    """check_memory for the built-in `twolayer` and `mlp` models of `layers`/`advise`, before their data
    is generated: data.n x data.d rows and the widest hidden layer (model.hidden, else model.width)."""
    return check_memory(cfg, m=max(cfg.model.hidden or [cfg.model.width]), train=train)


def check_files(cfg: Config, data_path=None, weights_path=None) -> int:
    """check_memory with the sizes read from the input files' headers (those of the config)."""
    return check_memory(cfg)


def blame(cfg: Config, part: str, message: str) -> InputError:
    """An out-of-range gradient's error naming the config key or file that made `part` (X: the
    data, y: the targets, f: the network output, G: only their product) too large."""
    dc, mc = cfg.data, cfg.model
    if part == "X":
        keys = [f"the data file {dc.path}" if dc.source == "file" else ("data.zeta" if dc.zeta is not None else "data.nu")]
        keys += ["regularizer.input_noise"] if cfg.regularizer.input_noise else []
    elif part == "y":
        keys = ["data.label_noise"] if dc.label_noise else []
        keys += [f"y in the data file {dc.path}"] if dc.source == "file" else ([] if keys else ["data.target", "data.link"])
    elif part == "f":
        keys = [f"the weights file {mc.weights}"] if mc.weights else ["model.planted"] if mc.planted else []
        keys += ["model.c"]
    else:
        keys = ["model.c", *([f"the weights file {mc.weights}"] if mc.weights else []), "the data's scale"]
    return InputError(f"{message}: reduce {' or '.join(keys)}")
