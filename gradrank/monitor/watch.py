"""A gradient monitor for the user's own training loop (docs/watch.md).

    mon = gradrank.watch(model, out=DIR, every=K)
    for batch in data:
        loss = loss_fn(model(batch)); loss.backward()     # one or several backwards
        mon.step(loss=loss)                                # after backward, before optimizer.step()
        optimizer.step(); optimizer.zero_grad()
    mon.close()                                            # or: with gradrank.watch(...) as mon

Steps 0, K, 2K, ... are recorded. Capture hooks (models/capture.py) are registered only for a
recorded step: watch() arms step 0, and mon.step() arms the next step when it is a recorded one; on
the other steps mon.step() only counts. On a recorded step each watched layer o = h W^T (+ b) keeps
the rows h_t of its input (forward hook) and the errors delta_t = dL/do_t (a tensor hook during the
user's backward), over every call and every backward of the step, so G = sum_t h_t delta_t^T =
H^T D_raw (d_in x d_out, weight.grad transposed; gradient accumulation sums rows). G is checked
against the parameter's .grad on random probes (capture.probe_error) and, where they agree, goes to
the one engine (core/engine.run, general form r = 1, J = D, the principal spike of core/spike.py;
arXiv 2510.01303, Prop. 2.1 for the factored form G = H^T D / n).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from gradrank import io
from gradrank.config.schema import AnalysisConfig
from gradrank.core import engine
from gradrank.core import spike as spike_rule
from gradrank.core.factors import Factors
from gradrank.core.measures import max_principal_angle
from gradrank.core.spectra import factored_route
from gradrank.errors import InputError
from gradrank.models import capture
from gradrank.models.registry import is_conv1d, linear_layers
from gradrank.monitor import records
from gradrank.monitor.records import LayerStep, Skip, WatchRecord

DRIFT_RANK = 4  # r of the drift and captured share: min(4, top-k, d_in, d_out)


def watch(model: torch.nn.Module, out, every: int = 50, layers=None, topk: int = 8) -> Monitor:
    """A Monitor of `model`'s linear layers (nn.Linear, Conv1D) writing to the directory `out`.

    layers: None (all), a fnmatch pattern or a list of them over named_modules names."""
    return Monitor(model, out, every, layers, topk)


class Monitor:
    """Records every `every`-th optimiser step's per-layer gradient spectra (module docstring)."""

    def __init__(self, model: torch.nn.Module, out, every: int = 50, layers=None, topk: int = 8):
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"watch: model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InputError(f"watch: every must be a positive integer, got {every!r}")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise InputError(f"watch: topk must be a positive integer, got {topk!r}")
        patterns = [layers] if isinstance(layers, str) else layers
        self.layers = linear_layers(model, list(patterns) if patterns else None)
        self.out = Path(out)
        self.every, self.topk = every, topk
        self.acfg = AnalysisConfig(top_k=topk, spectrum="svd")  # values to ~eps s_1
        self.record = WatchRecord("watch", every, topk, min(DRIFT_RANK, topk), list(self.layers), [], False, [], [])
        self.count = 0  # the optimiser step the next mon.step() closes
        self.prev: dict[str, torch.Tensor] = {}  # layer -> top-r left singular vectors at its last recorded step
        self.recorder = None
        self.closed = False
        records.write(self.out, self.record)  # refuses a directory gradrank does not own, before training starts
        self._arm()

    def _arm(self) -> None:
        """Forward hooks for the step about to run (it is a recorded one)."""
        self.recorder = capture.Recorder(self.layers, 0, None, 1.0)  # n_b = 0: rows are not laid out per sample

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._finish(exc_type is None)  # an exception leaves watch.json marked unfinished, its records kept

    def step(self, loss=None) -> None:
        """Close optimiser step `count` (call after backward, before optimizer.step): record it when it
        is a multiple of `every`, and arm the capture for the next step when that one is."""
        if self.closed:
            raise InputError("watch: mon.step() called after mon.close()")
        if all(m.weight.grad is None for m in self.layers.values()):
            raise InputError(f"watch: mon.step() at step {self.count} called before any backward (no watched weight has a .grad)")
        if self.recorder is not None:
            rec, self.recorder = self.recorder, None
            rec.close()
            self._record(rec, self._loss(loss))
        self.count += 1
        if self.count % self.every == 0:
            self._arm()

    def close(self) -> None:
        """Remove the hooks and mark the run directory finished."""
        self._finish(True)

    def _finish(self, finished: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        self.record.finished = finished
        self._write()

    @staticmethod
    def _loss(loss) -> float | None:
        if loss is None:
            return None
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise InputError(f"watch: loss is {value}")
        return value

    def _record(self, rec, loss: float | None) -> None:
        if not any(rec.rows[n] for n in self.layers):
            raise InputError(
                f"watch: mon.step() at step {self.count} called before any backward (no gradient reached a watched layer)"
            )
        step = self.count
        for name, module in self.layers.items():
            row, reason = self._layer(step, name, module, rec.rows[name], loss)
            if row is None:
                self.record.skipped.append(Skip(step, name, reason))
            else:
                self.record.rows.append(row)
        self.record.steps.append(step)
        self._write()

    def _layer(self, step: int, name: str, module, calls: dict, loss: float | None):
        """(the layer's row, None) or (None, why it is skipped)."""
        if not calls:
            return None, "no gradient reached it at this step (never called, or its output does not affect the loss)"
        g = module.weight.grad
        if g is None:
            return None, "its weight has no .grad"
        G_auto = g.detach() if is_conv1d(module) else g.detach().T  # d_in x d_out
        H_rows = [calls[c]["H"] for c in sorted(calls)]
        D_rows = [calls[c]["D"] for c in sorted(calls)]
        err = capture.probe_error(H_rows, D_rows, G_auto)
        if not err <= capture.check_tolerance(G_auto.dtype):
            return None, (
                f"its captured factors disagree with its .grad (relative error {err:.2g} on random probes): "
                "a gradient not from this step's backwards (zero_grad missing?), clipping, a penalty, or a wrapped forward"
            )
        H, D = torch.cat(H_rows), torch.cat(D_rows)
        n, d_in, d_out = H.shape[0], H.shape[1], D.shape[1]
        dense = not factored_route(n, d_in, d_out)
        f = Factors(H, D * n, scale=1.0, G=G_auto if dense else None)  # G = H^T D_raw = (1/n) H^T (n D_raw)
        out = engine.run(f, spike_rule.principal(H), self.acfg)
        m = out.measures
        r = min(self.record.drift_rank, d_in, d_out, out.spec_G.U.shape[1])
        U = out.spec_G.U[:, :r]  # d_in x r
        drift = captured = None
        prev = self.prev.get(name)
        if prev is not None and prev.shape == U.shape:
            drift = max_principal_angle(U, prev)
            captured = float(f.rmv(prev).pow(2).sum()) / max(out.spec_G.fro2, 1e-300)  # ||U_prev^T G||_F^2 / ||G||_F^2
        self.prev[name] = U
        row = LayerStep(
            step=step,
            layer=name,
            norm_G=m.norms.G,
            fro_G=m.norms.G_fro,
            stable_rank=m.rank.stable,
            outliers=m.rank.outliers,
            share_S1=m.shares.S1,
            share_S12=m.shares.S12,
            share_S2=m.shares.S2,
            share_E=m.shares.E,
            drift_deg=drift,
            captured=captured,
            loss=loss,
            autograd_error=err,
            rows=n,
            singular_values=list(m.singular_values),
        )
        return row, None

    def _write(self) -> None:
        io.add_files(self.out, records.files(self.record), kind="watch")
