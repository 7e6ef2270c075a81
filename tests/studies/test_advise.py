"""The projector advisor: captured share against a dense numpy computation of its definition, the
GaLore side convention against galore-torch's own projector, the theory projector, full ranks,
the recommendation rule, the typed advice.json and its report, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _reliability import tree
from typer.testing import CliRunner

from gradrank import api, config
from gradrank.cli.app import app
from gradrank.core.projectors import EnergyRecorder, SideGradient, galore_side, recommend
from gradrank.rng import generator
from gradrank.studies import advise as advisor
from gradrank.studies import train as training

TINY = ["data.n=40", "data.d=24", "model.width=30"]


def _gradients(rows: int, cols: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """A drifting, approximately low-rank gradient sequence (the regime the advisor is for)."""
    g = torch.Generator().manual_seed(seed)
    L, R = torch.randn(rows, 3, generator=g, dtype=torch.float64), torch.randn(3, cols, generator=g, dtype=torch.float64)
    out = []
    for _ in range(steps):
        L = L + 0.3 * torch.randn(rows, 3, generator=g, dtype=torch.float64)
        out.append(L @ R + 0.2 * torch.randn(rows, cols, generator=g, dtype=torch.float64))
    return out


def _dense_reference(Gs, projector, r, T, seed=0, index=0):
    """The definition, densely in numpy: mean_t ||P_t0(G_t)||^2 / ||G_t||^2 on GaLore's side."""
    shares = []
    for t, G in enumerate(Gs):
        t0 = T * (t // T)
        A0, A = (x.numpy() if x.shape[0] >= x.shape[1] else x.numpy().T for x in (Gs[t0], G))
        if projector == "svd":
            B = np.linalg.svd(A0)[2][:r].T
        elif projector == "rows":
            B = np.eye(A0.shape[1])[:, np.argsort(-(A0**2).sum(0), kind="stable")[:r]]
        else:  # the same Gaussian draw (the named stream of this layer and refresh step), orthonormalised here
            width = max(rr for rr in (1, 2, 5) if rr < A0.shape[1])  # the recorder draws its widest rank's basis
            Z = torch.randn(A0.shape[1], width, generator=generator(seed, "projector_random", index, t0), dtype=torch.float64)
            B = np.linalg.qr(Z.numpy())[0][:, :r]
        P = A @ B @ B.T
        shares.append((P**2).sum() / (A**2).sum())
    return float(np.mean(shares))


@pytest.mark.parametrize("shape", [(30, 12), (12, 30)])
def test_captured_share_equals_a_dense_numpy_computation_of_the_definition(shape):
    Gs = _gradients(*shape, steps=9)
    ranks, intervals = [1, 2, 5], [1, 3, 4]
    rec = EnergyRecorder("w", shape, ranks, intervals, ["svd", "rows", "random"], seed=0, index=0, tol=1e-10)
    for t, G in enumerate(Gs):
        rec.observe(t, SideGradient.of(G))
    res = rec.result()
    assert res.side == galore_side(shape) == ("right" if shape[0] >= shape[1] else "left")
    checked = 0
    for e in res.energy:
        expect = _dense_reference(Gs, e["projector"], e["rank"], e["interval"])
        assert e["captured"] == pytest.approx(expect, abs=1e-9), e
        checked += 1
    assert checked == 27
    # the map is not trivial: a stale subspace captures less than a fresh one
    svd = {(e["rank"], e["interval"]): e["captured"] for e in res.energy if e["projector"] == "svd"}
    assert svd[(2, 4)] < svd[(2, 1)] - 1e-3


def test_factored_and_dense_gradients_give_the_same_products():
    g = torch.Generator().manual_seed(3)
    L, R = torch.randn(7, 20, generator=g, dtype=torch.float64), torch.randn(7, 9, generator=g, dtype=torch.float64)
    A = 0.3 * L.T @ R  # long x short
    f, d = SideGradient.factored(L, R, 0.3), SideGradient.of(A)
    B = torch.randn(9, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(f.mv(B), d.mv(B)) and torch.allclose(f.col_norms2, d.col_norms2)
    C = torch.randn(20, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(f.rmv(C), d.rmv(C))
    # the squared Frobenius norm and the column norms of chosen columns, against the formed A
    fro2 = float((A * A).sum())
    assert f.fro2 == pytest.approx(fro2, rel=1e-12) and d.fro2 == pytest.approx(fro2, rel=1e-12)
    idx = torch.tensor([7, 2, 5])
    for sg in (f, d):
        assert torch.allclose(sg.norms(idx), (A[:, idx] ** 2).sum(0))


@pytest.mark.parametrize("shape", [(40, 16), (16, 40)])
def test_galore_side_and_schedule_match_galore_torchs_own_projector(shape):
    """galore-torch's GaLoreProjector (proj_type std, scale 1) on the same gradients: the share of each
    gradient its projection keeps, averaged, is our svd captured share; the other side differs."""
    from galore_torch.galore_projector import GaLoreProjector

    Gs = [G.float().double() for G in _gradients(*shape, steps=8, seed=5)]
    r, T = 3, 3
    proj = GaLoreProjector(r, update_proj_gap=T, scale=1.0, proj_type="std")
    theirs = []
    for t, G in enumerate(Gs):
        back = proj.project_back(proj.project(G.float(), t)).double()
        theirs.append(float((back**2).sum() / (G**2).sum()))
    rec = EnergyRecorder("w", shape, [r], [T], ["svd"], seed=0, index=0, tol=1e-10)
    for t, G in enumerate(Gs):
        rec.observe(t, SideGradient.of(G))
    ours = rec.result().energy[0]["captured"]
    assert ours == pytest.approx(np.mean(theirs), abs=2e-5)
    # projecting the other side (left vectors when rows >= cols) keeps a different share
    other = []
    for t, G in enumerate(Gs):
        t0 = T * (t // T)
        A0, A = (Gs[t0].numpy(), G.numpy()) if shape[0] < shape[1] else (Gs[t0].numpy().T, G.numpy().T)
        B = np.linalg.svd(A0)[2][:r].T
        other.append(((A @ B) ** 2).sum() / (A**2).sum())
    assert abs(float(np.mean(other)) - ours) > 1e-3


def _two_layer_gradients(cfg):
    """Every update gradient G_t (d x m) of the two-layer training, with its theory directions."""
    from gradrank.models.mu import compute_mu, decompose

    seen = []

    def on_step(t, grad, G, ds, net):
        mu, _ = compute_mu(cfg.analysis.mu, grad, ds, net, cfg.analysis.quadrature)
        dec = decompose(grad, ds, net, mu)
        seen.append((G.clone(), dec.S1.left.clone(), ds.q.clone(), dec.S1.right.clone(), dec.S2.right.clone()))

    training.train(cfg, on_step=on_step)
    return seen


@pytest.mark.parametrize("d,m", [(24, 30), (30, 24)])
def test_theory_projector_is_exact_for_a_linear_activation(d, m):
    """sigma' = 1: Sigma'_perp = 0, so G = S1 + S12 = coef (X_B^T r + zeta z^T r q)(a o mu)^T lies in
    span{X_B^T r, q} x span{a o mu}: the theory projector refreshed every step captures all of it on either side."""
    cfg = training.resolve(
        config.load(sets=["data.n=40", f"data.d={d}", f"model.width={m}", "model.activation=linear", "train.steps=3"])
    )
    cfg = cfg.replace(**{"advise.ranks": [1, 2], "advise.intervals": [1, 2], "advise.validate": False})
    out = advisor.record_twolayer(cfg)
    th = {(e["rank"], e["interval"]): e["captured"] for e in out["layers"][0].energy if e["projector"] == "theory"}
    assert th[(2, 1)] == pytest.approx(1.0, abs=1e-10)
    if m < d:  # left side (R^m): a o mu alone holds everything, and with mu = 1 it never moves
        assert th[(1, 1)] == pytest.approx(1.0, abs=1e-10) and th[(2, 2)] == pytest.approx(1.0, abs=1e-10)
    else:  # right side (R^d): X_B^T r alone misses the zeta (z^T r) q part, and X_B^T r turns as r changes
        assert th[(1, 1)] < 1 - 1e-6 and th[(2, 2)] < 1 - 1e-6


def test_theory_projector_against_a_dense_reference_for_relu():
    cfg = training.resolve(config.load(sets=[*TINY, "train.steps=4"]))
    cfg = cfg.replace(**{"advise.ranks": [1, 2], "advise.intervals": [1, 3]})
    out = advisor.record_twolayer(cfg)
    seen = _two_layer_gradients(cfg)
    m, d = cfg.model.width, cfg.data.d
    for T in (1, 3):
        shares = []
        for t, (G, xbr, q, amu, s2) in enumerate(seen):
            t0 = T * (t // T)
            _, xbr0, q0, amu0, s20 = seen[t0]
            P = G.T.numpy()  # m x d
            A = P if m >= d else P.T
            V = np.stack([xbr0, q0], 1) if m >= d else np.stack([amu0, s20], 1)
            Q = np.linalg.qr(V.numpy() if hasattr(V, "numpy") else V)[0]
            shares.append(((A @ Q) ** 2).sum() / (A**2).sum())
        got = [
            e["captured"] for e in out["layers"][0].energy if e["projector"] == "theory" and e["rank"] == 2 and e["interval"] == T
        ]
        assert got[0] == pytest.approx(float(np.mean(shares)), abs=1e-10)
        assert got[0] < 0.999  # relu: E is not in the predicted span


def test_a_rank_at_or_above_the_smaller_dimension_captures_everything_marked():
    Gs = _gradients(25, 10, steps=4)
    rec = EnergyRecorder("w", (25, 10), [2, 10, 40], [1, 2], ["svd", "rows", "random"], seed=1, index=0)
    for t, G in enumerate(Gs):
        rec.observe(t, SideGradient.of(G))
    for e in rec.result().energy:
        if e["rank"] >= 10:
            assert e["captured"] == 1.0 and e["full"] is True
        else:
            assert e["captured"] < 0.999 and e["full"] is False
    # and numerically: a basis of the whole short side keeps all the energy (not just a label)
    rec9 = EnergyRecorder("w", (25, 10), [9], [1], ["svd"], seed=1, index=0, tol=1e-12)
    for t, G in enumerate(Gs):
        rec9.observe(t, SideGradient.of(G))
    assert rec9.result().energy[0]["captured"] > rec.result().energy[0]["captured"]


def test_recommendation_rule():
    E = lambda p, r, T, c: {"projector": p, "rank": r, "interval": T, "captured": c, "full": False}  # noqa: E731
    energy = [E("svd", 1, 1, 0.80), E("svd", 2, 1, 0.95), E("svd", 2, 10, 0.91), E("svd", 2, 50, 0.85), E("svd", 4, 50, 0.99)]
    energy += [E("rows", 2, 10, 0.93)]
    rec = recommend(energy, 0.9)
    # smallest rank (2), then largest interval meeting 0.9 (10), then the larger share (rows 0.93)
    assert (rec["projector"], rec["rank"], rec["interval"], rec["meets_target"]) == ("rows", 2, 10, True)
    assert recommend(energy, 0.99)["rank"] == 4
    low = recommend(energy, 1.0)
    assert low["meets_target"] is False and low["captured"] == 0.99 and low["rank"] == 4


def test_advise_two_layer_end_to_end_round_trips_and_renders(tmp_path):
    adv = api.advise(
        overrides={
            "data.n": 40,
            "data.d": 24,
            "model.width": 30,
            "train.steps": 6,
            "output.name": "<b>mine</b>",
            "advise.galore_rank": 8,
            "advise.galore_interval": 3,
            "advise.adam_lr": 0.01,
        },
        ranks=[1, 2, 4],
        intervals=[1, 3],
    )
    lay = adv.layers[0]
    assert lay.name == "W" and lay.shape == [30, 24] and lay.side == "right"
    assert {e.projector for e in lay.energy} == {"svd", "random", "rows", "theory"}
    assert lay.recommended_svd.projector == "svd"
    runs = {r.name: r for r in adv.validation.runs}
    assert set(runs) == {"adam", "galore_recommended", "galore_default"}
    assert all(len(r.loss) == 7 and r.loss[0] == runs["adam"].loss[0] for r in runs.values())
    assert runs["galore_default"].refreshes == math.ceil(6 / 3)
    # the full-rank AdamW run is torch's AdamW on the same loss
    cfg = adv.config
    from gradrank.models.closed_form import loss_and_residue
    from gradrank.studies import analyze as analysis

    _, ds, net = analysis.prepare(cfg)
    W = torch.nn.Parameter(net.W.clone())
    opt = torch.optim.AdamW([W], lr=0.01, eps=1e-6, weight_decay=0.0)
    for _ in range(6):
        opt.zero_grad()
        loss = loss_and_residue("mse", net.gamma * (net.act.f(ds.X @ W.T) @ net.a), ds.y)[0].mean()
        loss.backward()
        opt.step()
    final = float(loss_and_residue("mse", net.gamma * (net.act.f(ds.X @ W.detach().T) @ net.a), ds.y)[0].mean())
    assert runs["adam"].final == pytest.approx(final, rel=1e-10)
    d = adv.to_dict()
    assert d["schema"] == 1 and type(adv).from_dict(d).to_dict() == d
    out = api.save(adv, tmp_path / "adv")
    html = (out / "report.html").read_text()
    assert "&lt;b&gt;mine&lt;/b&gt;" in html and "<b>mine</b>" not in html
    assert html.count("<svg") == 1 + 4 and "Validation against GaLore" in html
    # each GaLore loss is stated against Adam's: a factor when over twice it, else a signed percentage
    verdict = html[html.index('id="verdict"') :].split("</p>")[0]
    for gap in (adv.validation.verdict.relative_gap, adv.validation.verdict.default_relative_gap):
        assert (f"{1 + gap:.3g}× Adam's" if gap > 1 else f"{100 * gap:+.1f} % from Adam's") in verdict


def test_module_gd_is_plain_full_batch_gradient_descent():
    """train.optimizer = gd for a SPEC: w <- w - lr * dL/dw on every parameter, L the mean of the batch losses."""
    from gradrank.models.registry import Problem

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    X, Y = torch.randn(12, 5), torch.randn(12, 2)
    batches = [(X[:6], Y[:6]), (X[6:], Y[6:])]
    mse = lambda out, y: ((out - y) ** 2).mean()  # noqa: E731
    ref = [p.detach().clone() for p in model.parameters()]
    prob = Problem("t", model, batches, mse)
    advisor.full_batch_gd(prob, 2, 0.1)
    ref_model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p, v in zip(ref_model.parameters(), ref):
            p.copy_(v)
    opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mse(ref_model(X), Y).backward()
        opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--ranks", "500,2000"], "advise.ranks"),
        (["--intervals", "0,10"], "advise.intervals"),
        (["--target", "0"], "advise.target"),
        (["--target", "1.5"], "advise.target"),
        (["--ranks", "a,b"], "--ranks"),
        (["--projector", "svd,magic"], "advise.projectors"),
        (["--model", "mlp", "--projector", "theory"], "theory"),
        (["--intervals", "-5"], "advise.intervals"),
        (["--target", "nan"], "advise.target"),
        (["--model", "mlp", "--ranks", "40,64"], "above every layer"),  # the widest layer is 30 x 24
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, needle):
    before = tree(tmp_path)
    sets = [x for s in TINY for x in ("--set", s)]
    res = _cli("advise", *sets, "--set", "train.steps=2", *args, "-o", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert tree(tmp_path) == before


def test_a_rank_some_layer_can_take_is_accepted():
    advisor.prepare(config.load(sets=[*TINY, "advise.ranks=[1, 2000]"]))  # 1 fits; 2000 is reported as full
    with pytest.raises(Exception, match="above every layer"):
        advisor.prepare(config.load(sets=[*TINY, "advise.ranks=[25, 2000]"]))


@pytest.mark.parametrize(
    "body,spec,needle",
    [
        ("def build(cfg):\n    raise ValueError('no such thing')\n", "bad.py:build", "no such thing"),
        ("def build(cfg):\n    return 3\n", "bad.py:build", "must return a dict"),
        ("def build(cfg):\n    return 3\n", "bad.py:other", "has no function other"),
        ("", "missing.py:build", "no such model file"),
        ("", "resnet", "not twolayer, mlp, minilm"),
    ],
)
def test_a_failing_spec_exits_2_and_writes_nothing(tmp_path, body, spec, needle):
    (tmp_path / "bad.py").write_text(body)
    spec = spec if ":" not in spec else f"{tmp_path / spec}"
    before = tree(tmp_path)
    res = _cli("advise", "--model", spec, "-o", tmp_path / "out")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and spec.split(":")[0] in lines[0], res.stderr
    assert tree(tmp_path) == before


def test_the_warm_top_k_refresh_keeps_the_share_of_an_exact_svd_on_a_training_trajectory():
    """The default top-k tolerance (1e-2 of s_1) against GaLore's exact SVD at every refresh, on the
    two-layer model's GD gradients: the captured shares agree to 1e-3."""
    cfg = training.resolve(config.load(sets=[*TINY, "train.steps=8"]))
    cfg = cfg.replace(**{"advise.ranks": [1, 2, 4, 8], "advise.intervals": [1, 4], "advise.projectors": ["svd"]})
    out = advisor.record_twolayer(cfg)
    Gs = [G.T.contiguous() for G, *_ in _two_layer_gradients(cfg)]  # parameter-shaped, m x d
    for e in out["layers"][0].energy:
        assert e["captured"] == pytest.approx(_dense_reference(Gs, "svd", e["rank"], e["interval"]), abs=1e-3), e


def test_a_user_model_file_is_advised_per_linear_layer_and_validated(tmp_path):
    spec = tmp_path / "net.py"
    spec.write_text(
        "import torch\n"
        "def build():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))\n"
        "    X, Y = torch.randn(32, 12, generator=g), torch.randn(32, 3, generator=g)\n"
        "    return {'model': model, 'inputs': X, 'targets': Y, 'loss': lambda out, y: ((out - y) ** 2).mean()}\n"
    )
    adv = api.advise(
        overrides={"train.steps": 5, "train.lr": 0.1, "advise.galore_rank": 4, "advise.galore_interval": 5},
        model=f"{spec}:build",
        ranks=[1, 2, 8],
        intervals=[1, 2],
    )
    assert [lay.name for lay in adv.layers] == ["0", "2"]
    assert [lay.shape for lay in adv.layers] == [[16, 12], [3, 16]] and [lay.side for lay in adv.layers] == ["right", "left"]
    assert {e.projector for e in adv.layers[0].energy} == {"svd", "random", "rows"}  # theory: two-layer only
    out = {(e.projector, e.rank, e.interval): e for e in adv.layers[1].energy}
    assert out[("svd", 8, 1)].full and out[("svd", 8, 1)].captured == 1.0  # 8 >= min(3, 16)
    assert adv.config.advise.model_sha256 and len(adv.training.loss) == 6
    runs = {r.name: r for r in adv.validation.runs}
    assert runs["galore_recommended"].ranks == {n: adv.layer(n).recommended_svd.rank for n in ("0", "2")}
    assert runs["galore_default"].refreshes == 2 and runs["adam"].final < runs["adam"].loss[0]
