"""Golden outputs: pin today's numbers of the gradrank command line, and check a later tree against them.

    python scripts/golden.py --pin                 # rerun every case, rewrite tests/golden/<case>.json
    python scripts/golden.py --check               # rerun every case, compare with the pinned files
    python scripts/golden.py --check --quick       # the cheap subset (tests/integration/test_golden.py)
    python scripts/golden.py --check --only analyze_default --only layers_two_layer
    python scripts/golden.py --list                # the cases, their commands, which are quick

Purpose: a refactor that moves every module must leave every number the way it was. The cases drive
gradrank only through its command line (`sys.executable -m gradrank ...` in a subprocess, with the
checkout's root as the working directory and first on PYTHONPATH, `--no-report` where the command
accepts it, `-o` into a temporary directory); nothing here imports gradrank, so the package's internal
layout may change freely. What each case writes (JSON, CSV, TOML, the npz arrays' summaries) is stored
as one JSON file per case under tests/golden/, with the exact command lines that made it ("{tmp}" is the
case's temporary directory; "python" is sys.executable). `decompose` has no --no-report: its cases
pass `--set output.report=false`, the config's own switch. The subprocesses run with OMP_NUM_THREADS =
MKL_NUM_THREADS = 2 (gradrank's threads, hence the order of torch's parallel reductions, fixed whatever
the machine) and PYTHONHASHSEED = 0. Golden numbers are pinned on one machine: a different CPU, BLAS,
torch or numpy build may round differently, so check on the machine (and environment) that pinned.

Stored values
  *.json            as written (NaN, Infinity kept: gradrank writes them)
  *.csv             a list of rows, {column: value}; a cell is an int when it reads as one, else a float
                    when it reads as one ("nan" included), else the string
  config.toml       parsed (tomllib)
  *.npz             a list with one entry per array: name, dtype, shape, and for numeric arrays the
                    2-norm of all its entries ("norm") and its first 8 entries in C order ("head");
                    the arrays themselves are not stored
  .gradrank-output.json   the output marker as written (kind, and every file's sha256)
  run/              the sorted names of the files in the directory (what the command wrote)
Every string is stored with the case's temporary directory replaced by "<TMP>" and the checkout's root
by "<REPO>" (absolute paths of input files, e.g. data.path and layers.model), so those fields are
compared, not skipped.

Comparison (field by field, recursively)
  dicts             the same keys (a missing or an extra key is a difference), then every value
  lists             the same length, then element by element (by position)
  str, int, bool, None   exactly, and of the same type (an int where a float was is a difference)
  float             NaN agrees with NaN and an infinity with the same infinity. Otherwise, with
                    scale = the largest |float| of the record that holds the value (in the golden file)
                    and noise = NOISE * scale (NOISE = 1e-13):
                      - if |golden| < noise or |new| < noise, the value is rounding noise (an identity
                        error of 1e-15, a spectral residual, a singular value at the bottom of a
                        rank-deficient spectrum): they agree when |golden - new| <= noise (atol);
                      - else they agree when |golden - new| <= RTOL * max(|golden|, |new|), RTOL = 1e-12.
                    The relative error printed is |golden - new| / max(|golden|, |new|, 1e-300).
  record            the file's top-level value, and every dict that is an element of a list (a row of
                    a CSV, a layer of layers.json, an entry of advice.json's energy table, an array of
                    an npz summary); its scale counts every float under it that is not skipped.
  paths             printed as file:key.key[index]..., an element with a "name" (a layer, an npz array)
                    as [index:name], e.g. run/layers.json:layers[1:readout].norms.S1

Skipped fields: they vary from run to run or from checkout to checkout (found by running every case twice
with --check --no-skip, and once more from a second checkout). Their values are stored, never compared:
  - wall-clock seconds: provenance.json's timings, the provenance copied into metrics.json, layers.json,
    onestep.json and advice.json (provenance.timings), layers.json's and onestep.json's timings,
    advice.json's timing, layers.*.refresh.{topk,svd,step}_seconds, layers.*.refresh.per_interval.*.svd_share
    (a ratio of seconds) and validation.runs.*.seconds;
  - versions and host: provenance's versions and platform (in provenance.json and the copies);
  - the output marker .gradrank-output.json: id and created (new every run), files.* (the sha256 of every
    file, which follow the timings, absolute paths and report dates inside them; the files themselves are
    compared field by field, and the names of the files written through the "run/" listing);
  - config_hash (metrics.json, layers.json, provenance.json) of the cases with an input file (decompose,
    decompose_weights, layers_two_layer, layers_three_layer): the input's absolute path is hashed into it.
  The run directory's own name appears in no output (the cases all write to {tmp}/run anyway).
See SKIP and PATH_HASHED below for the exact patterns.

Exit codes: 0 every case agrees (--check) or was pinned (--pin); 1 a difference, a failed command or a
missing golden file (every difference is listed: case, file, path in the JSON, both values, the
relative error); 2 bad usage.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = None

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
SCHEMA = 1

RTOL = 1e-12
NOISE = 1e-13
FLOOR = 1e-300
HEAD = 8  # leading entries kept of every npz array

# the subprocess environment: gradrank's thread count fixed (torch's reductions split the same way)
ENV = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}

# Fields that vary from run to run, as (file pattern, path pattern): a path is the keys and list indices
# from the file's top, joined by "."; "*" matches one step (a key or an index), "**" any number of steps.
# Found by running every case twice (--check --no-skip) and once more from a second checkout.
SKIP: tuple[tuple[str, str], ...] = (
    # wall-clock seconds, and a share computed from them
    ("provenance.json", "timings"),
    ("*.json", "provenance.timings"),  # the provenance copied into metrics.json, layers.json, onestep.json, advice.json
    ("layers.json", "timings"),
    ("onestep.json", "timings"),
    ("advice.json", "timing"),
    ("advice.json", "layers.*.refresh.topk_seconds"),
    ("advice.json", "layers.*.refresh.svd_seconds"),
    ("advice.json", "layers.*.refresh.step_seconds"),
    ("advice.json", "layers.*.refresh.per_interval.*.svd_share"),  # svd_seconds over the step time
    ("advice.json", "validation.runs.*.seconds"),
    # the versions (python, gradrank, numpy, scipy, torch) and the platform string (host, kernel)
    ("provenance.json", "versions"),
    ("provenance.json", "platform"),
    ("*.json", "provenance.versions"),
    ("*.json", "provenance.platform"),
    # the output marker: a fresh id and its creation date every run, and the sha256 of every file, which
    # changes with the timings, the absolute paths and the report's date inside the files (the files
    # themselves are compared field by field, and the names of the files written by the "run/" listing)
    (".gradrank-output.json", "id"),
    (".gradrank-output.json", "created"),
    (".gradrank-output.json", "files.*"),
)

# A case with an input file (data.path of decompose, the user's model file of layers --model): the file's
# absolute path is part of the config hash (README, "What gradrank writes"), and it lies in the case's
# temporary directory or in the checkout, so the hash changes with the run and with the checkout.
PATH_HASHED: tuple[tuple[str, str], ...] = (
    ("metrics.json", "config_hash"),
    ("layers.json", "config_hash"),
    ("provenance.json", "config_hash"),
)


@dataclass(frozen=True)
class Case:
    name: str
    about: str
    commands: tuple[str, ...]  # gradrank's arguments, shell-quoted; "{tmp}" is the case's temporary directory
    outputs: tuple[str, ...]  # files under {tmp} to store ("dir/": the names of the files in dir)
    quick: bool = False
    skip: tuple[tuple[str, str], ...] = ()  # this case's own skipped fields

    def argv(self, tmp: str) -> list[list[str]]:
        return [[sys.executable, "-m", "gradrank", *(a.replace("{tmp}", tmp) for a in shlex.split(c))] for c in self.commands]

    def command_lines(self) -> list[str]:
        return [f"python -m gradrank {c}" for c in self.commands]


SMALL = "--set data.n=300 --set data.d=400 --set model.width=500"  # the Figure 1 ratios, smaller
RUN = "-o {tmp}/run"
RUN_FILES = ("run/", "run/.gradrank-output.json", "run/provenance.json", "run/config.toml")  # "run/": its file names
ANALYZED = (*RUN_FILES, "run/metrics.json", "run/arrays.npz")
LAYERS = (*RUN_FILES, "run/layers.json", "run/layers.csv", "run/spectra.npz")
TRAINED = (*RUN_FILES, "run/metrics.json", "run/trajectory.csv", "run/arrays.npz", "run/checkpoints.npz", "run/weights.npz")
ONESTEP = (*RUN_FILES, "run/metrics.json", "run/onestep.json", "run/onestep.csv")
ADVISED = (*RUN_FILES, "run/advice.json")
NO_REPORT = "--set output.report=false"  # decompose has no --no-report: the config's own switch


def _analyze(config: str, quick: bool = False) -> Case:
    return Case(
        f"analyze_{config}",
        f"gradrank analyze on sample_configs/{config}.toml at its own size",
        (f"analyze sample_configs/{config}.toml --no-report {RUN}",),
        ANALYZED,
        quick=quick,
    )


CASES: tuple[Case, ...] = (
    _analyze("default", quick=True),
    _analyze("fig1_isotropic"),
    _analyze("fig1_planted"),
    _analyze("fig2_activations"),
    _analyze("mf_vs_ntk"),
    _analyze("regularizers"),
    _analyze("real_digits"),
    _analyze("real_mnist1d"),
    _analyze("real_patches"),
    Case(
        "decompose",
        "gradrank generate (n=300, d=400), then gradrank decompose of that file without centring (its q kept)",
        (
            f"generate -o {{tmp}}/data.npz {SMALL}",
            f"decompose --data {{tmp}}/data.npz --set data.center=false --set model.width=500 {NO_REPORT} {RUN}",
        ),
        ("data.npz", *ANALYZED),
        quick=True,
        skip=PATH_HASHED,
    ),
    Case(
        "decompose_weights",
        "gradrank generate (n=300, d=400, nu=0.3), 15 steps of gradrank train on the same setting, then "
        "gradrank decompose of the file with the trained weights, centred (the default for files)",
        (
            f"generate -o {{tmp}}/data.npz {SMALL} --set data.nu=0.3",
            f"train {SMALL} --set data.nu=0.3 --set train.steps=15 --set train.record_every=5 --no-report -o {{tmp}}/train",
            f"decompose --data {{tmp}}/data.npz --weights {{tmp}}/train/weights.npz --set model.width=500 {NO_REPORT} {RUN}",
        ),
        ("train/weights.npz", *ANALYZED),
        skip=PATH_HASHED,
    ),
    Case(
        "layers_deep_mlp",
        "gradrank layers on sample_configs/deep_mlp.toml (the built-in MLP, six layers, the paper's size)",
        (f"layers sample_configs/deep_mlp.toml --no-report {RUN}",),
        LAYERS,
    ),
    Case(
        "layers_two_layer",
        "gradrank layers on the user model file tests/golden/models/two_layer.py (tanh, one output, MSE)",
        (f"layers --model tests/golden/models/two_layer.py:build --no-report {RUN}",),
        LAYERS,
        quick=True,
        skip=PATH_HASHED,
    ),
    Case(
        "layers_three_layer",
        "gradrank layers on the user model file tests/golden/models/three_layer.py (ReLU, 3 classes, two batches)",
        (f"layers --model tests/golden/models/three_layer.py:build --no-report {RUN}",),
        LAYERS,
        skip=PATH_HASHED,
    ),
    Case(
        "train_gd",
        "gradrank train on sample_configs/training.toml (full-batch GD at the paper's size), 20 of its 300 steps",
        (
            "train sample_configs/training.toml --set train.steps=20 --set train.record_every=5 "
            f"--set train.checkpoint_every=10 --no-report {RUN}",
        ),
        TRAINED,
    ),
    Case(
        "train_sgd",
        "gradrank train with SGD (batches of 64) at n=300, d=400, m=500, nu=0.3, a test set of 100, 30 steps",
        (
            f"train {SMALL} --set data.nu=0.3 --set data.n_test=100 --set train.optimizer=sgd --set train.batch_size=64 "
            f"--set train.steps=30 --set train.record_every=5 --set train.checkpoint_every=15 --no-report {RUN}",
        ),
        TRAINED,
    ),
    Case(
        "train_adam",
        "gradrank train with Adam (lr 0.001), outer weights trained, weight decay 0.01, n=300, d=400, m=500, 30 steps",
        (
            f"train {SMALL} --set train.optimizer=adam --set train.lr=0.001 --set train.train_outer=true "
            "--set regularizer.weight_decay=0.01 --set train.steps=30 --set train.record_every=10 "
            f"--set train.checkpoint_every=15 --no-report {RUN}",
        ),
        TRAINED,
    ),
    Case(
        "advise",
        "gradrank advise on sample_configs/advise.toml at n=300, d=400, m=500, 20 steps, ranks 1,2,4,8, "
        "intervals 5,10,20, validated (AdamW, GaLore)",
        (
            f"advise sample_configs/advise.toml {SMALL} --set train.steps=20 --ranks 1,2,4,8 --intervals 5,10,20 --no-report {RUN}",
        ),
        ADVISED,
    ),
    Case(
        "advise_mlp",
        "gradrank advise on sample_configs/advise_mlp.toml (the built-in 4-layer MLP) at n=200, d=300, width 128, "
        "12 steps, ranks 1,2,4, intervals 4,12, validated",
        (
            "advise sample_configs/advise_mlp.toml --set data.n=200 --set data.d=300 --set model.width=128 "
            f"--set train.steps=12 --ranks 1,2,4 --intervals 4,12 --no-report {RUN}",
        ),
        ADVISED,
    ),
    Case(
        "onestep",
        "gradrank onestep on sample_configs/onestep_single_index.toml at n=300, d=400, m=500, n_test=300, eta 0,1,4,16, 2 seeds",
        (
            f"onestep sample_configs/onestep_single_index.toml {SMALL} --set data.n_test=300 --eta 0,1,4,16 --seeds 2 "
            f"--no-report {RUN}",
        ),
        ONESTEP,
    ),
    Case(
        "onestep_multi_steps",
        "gradrank onestep on sample_configs/onestep_multi_index.toml at n=300, d=400, m=500, n_test=300, "
        "2 steps, eta 0,4,16, a fixed ridge 0.01",
        (
            f"onestep sample_configs/onestep_multi_index.toml {SMALL} --set data.n_test=300 --steps 2 --eta 0,4,16 "
            f"--ridge 0.01 --no-report {RUN}",
        ),
        ONESTEP,
    ),
)

BY_NAME = {c.name: c for c in CASES}


# ---------------------------------------------------------------------------------------------- reading


def _cell(text: str):
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _read_npz(path: Path) -> list[dict]:
    out = []
    with np.load(path, allow_pickle=False) as z:
        for name in sorted(z.files):
            a = z[name]
            entry = {"name": name, "dtype": str(a.dtype), "shape": list(a.shape)}
            if a.dtype.kind in "biuf":
                flat = a.astype(np.float64).ravel()
                entry["norm"] = float(np.linalg.norm(flat))
                entry["head"] = [float(v) for v in flat[:HEAD]]
            out.append(entry)
    return out


def _read_toml(path: Path):
    if tomllib is None:  # pragma: no cover - Python 3.10: the text, line by line
        return path.read_text().splitlines()
    return tomllib.loads(path.read_text())


def read_output(path: Path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".toml":
        return _read_toml(path)
    raise ValueError(f"no reader for {path.name}")


def _relocate(value, tmp: str):
    """Every string with the temporary directory as <TMP> and the checkout's root as <REPO>."""
    if isinstance(value, str):
        return value.replace(tmp, "<TMP>").replace(str(REPO), "<REPO>")
    if isinstance(value, list):
        return [_relocate(v, tmp) for v in value]
    if isinstance(value, dict):
        return {_relocate(k, tmp): _relocate(v, tmp) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------- running


class CommandFailed(Exception):
    pass


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_case(case: Case, keep: Path | None = None) -> tuple[dict, tuple[float, float]]:
    """Run a case's commands in a fresh temporary directory: ({output: value}, (wall, cpu) seconds of the commands)."""
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory(prefix=f"golden-{case.name}-") as tmp:
        tmp = str(Path(tmp).resolve())
        start, cpu = time.perf_counter(), _child_cpu()
        for argv in case.argv(tmp):
            proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                raise CommandFailed(f"exit {proc.returncode}: {shlex.join(argv)}\n    " + "\n    ".join(tail))
        seconds = (time.perf_counter() - start, _child_cpu() - cpu)
        outputs = {}
        for rel in case.outputs:
            path = Path(tmp) / rel
            if rel.endswith("/"):  # a directory: the names of the files in it
                outputs[rel] = sorted(p.name for p in path.iterdir()) if path.is_dir() else None
                continue
            if not path.is_file():
                raise CommandFailed(f"{rel} was not written")
            outputs[rel] = _relocate(read_output(path), tmp)
        if keep is not None:
            shutil.copytree(tmp, keep / case.name, dirs_exist_ok=True)
    return outputs, seconds


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def golden_path(case: Case) -> Path:
    return GOLDEN / f"{case.name}.json"


def pin(case: Case, keep: Path | None) -> tuple[float, float]:
    outputs, seconds = run_case(case, keep)
    doc = {
        "schema": SCHEMA,
        "case": case.name,
        "about": case.about,
        "commands": case.command_lines(),
        "cwd": "the checkout's root; PYTHONPATH=<REPO>",
        "env": ENV,
        "quick": case.quick,
        "pinned_on": {  # informational, never compared
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpu": _cpu(),
            "wall_seconds": round(seconds[0], 2),
            "cpu_seconds": round(seconds[1], 2),
        },
        "outputs": outputs,
    }
    GOLDEN.mkdir(parents=True, exist_ok=True)
    golden_path(case).write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return seconds


# ------------------------------------------------------------------------------------------- comparing


def _match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and (head == "*" or head == path[0]) and _match(rest, path[1:])


def _file_matches(pattern: str, file: str) -> bool:
    name = file.rsplit("/", 1)[-1]
    if pattern.startswith("*"):
        return name.endswith(pattern[1:])
    return name == pattern


class Skipper:
    def __init__(self, rules: tuple[tuple[str, str], ...]):
        self.rules = [(f, p.split(".")) for f, p in rules]

    def __call__(self, file: str, path: list[str]) -> bool:
        return any(_file_matches(f, file) and _match(p, path) for f, p in self.rules)


def _scale(value, file: str, path: list[str], skip: Skipper) -> float:
    """The largest |float| under value (skipped fields left out)."""
    if skip(file, path):
        return 0.0
    if isinstance(value, float):
        return abs(value) if math.isfinite(value) else 0.0
    if isinstance(value, dict):
        return max((_scale(v, file, [*path, str(k)], skip) for k, v in value.items()), default=0.0)
    if isinstance(value, list):
        return max((_scale(v, file, [*path, str(i)], skip) for i, v in enumerate(value)), default=0.0)
    return 0.0


def _show(path: list[str]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if re.match(r"\d+(:|$)", p) else (f".{p}" if out else p)
    return out or "(top)"


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def compare(golden, new, file: str, skip: Skipper, path: list[str] | None = None, scale: float | None = None) -> list[str]:
    """Every difference between golden and new, one line each."""
    path = path or []
    if skip(file, path):
        return []
    if scale is None:  # a record: the file's top, or a dict inside a list
        scale = max(_scale(golden, file, path, skip), FLOOR)
    where = f"{file}:{_show(path)}"
    if isinstance(golden, dict) and isinstance(new, dict):
        diffs = []
        for k in golden:
            if k not in new and not skip(file, [*path, k]):
                diffs.append(f"{where}: key {k!r} missing (golden {_short(golden[k])})")
        for k in new:
            if k not in golden and not skip(file, [*path, k]):
                diffs.append(f"{where}: new key {k!r} (new {_short(new[k])})")
        for k in golden:
            if k in new:
                diffs += compare(golden[k], new[k], file, skip, [*path, k], scale)
        return diffs
    if isinstance(golden, list) and isinstance(new, list):
        diffs = []
        if len(golden) != len(new):
            diffs.append(f"{where}: length golden={len(golden)} new={len(new)}")
        for i, (g, n) in enumerate(zip(golden, new)):
            step = f"{i}:{g['name']}" if isinstance(g, dict) and isinstance(g.get("name"), str) else str(i)  # a layer, an array
            diffs += compare(g, n, file, skip, [*path, step], None if isinstance(g, dict) else scale)
        return diffs
    if _type(golden) != _type(new):
        return [f"{where}: type golden={_type(golden)} {_short(golden)} new={_type(new)} {_short(new)}"]
    if isinstance(golden, float):
        if golden == new or (math.isnan(golden) and math.isnan(new)):
            return []
        rel = abs(golden - new) / max(abs(golden), abs(new), FLOOR) if math.isfinite(golden) and math.isfinite(new) else math.inf
        noise = NOISE * scale
        if math.isfinite(rel):
            if min(abs(golden), abs(new)) < noise:
                if abs(golden - new) <= noise:
                    return []
            elif rel <= RTOL:
                return []
        return [f"{where}: golden={golden!r} new={new!r} rel={rel:.3g} (record scale {scale:.3g})"]
    if golden != new:
        return [f"{where}: golden={_short(golden)} new={_short(new)}"]
    return []


def check(case: Case, keep: Path | None, no_skip: bool) -> tuple[list[str], tuple[float, float]]:
    path = golden_path(case)
    if not path.is_file():
        return [f"no golden file {path.relative_to(REPO)} (run --pin)"], (0.0, 0.0)
    doc = json.loads(path.read_text())
    diffs = []
    if doc.get("commands") != case.command_lines():
        diffs.append(f"commands: golden={doc.get('commands')} now={case.command_lines()} (the case changed: pin again)")
    outputs, seconds = run_case(case, keep)
    skip = Skipper(() if no_skip else SKIP + case.skip)
    golden = doc.get("outputs", {})
    for rel in sorted(set(golden) | set(outputs)):
        if rel not in outputs:
            diffs.append(f"{rel}: in the golden file, not in this case's outputs")
        elif rel not in golden:
            diffs.append(f"{rel}: not in the golden file (pin again)")
        else:
            diffs += compare(golden[rel], outputs[rel], rel, skip)
    return diffs, seconds


# ------------------------------------------------------------------------------------------------- main


def _secs(seconds: tuple[float, float]) -> str:
    return f"{seconds[0]:6.1f} s wall {seconds[1]:6.1f} s cpu"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pin", action="store_true", help="rerun the cases and rewrite their golden files")
    mode.add_argument("--check", action="store_true", help="rerun the cases and compare with the golden files")
    mode.add_argument("--list", action="store_true", help="list the cases and their commands")
    ap.add_argument("--only", action="append", metavar="NAME", help="run this case only (repeatable)")
    ap.add_argument("--quick", action="store_true", help="only the cheap cases (the pytest subset)")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="copy every case's outputs to DIR/<case>")
    ap.add_argument("--no-skip", action="store_true", help="--check: compare the skipped fields too (to audit SKIP)")
    args = ap.parse_args(argv)

    cases = list(CASES)
    if args.only:
        unknown = [n for n in args.only if n not in BY_NAME]
        if unknown:
            print(f"unknown case {', '.join(unknown)}; the cases: {', '.join(BY_NAME)}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c.name in args.only]
    if args.quick:
        cases = [c for c in cases if c.quick]
    if args.list:
        for c in cases:
            print(f"{c.name}{'  (quick)' if c.quick else ''}: {c.about}")
            for line in c.command_lines():
                print(f"    {line}")
        return 0

    failed = 0
    total, cpu = time.perf_counter(), _child_cpu()
    for case in cases:
        try:
            if args.pin:
                seconds = pin(case, args.keep)
                print(f"pinned  {case.name:24s} {_secs(seconds)}  -> {golden_path(case).relative_to(REPO)}", flush=True)
                continue
            diffs, seconds = check(case, args.keep, args.no_skip)
        except (CommandFailed, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"FAILED  {case.name}: {exc}", flush=True)
            continue
        if diffs:
            failed += 1
            print(f"DIFFERS {case.name:24s} {_secs(seconds)}  {len(diffs)} field(s)", flush=True)
            for d in diffs:
                print(f"    {case.name}: {d}")
        else:
            print(f"ok      {case.name:24s} {_secs(seconds)}", flush=True)
    word = "pinned" if args.pin else "checked"
    spent = (time.perf_counter() - total, _child_cpu() - cpu)
    print(f"{word} {len(cases)} case(s) in {_secs(spent)}; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
