"""gradrank.watch in a plain PyTorch loop: every recorded number against torch (the .grad's dense SVD)."""

import csv
import math

import pytest
import torch

import gradrank
from gradrank.errors import InputError
from gradrank.monitor.records import CSV_COLUMNS


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 24), torch.nn.Tanh(), torch.nn.Linear(24, 20), torch.nn.Tanh(), torch.nn.Linear(20, 3)
    ).double()


def _batch(step, n=12):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)


def _train(tmp_path, steps=20, every=5):
    """The loop of docs/watch.md, keeping each step's .grad (d_in x d_out) on the side."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    mods = dict(model.named_modules())
    grads, losses = {}, {}
    with gradrank.watch(model, out=tmp_path / "w", every=every) as mon:
        for step in range(steps):
            x, y = _batch(step)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            grads[step] = {n: mods[n].weight.grad.detach().T.clone() for n in names}
            losses[step] = float(loss)
            mon.step(loss=loss)
            opt.step()
            opt.zero_grad()
    return gradrank.load(tmp_path / "w"), grads, losses, names


def test_recorded_steps_and_every_number_equal_the_dense_svd_of_grad(tmp_path):
    rec, grads, losses, names = _train(tmp_path)
    assert rec.steps == [0, 5, 10, 15] and rec.finished and not rec.skipped
    assert [(r.step, r.layer) for r in rec.rows] == [(s, n) for s in (0, 5, 10, 15) for n in names]
    for r in rec.rows:
        G = grads[r.step][r.layer]
        s = torch.linalg.svdvals(G)
        assert r.fro_G == pytest.approx(float(G.norm()), rel=1e-10)
        assert r.norm_G == pytest.approx(float(s[0]), rel=1e-10)
        k = len(r.singular_values)
        assert k == min(8, *G.shape)
        assert torch.allclose(torch.tensor(r.singular_values, dtype=torch.float64), s[:k], rtol=1e-10, atol=1e-10 * float(s[0]))
        assert r.stable_rank == pytest.approx(float(G.norm()) ** 2 / float(s[0]) ** 2, rel=1e-10)
        assert r.loss == losses[r.step]
        assert r.share_S1 + r.share_S12 + r.share_S2 + r.share_E > 0


def test_drift_and_captured_share_equal_those_of_the_saved_grads(tmp_path):
    rec, grads, _, names = _train(tmp_path)
    for name in names:
        rows = [r for r in rec.rows if r.layer == name]
        assert rows[0].drift_deg is None and rows[0].captured is None
        for prev, row in zip(rows, rows[1:]):
            G0, G1 = grads[prev.step][name], grads[row.step][name]
            r = min(4, *G1.shape)
            U0, U1 = torch.linalg.svd(G0)[0][:, :r], torch.linalg.svd(G1)[0][:, :r]
            cos = torch.linalg.svdvals(U0.T @ U1).clamp(max=1.0)
            assert row.drift_deg == pytest.approx(math.degrees(math.acos(float(cos.min()))), abs=1e-7)
            assert row.captured == pytest.approx(float((U0.T @ G1).norm() ** 2 / G1.norm() ** 2), rel=1e-9)


def test_gradient_accumulation_over_two_backwards_equals_one_backward_on_the_concatenated_batch(tmp_path):
    x, y = _batch(0, n=16)
    out = {}
    for mode in ("one", "two"):
        model = _mlp()
        with gradrank.watch(model, out=tmp_path / mode, every=1) as mon:
            if mode == "one":
                torch.nn.functional.mse_loss(model(x), y, reduction="sum").backward()
            else:
                for part in (slice(0, 7), slice(7, 16)):
                    torch.nn.functional.mse_loss(model(x[part]), y[part], reduction="sum").backward()
            mon.step()
        out[mode] = gradrank.load(tmp_path / mode)
    one, two = out["one"].rows, out["two"].rows
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a.layer == b.layer and a.rows == b.rows == 16
        for key in ("norm_G", "fro_G", "stable_rank", "share_S1", "share_S2", "share_E"):
            assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-10, abs=1e-12), key
        assert b.singular_values == pytest.approx(a.singular_values, rel=1e-10, abs=1e-12 * a.norm_G)


def test_step_before_any_backward_is_an_input_error(tmp_path):
    model = _mlp()
    mon = gradrank.watch(model, out=tmp_path / "w", every=2)
    model(_batch(0)[0])
    with pytest.raises(InputError, match="before any backward"):
        mon.step()


def test_a_layers_pattern_matching_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="matches no linear layer"):
        gradrank.watch(_mlp(), out=tmp_path / "w", layers="encoder.*")
    assert not (tmp_path / "w").exists()


def test_a_gradient_not_from_the_step_marks_the_layer_skipped_with_the_reason(tmp_path):
    model = _mlp()
    x, y = _batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()  # before watch: a stale .grad the hooks never saw
    with gradrank.watch(model, out=tmp_path / "w", every=1) as mon:
        torch.nn.functional.mse_loss(model(x), y).backward()
        mon.step()
    rec = gradrank.load(tmp_path / "w")
    assert {s.layer for s in rec.skipped} == {"0", "2", "4"} and not rec.rows
    assert all("disagree with its .grad" in s.reason for s in rec.skipped)


def test_the_csv_columns_equal_watch_json_fields_row_by_row(tmp_path):
    rec, *_ = _train(tmp_path)
    with open(tmp_path / "w" / "layers.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == CSV_COLUMNS and len(table) == len(rec.rows)
    for line, row in zip(table, rec.rows):
        for col in CSV_COLUMNS:
            want = getattr(row, col)
            got = line[col]
            if want is None:
                assert got == ""
            elif isinstance(want, str):
                assert got == want
            else:
                assert type(want)(got) == want, col


def test_watch_refuses_a_directory_it_does_not_own(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "mine.txt").write_text("user's")
    with pytest.raises(InputError, match="not a gradrank output directory"):
        gradrank.watch(_mlp(), out=tmp_path / "w")
    assert (tmp_path / "w" / "mine.txt").read_text() == "user's"


def test_gradrank_report_renders_a_watch_directory_with_one_table_row_per_recorded_row(tmp_path):
    from gradrank.report.render import render_dir

    rec, *_ = _train(tmp_path)
    (html,) = render_dir(tmp_path / "w")
    text = html.read_text()
    assert text.count('<tr><td class="num">') == len(rec.rows)
    assert gradrank.load(tmp_path / "w").rows == rec.rows  # the report added a file gradrank owns, nothing else


def test_step_before_any_backward_on_an_unrecorded_step_is_an_input_error(tmp_path):
    model = _mlp()
    mon = gradrank.watch(model, out=tmp_path / "w", every=5)
    x, y = _batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    mon.step()  # step 0, recorded
    model.zero_grad(set_to_none=True)
    with pytest.raises(InputError, match="step 1 called before any backward"):
        mon.step()


def test_an_exception_in_the_with_block_keeps_the_records_and_marks_the_run_unfinished(tmp_path):
    model = _mlp()
    with pytest.raises(RuntimeError, match="user's bug"):
        with gradrank.watch(model, out=tmp_path / "w", every=1) as mon:
            x, y = _batch(0)
            torch.nn.functional.mse_loss(model(x), y).backward()
            mon.step()
            raise RuntimeError("user's bug")
    rec = gradrank.load(tmp_path / "w")
    assert rec.steps == [0] and len(rec.rows) == 3 and not rec.finished
    assert mon.recorder is None and mon.closed  # the hooks are removed
