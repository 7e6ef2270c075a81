"""Hooks that capture every linear layer's gradient factors over a problem's batches (docs/deep.md).

For a layer o = h W^T (+ b) called on rows h_t, the weight gradient of the mean loss is
G = sum_t h_t delta_t^T (d_in x d_out, the transpose of nn.Linear's weight.grad, Conv1D's own):
H stacks the rows h_t, Delta the errors dL/do_t. Over batches of n_b samples (N in all) the loss
is the sample-weighted mean, so G = H^T D / R with D = R (n_b / N) Delta over all R rows. A module
called several times in one forward (weight tying) contributes a row block per call.
For scalar outputs f the per-sample residue r_i = n_b dL/df_i and J = d(sum_i f_i)/do (a second
backward pass) are captured too: when samples do not interact, Delta = diag(r / n_b) J. With C
outputs (up to MAX_OUTPUTS) R_ic = n_b dL/df_c(x_i) and one J^(c) per output (C more backward
passes): Delta = sum_c diag(R_c / n_b) J^(c).
The same backward pass also returns autograd's weight gradient, kept as the reference G.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch.nn.utils import parametrize

from gradrank.core.factors import Factors
from gradrank.core.spectra import factored_route
from gradrank.errors import InputError
from gradrank.models.registry import Problem, backward, forward, is_conv1d


@dataclass
class LayerFactors:
    name: str
    kind: str  # "linear" or "conv1d"
    H: torch.Tensor  # R x d_in, the layer's input rows
    D: torch.Tensor  # R x d_out, so that G = H^T D / R
    J: torch.Tensor | None  # R x d_out, d(sum f)/do per row (scalar outputs), scaled like D: D = r J when samples do not
    # interact; C outputs: C x R x d_out, one per output (D = sum_c r_c J_c)
    r: torch.Tensor | None  # R, the residue of each row's sample (C outputs: R x C)
    sample: torch.Tensor | None  # R, the index (over all batches) of each row's sample
    calls: int  # calls per forward pass (weight tying: > 1)
    samples: int  # N
    G: torch.Tensor | None = (
        None  # autograd's weight gradient of the mean loss, d_in x d_out, kept where n >= min(d_in, d_out) (the dense route)
    )
    autograd_error: float = 0.0  # the largest over batches of ||(H^T D - G_autograd) P|| / ||G_autograd P||, P random probes

    @property
    def rows(self) -> int:
        return self.H.shape[0]

    def gradient(self) -> torch.Tensor:
        """G = H^T D / R from the factors, dense (d_in x d_out)."""
        return (self.H.T @ self.D) / self.rows

    def factors(self) -> Factors:
        """The engine's currency (core/factors.py), autograd's G included where it was kept."""
        return Factors(self.H, self.D, self.r, self.J, None, self.samples, 1.0, self.G)


@dataclass
class Capture:
    layers: dict[str, LayerFactors]
    skipped: dict[str, str]  # name -> why (never called, no gradient reaches it)
    loss: float  # the sample-weighted mean loss over the batches
    samples: int
    scalar: bool  # the outputs are one scalar per sample
    timings: dict = field(default_factory=dict)


def batch_size(inputs) -> int:
    """Samples in a batch: the leading dimension of its first tensor."""
    first = (
        inputs if isinstance(inputs, torch.Tensor) else next(iter(inputs.values() if isinstance(inputs, dict) else inputs), None)
    )
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        raise InputError("the model's inputs hold no tensor with a batch dimension")
    return first.shape[0]


PROBES = 4  # random probe columns of the check against autograd's weight gradient


def check_tolerance(dtype: torch.dtype) -> float:
    """Relative disagreement between the factored and autograd's gradient above which a layer's
    capture is wrong, not rounding: sqrt(eps) (1.5e-8 in float64, 3.5e-4 in float32)."""
    return math.sqrt(torch.finfo(dtype).eps)


def probe_error(H_rows: list[torch.Tensor], D_rows: list[torch.Tensor], G: torch.Tensor) -> float:
    """||(sum_calls H^T D - G) P||_F / ||G P||_F for PROBES fixed random columns P (d_out x PROBES):
    the captured factors of one batch against autograd's weight gradient of the same batch (both
    d_in x d_out, scaled alike). 0 when both are zero; inf when only autograd's is zero."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    P = torch.randn(G.shape[1], PROBES, generator=gen, dtype=torch.float64).to(device=G.device, dtype=G.dtype)
    ref = G @ P
    got = sum(H.T @ (D @ P) for H, D in zip(H_rows, D_rows))
    diff, scale = float(torch.linalg.norm(got - ref)), float(torch.linalg.norm(ref))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


FROZEN = "its weight is frozen (requires_grad = False): it has no gradient of its own; not analysed"
REAL = (torch.float32, torch.float64)


def check_model(problem: Problem, layers: dict[str, torch.nn.Module]) -> None:
    """InputError naming the model and the tensor for what cannot be analysed: complex parameters,
    parameters holding inf or NaN, chosen layers whose weights are not float32 or float64 (float16 and
    bfloat16 are refused, not cast: the user converts the model and its inputs, e.g. model.float())."""
    with torch.no_grad():
        for name, p in problem.model.named_parameters():
            if p.is_complex():
                raise InputError(
                    f"--model {problem.name}: parameter '{name}' is complex ({str(p.dtype).removeprefix('torch.')}); gradrank analyses real models"
                )
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise InputError(f"--model {problem.name}: parameter '{name}' holds inf or NaN")
    for name, m in layers.items():
        if m.weight.dtype not in REAL:
            raise InputError(
                f"--model {problem.name}: layer '{name}' has {str(m.weight.dtype).removeprefix('torch.')} weights; gradrank "
                "analyses float32 and float64 models (convert the model and its inputs, e.g. model.float())"
            )


MAX_OUTPUTS = 16  # C outputs cost C backward passes and C copies of J: beyond this, the general form only


def _outputs(outputs, n_b: int) -> int:
    """C when the model's outputs are C <= MAX_OUTPUTS numbers per sample (1: a scalar), else 0."""
    if not isinstance(outputs, torch.Tensor) or not outputs.shape or outputs.shape[0] != n_b or outputs.ndim > 2:
        return 0
    C = 1 if outputs.ndim == 1 else outputs.shape[1]
    return C if 1 <= C <= MAX_OUTPUTS else 0


def _loss_value(problem: Problem, outputs, targets) -> torch.Tensor:
    loss = problem.loss(outputs, targets)  # through user_call (Problem guards its loss)
    if not isinstance(loss, torch.Tensor):
        raise InputError(f"--model {problem.name}: the loss returned {type(loss).__name__}, not a tensor")
    if loss.numel() != 1:
        raise InputError(f"--model {problem.name}: the loss is not a scalar (shape {tuple(loss.shape)}); return the mean loss")
    if loss.is_complex():
        raise InputError(
            f"--model {problem.name}: the loss is complex ({str(loss.dtype).removeprefix('torch.')}); return a real mean loss"
        )
    if not loss.requires_grad:
        raise InputError(f"--model {problem.name}: the loss does not depend on the model's parameters")
    if not math.isfinite(float(loss.detach())):
        raise InputError(f"--model {problem.name}: the loss is {float(loss.detach())} at the given weights")
    return loss.reshape(())


class Recorder:
    """Forward hooks on the chosen layers. Each call's output gets a tensor hook that, when the
    backward pass reaches it, keeps the call's rows of H and of the error (D pass) or of J (J pass)
    and lets autograd free the full-size error at once: the capture adds little beyond the factors."""

    def __init__(self, layers: dict[str, torch.nn.Module], n_b: int, mask, scale: float):
        self.shapes: dict[str, list[tuple]] = {n: [] for n in layers}  # (input shape, d_out, item size) per call
        self.rows: dict[str, dict[int, dict]] = {n: {} for n in layers}  # call -> H, D, keep, sample (and J)
        self.inputs: dict[tuple[int, bool], tuple] = {}  # (id(h), unmasked) -> (weak reference to h, its kept rows)
        self.n_b, self.mask, self.scale, self.mode = n_b, mask, scale, "D"
        self.output = 0  # which output's J the J pass records
        self.handles = [m.register_forward_hook(self._hook(n), with_kwargs=True) for n, m in layers.items()]

    def _hook(self, name):
        def hook(module, args, kwargs, output):
            h = args[0] if args else next(iter(kwargs.values()), None)  # self.fc(input=x) is a valid call too
            if not isinstance(h, torch.Tensor) or not isinstance(output, torch.Tensor):
                return
            call = len(self.shapes[name])
            self.shapes[name].append((tuple(h.shape), output.shape[-1], h.element_size()))
            if output.requires_grad:
                output.register_hook(lambda g: self._grad(name, call, h, g))

        return hook

    def _grad(self, name: str, call: int, h: torch.Tensor, g: torch.Tensor) -> None:
        d_out = g.shape[-1]
        if self.mode == "J":
            entry = self.rows[name].get(call)
            if entry is not None:
                J = g.detach().reshape(-1, d_out)
                entry.setdefault("J", {})[self.output] = J[entry["keep"]] if entry["keep"] is not None else J.clone()
            return
        keep, sample = _rows(h, self.n_b, self.mask)
        flat = g.detach().reshape(-1, d_out)
        if keep is not None and bool(flat[~keep].any()):
            keep, sample = None, _rows(h, self.n_b, None)[1]  # padding that matters to the loss stays a row
        key = (id(h), keep is None)  # layers called on the same input (query, key, value) keep one H
        seen = self.inputs.get(key)
        if seen is None or seen[0]() is not h:  # a weak reference: h is not kept alive, and a reused id is no match
            H = h.detach().reshape(-1, h.shape[-1])
            seen = self.inputs[key] = (weakref.ref(h), H[keep] if keep is not None else H)
        self.rows[name][call] = {
            "H": seen[1],
            "D": (flat[keep] if keep is not None else flat) * self.scale,
            "keep": keep,
            "sample": sample,
        }

    def close(self):
        for h in self.handles:
            h.remove()


def estimate_bytes(shapes: dict[str, list[tuple]], n_0: int, N: int, mask, outputs: int, workers: int = 1) -> int:
    """Peak bytes of capturing and decomposing, from the first batch's calls: every layer's rows
    scaled to N samples times (d_in + d_out, + d_out for each output's J), plus the working sets (X_B and J's
    centred copy, n x (d_in + d_out); G and E, d_in x d_out) of the `workers` largest layers, the
    most that are analysed at once."""
    total, work = 0, []
    for calls in shapes.values():
        if not calls:
            continue
        rows = 0
        for shape, d_out, item in calls:
            lead = shape[:-1]
            masked = mask is not None and tuple(mask.shape) == tuple(lead[:2])
            kept = int(mask.sum()) * math.prod(lead[2:]) if masked else math.prod(lead)
            rows += kept * N // max(n_0, 1)
        d_in = shape[-1]
        total += item * rows * (d_in + d_out * (1 + outputs)) + item * d_in * d_out
        work.append(item * (2 * rows * (d_in + d_out) + 2 * d_in * d_out))
    return total + sum(sorted(work)[::-1][: max(workers, 1)])


def capture(problem: Problem, layers: dict[str, torch.nn.Module], want_J: bool = True, guard=None, workers: int = 1) -> Capture:
    """H, D (and J, r for scalar outputs or up to MAX_OUTPUTS outputs) of every layer in `layers`, over all the problem's batches.
    guard(bytes), when given, sees the estimated peak after the first forward pass (and may refuse),
    counting `workers` layers analysed at once."""

    check_model(problem, layers)
    chosen, frozen = layers, [n for n, m in layers.items() if not m.weight.requires_grad]
    layers = {n: m for n, m in chosen.items() if n not in frozen}
    if not layers:
        raise InputError(
            f"--model {problem.name}: every chosen linear layer is frozen (requires_grad = False): no weight gradient"
        )
    sizes = [batch_size(inputs) for inputs, _ in problem.batches]
    N = sum(sizes)
    parts: dict[str, dict[str, list]] = {n: {"H": [], "D": [], "J": [], "r": [], "sample": []} for n in layers}
    calls: dict[str, int] = {n: 0 for n in layers}
    weight_grad: dict[str, torch.Tensor] = {}
    checked: dict[str, float] = {}  # layer -> largest probe error against autograd so far
    wrong: dict[str, float] = {}  # layers whose factors disagree with autograd's weight gradient
    trainable = list(layers)
    scalar_all, loss_sum, offset = True, 0.0, 0
    timings = {"forward": 0.0, "backward": 0.0}
    for b, ((inputs, targets), n_b) in enumerate(zip(problem.batches, sizes)):
        with parametrize.cached():  # a parametrised weight (weight_norm) is one tensor per batch: autograd's reference
            mask = problem.token_masks[b] if problem.token_masks else None
            rec = Recorder(layers, n_b, mask, n_b / N)
            clock = time.perf_counter()
            try:
                outputs = forward(problem, inputs)
            finally:
                rec.close()
            loss = _loss_value(problem, outputs, targets)
            timings["forward"] += time.perf_counter() - clock
            clock = time.perf_counter()
            loss_sum += float(loss.detach()) * n_b
            C = _outputs(outputs, n_b) if want_J else 0  # 0: no J (the general form only)
            scalar = C > 0
            if b == 0 and guard is not None:
                guard(estimate_bytes(rec.shapes, n_b, N, mask, C, workers))
            scalar_all &= C == 1
            if b == 0:  # autograd's G is kept where the spectrum will come from the dense matrix (n >= min(d_in, d_out))
                dense = {n for n in trainable if rec.shapes[n] and _dense_route(rec.shapes[n], n_b, N, mask)}
            weights = [(n, layers[n].weight) for n in trainable if rec.shapes[n]]
            wanted = [w for _, w in weights] + ([outputs] if scalar else [])
            if not wanted:
                raise InputError(f"--model {problem.name}: no gradient reaches any chosen linear layer")
            grads = list(
                backward(problem, torch.autograd.grad, loss, wanted, retain_graph=scalar, allow_unused=True)
            )  # every hook fires
            for (name, w), g in zip(weights, grads):
                rows = [rec.rows[name][c] for c in sorted(rec.rows[name])]
                if (g is not None and not bool(torch.isfinite(g).all())) or not all(
                    bool(torch.isfinite(e["D"]).all()) for e in rows
                ):
                    raise InputError(
                        f"--model {problem.name}: the gradient of layer '{name}' holds NaN or inf under a finite loss "
                        f"({float(loss.detach()):.6g}): an overflow or a non-differentiable point in the model"
                    )
                if name in wrong:
                    continue
                auto = (g.detach() if is_conv1d(layers[name]) else g.detach().T) * (n_b / N) if g is not None else None
                if rows and auto is not None:
                    err = probe_error([e["H"] for e in rows], [e["D"] for e in rows], auto)
                    checked[name] = max(checked.get(name, 0.0), err)
                    if not err <= check_tolerance(auto.dtype):
                        wrong[name] = err
                elif rows and any(bool(e["D"].any()) for e in rows):  # factors but no autograd gradient: not this weight's
                    wrong[name] = math.inf
                if (
                    g is not None and name in dense
                ):  # autograd's own weight gradient, accumulated like D (the independent reference)
                    g = (g.detach() if is_conv1d(layers[name]) else g.detach().T) * (n_b / N)
                    weight_grad[name] = g if name not in weight_grad else weight_grad[name] + g
            grads[: len(weights)] = [None] * len(weights)  # the factored-route layers' G is not kept
            r = None
            if scalar:
                r = n_b * grads[-1].detach().reshape(n_b, *([C] if outputs.ndim == 2 and C > 1 else []))
                rec.mode = "J"
                for c in range(C):  # one backward pass per output
                    rec.output = c
                    f_c = outputs.sum() if C == 1 else outputs[:, c].sum()
                    backward(
                        problem,
                        torch.autograd.grad,
                        f_c,
                        [w for _, w in weights],
                        allow_unused=True,
                        retain_graph=c < C - 1,
                    )
            for name in layers:
                if b == 0:
                    calls[name] = len(rec.shapes[name])
                p = parts[name]
                for call in sorted(rec.rows[name]):
                    e = rec.rows[name][call]
                    p["H"].append(e["H"])
                    p["D"].append(e["D"])
                    p["sample"].append(None if e["sample"] is None else e["sample"] + offset)
                    if scalar and e["sample"] is not None:
                        J = [e.get("J", {}).get(c, None) for c in range(C)]
                        J = [torch.zeros_like(e["D"]) if j is None else j for j in J]  # an output this call does not reach
                        p["J"].append(J[0].div_(N) if C == 1 else torch.stack(J).div_(N))
                        p["r"].append(r[e["sample"]])
                    else:
                        p["J"].append(None)
            offset += n_b
            timings["backward"] += time.perf_counter() - clock
            del outputs, loss, grads, rec
    out, skipped = {}, {}
    for name, module in chosen.items():
        if name in frozen:
            skipped[name] = FROZEN
            continue
        if name in wrong:
            skipped[name] = (
                f"its captured factors disagree with autograd's weight gradient (relative error {wrong[name]:.2g} on random "
                "probes): its forward is not input @ weight^T + bias (a wrapper, a scaled input, a shared weight); not analysed"
            )
            continue
        if not calls[name] and not parts[name]["H"]:
            skipped[name] = "never called in the forward pass"
            continue
        if not parts[name]["H"]:
            skipped[name] = "no gradient reaches it (its output does not affect the loss)"
            continue
        p = parts[name]
        H, D = _cat(p["H"]), _cat(p["D"])
        R = H.shape[0]
        has_J = all(j is not None for j in p["J"])
        out[name] = LayerFactors(
            name,
            "conv1d" if is_conv1d(module) else "linear",
            H,
            D.mul_(R),
            _cat(p["J"], 0 if p["J"][0] is None or p["J"][0].ndim == 2 else 1).mul_(R) if has_J else None,
            _cat(p["r"]) if has_J else None,
            _cat(p["sample"]) if all(s is not None for s in p["sample"]) else None,
            max(calls[name], 1),
            N,
            weight_grad.get(name),
            checked.get(name, 0.0),
        )
    if not out:
        raise InputError(f"--model {problem.name}: no gradient reaches any chosen linear layer ({', '.join(skipped)})")
    return Capture(out, skipped, loss_sum / N, N, scalar_all, timings)


def _cat(parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """One tensor from the row blocks (along dim), without a copy when there is only one."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _dense_route(calls: list[tuple], n_0: int, N: int, mask) -> bool:
    """Whether a layer's spectrum will come from the dense G (its estimated rows n >= min(d_in, d_out))."""

    lead = [s[:-1] for s, _, _ in calls]
    masked = mask is not None and all(tuple(mask.shape) == tuple(x[:2]) for x in lead)
    n = sum((int(mask.sum()) * math.prod(x[2:]) if masked else math.prod(x)) for x in lead) * N // max(n_0, 1)
    return not factored_route(n, calls[0][0][-1], calls[0][1])


def _rows(h: torch.Tensor, n_b: int, mask: torch.Tensor | None):
    """(which rows of h.reshape(-1, d) to keep, or None for all; each kept row's sample in the batch,
    or None when h's rows are not laid out sample by sample). Masked rows (padding) are dropped: their
    error is zero, so G is unchanged, and they are not inputs the spike or the mean should count."""
    lead = h.shape[:-1]
    if not lead or lead[0] != n_b:
        return None, None
    per = math.prod(lead[1:])
    sample = torch.arange(n_b, device=h.device).repeat_interleave(per)
    if mask is not None and tuple(mask.shape) == tuple(lead):
        keep = mask.reshape(-1).to(h.device)
        return keep, sample[keep]
    return None, sample
