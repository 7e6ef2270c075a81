"""Per-layer decomposition of any PyTorch model: against gradrank's two-layer decomposition, torch
autograd, dense SVDs and exact identities (docs/deep.md)."""

from __future__ import annotations

import pytest
import torch

from gradrank import config
from gradrank.core import engine
from gradrank.models import capture as capture_mod
from gradrank.models import mlp
from gradrank.models import registry as spec
from gradrank.models.closed_form import gradient
from gradrank.models.mu import decompose
from gradrank.studies import analyze as analysis
from gradrank.studies import layers as layers_mod


def _cfg(*sets, n=60, d=80, m=100):
    return config.load(sets=[f"data.n={n}", f"data.d={d}", f"model.width={m}", *sets])


def _autograd_grads(problem: spec.Problem, names) -> dict[str, torch.Tensor]:
    """Weight gradients of the sample-weighted mean loss by plain backward, transposed to d_in x d_out."""
    model = problem.model
    model.zero_grad(set_to_none=True)
    sizes = [capture_mod.batch_size(x) for x, _ in problem.batches]
    for (x, t), n_b in zip(problem.batches, sizes):
        (problem.loss(spec.forward(problem, x), t) * (n_b / sum(sizes))).backward()
    mods = dict(model.named_modules())
    return {n: mods[n].weight.grad.T.clone() for n in names}


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("model.activation=tanh", "loss.kind=logistic", "data.target=single_index", "data.link=sign"),
        ("model.scaling=mf", "model.planted=2", "data.nu=0.6", "model.activation=gelu"),
    ],
)
def test_two_layer_case_is_the_existing_decomposition(sets):
    """Depth 2: the first layer's S1, S12, S2 and E equal gradrank's decomposition with the empirical mu."""
    cfg = _cfg("analysis.mu=empirical", *sets)
    problem = spec.resolve("mlp", cfg)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    factors, spike, source = layers_mod.decompose_layer(cap.layers["layers.0"], problem.spike)
    out = engine.run(factors, spike, cfg.analysis)
    grad_new, dec_new, form, err = factors, out.dec, out.form, out.factorization_error
    assert (form, source) == ("residue", "data") and err < 1e-13
    cfg0, ds, net = analysis.prepare(cfg)
    grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    dec = decompose(grad, ds, net, grad.Sp.mean(0))
    scale = float(grad.dense().norm())
    for term in ("S1", "S12", "S2"):
        diff = getattr(dec_new, term).dense() - getattr(dec, term).dense()
        assert float(diff.norm()) <= 1e-10 * scale, term
    assert float((dec_new.E_dense(ds.X_B) - dec.E_dense(ds.X_B)).norm()) <= 1e-10 * scale
    assert float((grad_new.gradient() - grad.dense()).norm()) <= 1e-10 * scale
    # the measures: the analysis' own metrics of the same gradient
    old = analysis.analyze(cfg).metrics
    new = layers_mod.analyze_problem(problem, cfg).layer("layers.0")
    assert new.singular_values == pytest.approx(old["singular_values"], rel=1e-10, abs=1e-12 * old["norms"]["G"])
    for k in ("G", "S1", "S12", "S2", "E"):
        assert new.norms[k] == pytest.approx(old["norms"][k], rel=1e-9), k
    assert (new.outliers, new.regime) == (old["rank"]["outliers"], old["regime"])
    assert new.alignment["residue"] == pytest.approx(old["alignment"]["residue"], abs=1e-9)


def test_deep_mlp_identity_and_spectra_against_autograd_svd():
    """Every layer of a depth-4 MLP (factored and dense routes): the captured G equals autograd's
    weight gradient, the identity holds to rounding, and the spectrum matches torch's dense SVD."""
    cfg = _cfg("model.depth=4", "model.hidden=[100, 30, 100]", "model.gain=1.4142135623730951")
    problem = spec.resolve("mlp", cfg)
    res = layers_mod.analyze_problem(problem, cfg)
    ref = _autograd_grads(problem, [r.name for r in res.layers])
    assert [r.name for r in res.layers] == ["layers.0", "layers.1", "layers.2", "readout"]
    assert {r.spectrum_route for r in res.layers} == {"factored", "dense"}
    for r in res.layers:
        G = ref[r.name]
        assert r.shape == list(G.shape) and r.form == "residue" and r.rows == 60
        assert r.identity_error < 1e-12, r.name
        s = torch.linalg.svdvals(G)
        mine = torch.as_tensor(res.arrays[f"{r.name}/G"])
        assert torch.allclose(mine[: s.numel()], s, rtol=0, atol=1e-8 * float(s[0])), r.name
        assert r.norms["G_fro"] == pytest.approx(float(G.norm()), rel=1e-10)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    for name, f in cap.layers.items():
        assert torch.allclose(f.gradient(), ref[name], rtol=0, atol=1e-13 * float(ref[name].norm()))
        assert f.H.dtype == torch.float64
    # deeper inputs: principal spike, and it follows the data spike's propagation
    assert [r.spike["source"] for r in res.layers] == ["data", "principal", "principal", "principal"]


class TiedNet(torch.nn.Module):
    """`shared` is called twice per forward (weight tying)."""

    def __init__(self, norm: bool = False, outputs: int = 1):
        super().__init__()
        torch.manual_seed(1)
        self.inp = torch.nn.Linear(6, 8)
        self.shared = torch.nn.Linear(8, 8)
        self.norm = torch.nn.BatchNorm1d(8) if norm else torch.nn.Identity()
        self.out = torch.nn.Linear(8, outputs)
        self.double()

    def forward(self, x):
        h = torch.tanh(self.shared(torch.tanh(self.inp(x))))
        h = self.norm(torch.tanh(self.shared(h)))
        y = self.out(h)
        return y[:, 0] if y.shape[1] == 1 else y


def _tied_problem(norm=False, outputs=1, sizes=(5, 7, 4)):
    g = torch.Generator().manual_seed(3)
    batches = [
        (torch.randn(k, 6, generator=g, dtype=torch.float64), torch.randn(k, generator=g, dtype=torch.float64)) for k in sizes
    ]
    if outputs > 1:
        batches = [(x, torch.randint(0, outputs, (x.shape[0],), generator=g)) for x, _ in batches]
        loss = torch.nn.functional.cross_entropy
    else:
        loss = lambda f, y: ((f - y) ** 2).mean()  # noqa: E731
    return spec.Problem("tied", TiedNet(norm, outputs), batches, loss)


R, GEN = "residue", "general"


@pytest.mark.parametrize(
    "norm, outputs, forms", [(False, 1, (R, R, R)), (True, 1, (GEN, GEN, R)), (False, 3, (R, R, R)), (True, 3, (GEN, GEN, R))]
)
def test_weight_tying_and_batches_accumulate_like_autograd(norm, outputs, forms):
    """Two calls per forward and three batches (n = 16 samples, 32 rows for the tied layer): the
    factors' G equals autograd's. Below a batch norm samples interact (general form); the layer after
    it still factors (D = r J with J = 1); three outputs factor too (D = sum_c r_c J_c)."""
    problem = _tied_problem(norm, outputs)
    names = ["inp", "shared", "out"]
    ref = _autograd_grads(problem, names)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    assert cap.samples == 16 and cap.layers["shared"].calls == 2 and cap.layers["shared"].rows == 32
    for name in names:
        f = cap.layers[name]
        scale = float(ref[name].norm())
        assert torch.allclose(f.gradient(), ref[name], rtol=0, atol=1e-13 * scale), name
        assert torch.allclose(f.G, ref[name], rtol=0, atol=1e-13 * scale), name
    res = layers_mod.analyze_problem(problem, config.load())
    assert tuple(r.form for r in res.layers) == forms
    assert all(r.identity_error < 1e-12 for r in res.layers), [r.identity_error for r in res.layers]
    errs = [r.factorization_error for r in res.layers]
    assert all((e < 1e-13) if form == R else (e > 1e-3) for e, form in zip(errs, forms)), errs


class SharedInputNet(torch.nn.Module):
    """Two layers reading the same input (an attention block's query and key), a readout after."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.query, self.key, self.out = (torch.nn.Linear(a, b).double() for a, b in ((7, 6), (7, 6), (6, 1)))
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) / 2

    def forward(self, x):
        return self.out(torch.tanh(self.query(x)) * torch.tanh(self.key(x))).squeeze(-1)


def test_shared_input_is_kept_once_and_its_shared_split_equals_one_by_one():
    """Layers reading one input keep one H (the capture stores it once); their G's equal autograd's;
    the analysis with one split shared by query and key gives, bit for bit, what each layer analysed
    alone gives (no shared split); the principal spike is the centred input's top right singular vector."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 7, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    u = torch.linspace(-1, 1, 7, dtype=torch.float64) / 1.2
    x += 2.0 + 4 * torch.randn(30, 1, generator=g, dtype=torch.float64) * u  # a mean and a spike along u
    problem = spec.Problem("shared", SharedInputNet(), [(x, y)], lambda f, t: ((f - t) ** 2).mean())
    names = ["query", "key", "out"]
    ref = _autograd_grads(problem, names)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    assert cap.layers["query"].H is cap.layers["key"].H and cap.layers["out"].H is not cap.layers["query"].H
    for name in names:
        assert torch.allclose(cap.layers[name].gradient(), ref[name], rtol=0, atol=1e-13 * float(ref[name].norm())), name
    cfg = config.load()
    both = layers_mod.analyze_capture(cap, cfg, problem)
    with torch.no_grad():
        alone = [layers_mod.analyze_layer(f, cfg, problem.spike)[0] for f in cap.layers.values()]
    assert [r.to_dict() for r in both.layers] == [r.to_dict() for r in alone]
    ds = layers_mod.decompose_layer(cap.layers["query"])[1]  # the principal spike: the top direction of the centred input
    v1 = torch.linalg.svd(x - x.mean(0), full_matrices=False)[2][0]
    assert abs(float(ds.q @ v1)) > 1 - 1e-12
    assert [r.form for r in alone] == ["residue"] * 3 and all(r.identity_error < 1e-13 for r in alone)


def test_classifier_outputs_residue_form_against_autograd_and_dense_terms():
    """C = 3 outputs, cross entropy: R = softmax(f) - onehot(y) (its closed form), J^(c) per output
    (the first layer's against per-sample autograd Jacobians, the readout's = e_c), the form is
    "residue", and S1 (rank <= 3, matrix factors), S12, S2, E equal their dense formulas from H, R
    and J and sum to autograd's G, on both spectrum routes (the hidden layers have n < d, m)."""
    g = torch.Generator().manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Linear(70, 60), torch.nn.Tanh(), torch.nn.Linear(60, 50), torch.nn.Tanh(), torch.nn.Linear(50, 3)
    ).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[-1] ** 0.5
    n = 30
    x, y = torch.randn(n, 70, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    problem = spec.Problem("classifier", model, [(x, y)], torch.nn.functional.cross_entropy)
    names = ["0", "2", "4"]
    ref = _autograd_grads(problem, names)
    cap = capture_mod.capture(problem, spec.linear_layers(model))
    with torch.no_grad():
        P = torch.softmax(model(x), 1)
    R_ref = P - torch.nn.functional.one_hot(y, 3).double()
    for i in (0, 7):  # the first layer's J^(c)_i = d f_c(x_i) / d o_i, o = W_1 x_i + b_1
        jac = torch.autograd.functional.jacobian(lambda o: model[1:](o), model[0](x[i]).detach())  # 3 x 60
        assert torch.allclose(cap.layers["0"].J[:, i], jac, rtol=0, atol=1e-14)
    assert torch.equal(cap.layers["4"].J, torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, n, 3))
    res = layers_mod.analyze_capture(cap, config.load(), problem)
    assert [r.spectrum_route for r in res.layers] == ["factored", "factored", "dense"]
    for name, r in zip(names, res.layers):
        f = cap.layers[name]
        assert torch.allclose(f.r, R_ref, rtol=0, atol=1e-14)
        assert r.form == "residue" and r.factorization_error < 1e-14 and r.identity_error < 1e-13
        _, ds, _ = layers_mod.decompose_layer(f, problem.spike)
        dec = engine.run(f.factors(), ds, config.load().analysis).dec
        M = f.J.mean(1).T  # m x C: each output's mean Jacobian
        D_perp = f.D - R_ref @ M.T
        terms = {
            "S1": ds.H_B.T @ R_ref @ M.T / n,
            "S12": ds.zeta / n * torch.outer(ds.q, M @ (R_ref.T @ ds.z)),
            "S2": ds.zeta / n * torch.outer(ds.q, D_perp.T @ ds.z),
            "E": ds.H_B.T @ D_perp / n,
        }
        G = ref[name]
        mine = {"S1": dec.S1.dense(), "S12": dec.S12.dense(), "S2": dec.S2.dense(), "E": dec.E_dense(ds.H_B)}
        for k in terms:
            assert torch.allclose(mine[k], terms[k], rtol=0, atol=1e-13 * float(G.norm())), (name, k)
        assert torch.allclose(sum(terms.values()), G, rtol=0, atol=1e-13 * float(G.norm())), name
        assert r.norms["S1"] == pytest.approx(float(torch.linalg.matrix_norm(terms["S1"], 2)), rel=1e-10)
        assert dec.S1.left.shape == (f.H.shape[1], 3)
        S_E = torch.linalg.svdvals(terms["E"])
        assert r.norms["E"] == pytest.approx(float(S_E[0]), rel=1e-8), name
        U_G, S_G, _ = torch.linalg.svd(G)
        assert r.singular_values == pytest.approx(S_G[: len(r.singular_values)].tolist(), rel=1e-8, abs=1e-12)
        Q_res, S_res, _ = torch.linalg.svd(ds.H_B.T @ R_ref, full_matrices=False)  # the residue subspace span(X_B^T R):
        Q_res = Q_res[:, S_res > 1e-8 * S_res[0]]  # rank 2, as softmax's residues sum to zero over the classes
        assert Q_res.shape[1] == 2
        assert r.alignment["residue"][0] == pytest.approx(float((Q_res.T @ U_G[:, 0]).norm()), rel=1e-6)


def test_float32_model_stays_float32():
    cfg = _cfg("model.depth=3", "compute.dtype=float32")
    problem = spec.resolve("mlp", cfg)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    assert all(f.H.dtype == f.D.dtype == f.J.dtype == torch.float32 for f in cap.layers.values())
    assert cap.layers["readout"].G.dtype == torch.float32  # the dense route keeps autograd's G
    res = layers_mod.analyze_problem(problem, cfg)
    assert res.dtype == "float32" and all(r.identity_error < 1e-5 for r in res.layers)
    res64 = layers_mod.analyze_problem(spec.resolve("mlp", _cfg("model.depth=3")), _cfg("model.depth=3"))
    assert res64.dtype == "float64"
    for a, b in zip(res.layers, res64.layers):
        assert a.norms["G"] == pytest.approx(b.norms["G"], rel=1e-4)


def test_multi_batch_mlp_equals_one_batch():
    """layers.batch_size splits the data: the factors accumulate to the same G (and the same spectrum)."""
    whole = layers_mod.analyze_problem(spec.resolve("mlp", _cfg("model.depth=3")), _cfg("model.depth=3"))
    split = layers_mod.analyze_problem(
        spec.resolve("mlp", _cfg("model.depth=3", "layers.batch_size=25")), _cfg("model.depth=3", "layers.batch_size=25")
    )
    for a, b in zip(whole.layers, split.layers):
        assert a.samples == b.samples == 60
        assert b.singular_values == pytest.approx(a.singular_values, rel=1e-10, abs=1e-14)
        assert b.norms["S1"] == pytest.approx(a.norms["S1"], rel=1e-10)


def test_mlp_gain_and_depth_widths():
    p = spec.resolve("mlp", _cfg("model.depth=3", "model.gain=2.0"))
    assert torch.allclose(p.model.layers[1].weight.norm(dim=1), torch.full((100,), 2.0, dtype=torch.float64))
    assert mlp.widths(_cfg("model.depth=5")) == [100] * 4


def test_memory_guard_refuses_and_force_runs():
    from gradrank.errors import InputError

    cfg = _cfg("model.depth=3", "compute.max_memory_gb=1e-5")
    with pytest.raises(InputError, match="needs about .* GiB, more than the"):
        layers_mod.run(cfg)
    assert layers_mod.run(cfg, force=True).layers


def test_results_round_trip(tmp_path):
    from gradrank.results import layers as layers_out

    cfg = _cfg("model.depth=3")
    res = layers_mod.run(cfg)
    layers_out.write(tmp_path / "run", res)
    back = layers_out.read(tmp_path / "run")
    assert back.to_dict() == res.to_dict()
    for key, v in res.arrays.items():
        assert (back.arrays[key] == v).all()
