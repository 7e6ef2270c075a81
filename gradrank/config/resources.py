"""Resource guard: estimate a run's peak memory before starting it."""

from __future__ import annotations

from gradrank.config import Config
from gradrank.errors import InputError
from gradrank.io import available_bytes


def estimate_bytes(n: int, d: int, m: int, dtype: str) -> int:
    """Peak working set of one analysis: X, X_B (n x d, twice for casts), five n x m factors
    (pre-activations, sigma, Sigma', D, D_perp) and four d x m matrices (W; and G, a penalty, a copy
    or training's W_0 and optimiser state where they are formed: the default analysis forms none)."""
    item = 8 if dtype == "float64" else 4
    return item * (4 * n * d + 5 * n * m + 4 * d * m + 2 * min(n, d) ** 2) + 8 * 2 * n * d


def limit_bytes(cfg: Config) -> float:
    """compute.max_memory_gb, or 80% of the memory available now."""
    return cfg.compute.max_memory_gb * 2**30 if cfg.compute.max_memory_gb else 0.8 * available_bytes()


def check_bytes(cfg: Config, need: int, what: str) -> int:
    """Refuse (InputError) `what` when its estimated `need` exceeds the limit."""
    limit = limit_bytes(cfg)
    if need > limit:
        raise InputError(
            f"{what} needs about {need / 2**30:.2f} GiB, more than the {limit / 2**30:.2f} GiB allowed "
            "(pass --force or raise compute.max_memory_gb)"
        )
    return need


def check_memory(cfg: Config, n: int | None = None, d: int | None = None, m: int | None = None) -> int:
    """Refuse (InputError) a run estimated above compute.max_memory_gb (default: 80% of free RAM)."""
    n = n or cfg.data.n
    d = d or cfg.data.d
    m = m or cfg.model.width
    rc = cfg.regularizer
    draws = rc.noise_draws if rc.input_noise and rc.noise_mode == "average" else 1  # K draws stacked: nK rows
    need = estimate_bytes(n * draws, d, m, cfg.compute.dtype)
    limit = limit_bytes(cfg)
    if need > limit:
        raise InputError(
            f"config keys 'data.n', 'data.d', 'model.width' = {n}, {d}, {m}"
            + (f" with {draws} noise draws" if draws > 1 else "")
            + f" need about {need / 2**30:.1f} GiB, "
            f"more than the {limit / 2**30:.1f} GiB allowed (pass --force or raise compute.max_memory_gb)"
        )
    return need


def check_files(cfg: Config, data_path, weights_path=None) -> int:
    """check_memory for sizes read from the array headers of a data file (and weights file)."""
    from gradrank.io import declared_shapes

    X = declared_shapes(data_path, ("X",)).get("X", ())
    W = declared_shapes(weights_path, ("W",)).get("W", ()) if weights_path else ()
    n, d = X if len(X) == 2 else (None, None)
    return check_memory(cfg, n, d, W[0] if len(W) == 2 else None)
