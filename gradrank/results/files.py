"""The files of a result directory: the one writer `write_dir` (every command's directory, written
whole or not at all) and the one reader of its JSON files, `read_json` / `read_record` (a foreign,
damaged or crafted file is an InputError naming the file and the field, exit 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from gradrank import io
from gradrank.config import Config, to_toml
from gradrank.config.resources import check_result_file
from gradrank.core.records import SCHEMA, check_schema
from gradrank.errors import InputError


def write_dir(
    target: Path, kind: str, cfg: Config, json_files: dict[str, dict], text_files: dict[str, str], write_more=None
) -> Path:
    """The one run-directory writer (every command's): config.toml, JSON files (schema first) and text
    files staged together and moved into place, all or nothing, where gradrank owns the target
    (`io.staged_dir`). `write_more(tmp)` adds binary files."""
    with io.staged_dir(Path(target), kind) as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        for name, doc in json_files.items():
            io.write_json(tmp / name, {"schema": SCHEMA, **doc})
        for name, text in text_files.items():
            io.write_text(tmp / name, text)
        if write_more is not None:
            write_more(tmp)
    return Path(target)


MAIN_FILES = {
    "scaling": "scaling.json",
    "regpath": "path.json",
    "onestep": "onestep.json",
    "layers": "layers.json",
    "advise": "advice.json",
    "analyze": "metrics.json",  # a training run's too (its "kind" says which)
    "watch": "watch.json",
}
"""Each result kind's main JSON file, in the order a directory is recognised by them."""


def kind_of_dir(directory: Path) -> str:
    """The kind of a result directory, from the first main file it holds."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such directory")
    for kind, name in MAIN_FILES.items():
        if (directory / name).is_file():
            return kind
    raise InputError(f"{directory}: not a gradrank result directory (none of {', '.join(MAIN_FILES.values())})")


def provenance(cfg: Config, timings: dict | None) -> dict:
    return io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, timings)


def read_json(path: Path, what: str = "result directory") -> dict:
    """A gradrank JSON file as a dict of the current schema (exit 2 naming the file otherwise; a file
    nested too deeply for Python's parser is refused too)."""
    path = Path(path)
    check_result_file(path)  # a huge file is refused before it is read
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{path.parent}: not a gradrank {what} (no readable {path.name})") from None
    except RecursionError:
        raise InputError(f"{path}: field '{_deep_field(path.read_text(encoding='utf-8'))}' is nested too deeply") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a gradrank file (expected a JSON object)")
    check_schema(doc, str(path))
    return doc


def read_record(path: Path, record, what: str = "result directory"):
    """The record stored in the JSON file at `path` (`record.from_dict`, naming the file and field)."""
    doc = read_json(path, what)
    try:
        return record.from_dict(doc, str(path))
    except RecursionError:
        raise InputError(f"{path}: field '{_deep_field(path.read_text(encoding='utf-8'))}' is nested too deeply") from None


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _deep_field(text: str, depth: int = 64) -> str:
    """The dotted name of the field of JSON `text` holding a value nested deeper than `depth` (gradrank
    writes fewer than 10 levels), down to its first list, for the message refusing a file Python's
    parser cannot read."""
    path: list[str | None] = []  # the key at each open level (None: a list)
    for tok in _TOKEN.finditer(text):
        t = tok.group()
        if t in "[{":
            if len(path) >= depth:
                break
            path.append(None if t == "[" else "")
        elif t in "]}" and path:
            path.pop()
        elif t.endswith(":") and path:
            path[-1] = json.loads(t[:-1].rstrip())
    keys = path[: path.index(None)] if None in path else path
    return ".".join(keys) or "(top level)"


def read_arrays(path: Path) -> dict:
    """The numeric arrays of an .npz file, never unpickled; {} when there is none."""
    if not Path(path).is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if z[k].dtype.kind in "biuf"}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"{path}: unreadable array file ({exc.__class__.__name__})") from None
