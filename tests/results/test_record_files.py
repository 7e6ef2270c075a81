"""Every result kind's files read back through its typed record: the record's JSON is the file,
`gradrank.load` / `gradrank.save` dispatch by kind, and a foreign, damaged or crafted file (a value
nested too deeply for Python's JSON parser, a string where a number belongs) is exit 2 / InputError
naming the file and the field."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from gradrank import api
from gradrank.cli.app import app
from gradrank.core.onestep_records import OnestepResult
from gradrank.errors import InputError
from gradrank.results import kinds
from gradrank.results.advice import Advice
from gradrank.results.regpath import RegPath
from gradrank.studies.scaling import ScalingStudy

TINY = ["--set", "data.n=20", "--set", "data.d=12", "--set", "model.width=15", "--set", "output.report=false"]
COMMANDS = {
    "analyze": ["analyze", *TINY, "-q"],
    "train": ["train", *TINY, "--set", "train.steps=2", "--set", "train.record_every=1", "-q"],
    "regpath": ["regpath", *TINY, "--grid", "weight_decay=0.1", "--seeds", "0", "-q"],
    "scaling": ["scaling", "--n", "20,30", "--seeds", "1", *TINY, "-q"],
    "sweep": ["sweep", "--grid", "seed=0", *TINY, "--no-report", "-j", "1"],
    "onestep": ["onestep", *TINY, "--eta", "0,1", "--seeds", "1", "-q"],
    "advise": ["advise", *TINY, "--set", "train.steps=2", "--set", "advise.validate=false", "-q"],
    "layers": ["layers", *TINY, "--model", "mlp", "-q"],
}
MAIN = {"analyze": "metrics.json", "train": "metrics.json", "regpath": "path.json", "scaling": "scaling.json",
        "sweep": "sweep.json", "onestep": "onestep.json", "advise": "advice.json", "layers": "layers.json"}  # fmt: skip
RECORDS = {"regpath": RegPath, "scaling": ScalingStudy, "onestep": OnestepResult, "advise": Advice}
# a number's place in each file, as a path of keys, and its dotted name in the message
NUMBER = {
    "analyze": (["norms", "S1"], "norms.S1"),
    "train": (["train", "steps_done"], "train.steps_done"),
    "regpath": (["summary", "weight_decay", "log_change", "S1", "mean"], "summary.weight_decay.log_change.S1.mean"),
    "scaling": (["rows", 1, "S2"], "rows[1].S2"),
    "sweep": (["seeds"], "seeds"),
    "onestep": (["by_eta", 0, "test_error"], "by_eta[0].test_error"),
    "advise": (["layers", 0, "refresh", "per_interval", 0, "refreshes"], "layers[0].refresh.per_interval[0].refreshes"),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    for kind, args in COMMANDS.items():
        res = CliRunner().invoke(app, [*args, "-o", str(root / kind)])
        assert res.exit_code == 0, (kind, res.output)
    return root


def _copy(made, tmp_path, kind):
    shutil.copytree(made / kind, tmp_path / kind)
    return tmp_path / kind


def _report(directory):
    return CliRunner().invoke(app, ["report", str(directory)])


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_the_record_is_the_file_and_load_returns_it(made, kind):
    stored = json.loads((made / kind / MAIN[kind]).read_text())
    back = api.load(made / kind)
    assert type(back) is RECORDS[kind]
    assert {**back.to_dict(), "schema": 1} == stored


@pytest.mark.parametrize("kind", ["analyze", "train", "layers"])
def test_load_reads_runs_and_layers_by_their_kind(made, kind):
    back = api.load(made / kind)
    assert kinds.of_dir(made / kind).name == ("analyze" if kind == "train" else kind)
    if kind == "layers":
        assert [r.name for r in back.layers] == [
            r["name"] for r in json.loads((made / kind / "layers.json").read_text())["layers"]
        ]
    else:
        assert back.metrics.norms.G == json.loads((made / kind / "metrics.json").read_text())["norms"]["G"]


@pytest.mark.parametrize("kind", ["onestep", "advise"])
def test_save_writes_a_loaded_record_back_through_its_kind(made, tmp_path, kind):
    back = api.load(made / kind)
    out = api.save(back, tmp_path / "again")
    old, new = (json.loads((d / MAIN[kind]).read_text()) for d in (made / kind, out))
    assert {k: v for k, v in new.items() if k != "provenance"} == {k: v for k, v in old.items() if k != "provenance"}


def test_save_refuses_what_is_not_a_result(tmp_path):
    with pytest.raises(InputError, match="not a gradrank result"):
        api.save({"norms": {}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_refuses_a_directory_of_no_kind(tmp_path):
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(InputError, match="not a gradrank result directory"):
        api.load(tmp_path)


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_value_nested_too_deeply_is_exit_2_naming_file_and_field(made, tmp_path, kind):
    d = _copy(made, tmp_path, kind)
    path = d / MAIN[kind]
    doc = json.loads(path.read_text())
    doc["crafted"] = None
    path.write_text(json.dumps(doc).replace('"crafted": null', '"crafted": ' + "[" * 100_000 + "]" * 100_000))
    res = _report(d)
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert str(path) in line and "field 'crafted'" in line and "\n" not in line, line
    if kind != "sweep":
        with pytest.raises(InputError, match="field 'crafted' is nested too deeply"):
            api.load(d)


@pytest.mark.parametrize("kind", sorted(NUMBER))
def test_a_string_where_a_number_belongs_is_exit_2_naming_file_and_field(made, tmp_path, kind):
    d = _copy(made, tmp_path, kind)
    path = d / MAIN[kind]
    doc = json.loads(path.read_text())
    keys, name = NUMBER[kind]
    at = doc
    for k in keys[:-1]:
        at = at[k]
    at[keys[-1]] = "1.5"
    path.write_text(json.dumps(doc))
    res = _report(d)
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert str(path) in line and f"field '{name}' must be" in line and "got a string" in line, line
    if kind != "sweep":
        with pytest.raises(InputError, match=re.escape(f"field '{name}'")):
            api.load(d)


@pytest.mark.parametrize("kind", sorted(RECORDS))
def test_a_file_of_another_kind_is_refused_naming_the_field(made, tmp_path, kind):
    d = _copy(made, tmp_path, kind)
    path = d / MAIN[kind]
    doc = json.loads(path.read_text())
    doc["kind"] = "analyze"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"{path.name}: field 'kind'"):
        api.load(d)
