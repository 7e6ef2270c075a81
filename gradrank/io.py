"""Files: safe array loading (never unpickles), atomic writes, run directories, provenance."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from gradrank.errors import InputError


# ---------------------------------------------------------------------------- reading


def _numeric(name: str, key: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: array '{key}' must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise InputError(f"{name}: array '{key}' is empty")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: array '{key}' contains NaN or Inf")
    return arr


def load_arrays(path: Path, required=(), optional=()) -> dict[str, np.ndarray]:
    """Numeric, finite float64 arrays from .npz/.npy/.csv, with pickling disabled."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise InputError(f"{name}: no such file")
    suffix = path.suffix.lower()
    out: dict[str, np.ndarray] = {}
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for key in (*required, *optional):
                    if key in z.files:
                        out[key] = _numeric(name, key, z[key])
        elif suffix == ".npy":
            out["X"] = _numeric(name, "X", np.load(path, allow_pickle=False))
        elif suffix == ".csv":
            out["X"] = _numeric(name, "X", _read_csv(path))
        else:
            raise InputError(f"{name}: unsupported file type '{suffix}' (use .npz, .npy or .csv)")
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InputError(f"{name}: contains object arrays, which would need unpickling (refused)") from None
        raise InputError(f"{name}: unreadable array file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, MemoryError) as exc:
        raise InputError(f"{name}: unreadable or corrupt file ({exc.__class__.__name__})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(f"{name}: missing array '{missing[0]}'")
    return out


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers; one header row is skipped when present."""
    for skip in (0, 1):
        try:
            arr = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip, dtype=np.float64)
            return arr
        except ValueError:
            continue
    raise InputError(f"{path}: not a numeric CSV file")


# ---------------------------------------------------------------------------- writing


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it into place at the end.

    On any error (or interrupt) the temporary directory is removed and `final` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_name(text: str, fallback: str = "run") -> str:
    """A file-name component taken from user text: no separators, no '..', bounded length."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:64]
    return slug or fallback


# ---------------------------------------------------------------------------- provenance


def provenance(device: str, dtype: str, seed: int, timings: dict | None = None) -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("gradrank", "numpy", "scipy", "torch"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            from gradrank import __version__

            versions[pkg] = __version__ if pkg == "gradrank" else "absent"
    import torch

    return {
        "versions": versions,
        "platform": platform.platform(),
        "seed": seed,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "timings": timings or {},
    }
