"""Files: safe array loading (never unpickles), atomic writes, run directories, provenance."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata as md
import json
import math
import os
import platform
import re
import shutil
import stat
import tempfile
import time
import uuid
import zipfile
import zlib
from io import BytesIO
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npf

from gradrank._version import __version__
from gradrank.errors import InputError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


# ---------------------------------------------------------------------------- reading


def available_bytes() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _numeric(name: str, key: str, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: array '{key}' must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise InputError(f"{name}: array '{key}' is empty")
    if not np.isfinite(arr).all():
        raise InputError(f"{name}: array '{key}' contains NaN or Inf")
    return arr


def load_arrays(path: Path, required=(), optional=(), max_bytes: float | None = None, check=None) -> dict[str, np.ndarray]:
    """Numeric, finite float64 arrays from .npz/.npy/.csv, with pickling disabled.

    Array headers are read first (declared_shapes): object dtypes, shapes larger than the file
    holds, or sizes above max_bytes (default 80% of free memory; the float64 copy of a small dtype
    counted) are refused before anything is allocated. An .npz member is found by the name numpy
    would read (`X`, else `X.npy`), and read here, never by np.load's lookup. check(shapes), when
    given, sees every declared shape before any array is read (shapes that disagree are refused
    before a large member is loaded)."""
    path = Path(path)
    name = _show(path)
    suffix = path.suffix.lower()
    out: dict[str, np.ndarray] = {}
    with _reading(path):
        shapes = declared_shapes(path, (*required, *optional), max_bytes)
        missing = [k for k in required if k not in shapes]
        if missing:
            raise InputError(f"{name}: missing array '{missing[0]}'")
        if check is not None:
            check(shapes)
        if suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                members = _npz_members(zf, (*required, *optional))
                for key, info in members.items():
                    with zf.open(info) as fh:
                        out[key] = _numeric(name, key, np.lib.format.read_array(fh, allow_pickle=False))
        elif suffix == ".npy":
            out["X"] = _numeric(name, "X", np.load(path, allow_pickle=False))
        else:
            out["X"] = _numeric(name, "X", _read_csv(path))
    missing = [k for k in required if k not in out]
    if missing:
        raise InputError(f"{name}: missing array '{missing[0]}'")
    return out


def _npz_members(zf: zipfile.ZipFile, keys) -> dict[str, zipfile.ZipInfo]:
    """key -> the archive member numpy reads for it: the exact name first, else name + '.npy'."""
    members = {i.filename: i for i in zf.infolist()}
    return {k: members.get(k, members.get(f"{k}.npy")) for k in keys if k in members or f"{k}.npy" in members}


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _check_header(name: str, key: str, fh, total: int, numeric: bool = True) -> tuple[tuple, int]:
    """(shape, bytes of the float64 working copy plus the stored array) of an .npy stream whose
    header must declare a numeric dtype (when `numeric`) and no more data than the stream holds."""

    readers = {(1, 0): npf.read_array_header_1_0, (2, 0): npf.read_array_header_2_0, (3, 0): npf.read_array_header_2_0}
    try:
        version = npf.read_magic(fh)
    except ValueError:
        raise InputError(f"{name}: array '{key}' is not an .npy array") from None
    if version not in readers:
        raise InputError(f"{name}: array '{key}' has unsupported .npy format version {version}")
    try:
        shape, _, dtype = readers[version](fh, max_header_size=10000)
    except ValueError as exc:
        raise InputError(f"{name}: array '{key}' has an unreadable .npy header ({_one_line(exc)})") from None
    if numeric and dtype.hasobject:
        raise InputError(f"{name}: array '{key}' is an object array, which would need unpickling (refused)")
    if numeric and dtype.kind not in "biuf":
        raise InputError(f"{name}: array '{key}' must be numeric, got dtype {dtype}")
    if any(k < 0 for k in shape):
        raise InputError(f"{name}: array '{key}' declares a negative shape {shape}")
    count = math.prod(shape)
    declared, stored = count * dtype.itemsize, total - fh.tell()
    if declared > stored:
        raise InputError(
            f"{name}: array '{key}' declares shape {shape} ({declared} bytes) but the file holds "
            f"{stored} bytes (truncated or corrupt)"
        )
    return tuple(shape), declared + 8 * count  # the array as stored, and its float64 copy (8x a bool's)


def _check_total(name: str, sizes: dict[str, tuple[tuple, int]], max_bytes: float) -> None:
    need = sum(b for _, b in sizes.values())
    if need > max_bytes:
        what = ", ".join(f"'{k}' {s}" for k, (s, _) in sizes.items())
        raise InputError(
            f"{name}: array(s) {what} need {need / 2**30:.2f} GiB as float64, more than the {max_bytes / 2**30:.2f} GiB allowed"
        )


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn every way a user file can be missing, corrupt or unsafe into one InputError line."""

    name = _show(path)
    try:
        st = path.stat()
    except OSError:
        raise InputError(f"{name}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: no such file" if stat.S_ISDIR(st.st_mode) else f"{name}: not a regular file")
    if path.suffix.lower() not in (".npz", ".npy", ".csv"):
        raise InputError(f"{name}: unsupported file type '{_show(path.suffix)}' (use .npz, .npy or .csv)")
    try:
        yield
    except InputError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error):
        raise InputError(f"{name}: not a valid .npz (zip) archive, or truncated or corrupt") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InputError(f"{name}: contains object arrays, which would need unpickling (refused)") from None
        raise InputError(f"{name}: unreadable array file ({_one_line(exc)})") from None
    except (OSError, EOFError, KeyError, MemoryError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"{name}: unreadable or corrupt file ({exc.__class__.__name__})") from None


def declared_shapes(path: Path, keys=("X",), max_bytes: float | None = None) -> dict[str, tuple]:
    """Shapes the .npy/.npz headers (or a CSV's rows and columns) declare for `keys`, checked (see
    load_arrays) without loading. Every member of an .npz must be a well-formed .npy stream no
    larger than the archive says; the members read for `keys` count against max_bytes together."""
    path = Path(path)
    if max_bytes is None:
        max_bytes = 0.8 * available_bytes()
    name, suffix, sizes = _show(path), path.suffix.lower(), {}
    with _reading(path):
        if suffix == ".npy":
            with open(path, "rb") as fh:
                sizes["X"] = _check_header(name, "X", fh, path.stat().st_size)
        elif suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                wanted = {info.filename: k for k, info in _npz_members(zf, keys).items()}
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    key = wanted.get(info.filename)
                    with zf.open(info) as fh:
                        if key is not None:
                            sizes[key] = _check_header(name, key, fh, info.file_size)
                        elif fh.read(6) == b"\x93NUMPY":  # a member nobody reads: only its size is checked
                            fh.seek(0)
                            _check_header(name, info.filename, fh, info.file_size, numeric=False)
        else:
            size = path.stat().st_size
            if 4 * size > max_bytes:  # a number takes at least two characters: at most size/2 float64s
                raise InputError(f"{name}: {size / 2**30:.2f} GiB of CSV is more than fits in memory")
            rows, cols = _csv_shape(path)
            sizes["X"] = ((rows, cols), 8 * rows * cols)
        _check_total(name, sizes, max_bytes)
    return {k: s for k, (s, _) in sizes.items()}


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of every row: UTF-8 (a byte-order mark allowed), comma-separated, cells
    stripped; trailing blank lines end the file, a blank line between rows is an error."""

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader, blank = csv.reader(fh, strict=True), None
            for cells in reader:
                if not any(c.strip() for c in cells):
                    blank = blank or reader.line_num
                    continue
                if blank is not None:
                    raise InputError(f"{_show(path)}: row {blank} is empty (a CSV row per sample, no blank lines)")
                yield reader.line_num, [c.strip() for c in cells]
    except UnicodeDecodeError:
        raise InputError(f"{_show(path)}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise InputError(f"{_show(path)}: not a valid CSV file ({_one_line(exc)})") from None


def _is_header(cells: list[str]) -> bool:
    """A first row in which no cell is a number names the columns."""
    return not any(_NUMBER.fullmatch(c) for c in cells)


def _csv_shape(path: Path) -> tuple[int, int]:
    """(data rows, columns of the first data row) without parsing a number."""
    rows, cols = 0, 0
    for i, (_, cells) in enumerate(_csv_rows(path)):
        if i == 0 and _is_header(cells):
            continue
        rows, cols = rows + 1, cols or len(cells)
    return rows, cols


def _read_csv(path: Path) -> np.ndarray:
    """Comma-separated numbers, one row per sample; one header row (no number in it) is skipped.
    Nothing is dropped: a cell that is not a finite number, or a row with another number of
    columns than the first, is an error naming its row (line) and column."""
    rows, cols = _csv_shape(path)
    X = np.empty((rows, cols), dtype=np.float64)
    r = 0
    for i, (line, cells) in enumerate(_csv_rows(path)):
        if i == 0 and _is_header(cells):
            continue
        if len(cells) != cols:
            raise InputError(f"{_show(path)}: row {line} has {len(cells)} columns, the first data row {cols}")
        for c, cell in enumerate(cells):
            if not _NUMBER.fullmatch(cell):
                raise InputError(f"{_show(path)}: row {line}, column {c + 1}: {printable(repr(cell))[:40]} is not a number")
        X[r] = [float(cell) for cell in cells]
        if not np.isfinite(X[r]).all():
            c = int(np.argmin(np.isfinite(X[r])))
            raise InputError(f"{_show(path)}: row {line}, column {c + 1}: {cells[c]!r} overflows float64")
        r += 1
    if r != rows:  # the file changed between the two passes
        raise InputError(f"{_show(path)}: changed while it was read")
    return X


# ---------------------------------------------------------------------------- writing


def write_text(path: Path, text: str) -> None:
    """UTF-8; the undecodable bytes of a non-UTF-8 file name (surrogate escapes) appear as \\xNN."""
    write_bytes(path, text.encode("utf-8", "backslashreplace"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any file
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a full disk, a quota: the path named, nothing half-written
            raise InputError(f"{_show(path)}: cannot write ({exc.strerror or exc.__class__.__name__})") from None
        raise


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    write_bytes(path, npz_bytes(arrays))


MARKER = ".gradrank-output.json"
MARKER_FORMAT = "gradrank-output/1"


def sha256_file(path: Path, what: str = "file") -> str:
    """Content hash of a regular file (a FIFO, a device or a directory is refused, never read)."""

    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        raise InputError(f"{_show(path)}: no such {what}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{_show(path)}: not a regular file")
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise InputError(f"{_show(path)}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    return h.hexdigest()


def printable(text: str) -> str:
    """A message as one printable line: newlines and other control characters escaped, and bytes of
    a non-UTF-8 file name (surrogate escapes) shown as \\xNN, so the terminal prints it as it is."""
    out = []
    for c in text:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(c.encode("unicode_escape").decode("ascii"))
        elif 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def _show(path) -> str:
    """A path for a one-line message."""
    return printable(str(path))


def _listing(root: Path) -> dict[str, str] | None:
    """Every file under root (relative name -> sha256), the marker excluded; None when root holds
    anything but plain files and folders (a link, a FIFO, a socket)."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                return None
        for name in filenames:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MARKER:
                files[rel] = sha256_file(Path(dirpath) / name)
    return files


def _marker(root: Path) -> dict | None:
    try:
        m = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(m, dict) and m.get("format") == MARKER_FORMAT and isinstance(m.get("files"), dict)
    return m if ok else None


def seal(root: Path, kind: str) -> None:
    """Write root's ownership marker: the hash of every file gradrank put there."""

    old = _marker(root) or {}
    write_json(
        root / MARKER,
        {
            "format": MARKER_FORMAT,
            "kind": old.get("kind", kind),
            "id": old.get("id", uuid.uuid4().hex),
            "created": old.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            "files": _listing(root) or {},
        },
    )


def owned(root: Path) -> bool:
    """Whether root is a directory gradrank wrote and nobody changed since: its marker lists exactly
    the files it holds, with the same contents."""
    if root.is_symlink() or not root.is_dir():
        return False
    m = _marker(root)
    return m is not None and _listing(root) == m["files"]


def _refuse_cwd(final: Path) -> None:
    cwd = Path.cwd().absolute()
    if final == cwd or final in cwd.parents:
        raise InputError(f"{_show(final)}: is the current directory or one above it (refusing to replace it)")


def check_output_dir(final: Path) -> Path:
    """The absolute output directory, refused (exit 2) unless it is new, empty or gradrank's own."""
    if str(final) == "":
        raise InputError("output path is empty (an unset variable?)")
    final = Path(os.path.abspath(final))
    _refuse_cwd(final)
    if final.is_symlink():
        raise InputError(f"{_show(final)}: is a symbolic link (refusing to replace it)")
    if final.exists():
        if not final.is_dir():
            raise InputError(f"{_show(final)}: exists and is not a directory (refusing to replace it)")
        if any(final.iterdir()) and not owned(final):
            raise InputError(
                f"{_show(final)}: exists and is not a gradrank output directory, or holds files "
                f"gradrank did not write (refusing to replace it)"
            )
    return final


@contextlib.contextmanager
def staged_dir(final: Path, kind: str = "run") -> Iterator[Path]:
    """Build a directory under a temporary sibling name, seal it, and rename it into place.

    `final` may only be new, empty or a directory gradrank wrote and nobody changed (`owned`).
    On any error (or interrupt) the temporary directory is removed and `final` is untouched."""
    final = check_output_dir(final)
    for up in final.parents:
        if up.exists() or up.is_symlink():
            if not up.is_dir():
                raise InputError(f"{_show(up)}: is not a directory (the output {_show(final)} cannot be created)")
            break
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name[:100]}.tmp-"))
    except OSError as exc:
        raise InputError(
            f"{_show(final)}: cannot create the output directory ({exc.strerror or exc.__class__.__name__})"
        ) from None
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        seal(tmp, kind)  # ours from the start: a report rendered into it may add its files
        yield tmp
        seal(tmp, kind)
        if final.exists():
            check_output_dir(final)  # nobody wrote there while the run computed
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name[:100]}.old-"))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_files(root: Path, files: dict[str, bytes], kind: str = "report") -> list[Path]:
    """Write files into a directory gradrank owns (or a new or empty one), each atomically; a file
    already there is replaced only if gradrank wrote it (its hash is in the marker). A sweep
    store (its manifest) counts as gradrank's: the files added to it are recorded in a marker of
    their own, so a file there that gradrank did not write (no marker, or not in it) is never replaced."""
    if str(root) == "":
        raise InputError("output path is empty (an unset variable?)")
    root = Path(os.path.abspath(root))
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise InputError(f"{_show(root)}: is not a directory")
    m = _marker(root) if root.is_dir() else None
    mine = (m or {}).get("files", {})
    sweep = (root / "sweep.json").is_file() and m is None
    for name in files:
        p = root / name
        if p.is_symlink() or (p.exists() and (not p.is_file() or mine.get(name) != sha256_file(p))):
            raise InputError(f"{_show(p)}: exists and was not written by gradrank (refusing to replace it)")
    if m is None and not sweep and root.is_dir() and any(root.iterdir()):
        raise InputError(f"{_show(root)}: exists and is not a gradrank output directory (refusing to write into it)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        written = []
        for name, data in files.items():
            write_bytes(root / name, data)
            written.append(root / name)
    except OSError as exc:
        raise InputError(f"{_show(root)}: cannot write ({exc.strerror or exc.__class__.__name__})") from None
    old = _marker(root)
    files_now = {**(old or {}).get("files", {}), **{n: sha256_bytes(d) for n, d in files.items()}}
    write_json(root / MARKER, {**(old or {"format": MARKER_FORMAT, "kind": "sweep" if sweep else kind}), "files": files_now})
    return written


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_new_file(path: Path) -> Path:
    """An output file that does not exist yet (exit 2 otherwise)."""
    if str(path) == "":
        raise InputError("output path is empty (an unset variable?)")
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise InputError(f"{_show(path)}: exists (refusing to overwrite it)")
    return path


def write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (never overwrite): staged, then hard-linked into place."""
    path = check_new_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
        try:
            os.chmod(tmp, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except FileExistsError:
        raise InputError(f"{_show(path)}: exists (refusing to overwrite it)") from None
    except OSError as exc:
        raise InputError(f"{_show(path)}: cannot write ({exc.strerror or exc.__class__.__name__})") from None


def safe_name(text: str, fallback: str = "run") -> str:
    """A file-name component taken from user text: no separators, no '..', bounded length."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:64]
    return slug or fallback


# ---------------------------------------------------------------------------- provenance


def versions(extra: tuple[str, ...] = ()) -> dict:
    """Python's and the packages' versions from their metadata (imports none of them); gradrank's own
    from the source tree when it is not installed."""

    out = {"python": platform.python_version()}
    for pkg in ("gradrank", "numpy", "scipy", "torch", *extra):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = __version__ if pkg == "gradrank" else "absent"
    return out


def provenance(device: str, dtype: str, seed: int, timings: dict | None = None) -> dict:
    """Versions, platform, seed, device and thread count of a run (every artifact carries them)."""
    import torch

    return {
        "versions": versions(),
        "platform": platform.platform(),
        "seed": seed,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "timings": timings or {},
    }
