"""The registry of result kinds: for each, the directory's main JSON file, the record stored in it,
the in-memory result a study returns, its writer and its reader. `api.save` and `api.load` dispatch
through it (a new kind adds one entry); a sweep's store is written by gradrank.sweeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gradrank.config import Config
from gradrank.core.onestep_records import OnestepResult
from gradrank.core.records import Metrics, TrainSummary
from gradrank.errors import InputError
from gradrank.monitor import records as watch
from gradrank.results import advice, layers, onestep, regpath, runs, scaling
from gradrank.results.files import MAIN_FILES, kind_of_dir
from gradrank.studies.analyze import Analysis
from gradrank.studies.layers import LayersResult
from gradrank.studies.regpath import PathResult
from gradrank.studies.scaling import ScalingResult, ScalingStudy
from gradrank.studies.train import Trajectory


@dataclass(frozen=True)
class Kind:
    name: str
    file: str  # the directory's main JSON file
    record: type  # what that file holds
    result: type  # what the study returns and `write` takes
    write: Callable[[Path, Any], Path]  # the directory, all or nothing, where gradrank owns the target
    read: Callable[[Path], Any]
    config: Callable[[Any], Config] = lambda result: result.config  # noqa: E731


KINDS = {
    k.name: k
    for k in (
        Kind("scaling", MAIN_FILES["scaling"], ScalingStudy, ScalingResult, scaling.write, scaling.read),
        Kind("regpath", MAIN_FILES["regpath"], regpath.RegPath, PathResult, regpath.write, regpath.read),
        Kind("onestep", MAIN_FILES["onestep"], OnestepResult, OnestepResult, onestep.write, onestep.read),
        Kind("layers", MAIN_FILES["layers"], LayersResult, LayersResult, layers.write, layers.read),
        Kind("advise", MAIN_FILES["advise"], advice.Advice, advice.Advice, advice.write, advice.read),
        Kind("analyze", MAIN_FILES["analyze"], Metrics, Analysis, runs.write_run, runs.read_run),
        Kind(
            "train", MAIN_FILES["analyze"], TrainSummary, Trajectory, runs.write_train, runs.read_run, lambda tr: tr.result.config
        ),
        Kind("watch", MAIN_FILES["watch"], watch.WatchRecord, watch.WatchRecord, watch.write, watch.read),
    )
}

_BY_RESULT = {k.result: k for k in KINDS.values()}


def of_result(result) -> Kind:
    """The kind of an in-memory result (its class or a base class is registered)."""
    for cls in type(result).__mro__:
        if cls in _BY_RESULT:
            return _BY_RESULT[cls]
    raise InputError(f"gradrank.save: not a gradrank result ({type(result).__name__})")


def of_dir(directory: Path) -> Kind:
    """The kind of a result directory, from the first main file it holds (files.MAIN_FILES)."""
    return KINDS[kind_of_dir(directory)]
