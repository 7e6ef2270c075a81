"""Typed result records: to_dict/from_dict round trips of real results, the JSON files they are
the serialisation of, and foreign or damaged files refused with exit 2 naming the file and field."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import gradrank
from gradrank.cli.app import app
from gradrank.core.records import Metrics, Norms, TrainRecord, TrainSummary
from gradrank.errors import InputError
from gradrank.sweeps.spec import SweepManifest

SMALL = {"data.n": 40, "data.d": 50, "model.width": 60, "output.report": False}


@pytest.fixture(scope="module")
def analysis():
    return gradrank.analyze(overrides=SMALL, seed=2)


@pytest.fixture(scope="module")
def trained():
    return gradrank.train(overrides={**SMALL, "train.steps": 4, "train.record_every": 2})


def _json_round(d: dict) -> dict:
    return json.loads(json.dumps(d))


def test_metrics_round_trip_through_json(analysis):
    d = _json_round(analysis.metrics.to_dict())
    back = Metrics.from_dict(d, "x")
    assert back == analysis.metrics and back.to_dict() == d
    assert back.norms.G == analysis.metrics["norms"]["G"] == d["norms"]["G"]
    assert "reg" not in d["norms"] and "reg" not in d  # no regulariser: the keys stay as before


def test_regulariser_keys_appear_only_with_one():
    res = gradrank.analyze(overrides={**SMALL, "regularizer.weight_decay": 0.1})
    d = res.metrics.to_dict()
    assert d["norms"]["reg"] == res.metrics.reg.norm > 0 and d["shares"]["reg"] == res.metrics.reg.share
    assert Metrics.from_dict(_json_round(d)) == res.metrics


def test_train_records_round_trip(trained):
    summary = trained.summary()
    d = _json_round(summary.to_dict())
    assert list(d)[0] == "kind" and d["kind"] == "train" and d["norms"] == trained.result.metrics.norms.to_dict()
    back = TrainSummary.from_dict(d)
    assert back == summary and back.norms.G == trained.result.metrics.norms.G
    for row in trained.rows:
        rd = _json_round(row.to_dict())
        assert list(rd) == TrainRecord.columns(len(row.s))
        back = TrainRecord.from_dict(rd)  # drift_max_angle is NaN at step 0: compare the JSON text
        assert json.dumps(back.to_dict()) == json.dumps(row.to_dict()) and back["s1"] == row.s[0]


def test_run_directory_schema_and_load(analysis, tmp_path):
    out = gradrank.save(analysis, tmp_path / "run")
    stored = json.loads((out / "metrics.json").read_text())
    assert list(stored)[0] == "schema" and stored["schema"] == 1
    assert json.loads((out / "provenance.json").read_text())["schema"] == 1
    back = gradrank.load(out)
    assert back.metrics == analysis.metrics and back.config == analysis.config
    assert (back.arrays["singular_values"] == analysis.arrays["singular_values"]).all()


def test_train_run_loads_as_summary(trained, tmp_path):
    out = gradrank.save(trained, tmp_path / "train")
    back = gradrank.load(out)
    assert isinstance(back.metrics, TrainSummary) and back.metrics.train.records == 3
    assert back.metrics.norms == trained.result.metrics.norms
    header = (out / "trajectory.csv").read_text().splitlines()[0].split(",")
    assert header == TrainRecord.columns(len(trained.rows[0].s))


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["norms"].pop("S1"), "norms.S1"),
        (lambda d: d["norms"].update(G="big"), "norms.G"),
        (lambda d: d.update(singular_values=[1.0, None]), "singular_values[1]"),
        (lambda d: d["rank"].update(outliers=1.5), "rank.outliers"),
        (lambda d: d["trust"]["checks"].update(finite=1), "trust.checks.finite"),
        (lambda d: d.update(schema=7), "schema"),
        (lambda d: d.update(kind="scaling"), "kind"),
    ],
)
def test_damaged_metrics_name_the_field(analysis, tmp_path, edit, field):
    out = gradrank.save(analysis, tmp_path / "run")
    d = json.loads((out / "metrics.json").read_text())
    edit(d)
    (out / "metrics.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match=rf"metrics.json: field '{re.escape(field)}'"):
        gradrank.load(out)
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 2 and "metrics.json" in res.output and field.split(".")[-1].split("[")[0] in res.output


def test_foreign_json_is_exit_2(tmp_path):
    run = tmp_path / "foreign"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(InputError, match=r"metrics.json: field 'sizes' is missing"):
        gradrank.load(run)
    (run / "metrics.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a gradrank file"):
        gradrank.load(run)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 2 and "metrics.json" in res.output


def test_sweep_manifest_round_trip_and_damage(tmp_path):
    sw = gradrank.sweep(overrides=SMALL, grid={"data.nu": [0.1, 0.4]}, out=tmp_path / "sw", jobs=1)
    path = sw.directory / "sweep.json"
    d = json.loads(path.read_text())
    assert d["schema"] == 1 and d["versions"]["gradrank"] == gradrank.__version__
    assert SweepManifest.from_dict(d).to_dict() == d
    assert [r["status"] for r in sw.table()] == ["done", "done"]
    d["points"][0].pop("hash")
    path.write_text(json.dumps(d))
    res = CliRunner().invoke(app, ["report", str(sw.directory)])
    assert res.exit_code == 2 and "sweep.json: field 'points[0].hash' is missing" in res.output
    path.write_text(json.dumps({"format": "something-else"}))
    res = CliRunner().invoke(app, ["sweep", "--status", str(sw.directory)])
    assert res.exit_code == 2 and "sweep.json" in res.output and "format" in res.output


def test_a_damaged_point_is_a_failed_row_naming_the_field(tmp_path):
    sw = gradrank.sweep(overrides=SMALL, grid={"data.nu": [0.1, 0.4]}, out=tmp_path / "sw", jobs=1)
    h = next(iter(sw.points))
    path = sw.directory / "points" / h / "metrics.json"
    d = json.loads(path.read_text())
    d["norms"]["E"] = "x"
    path.write_text(json.dumps(d))
    row = next(r for r in sw.table() if r["point"] == h)  # an edited point is not gradrank's output
    assert row["status"] == "failed" and "changed" in row["error"]
    from gradrank.io import seal

    seal(path.parent, "analyze")  # sealed as if gradrank wrote it: the record itself refuses the value
    row = next(r for r in sw.table() if r["point"] == h)
    assert row["status"] == "failed" and "field 'norms.E' must be a number" in row["error"]


def test_records_refuse_wrong_types_directly():
    good = {"G": 1.0, "G_fro": 1.0, "S1": 1, "S12": 0.0, "S2": 0.0, "E": 0.0, "E_fro": 0.0}
    assert Norms.from_dict(good).S1 == 1 and Norms.from_dict(good).reg is None
    with pytest.raises(InputError, match="field 'E' must be a number, got a boolean"):
        Norms.from_dict({**good, "E": True}, "f.json")


def test_result_figures_html_and_save(analysis, trained, tmp_path):
    figs = analysis.figures()
    assert set(figs) == {"spectrum", "norms", "alignment"}
    # the spectrum figure's histograms count every resolved singular value of G once
    s = analysis.arrays["singular_values"]
    counts = sum(p.get_data().values.sum() for p in figs["spectrum"].axes[0].patches)
    assert counts == (s > s.max() * 1e-10).sum() > 0
    page = analysis._repr_html_()
    assert page.count("<svg") == 3 and analysis.metrics.regime in page
    out = analysis.save(tmp_path / "r")
    assert gradrank.load(out).metrics == analysis.metrics
    loaded_train = gradrank.load(gradrank.save(trained, tmp_path / "t"))
    with pytest.raises(InputError, match="no trajectory"):
        loaded_train.save(tmp_path / "again")


def test_scaling_study_round_trip_and_damage(tmp_path):
    from gradrank.api import resolve_config
    from gradrank.results import scaling as scaling_out
    from gradrank.studies import scaling

    cfg = resolve_config(overrides={"data.n": 20, "data.d": 24, "model.width": 30, "output.report": False})
    res = scaling.study(cfg, [20, 30, 40], 1)
    out = scaling_out.write(tmp_path / "sc", res)
    d = json.loads((out / "scaling.json").read_text())
    assert d["schema"] == 1 and d["kind"] == "scaling"
    back = scaling.ScalingStudy.from_dict(d)
    assert back.fits["S1"].slope == res.fits["S1"].slope and back.prediction == res.prediction
    assert {k: v for k, v in d.items() if k != "schema"} == back.to_dict()
    d["fits"]["S1"]["slope"] = "steep"
    (out / "scaling.json").write_text(json.dumps(d))
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 2 and "scaling.json: field 'fits.S1.slope' must be a number" in res.output
