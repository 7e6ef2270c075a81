"""gradrank's own mutation audit: plant realistic bugs one at a time and see whether the tests notice.

    python scripts/mutants.py                     # every mutant, one at a time
    python scripts/mutants.py --jobs 2 --timeout 240 --json /tmp/mutants.json
    python scripts/mutants.py --only split- --only metrics-rank   # ids starting with these
    python scripts/mutants.py --check             # each mutant applies cleanly to the current code
    python scripts/mutants.py --list

Each mutant is a text edit (`old` must occur exactly once in `path`, so it applies to one place or
the audit says it no longer applies) run against a fresh temporary copy of the tree: the worktree's
files are never written. Its tests (the few files that guard that module, gap tests first so a kill
comes early) run with `pytest -x` under a timeout; a failing or timed-out run kills the mutant, a
passing one lets it survive. Before the mutants, each distinct test selection runs once unmutated:
a selection that fails on clean code makes its mutants "invalid", never "killed".

A mutant for a new module is one more `Mutant(...)` entry in MUTANTS (and, if its tests differ from
the module's usual ones, a MODULE_TESTS line). Mutants argued equivalent (no observable change)
carry the argument in `equivalent` and are reported apart. Results and survivors: docs/testing.md.
This is a tool to run by hand, not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "runs", "*.egg-info")


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str  # file relative to the repository root
    old: str  # exact text, occurring exactly once in the file
    new: str
    kind: str  # factor | sign | off-by-one | side | stream | order | default | formula | boundary
    tests: tuple[str, ...] = ()  # pytest selections; () = MODULE_TESTS[path]
    equivalent: str = ""  # why no test can tell it from the original (reported apart)


# the files that guard each module, the fast gap tests first
MODULE_TESTS: dict[str, tuple[str, ...]] = {
    "gradrank/core/spectra.py": ("tests/test_gaps_streams.py", "tests/test_spectral.py"),
    "gradrank/core/split.py": (
        "tests/test_gaps_analysis.py",
        "tests/test_decompose.py",
        "tests/test_layers.py::test_classifier_outputs_residue_form_against_autograd_and_dense_terms",
    ),
    "gradrank/core/activations.py": ("tests/test_gradient.py",),
    "gradrank/data/spiked.py": ("tests/test_gaps_streams.py", "tests/test_rng.py"),
    "gradrank/models/closed_form.py": ("tests/test_gaps_train.py", "tests/test_gradient.py", "tests/test_decompose.py"),
    "gradrank/models/mu.py": ("tests/test_gaps_analysis.py", "tests/test_decompose.py"),
    "gradrank/models/twolayer.py": ("tests/test_gaps_streams.py", "tests/test_gradient.py", "tests/test_paper_claims.py"),
    "gradrank/data/real.py": ("tests/test_gaps_streams.py", "tests/test_realdata.py"),
    "gradrank/models/regularizers.py": (
        "tests/test_gaps_train.py",
        "tests/test_gaps_analysis.py",
        "tests/test_regularizers.py",
    ),
    "gradrank/studies/theory.py": ("tests/test_theory.py",),
    "gradrank/core/measures.py": ("tests/test_gaps_analysis.py", "tests/test_decompose.py"),
    "gradrank/core/fits.py": ("tests/test_gaps_analysis.py", "tests/test_theory.py"),
    "gradrank/studies/analyze.py": (
        "tests/test_gaps_analysis.py",
        "tests/test_gaps_train.py",
        "tests/test_decompose.py",
        "tests/test_spectral.py",
    ),
    "gradrank/studies/train.py": ("tests/test_gaps_train.py", "tests/test_train.py"),
    "gradrank/sweeps/store.py": ("tests/test_gaps_stores.py", "tests/test_sweep.py"),
    "gradrank/sweeps/spec.py": ("tests/test_gaps_stores.py", "tests/test_sweep.py"),
    "gradrank/rng.py": ("tests/test_rng.py", "tests/test_gaps_streams.py"),
    "gradrank/core/lapack.py": ("tests/test_gaps_streams.py", "tests/test_spectral.py"),
    "gradrank/core/trust.py": ("tests/test_gaps_analysis.py", "tests/test_decompose.py", "tests/test_spectral.py"),
    "gradrank/results/tables.py": ("tests/test_gaps_stores.py", "tests/test_sweep.py"),
    "gradrank/models/capture.py": (
        "tests/test_gaps_mutants.py::test_capture_loss_is_the_sample_weighted_mean_over_batches",
        "tests/test_anynet_spec.py",
        "tests/test_layers.py",
    ),
    "gradrank/studies/layers.py": (
        "tests/test_gaps_mutants.py::test_layer_spike_zeta_orientation_and_dense_E_against_dense_references",
        "tests/test_layers.py",
        "tests/test_anynet_spec.py",
    ),
    "gradrank/core/projectors.py": ("tests/test_advisor.py",),
    "gradrank/studies/onestep.py": (
        "tests/test_gaps_mutants.py::test_onestep_update_singular_values_are_those_of_W1_minus_W0_under_mean_field",
        "tests/test_gaps_mutants.py::test_onestep_steps_take_the_input_noise_draw_of_their_step",
        "tests/test_onestep.py",
    ),
}

SP, SPLIT, ACT, DATA, GRAD, MU, NET, REAL, REG, THEORY, MET, FITS, ANA, TRAIN, STORE, SWEEP, RNG = (
    "gradrank/core/spectra.py",
    "gradrank/core/split.py",
    "gradrank/core/activations.py",
    "gradrank/data/spiked.py",
    "gradrank/models/closed_form.py",
    "gradrank/models/mu.py",
    "gradrank/models/twolayer.py",
    "gradrank/data/real.py",
    "gradrank/models/regularizers.py",
    "gradrank/studies/theory.py",
    "gradrank/core/measures.py",
    "gradrank/core/fits.py",
    "gradrank/studies/analyze.py",
    "gradrank/studies/train.py",
    "gradrank/sweeps/store.py",
    "gradrank/sweeps/spec.py",
    "gradrank/rng.py",
)
LAPACK, TRUST, TABLES = "gradrank/core/lapack.py", "gradrank/core/trust.py", "gradrank/results/tables.py"
CAPTURE, LAYERS, PROJ, ONESTEP = (
    "gradrank/models/capture.py",
    "gradrank/studies/layers.py",
    "gradrank/core/projectors.py",
    "gradrank/studies/onestep.py",
)

MUTANTS: list[Mutant] = [
    # ---- linalg: spectra of factored matrices
    Mutant(
        "spectral-window-eps",
        SP,
        "return bool(lam[k - 1] >= lam[0] * resolution(lam.dtype)) if k else True",
        "return bool(lam[k - 1] >= lam[0] * resolution(lam.dtype) ** 2) if k else True",
        "factor",
    ),
    Mutant(
        "spectral-window-index",
        SP,
        "return bool(lam[k - 1] >= lam[0] * resolution(lam.dtype)) if k else True",
        "return bool(lam[max(k - 2, 0)] >= lam[0] * resolution(lam.dtype)) if k else True",
        "off-by-one",
    ),
    Mutant(
        "spectral-fro2-coef",
        SP,
        "return Spectrum(coef * values, U, coef * s[:k], V, coef**2 * fro2)",
        "return Spectrum(coef * values, U, coef * s[:k], V, coef * fro2)",
        "factor",
    ),
    Mutant(
        "spectral-qr-side",
        SP,
        'R_L = torch.linalg.qr(L.T, mode="r")[1]  # n x n, L^T = Q R_L',
        'R_L = torch.linalg.qr(L, mode="r")[1]',
        "side",
    ),
    Mutant("spectral-gram-update-sign", SP, "K[:n, :n] += C\n    return K", "K[:n, :n] -= C\n    return K", "sign"),
    Mutant("spectral-mrrr-order", LAPACK, "P = np.asfortranarray(Z[:, ::-1])", "P = np.asfortranarray(Z)", "order"),
    Mutant("spectral-data-unscaled", SP, "else 2.0 ** math.frexp(top)[1]", "else 1.0", "boundary"),
    Mutant(
        "spectral-topk-residual-k",
        SP,
        "residual = float((AV[:, :k] - U[:, :k] * s[:k])",
        "residual = float((AV[:, : max(k - 1, 1)] - U[:, : max(k - 1, 1)] * s[: max(k - 1, 1)])",
        "off-by-one",
    ),
    Mutant(
        "spectral-topk-inverse",
        SP,
        "inv = torch.where(s > s[0] * eps(s.dtype), 1 / s, 0.0)",
        "inv = torch.where(s > s[0] * eps(s.dtype), 1 / s**2, 0.0)",
        "factor",
    ),
    Mutant(
        "spectral-rmv-coef",
        SP,
        "return (lambda V: _A(L, R, coef, V)), (lambda U: _At(L, R, coef, U))",
        "return (lambda V: _A(L, R, coef, V)), (lambda U: _At(L, R, 1.0, U))",
        "factor",
    ),
    Mutant(
        "spectral-pair-fallback",
        SP,
        "if not 64 * lam_other[0] >= s[0] ** 2:\n        other = exact_other()\n    else:\n        values",
        "if not 1e6 * lam_other[0] >= s[0] ** 2:\n        other = exact_other()\n    else:\n        values",
        "factor",
    ),
    Mutant(
        "spectral-dense-pair-fallback",
        SP,
        "if not 64 * lam_other[0] >= s[0] ** 2:\n        other = exact_other()\n    else:\n        other",
        "if not 1e6 * lam_other[0] >= s[0] ** 2:\n        other = exact_other()\n    else:\n        other",
        "factor",
    ),
    Mutant("spectral-dense-pair-Z", SP, "K = _updated_gram(C, Y, M @ B, B,", "K = _updated_gram(C, Y, -(M @ B), B,", "sign"),
    # ---- decomposition: the four-term split
    Mutant(
        "split-S12-zeta",
        SPLIT,
        "S12=RankOne(coef * zeta * float(z @ r), q, a_mu)",
        "S12=RankOne(coef * float(z @ r), q, a_mu)",
        "factor",
    ),
    Mutant("split-centre-sign", SPLIT, "(Sp - mu[None, :])", "(Sp + mu[None, :])", "sign"),
    Mutant("split-outputs-centre", SPLIT, "mul_(Sp[c] - mu[None, :, c])", "mul_(Sp[c])", "formula"),
    Mutant("split-outputs-S12", SPLIT, "q, a_mu @ (R.T @ z)", "q, a_mu @ R.T.sum(1)", "formula"),
    Mutant(
        "capture-outputs-J", CAPTURE, "f_c = outputs.sum() if C == 1 else outputs[:, c].sum()", "f_c = outputs.sum()", "formula"
    ),
    Mutant("split-S1-right", SPLIT, "S1=RankOne(coef, X_B.T @ r, a_mu)", "S1=RankOne(coef, X_B.T @ r, mu)", "formula"),
    Mutant(
        "split-S2-double-r",
        SPLIT,
        "S2=RankOne(coef * zeta, q, D_perp.T @ z),  # a o",
        "S2=RankOne(coef * zeta, q, D_perp.T @ (z * r)),  # a o",
        "formula",
    ),
    Mutant(
        "split-norm-abs",
        SPLIT,
        "return abs(self.scale) * float(self.left.norm())",
        "return self.scale * float(self.left.norm())",
        "sign",
    ),
    # ---- twolayer: gradient, mu, activations, network, data, real data, regularisers, theory
    Mutant("gradient-coef-n", GRAD, "coef = net.gamma / X.shape[0]", "coef = net.gamma / X.shape[1]", "side"),
    Mutant("gradient-logistic-sign", GRAD, "-y * torch.sigmoid(-y * f)", "-y * torch.sigmoid(y * f)", "sign"),
    Mutant("gradient-mse-half", GRAD, "return 0.5 * r * r, r", "return r * r, r", "factor"),
    Mutant(
        "gradient-reg-transpose",
        GRAD,
        "(lambda U: self.rmv(U) + reg.T @ U)",
        "(lambda U: self.rmv(U) + reg.T @ U * 0.5)",
        "factor",
    ),
    Mutant("mu-empirical-D", MU, "return grad.Sp.mean(0), 0.0", "return grad.D.mean(0), 0.0", "formula"),
    Mutant(
        "mu-empirical-axis",
        MU,
        "return grad.Sp.mean(0), 0.0",
        "return grad.Sp.mean(0) * (grad.Sp.shape[0] - 1) / grad.Sp.shape[0], 0.0",
        "off-by-one",
    ),
    Mutant(
        "mu-scale-zeta",
        MU,
        "(ds.zeta * (net.W @ ds.q)) ** 2).clamp_min(0)",
        "ds.zeta * (net.W @ ds.q) ** 2).clamp_min(0)",
        "factor",
    ),
    Mutant(
        "mu-hermite-sqrt2",
        MU,
        "g = tridiagonal_values(np.zeros(k), np.sqrt(np.arange(1.0, k)))",
        "g = tridiagonal_values(np.zeros(k), np.sqrt(np.arange(1.0, k) / 2))",
        "factor",
    ),
    Mutant(
        "mu-panels-even",
        MU,
        "return (net.act.d1(u) + net.act.d1(-u)) @ w",
        "return 2 * net.act.d1(u) @ w",
        "formula",
        equivalent="every registered sigma' is even (tanh, sigmoid, erf: then 2 sigma'(u) = sigma'(u) + sigma'(-u)) or a constant "
        "plus an odd function (relu, leaky_relu, gelu, softplus, quadratic, linear: then the symmetric Hermite rules are exact and "
        "the panel rule is never reached); an activation of neither kind would make it observable",
    ),
    Mutant("activation-gelu-d2", ACT, "lambda u: phi(u) * (2 - u * u),", "lambda u: phi(u) * (1 - u * u),", "factor"),
    Mutant(
        "activation-leaky-slope",
        ACT,
        "torch.where(u > 0, torch.ones_like(u), torch.full_like(u, s))",
        "torch.where(u > 0, torch.ones_like(u), torch.zeros_like(u))",
        "formula",
    ),
    Mutant(
        "network-gamma-swap",
        NET,
        'return mc.c / (math.sqrt(m) if mc.scaling == "ntk" else m)',
        'return mc.c / (m if mc.scaling == "ntk" else math.sqrt(m))',
        "side",
    ),
    Mutant("network-outer-stream", NET, 'g = generator(seed, "outer")', 'g = generator(seed, "weights")', "stream"),
    Mutant("network-planted-power", NET, "mc.planted * n ** (-0.25)", "mc.planted * n ** (-0.5)", "factor"),
    Mutant("network-balanced-half", NET, "a[m // 2 :] = -1", "a[m // 2 + 1 :] = -1", "off-by-one"),
    Mutant("data-zeta-dimension", DATA, "else float(n) ** dc.nu", "else float(d) ** dc.nu", "side"),
    Mutant("data-trace-normalisation", DATA, "lam = lam * (dc.d / lam.sum())", "lam = lam / lam.sum()", "factor"),
    Mutant(
        "data-test-stream",
        DATA,
        'fresh(dc, seed, loss, ds, dc.n_test, "test", "test_noise")',
        'fresh(dc, seed, loss, ds, dc.n_test, "bulk", "test_noise")',
        "stream",
    ),
    Mutant(
        "data-test-noise-stream",
        DATA,
        'fresh(dc, seed, loss, ds, dc.n_test, "test", "test_noise")',
        'fresh(dc, seed, loss, ds, dc.n_test, "test", "noise")',
        "stream",
    ),
    Mutant(
        "data-index-scale-spike",
        DATA,
        "var = var + (ds.zeta * (B @ ds.q)) ** 2",
        "var = var + ds.zeta * (B @ ds.q) ** 2",
        "factor",
    ),
    Mutant(
        "data-given-zeta-mean", DATA, "zeta = float(Xq.pow(2).mean().sqrt())", "zeta = float(Xq.pow(2).sum().sqrt())", "factor"
    ),
    Mutant(
        "data-given-eig-n",
        DATA,
        "eig = data_spectrum(X_B, 0).values.pow(2) / n",
        "eig = data_spectrum(X_B, 0).values.pow(2) / (n - 1)",
        "off-by-one",
    ),
    Mutant("data-alpha-fit-sign", DATA, "else (-fit[0], fit[1])", "else (fit[0], fit[1])", "sign"),
    Mutant("data-embed-scale", DATA, "/ math.sqrt(X.shape[1])", "/ X.shape[1]", "factor"),
    Mutant(
        "data-spike-before-bulk",
        DATA,
        "X_B, z = _draw(n, lam, V, dc.latent, g_bulk, g_spike)",
        "X_B, z = _draw(n, lam, V, dc.latent, g_spike, g_bulk)",
        "stream",
    ),
    Mutant(
        "realdata-split-overlap",
        REAL,
        "tr, te = perm[:n], perm[n : n + n_test]",
        "tr, te = perm[:n], perm[n - 1 : n + n_test - 1]",
        "off-by-one",
    ),
    Mutant("realdata-parity", REAL, "np.where(labels % 2 == 0, 1.0, -1.0)", "np.where(labels % 2 == 1, 1.0, -1.0)", "sign"),
    Mutant("realdata-patches-stream", REAL, 'g = generator(seed, "patches")', 'g = generator(seed, "split")', "stream"),
    Mutant(
        "noise-covariance-tau", REG, "ds.eigenvalues + tau**2 if ds.population", "ds.eigenvalues + tau if ds.population", "factor"
    ),
    Mutant("noise-joins-bulk", REG, "X_B=ds.X_B.repeat(K, 1) + N,", "X_B=ds.X_B.repeat(K, 1),", "formula"),
    Mutant("noise-stream", REG, 'generator(seed, "input_noise", draw)', 'generator(seed, "noise", draw)', "stream"),
    Mutant(
        "reg-decay-value-half",
        REG,
        "value += 0.5 * rc.weight_decay * float(net.W.pow(2).sum())",
        "value += rc.weight_decay * float(net.W.pow(2).sum())",
        "factor",
    ),
    Mutant(
        "reg-jacobian-value-gamma",
        REG,
        "return float(net.gamma**2 * (net.a * net.act.d1(net.preactivations(X)) @ net.W)",
        "return float(net.gamma * (net.a * net.act.d1(net.preactivations(X)) @ net.W)",
        "factor",
    ),
    Mutant(
        "reg-jacobian-gradient-sign", REG, "((h[:, None] * Gm).T @ B + X.T @ C)", "((h[:, None] * Gm).T @ B - X.T @ C)", "sign"
    ),
    Mutant(
        "reg-surrogate-laplacian-sign",
        REG,
        "(h * J + r * _laplacian(net, Z)).mean()",
        "(h * J - r * _laplacian(net, Z)).mean()",
        "sign",
    ),
    Mutant(
        "reg-tanh-d3-sign",
        ACT,
        "return (1 - t * t) * (6 * t * t - 2)",
        "return (1 - t * t) * (6 * t * t + 2)",
        "sign",
        tests=MODULE_TESTS[REG],
    ),
    Mutant(
        "reg-sum-parts",
        REG,
        "return sum(parts[1:], parts[0]) if parts else None",
        "return parts[-1] if parts else None",
        "formula",
    ),
    Mutant(
        "reg-jacobian-value-mean",
        REG,
        "rc.jacobian * jacobian_value(net, X)",
        "rc.jacobian * jacobian_value(net, X) / 2",
        "factor",
    ),
    Mutant("theory-kappa", THEORY, "kappa = nu - 0.5 + omega", "kappa = nu - 0.25 + omega", "factor"),
    Mutant("theory-ve", THEORY, "ve = None if p is None else -a * p / 2", "ve = None if p is None else -a * p", "factor"),
    Mutant("theory-regime-boundary", THEORY, "    elif nu < 0.5:\n", "    elif nu <= 0.5:\n", "boundary"),
    # ---- measures
    Mutant("metrics-effective-rank-energy", MET, "p = s / s.sum()", "p = s**2 / (s**2).sum()", "formula"),
    Mutant(
        "metrics-energy90-off-by-one",
        MET,
        "energy90=int((cum < 0.9).sum()) + 1,",
        "energy90=int((cum < 0.9).sum()),",
        "off-by-one",
    ),
    Mutant(
        "metrics-dominance-boundary",
        MET,
        "if outliers == 1 or s[0] > dominance * s[1]:",
        "if outliers == 1 or s[0] >= dominance * s[1]:",
        "boundary",
    ),
    Mutant(
        "metrics-rank-two-or",
        MET,
        "if cap_res >= threshold and cap_spk >= threshold:",
        "if cap_res >= threshold or cap_spk >= threshold:",
        "formula",
    ),
    Mutant(
        "metrics-label-tie",
        MET,
        "if res[i] >= threshold and res[i] >= spk[i]:",
        "if res[i] >= threshold and res[i] > spk[i]:",
        "boundary",
    ),
    Mutant(
        "metrics-right-mu-a", MET, "right_mu=abs_cos(spec_G.V, a * dec.mu),", "right_mu=abs_cos(spec_G.V, dec.mu),", "formula"
    ),
    Mutant(
        "metrics-right-spike-term",
        MET,
        "right_spike=abs_cos(spec_G.V, dec.S2.right),",
        "right_spike=abs_cos(spec_G.V, dec.S1.right),",
        "formula",
    ),
    Mutant("metrics-edge-margin", MET, "return max((1 + margin) * norm_E,", "return max(margin * norm_E,", "factor"),
    Mutant(
        "metrics-outlier-strict", MET, "return sum(1 for v in s if v > edge)", "return sum(1 for v in s if v >= edge)", "boundary"
    ),
    Mutant("metrics-share-E-operator", MET, "E=spec_E.fro2 / fro2,", "E=norms.E**2 / fro2,", "formula"),
    Mutant("metrics-captured-off-by-one", MET, "U_out = spec_G.U[:, :n_out]", "U_out = spec_G.U[:, : n_out + 1]", "off-by-one"),
    Mutant("metrics-direction-spike-column", MET, "float(GtP[:, -1].norm()))", "float(GtP[:, 1].norm()))", "off-by-one"),
    Mutant(
        "metrics-predicted-energy",
        MET,
        "pred = float(GtP[:, : P.shape[1]].pow(2).sum())",
        "pred = float(GtP[:, :1].pow(2).sum())",
        "off-by-one",
    ),
    Mutant("fits-dof", FITS, "dof = x.size - 2", "dof = x.size - 1", "off-by-one"),
    Mutant(
        "fits-one-sided-t", FITS, "t = float(stats.t.ppf(0.5 + level / 2, dof))", "t = float(stats.t.ppf(level, dof))", "formula"
    ),
    # ---- pipeline: analysis
    Mutant(
        "analysis-trust-before-residual",
        ANA,
        "            identity_error,\n            residual,\n",
        "            residual,\n            identity_error,\n",
        "order",
    ),
    Mutant(
        "analysis-loss-without-penalty",
        ANA,
        "loss=grad.loss + regularizers.penalty_value(cfg.regularizer, net, clean.X, clean.y, cfg.loss.kind),",
        "loss=grad.loss,",
        "formula",
    ),
    Mutant(
        "analysis-spectrum-tolerance",
        TRUST,
        'return 1e-3 if dtype == "float64" else 1e-2',
        'return 1e-1 if dtype == "float64" else 1e-2',
        "default",
    ),
    Mutant(
        "analysis-resolution-dtype",
        TRUST,
        "floor = singular_values[0] * resolution(dtype)",
        'floor = singular_values[0] * resolution("float64")',
        "default",
    ),
    Mutant(
        "analysis-noise-draw",
        ANA,
        "regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, noise_draw)",
        "regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, 0)",
        "stream",
    ),
    Mutant("analysis-probe-sign", ANA, "- left @ (right @ Omega)", "+ left @ (right @ Omega)", "sign"),
    Mutant("analysis-E-update-zeta", ANA, "U[:n, 0], U[n, 1] = grad.r, ds.zeta", "U[:n, 0], U[n, 1] = grad.r, 1.0", "factor"),
    Mutant(
        "analysis-reg-share",
        MET,
        "share=fro**2 / max(G_fro2, NORM_FLOOR),",
        "share=fro / max(G_fro2, NORM_FLOOR),",
        "factor",
        tests=MODULE_TESTS[ANA],
    ),
    Mutant("analysis-quadrature-threshold", TRUST, "QUADRATURE_TOL = 1e-6\n", "QUADRATURE_TOL = 1e-2\n", "default"),
    # ---- pipeline: training
    Mutant(
        "train-adam-beta2",
        TRAIN,
        'vh = adam["m"] / (1 - 0.9 ** adam["t"]), adam["v"] / (1 - 0.999 ** adam["t"])',
        'vh = adam["m"] / (1 - 0.9 ** adam["t"]), adam["v"] / (1 - 0.99 ** adam["t"])',
        "factor",
    ),
    Mutant(
        "train-adam-eps-inside", TRAIN, "direction = mh / (vh.sqrt() + 1e-8)", "direction = mh / (vh + 1e-8).sqrt()", "formula"
    ),
    Mutant(
        "train-adam-first-moment",
        TRAIN,
        'adam["m"] = 0.9 * adam["m"] + 0.1 * direction',
        'adam["m"] = 0.9 * adam["m"] + direction',
        "factor",
    ),
    Mutant("train-lr-unscaled", TRAIN, "lr = lr_effective(cfg, m)", "lr = tc.lr", "default"),
    Mutant("train-outer-batch-n", TRAIN, "@ r) / a_grad_ds.n", "@ r) / n", "side"),
    Mutant("train-epoch-boundary", TRAIN, "if cursor + tc.batch_size > n:", "if cursor + tc.batch_size >= n:", "off-by-one"),
    Mutant(
        "train-batches-stream",
        TRAIN,
        'batches = generator(cfg.seed, "batches")',
        'batches = generator(cfg.seed, "weights")',
        "stream",
    ),
    Mutant(
        "train-record-noise-draw",
        TRAIN,
        "step_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, draw)",
        "step_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, 0)",
        "stream",
    ),
    Mutant(
        "train-loss-noisy",
        TRAIN,
        "train_loss = grad.loss if step_ds is ds else _loss(kind, net, ds.X, ds.y)",
        "train_loss = grad.loss",
        "formula",
    ),
    Mutant(
        "train-drift-angle-min",
        MET,
        "return math.degrees(float(torch.arccos(c.min()))) if c.numel() else 0.0",
        "return math.degrees(float(torch.arccos(c.max()))) if c.numel() else 0.0",
        "formula",
        tests=("tests/test_gaps_train.py",),  # the one principal-angle helper, checked through training's drift
    ),
    Mutant(
        "train-drift-reference",
        TRAIN,
        "        return track_G.block[:, :k]\n",
        "        return track_G.block[:, :k] if U_prev is None else U_prev\n",
        "order",
    ),
    Mutant("train-objective-penalty", TRAIN, "objective=grad.loss + penalty,", "objective=grad.loss,", "formula"),
    Mutant(
        "train-stable-rank", TRAIN, "stable_rank=stable_rank(G_fro**2, s[0]),", "stable_rank=stable_rank(G_fro, s[0]),", "factor"
    ),
    Mutant("train-gd-penalty", TRAIN, "(grad.dense() if reg is None else grad.dense() + reg)", "grad.dense()", "formula"),
    Mutant(
        "train-sgd-penalty-data",
        TRAIN,
        "reg_b = regularizers.penalty_gradient(cfg.regularizer, net, batch.X, batch.y, kind)",
        "reg_b = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, kind)",
        "side",
    ),
    Mutant(
        "train-E-bulk",
        TRAIN,
        "E_mv = lambda V: dec.coef * (step_ds.X_B.T @ (dec.D_perp @ V))",
        "E_mv = lambda V: dec.coef * (step_ds.X.T @ (dec.D_perp @ V))",
        "formula",
    ),
    Mutant(
        "train-test-loss-data",
        TRAIN,
        "test_loss = _loss(kind, net, ds.X_test, ds.y_test)",
        "test_loss = _loss(kind, net, ds.X_test, ds.y[: ds.X_test.shape[0]])",
        "side",
    ),
    # ---- the sweep store and grid
    Mutant(
        "store-cell-formula",
        TABLES,
        '("=", "+", "@", "\\t", "\\r")',
        '("+", "@", "\\t", "\\r")',
        "formula",
        tests=MODULE_TESTS[STORE],
    ),
    Mutant(
        "store-list-index",
        STORE,
        'out |= {f"{name}.{i + 1}": x for i, x in enumerate(v)}',
        'out |= {f"{name}.{i}": x for i, x in enumerate(v)}',
        "off-by-one",
    ),
    Mutant("store-max-list", STORE, "if len(v) <= MAX_LIST and", "if len(v) < MAX_LIST and", "boundary"),
    Mutant(
        "store-state-swap",
        STORE,
        'return "failed" if self.failed_path(h).is_file() else "pending"',
        'return "pending" if self.failed_path(h).is_file() else "failed"',
        "formula",
    ),
    Mutant(
        "store-metric-prefix",
        STORE,
        'flat = {(f"metrics.{k}" if k in keys else k): v for k, v in flatten(metrics).items()}',
        "flat = flatten(metrics)",
        "formula",
    ),
    Mutant(
        "sweep-seed-offset",
        SWEEP,
        "seed_values = [base.seed + i for i in range(spec.seeds)]",
        "seed_values = [base.seed + i + 1 for i in range(spec.seeds)]",
        "off-by-one",
    ),
    Mutant(
        "sweep-range-step",
        SWEEP,
        "step = (stop - start) / (num - 1) if num > 1 else 0.0",
        "step = (stop - start) / num if num > 1 else 0.0",
        "off-by-one",
    ),
    Mutant(
        "sweep-retry-failed",
        SWEEP,
        'todo = [p for p in pts if store.state(p.hash) != "done"]',
        'todo = [p for p in pts if store.state(p.hash) == "pending"]',
        "formula",
    ),
    # ---- any network: capture of the factors, the per-layer split
    Mutant(
        "capture-batch-weight",
        CAPTURE,
        "rec = _Recorder(layers, n_b, mask, n_b / N)",
        "rec = _Recorder(layers, n_b, mask, 1.0)",
        "factor",
    ),
    Mutant(
        "capture-residue-nb",
        CAPTURE,
        "r = n_b * grads[-1].detach().reshape(n_b,",
        "r = grads[-1].detach().reshape(n_b,",
        "factor",
    ),
    Mutant(
        "capture-conv1d-transpose",
        CAPTURE,
        "g = (g.detach() if is_conv1d(layers[name]) else g.detach().T) * (n_b / N)",
        "g = (g.detach().T if is_conv1d(layers[name]) else g.detach()) * (n_b / N)",
        "side",
    ),
    Mutant("capture-sample-offset", CAPTURE, 'e["sample"] + offset)', 'e["sample"])', "off-by-one"),
    Mutant("capture-loss-mean", CAPTURE, "loss_sum += float(loss.detach()) * n_b", "loss_sum += float(loss.detach())", "factor"),
    Mutant(
        "capture-gradient-rows",
        CAPTURE,
        "return (self.H.T @ self.D) / self.rows",
        "return (self.H.T @ self.D) / self.samples",
        "side",
    ),
    Mutant(
        "layers-zeta-rows", LAYERS, "zeta = float(zz.norm()) / math.sqrt(f.rows)", "zeta = float(zz.norm()) / f.rows", "factor"
    ),
    Mutant("layers-spike-removal-sign", LAYERS, "torch.addr(H, z, q, alpha=-zeta)", "torch.addr(H, z, q, alpha=zeta)", "sign"),
    Mutant("layers-mu-from-D", LAYERS, "mu = J.mean(0) if J.ndim == 2", "mu = D.mean(0) if J.ndim == 2", "formula"),
    Mutant("layers-coef-samples", LAYERS, "dec = split(1.0 / n,", "dec = split(1.0 / f.samples,", "side"),
    Mutant("layers-spike-orientation", LAYERS, "float(zz @ known.z[f.sample]) < 0", "float(zz @ known.z[f.sample]) > 0", "sign"),
    Mutant(
        "layers-dense-E-sign",
        LAYERS,
        "dense_spectrum_pair(grad.dense(), *dec.spikes(),",
        "dense_spectrum_pair(-grad.dense(), *dec.spikes(),",
        "sign",
    ),
    # ---- the GaLore advisor's projectors
    Mutant(
        "proj-galore-side",
        PROJ,
        "A = P if P.shape[0] >= P.shape[1] else P.T",
        "A = P if P.shape[0] <= P.shape[1] else P.T",
        "side",
    ),
    Mutant("proj-refresh-early", PROJ, "t0 = T * (t // T)", "t0 = T * ((t + 1) // T)", "off-by-one"),
    Mutant(
        "proj-factored-coef",
        PROJ,
        "return coef * coef * (Ri * (K @ Ri)).sum(0)",
        "return coef * (Ri * (K @ Ri)).sum(0)",
        "factor",
    ),
    Mutant(
        "proj-rows-ascending",
        PROJ,
        "torch.argsort(g.col_norms2, descending=True, stable=True)",
        "torch.argsort(g.col_norms2, stable=True)",
        "sign",
    ),
    Mutant("proj-rank-column", PROJ, "min(1.0, float(means[i, r - 1]))", "min(1.0, float(means[i, r - 2]))", "off-by-one"),
    Mutant(
        "proj-recommend-interval",
        PROJ,
        '(e["rank"], -e["interval"], -e["captured"])',
        '(e["rank"], e["interval"], -e["captured"])',
        "sign",
    ),
    # ---- the one-step protocol
    Mutant(
        "onestep-ridge-n", ONESTEP, "cholesky_ex(K + n * float(lams[0]) * eye)", "cholesky_ex(K + float(lams[0]) * eye)", "factor"
    ),
    Mutant("onestep-ridge-grid-n", ONESTEP, "(e[:, None].clamp_min(0) + n * lam)", "(e[:, None].clamp_min(0) + lam)", "factor"),
    Mutant(
        "onestep-feature-scale",
        ONESTEP,
        "return net.act.f(net.preactivations(X)) / math.sqrt(net.m)",
        "return net.act.f(net.preactivations(X)) / net.m",
        "factor",
    ),
    Mutant("onestep-update-sign", ONESTEP, "W = net.W - (eta * mult) * G.T", "W = net.W + (eta * mult) * G.T", "sign"),
    Mutant(
        "onestep-readout-stream",
        ONESTEP,
        'ds.n, "onestep_readout", "onestep_readout_noise"',
        'ds.n, "test", "onestep_readout_noise"',
        "stream",
    ),
    Mutant("onestep-sv-mult", ONESTEP, "[eta * mult * float(v) for v in s_first]", "[eta * float(v) for v in s_first]", "factor"),
    Mutant(
        "onestep-step-draw",
        ONESTEP,
        "training.full_gradient(cfg, ds, net, t)[3]",
        "training.full_gradient(cfg, ds, net, 0)[3]",
        "stream",
    ),
    Mutant(
        "onestep-holdout-leak",
        ONESTEP,
        "A = ridge(Phi[~val], y[~val], oc.ridge_grid)",
        "A = ridge(Phi, y, oc.ridge_grid)",
        "formula",
    ),
    # ---- random streams
    Mutant("rng-tracking-is-split", RNG, '"tracking": (9, 1),', '"tracking": (9,),', "stream"),
]


# ---------------------------------------------------------------------------- applying and running


def apply(text: str, mutant: Mutant) -> str:
    """The mutated text; ValueError when `old` does not occur exactly once."""
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.id}: `old` occurs {count} times in {mutant.path}")
    return text.replace(mutant.old, mutant.new)


def check(mutants: list[Mutant], root: Path = ROOT) -> list[str]:
    """Problems: a mutant that no longer applies, an unknown path, a duplicate id, an empty change."""
    problems, ids = [], set()
    for mt in mutants:
        if mt.id in ids:
            problems.append(f"{mt.id}: duplicate id")
        ids.add(mt.id)
        path = root / mt.path
        if not path.is_file():
            problems.append(f"{mt.id}: no file {mt.path}")
            continue
        try:
            new = apply(path.read_text(), mt)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if mt.old == mt.new:
            problems.append(f"{mt.id}: old == new")
        try:
            compile(new, mt.path, "exec")
        except SyntaxError as exc:
            problems.append(f"{mt.id}: the mutant does not compile ({exc.msg}, line {exc.lineno})")
        if not tests_of(mt):
            problems.append(f"{mt.id}: no tests mapped for {mt.path}")
    return problems


def tests_of(mt: Mutant) -> tuple[str, ...]:
    return mt.tests or MODULE_TESTS.get(mt.path, ())


def _pytest(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout' | 'error', seconds, last output line) of pytest -x on tests in tree."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    status = {0: "pass", 1: "fail"}.get(proc.returncode, "error")
    return status, time.perf_counter() - t0, last


def _fresh_copy(into: Path, source: Path = ROOT) -> Path:
    tree = into / "tree"
    shutil.copytree(source, tree, ignore=COPY_IGNORE)
    return tree


def run_mutant(mt: Mutant, timeout: float, source: Path = ROOT) -> dict:
    """Apply one mutant to a fresh temporary copy of `source` (the tree) and run its tests there."""
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-") as tmp:
        tree = _fresh_copy(Path(tmp), source)
        target = tree / mt.path
        target.write_text(apply(target.read_text(), mt))
        status, seconds, last = _pytest(tree, tests_of(mt), timeout)
    verdict = {"pass": "survived", "fail": "killed", "timeout": "killed (timeout)", "error": "error"}[status]
    return {**asdict(mt), "tests": list(tests_of(mt)), "verdict": verdict, "seconds": round(seconds, 1), "last_line": last}


def baseline(selections: set[tuple[str, ...]], timeout: float, jobs: int = 1, source: Path = ROOT) -> dict[tuple[str, ...], str]:
    """Each distinct test selection on the clean tree (one shared copy of `source`): 'pass' or why not."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-base-") as tmp:
        tree = _fresh_copy(Path(tmp), source)
        ordered = sorted(selections)
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for sel, (status, seconds, last) in zip(ordered, pool.map(lambda sel: _pytest(tree, sel, timeout * 3), ordered)):
                out[sel] = status if status == "pass" else f"{status}: {last}"
                print(f"baseline {' '.join(sel)}: {out[sel]} ({seconds:.0f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", default=[], help="run mutants whose id starts with this (repeatable)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant's test run")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    ap.add_argument("--json", type=Path, help="write every result to this new file")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies and compiles")
    ap.add_argument("--list", action="store_true", help="list the mutants")
    ap.add_argument("--no-baseline", action="store_true", help="skip the clean runs of each test selection")
    args = ap.parse_args(argv)

    chosen = [mt for mt in MUTANTS if not args.only or any(mt.id.startswith(p) for p in args.only)]
    if args.list:
        for mt in chosen:
            print(f"{mt.id:38s} {mt.kind:10s} {mt.path}")
        return 0
    problems = check(chosen)
    if problems or args.check:
        print("\n".join(problems) if problems else f"{len(chosen)} mutants apply cleanly")
        return 1 if problems else 0
    if args.json is not None and args.json.exists():
        print(f"{args.json} exists: choose a new file", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gradrank-mutant-snapshot-") as snap:
        # one snapshot of the worktree at the start: edits made while the audit runs never enter it
        return _audit(args, chosen, _fresh_copy(Path(snap)))


def _audit(args, chosen: list[Mutant], source: Path) -> int:
    runnable = [mt for mt in chosen if not mt.equivalent]
    invalid = set()
    if not args.no_baseline:
        base = baseline({tests_of(mt) for mt in runnable}, args.timeout, args.jobs, source)
        invalid = {sel for sel, status in base.items() if status != "pass"}
    results = [
        {**asdict(mt), "tests": list(tests_of(mt)), "verdict": "equivalent", "seconds": 0.0, "last_line": ""}
        for mt in chosen
        if mt.equivalent
    ]
    todo = [mt for mt in runnable if tests_of(mt) not in invalid]
    results += [
        {
            **asdict(mt),
            "tests": list(tests_of(mt)),
            "verdict": "invalid (tests fail on clean code)",
            "seconds": 0.0,
            "last_line": "",
        }
        for mt in runnable
        if tests_of(mt) in invalid
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for res in pool.map(lambda mt: run_mutant(mt, args.timeout, source), todo):
            results.append(res)
            print(f"{res['verdict']:17s} {res['id']:38s} {res['seconds']:6.1f} s  {res['last_line'][:90]}", flush=True)
    counted = [r for r in results if r["verdict"].startswith(("killed", "survived"))]
    killed = sum(r["verdict"].startswith("killed") for r in counted)
    survivors = [r["id"] for r in counted if r["verdict"] == "survived"]
    summary = {
        "mutants": len(results),
        "equivalent": sum(r["verdict"] == "equivalent" for r in results),
        "errors": [r["id"] for r in results if r["verdict"] == "error" or r["verdict"].startswith("invalid")],
        "killed": killed,
        "survived": survivors,
        "kill_rate": killed / len(counted) if counted else float("nan"),
        "seconds": round(time.perf_counter() - t0),
    }
    print(json.dumps(summary, indent=1))
    if args.json is not None:
        sys.path.insert(0, str(ROOT))
        from gradrank.io import write_new

        write_new(args.json, json.dumps({"summary": summary, "results": results}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
